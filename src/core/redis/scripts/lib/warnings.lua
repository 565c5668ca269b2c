-- The events of a spend counter against its cap: a fraction of it crossed
-- (warnings), the cap reached. Each is told once per cap and period: a
-- field of the markers hash of the counter's window and period, which
-- expires with its counters.
-- uses: prelude, numbers, events

-- An event of `type` about a counter, from its label "SCOPE ID WINDOW
-- [PERIOD][ MODEL]" (the worker's words: Lua never takes a key name apart),
-- then `extra`. A per-model limit's events name its pattern.
local function counter_event(type, label, extra)
  local scope, id, window, period, model = string.match(label, '^(%S+) (%S+) (%S+) ?(%S*) ?(%S*)$')
  local fields = {'type', type, 'scope', scope, 'id', id, 'window', window, 'period', period}
  if model and model ~= '' then
    fields[#fields + 1] = 'model'
    fields[#fields + 1] = model
  end
  for _, v in ipairs(extra) do fields[#fields + 1] = v end
  return fields
end

-- True the first time `field` is set in the markers hash; the hash expires
-- with its window's counters. A marker Redis refuses (OOM) just loses its event.
local function first_mark(markers, field, expire_at)
  local set = redis.pcall('HSETNX', markers, field, '1')
  if type(set) ~= 'number' or set == 0 then return false end
  if expire_at ~= '0' then redis.call('EXPIREAT', markers, expire_at) end
  return true
end

-- spec: "FRACTION=THRESHOLD;..." of a cost cap. Counter `name` (its key
-- without the org's prefix) went from `before` to `after`: it crossed
-- THRESHOLD when before < THRESHOLD <= after.
local function warn_between(stream, markers, name, label, spec, cap, expire_at, before, after)
  for fraction, threshold in string.gmatch(spec, '([^;=]+)=([^;=]+)') do
    if not le(threshold, before) and le(threshold, after) then
      if first_mark(markers, 'warned:' .. name .. ':' .. cap .. ':' .. fraction, expire_at) then
        append_event(stream, counter_event('spend_cap_warning_threshold_reached', label,
          {'fraction', fraction, 'spent', after, 'cap', cap}))
      end
    end
  end
end
