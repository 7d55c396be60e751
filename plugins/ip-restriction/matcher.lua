-- ip-restriction's matcher: IPv4/IPv6 address and CIDR lists compiled into one hash set
-- per prefix length, so a lookup costs one probe per distinct length (at most 33 for
-- IPv4, 129 for IPv6) whatever the list's size.
--
-- Addresses are parsed by hand from their text into 32-bit words (IPv4: one
-- word, IPv6: four), without allocating: the request path only reads bytes
-- and does bit operations. A set for IPv4 length L maps the address masked to
-- L bits to true; a set for IPv6 length L nests by word (set[w1][w2]...) down
-- to the last word the prefix touches, so no key string is ever built.
local bit = require("bit")

local band = bit.band
local bor = bit.bor
local lshift = bit.lshift
local rshift = bit.rshift
local tobit = bit.tobit
local ipairs = ipairs
local tonumber = tonumber
local error = error
local str_byte = string.byte
local tbl_sort = table.sort
local math_ceil = math.ceil

local B_0, B_9, B_DOT, B_COLON = 48, 57, 46, 58
local B_a, B_f, B_A, B_F = 97, 102, 65, 70

local _M = {}

-- Reusable output of the IPv6 parser: eight 16-bit groups.
local groups = { 0, 0, 0, 0, 0, 0, 0, 0 }

-- Parses dotted-quad IPv4 in s[i, j]: the address as a signed 32-bit word, or nil.
local function parse_v4(s, i, j)
  local word, octet, digits, dots = 0, 0, 0, 0
  for k = i, j do
    local c = str_byte(s, k)
    if c >= B_0 and c <= B_9 then
      -- No leading zeros ("01"): they read as octal elsewhere.
      if digits > 0 and octet == 0 then
        return nil
      end
      octet = octet * 10 + (c - B_0)
      digits = digits + 1
      if octet > 255 then
        return nil
      end
    elseif c == B_DOT then
      if digits == 0 or dots == 3 then
        return nil
      end
      word = bor(lshift(word, 8), octet)
      octet, digits, dots = 0, 0, dots + 1
    else
      return nil
    end
  end
  if digits == 0 or dots ~= 3 then
    return nil
  end
  return tobit(bor(lshift(word, 8), octet))
end

local function hex_value(c)
  if c >= B_0 and c <= B_9 then
    return c - B_0
  elseif c >= B_a and c <= B_f then
    return c - B_a + 10
  elseif c >= B_A and c <= B_F then
    return c - B_A + 10
  end
  return nil
end

-- Parses IPv6 text in s[i, j] (with "::" and a trailing dotted quad) into
-- `groups`. Returns true, or nil for anything else (zone ids included).
local function parse_v6(s, i, j)
  local n, gap = 0, nil -- groups written, index where "::" stands
  local k = i
  if j - i < 1 then
    return nil
  end
  if str_byte(s, k) == B_COLON then
    if str_byte(s, k + 1) ~= B_COLON then
      return nil
    end
    gap = 0
    k = k + 2
    if k > j then
      for g = 1, 8 do
        groups[g] = 0
      end
      return true
    end
  end
  while k <= j do
    local start, value, digits = k, 0, 0
    while k <= j do
      local h = hex_value(str_byte(s, k))
      if not h then
        break
      end
      value = value * 16 + h
      digits = digits + 1
      k = k + 1
    end
    if k <= j and str_byte(s, k) == B_DOT then
      -- A dotted quad ends the address and fills two groups.
      if n > 6 then
        return nil
      end
      local w = parse_v4(s, start, j)
      if not w then
        return nil
      end
      groups[n + 1] = band(rshift(w, 16), 0xffff)
      groups[n + 2] = band(w, 0xffff)
      n = n + 2
      break
    end
    if digits == 0 or digits > 4 or n == 8 then
      return nil
    end
    n = n + 1
    groups[n] = value
    if k > j then
      break
    end
    if str_byte(s, k) ~= B_COLON then
      return nil
    end
    k = k + 1
    if k <= j and str_byte(s, k) == B_COLON then
      if gap then
        return nil
      end
      gap = n
      k = k + 1
      if k > j then
        break
      end
    elseif k > j then
      return nil -- a trailing single ':'
    end
  end
  if gap then
    if n == 8 then
      return nil
    end
    -- Move the groups after "::" to the end, zero the hole.
    local tail = n - gap
    for g = tail, 1, -1 do
      groups[8 - tail + g] = groups[gap + g]
    end
    for g = gap + 1, 8 - tail do
      groups[g] = 0
    end
  elseif n ~= 8 then
    return nil
  end
  return true
end

-- Parses an address: 4, word for IPv4; 6, w1, w2, w3, w4 for IPv6 (signed
-- 32-bit words); nil when s is neither. s[i, j] defaults to the whole string.
local function parse(s, i, j)
  i, j = i or 1, j or #s
  local w = parse_v4(s, i, j)
  if w then
    return 4, w
  end
  if not parse_v6(s, i, j) then
    return nil
  end
  local g = groups
  return 6, tobit(bor(lshift(g[1], 16), g[2])), tobit(bor(lshift(g[3], 16), g[4])),
    tobit(bor(lshift(g[5], 16), g[6])), tobit(bor(lshift(g[7], 16), g[8]))
end
_M.parse = parse

-- MASKS[b]: the top b bits of a word set (b from 0 to 32).
local MASKS = { [0] = 0 }
for b = 1, 32 do
  MASKS[b] = b == 32 and tobit(0xffffffff) or tobit(lshift(-1, 32 - b))
end

-- The part of a word (1 to 4) a prefix of `len` bits keeps.
local function word_mask(len, word)
  local b = len - 32 * (word - 1)
  if b <= 0 then
    return 0
  end
  return MASKS[b > 32 and 32 or b]
end

-- Parses "ADDR" or "ADDR/LEN": family, len, words; or nil, err.
function _M.parse_cidr(s)
  local slash = s:find("/", 1, true)
  local family, w1, w2, w3, w4 = parse(s, 1, slash and slash - 1 or #s)
  if not family then
    return nil, "invalid IP address or CIDR block '" .. s .. "'"
  end
  local max = family == 4 and 32 or 128
  local len = max
  if slash then
    local digits = s:sub(slash + 1)
    if not digits:find("^%d%d?%d?$") or (#digits > 1 and digits:sub(1, 1) == "0") then
      return nil, "invalid prefix length in '" .. s .. "'"
    end
    len = tonumber(digits)
    if len > max then
      return nil, "invalid prefix length in '" .. s .. "': at most " .. max
    end
  end
  return family, len, w1, w2, w3, w4
end

-- Compiles a list of addresses and CIDR blocks (already validated) into a
-- matcher: { v4 = { lens = { longest first }, [len] = set },
-- v6 = { lens = ..., [len] = nested set } }. Host bits beyond a prefix are
-- ignored ("10.1.2.3/8" is 10.0.0.0/8).
function _M.compile(list)
  local m = { v4 = { lens = {} }, v6 = { lens = {} } }
  for _, entry in ipairs(list) do
    local family, len, w1, w2, w3, w4 = _M.parse_cidr(entry)
    if not family then
      error(len, 2)
    end
    if family == 4 then
      local sets = m.v4
      local set = sets[len]
      if not set then
        set = {}
        sets[len] = set
        sets.lens[#sets.lens + 1] = len
      end
      set[band(w1, MASKS[len])] = true
    else
      local sets = m.v6
      local words = { w1, w2, w3, w4 }
      local depth = math_ceil(len / 32)
      if not sets[len] then
        sets[len] = depth == 0 and true or {}
        sets.lens[#sets.lens + 1] = len
      end
      local node = sets[len]
      for k = 1, depth do
        local key = band(words[k], word_mask(len, k))
        if k == depth then
          node[key] = true
        else
          local child = node[key]
          if not child then
            child = {}
            node[key] = child
          end
          node = child
        end
      end
    end
  end
  tbl_sort(m.v4.lens, function(a, b) return a > b end)
  tbl_sort(m.v6.lens, function(a, b) return a > b end)
  m.empty = #m.v4.lens == 0 and #m.v6.lens == 0
  return m
end

local function match_v6(sets, w1, w2, w3, w4)
  local lens = sets.lens
  for i = 1, #lens do
    local len = lens[i]
    local node = sets[len]
    if node == true then
      return true -- ::/0
    end
    node = node[band(w1, word_mask(len, 1))]
    if node == true then
      return true
    end
    if node then
      node = node[band(w2, word_mask(len, 2))]
      if node == true then
        return true
      end
      if node then
        node = node[band(w3, word_mask(len, 3))]
        if node == true then
          return true
        end
        if node and node[band(w4, word_mask(len, 4))] then
          return true
        end
      end
    end
  end
  return false
end

-- Does the address (the values parse returned) fall in the list m?
-- An IPv4-mapped IPv6 address (::ffff:a.b.c.d) also matches IPv4 entries.
function _M.match(m, family, w1, w2, w3, w4)
  if family == 4 then
    local sets = m.v4
    local lens = sets.lens
    for i = 1, #lens do
      local len = lens[i]
      if sets[len][band(w1, MASKS[len])] then
        return true
      end
    end
    return false
  end
  if w1 == 0 and w2 == 0 and w3 == 0xffff and _M.match(m, 4, w4) then
    return true
  end
  return match_v6(m.v6, w1, w2, w3, w4)
end

return _M
