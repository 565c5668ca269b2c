-- Giving a reservation back: the lines "DELTA NAME\n" of its record (NAME a
-- counter's key without the org's prefix) undo what it added. Every counter
-- a record names is among the script's KEYS: `counters` maps NAME to its
-- key. A counter that has expired since (a rate's minute) is not recreated.
-- uses: prelude

-- NAME -> key, for the KEYS from `first` on (`plen`: the org prefix's length).
local function counters_by_name(first, plen)
  local by_name = {}
  for i = first, #KEYS do by_name[string.sub(KEYS[i], plen + 1)] = KEYS[i] end
  return by_name
end

local function undo(lines, counters)
  for delta, name in string.gmatch(lines, '(%S+) ([^\n]+)\n') do
    local key = counters[name]
    if not key then error('spend-cap: a reservation names ' .. name .. ', which is not among the KEYS') end
    if redis.call('EXISTS', key) == 1 then redis.pcall('INCRBY', key, delta) end
  end
end
