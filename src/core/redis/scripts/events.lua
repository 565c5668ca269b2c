-- A page of an org's events, oldest first: from a start, or the newest ones.
-- KEYS: sc:{ORG}:events.
-- ARGV: start ("-" or "(" .. after), count[, "latest": the newest `count` instead].
-- Reply: XRANGE's.
if ARGV[3] == 'latest' then
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])
  local page = {}
  for i = #newest, 1, -1 do page[#page + 1] = newest[i] end
  return page
end
return redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
