-- Redis's clock in ms (deadlines and the markers' lifetimes are on it).
-- uses: prelude
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
