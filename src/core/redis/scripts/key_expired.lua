-- The first refusal of an expired key tells it once (key_expired).
-- KEYS: the marker sc:{ORG}:expired:KEY_ID:EXPIRES_AT, the events stream.
-- ARGV: key id, expires_at (RFC 3339), the marker's EXPIREAT (unix seconds).
-- uses: prelude, events
if first_time(KEYS[1], ARGV[3]) then
  append_event(KEYS[2], {'type', 'key_expired', 'id', ARGV[1], 'expires_at', ARGV[2]})
end
return 1
