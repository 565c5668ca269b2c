-- Events, and the markers that make each fire once.
-- uses: prelude
-- Events never stop a script: a stream key of the wrong type loses the event.
-- The org's name is published on sc:events, so that spend-cap-relay learns
-- of a new event at once without reading every org's stream (a message no
-- relay hears is found by its sweep).
local function append_event(stream, fields)
  local added = redis.pcall('XADD', stream, 'MAXLEN', '~', '10000', '*', unpack(fields))
  if type(added) == 'string' then
    redis.pcall('PUBLISH', 'sc:events', string.match(stream, '^sc:{(.*)}:events$') or stream)
  end
end

-- True the first time a marker is set; it expires with its counter. A
-- marker Redis refuses (OOM) just loses its event.
local function first_time(marker, expire_at)
  local set = redis.pcall('SET', marker, '1', 'NX')
  if not set or set.err then return false end
  if expire_at ~= '0' then redis.call('EXPIREAT', marker, expire_at) end
  return true
end
