-- Warning events: a spend counter that crossed a fraction of its cap.
-- uses: prelude, numbers, events
local window_names = {d = 'daily', m = 'monthly', life = 'lifetime'}

-- A spend counter's key sc:{ORG}:spend:SCOPE:ID:W[:PERIOD] without its
-- prefix, and an event of `type` naming its scope, id, window and period,
-- followed by `extra` fields.
local function describe(prefix, key, type, extra)
  local rest = string.sub(key, #prefix + 7)
  local scope, id, w, period = string.match(rest, '^([^:]+):([^:]+):([^:]+):?(.*)$')
  local fields = {'type', type, 'scope', scope, 'id', id, 'window', window_names[w] or w, 'period', period}
  for _, v in ipairs(extra) do fields[#fields + 1] = v end
  return rest, fields
end

-- spec: "FRACTION=THRESHOLD;..." of a cost cap. A counter that went from
-- `before` to `after` crossed THRESHOLD when before < THRESHOLD <= after;
-- each crossing is told once per cap and period.
local function warn_between(prefix, stream, key, spec, cap, expire_at, before, after)
  for fraction, threshold in string.gmatch(spec, '([^;=]+)=([^;=]+)') do
    if not le(threshold, before) and le(threshold, after) then
      local rest, fields = describe(prefix, key, 'spend_cap_warning_threshold_reached',
        {'fraction', fraction, 'spent', after, 'cap', cap})
      if first_time(prefix .. 'warned:' .. rest .. ':' .. cap .. ':' .. fraction, expire_at) then
        append_event(stream, fields)
      end
    end
  end
end
