-- The forecast of a cost cap (SPEC section 2b): at the pace of its period so
-- far, the instant its counter reaches the cap. The first settlement that
-- puts that instant before the period's reset, an hour or more into the
-- period, appends one spend_cap_forecast_exhaustion per cap and period (a
-- field of the markers hash). accounting/forecast.cpp does the same sum
-- for the API's answers; here it is in doubles (a time, not money: a second
-- either way changes nothing).
-- uses: prelude, events, warnings

-- "2026-12-31T23:00:00Z" of unix seconds (Howard Hinnant's civil_from_days).
local function rfc3339(t)
  local days = math.floor(t / 86400)
  local secs = t - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', y, m, d, math.floor(secs / 3600),
    math.floor(secs / 60) % 60, secs % 60)
end

-- spec: "START RESET" of the counter's period (unix seconds); `after` its
-- spend now (a decimal string), `cap` its cap; `now` Redis's clock in
-- seconds (read once per script: TIME is a command).
local function forecast_check(stream, markers, name, label, cap, expire_at, spec, after, now)
  local start, reset = string.match(spec, '^(%d+) (%d+)$')
  if not start then return end
  start, reset = tonumber(start), tonumber(reset)
  local spent, limit = tonumber(after), tonumber(cap)
  local elapsed = now - start
  if not spent or not limit or spent <= 0 or elapsed < 3600 or now >= reset then return end
  local at = start + math.ceil(limit * elapsed / spent)
  if at >= reset then return end
  if first_mark(markers, 'forecast:' .. name .. ':' .. cap, expire_at) then
    append_event(stream, counter_event('spend_cap_forecast_exhaustion', label,
      {'spent', after, 'cap', cap, 'forecast_exhausted_at', rfc3339(at), 'reset_at', rfc3339(reset)}))
  end
end
