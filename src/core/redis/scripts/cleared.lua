-- Sets an org's cleared spend (plans' ceilings read it), with its audit event.
-- KEYS: sc:{ORG}:cleared, sc:{ORG}:events.
-- ARGV: cleared (nano-USD).
-- Reply: 1.
-- uses: events
redis.call('SET', KEYS[1], ARGV[1])
append_event(KEYS[2], {'type', 'cleared_changed', 'cleared_nanousd', ARGV[1], 'by', 'api'})
return 1
