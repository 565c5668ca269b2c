-- Giving back the reservations whose deadline has passed.
-- uses: prelude
-- Gives back the reservations of record `id` whose requests never settled.
-- A batch's record sc:{ORG}:resv:ID is a hash: per request id, "DELTA KEY\n"
-- lines (KEY without the prefix) that undo its reservation (a record made
-- before batches is a string: one request, id its own). Deleting the record
-- first makes it happen once; each request given back leaves
-- sc:{ORG}:released:RID for a day, so that its late settlement adds its real
-- cost. A counter that has expired since (a rate's minute) is not recreated.
local function release(prefix, deadlines, id)
  local record_key = prefix .. 'resv:' .. id
  redis.call('ZREM', deadlines, id)
  local kind = redis.call('TYPE', record_key)['ok']
  local entries
  if kind == 'hash' then
    entries = redis.call('HGETALL', record_key)
  elseif kind == 'string' then
    entries = {'', redis.call('GET', record_key)}
  else
    return 0
  end
  redis.call('DEL', record_key)
  for x = 1, #entries, 2 do
    for delta, key in string.gmatch(entries[x + 1], '(%S+) ([^\n]+)\n') do
      if redis.call('EXISTS', prefix .. key) == 1 then redis.pcall('INCRBY', prefix .. key, delta) end
    end
    if entries[x] ~= '' then redis.call('SET', prefix .. 'released:' .. entries[x], '1', 'EX', 86400) end
  end
  return #entries / 2
end

-- Redis's clock in ms.
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Releases the records in `deadlines` whose deadline (`now`, Redis's clock,
-- ms) has passed, at most `most`; returns how many requests.
local function release_expired(prefix, deadlines, most, now)
  local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, most)
  local released = 0
  for _, id in ipairs(due) do released = released + release(prefix, deadlines, id) end
  return released
end
