-- The globals a script uses, read once: a global costs a table lookup each
-- time, a local none. Every script that uses a helper starts with this.
local ARGV, KEYS, redis = ARGV, KEYS, redis
local type, tonumber, unpack, ipairs = type, tonumber, unpack, ipairs
local string, math = string, math
