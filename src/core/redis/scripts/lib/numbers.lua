-- Exact integer arithmetic on Redis's integer strings (Lua 5.1 numbers are
-- doubles): amounts never pass through a double on their way to a check.
-- uses: prelude
-- a <= b for integer strings as Redis writes them (no leading zeros, '-' sign)
local function le(a, b)
  local a_neg, b_neg = string.byte(a, 1) == 45, string.byte(b, 1) == 45
  if a_neg ~= b_neg then return a_neg end
  if #a ~= #b then return (#a < #b) ~= a_neg end
  if a_neg then return a >= b end
  return a <= b
end

local function is_int(v)
  return v == '0' or string.find(v, '^%-?[1-9]%d*$') ~= nil
end

local function int_at(key)
  local v = redis.call('GET', key) or '0'
  if not is_int(v) then
    error('spend-cap: ' .. key .. ' does not hold an integer')
  end
  return v
end

-- The exact sum of two integer strings (int64 range), as a string: each is
-- split into hi * 1e9 + lo, parts a double holds exactly.
local function split(s)
  local neg = string.byte(s, 1) == 45
  local digits = neg and string.sub(s, 2) or s
  local hi, lo = tonumber(string.sub(digits, 1, -10)) or 0, tonumber(string.sub(digits, -9))
  if neg then return -hi, -lo end
  return hi, lo
end

local function add(a, b)
  -- below 10^15 a double is exact: the common case, without splitting
  if #a < 16 and #b < 16 then return string.format('%.0f', tonumber(a) + tonumber(b)) end
  local ah, al = split(a)
  local bh, bl = split(b)
  local h, l = ah + bh, al + bl
  h, l = h + math.floor(l / 1e9), l % 1e9
  if h < 0 and l > 0 then h, l = h + 1, l - 1e9 end
  if h == 0 then return string.format('%.0f', l) end
  return string.format('%.0f', h) .. string.format('%09.0f', math.abs(l))
end

-- Within one script, values below 2^53 in size are kept as Lua numbers (a
-- double holds them, and a sum tells when it leaves that range), larger
-- ones as integer strings: num() and str() convert, nadd() and nle() are
-- add() and le().
local two53 = 9007199254740992
local function num(s)
  local v = tonumber(s)
  if v and v < two53 and v > -two53 then return v end
  return s
end
local function str(v)
  if type(v) == 'number' then return string.format('%.0f', v) end
  return v
end
local function nadd(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    local r = a + b
    if r < two53 and r > -two53 then return r end
  end
  return num(add(str(a), str(b)))
end
local function nle(a, b)
  if type(a) == 'number' and type(b) == 'number' then return a <= b end
  return le(str(a), str(b))
end

-- A counter's value as a reply integer: a double near 2^63 would round
-- past int64 (undefined in Redis's conversion), so it is clamped below.
local function int_reply(v) return math.min(v, 9223372036854774784) end

-- The negation of an integer string (the worker never sends INT64_MIN).
local function neg(d)
  if d == '0' then return d end
  if string.byte(d, 1) == 45 then return string.sub(d, 2) end
  return '-' .. d
end
