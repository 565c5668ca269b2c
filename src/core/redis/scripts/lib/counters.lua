-- Writing counters all or nothing.
-- uses: prelude, numbers
-- INCRBY keys[i] by deltas[i] for every i, all or nothing: an increment that
-- Redis refuses (it would overflow int64, the key holds no integer, OOM)
-- takes back those before it and its error is returned, so a script never
-- stops half-way. `values[i]` gets each counter's new value (a Lua number).
local function add_all(keys, deltas, expire_at, values)
  local created = {}
  for i = 1, #keys do
    -- a new counter is one whose value is the delta; a double cannot tell
    -- that past 2^53, so a delta that large asks first
    local fresh = #deltas[i] >= 16 and redis.call('EXISTS', keys[i]) == 0
    local v = redis.pcall('INCRBY', keys[i], deltas[i])
    if type(v) == 'table' then
      for j = i - 1, 1, -1 do
        -- back to what it was; a counter back at 0 reads the same deleted,
        -- and one this script created must not stay without its expiry
        if redis.call('INCRBY', keys[j], neg(deltas[j])) == 0 then redis.call('DEL', keys[j]) end
      end
      return v
    end
    created[i] = fresh or (#deltas[i] < 16 and v == tonumber(deltas[i]))
    values[i] = v
  end
  for i = 1, #keys do
    if created[i] and expire_at[i] ~= '0' then redis.call('EXPIREAT', keys[i], expire_at[i]) end
  end
  return nil
end
