-- proxy-cache/cache.lua: entry keys, the stored form of a response, and the
-- Cache-Control rules the handler applies.
--
-- An entry is one string in the shared dict, so a hit costs one dict read:
--   "<status>\n<stored_at>\n<ttl>\n" .. "name: value\n" ... .. "\n" .. body
-- stored_at is a Unix time in seconds (with a fraction), ttl whole seconds.
-- Header values cannot hold a newline (sluice's parser refuses them), so a
-- newline always ends a line of the head.
local crypto = require("sluice.crypto")

local sluice = sluice

local ipairs = ipairs
local pairs = pairs
local tonumber = tonumber
local type = type
local math_floor = math.floor
local str_find = string.find
local str_format = string.format
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub
local tbl_concat = table.concat
local tbl_sort = table.sort

local _M = {}

-- Response headers never stored: hop-by-hop ones, the framing (the hit gets
-- its own Content-Length) and the cache's own.
local NOT_STORED = {
  connection = true, ["keep-alive"] = true, ["transfer-encoding"] = true, te = true,
  trailer = true, upgrade = true, ["proxy-authenticate"] = true, ["content-length"] = true,
  age = true, ["x-cache-status"] = true, ["x-cache-key"] = true,
}

-- The query part of the key: every argument sorted by name (so ?a=1&b=2 and
-- ?b=2&a=1 share an entry), or only the configured ones, in their order.
local function query_part(only)
  if only then
    local parts = {}
    for i, name in ipairs(only) do
      local v = sluice.request.get_query_arg(name)
      if type(v) == "table" then
        v = tbl_concat(v, ",")
      end
      parts[i] = name .. "=" .. (v == true and "" or v or "")
    end
    return tbl_concat(parts, "&")
  end
  if sluice.request.get_raw_query() == "" then
    return ""
  end
  local args = sluice.request.get_query()
  local names = {}
  for k in pairs(args) do
    names[#names + 1] = k
  end
  tbl_sort(names)
  for i, k in ipairs(names) do
    local v = args[k]
    if type(v) == "table" then
      v = tbl_concat(v, ",")
    elseif v == true then
      v = ""
    end
    names[i] = k .. "=" .. v
  end
  return tbl_concat(names, "&")
end

-- Keys made lately, per worker: what was hashed -> its key, so that a hot
-- URL is hashed once. Emptied when it holds MAX_MEMO of them.
local MAX_MEMO = 4096
local memo, memo_n = {}, 0

-- The key of the request's entry: 32 hex digits (Kong's length) of a SHA-256
-- over the route, the consumer (only when authorized requests are cached),
-- method, host, path, query and the vary_headers' values. method overrides
-- the request's (a purge computes a GET's key).
function _M.key(conf, method, consumer_id)
  local route = sluice.router.get_route()
  local path = sluice.request.get_path()
  if conf.ignore_uri_case then
    path = str_lower(path)
  end
  local parts = { route and route.id or "", consumer_id or "", method,
                  str_lower(sluice.request.get_host()), path, query_part(conf.vary_query_params) }
  for _, name in ipairs(conf.vary_headers) do
    local v = sluice.request.get_header(name)
    if type(v) == "table" then
      v = tbl_concat(v, ",")
    end
    parts[#parts + 1] = v or ""
  end
  local raw = tbl_concat(parts, "\n")
  local key = memo[raw]
  if not key then
    if memo_n >= MAX_MEMO then
      memo, memo_n = {}, 0
    end
    key = str_sub(crypto.hex(crypto.sha256(raw)), 1, 32)
    memo[raw], memo_n = key, memo_n + 1
  end
  return key
end

-- The stored form of a response (see the top of the file). headers is what
-- sluice.response.get_headers returned.
function _M.encode(status, headers, body, stored_at, ttl)
  local buf = { status, "\n", str_format("%.3f", stored_at), "\n", ttl, "\n" }
  local n = #buf
  for name, v in pairs(headers) do
    if not NOT_STORED[str_lower(name)] then
      if type(v) == "table" then
        for _, one in ipairs(v) do
          buf[n + 1], buf[n + 2], buf[n + 3], buf[n + 4] = name, ": ", one, "\n"
          n = n + 4
        end
      else
        buf[n + 1], buf[n + 2], buf[n + 3], buf[n + 4] = name, ": ", v, "\n"
        n = n + 4
      end
    end
  end
  buf[n + 1], buf[n + 2] = "\n", body
  return tbl_concat(buf)
end

-- Entries decoded lately, per worker: the stored string -> { status,
-- headers, body, stored_at, ttl }. The dict hands the same bytes back as the
-- same (interned) Lua string, so a hot entry is decoded once; a changed entry
-- is another string. Emptied when it holds MAX_MEMO of them.
local decoded, decoded_n = {}, 0

local decode

-- The parts of a stored entry, decoded once per worker (see decoded): status,
-- headers (name -> value, or a list for a repeated one; shared by the hits
-- of this entry, which only set the cache's own headers in it), body,
-- stored_at, ttl; nil when s is not an entry.
function _M.decode_cached(s)
  local d = decoded[s]
  if not d then
    local status, headers, body, stored_at, ttl = decode(s)
    if not status then
      return nil
    end
    if decoded_n >= MAX_MEMO then
      decoded, decoded_n = {}, 0
    end
    d = { status, headers, body, stored_at, ttl }
    decoded[s], decoded_n = d, decoded_n + 1
  end
  return d[1], d[2], d[3], d[4], d[5]
end

-- The parts of a stored entry: status, headers (a fresh table for
-- sluice.response.exit: name -> value, or a list for a repeated one),
-- body, stored_at, ttl; nil when s is not an entry.
decode = function(s)
  local e1 = str_find(s, "\n", 1, true)
  local e2 = e1 and str_find(s, "\n", e1 + 1, true)
  local e3 = e2 and str_find(s, "\n", e2 + 1, true)
  if not e3 then
    return nil
  end
  local status = tonumber(str_sub(s, 1, e1 - 1))
  local stored_at = tonumber(str_sub(s, e1 + 1, e2 - 1))
  local ttl = tonumber(str_sub(s, e2 + 1, e3 - 1))
  local headers = {}
  local pos = e3 + 1
  while true do
    local eol = str_find(s, "\n", pos, true)
    if not eol then
      return nil
    end
    if eol == pos then
      break
    end
    local colon = str_find(s, ": ", pos, true)
    if not colon or colon > eol then
      return nil
    end
    local name, value = str_sub(s, pos, colon - 1), str_sub(s, colon + 2, eol - 1)
    local prev = headers[name]
    if prev == nil then
      headers[name] = value
    elseif type(prev) == "table" then
      prev[#prev + 1] = value
    else
      headers[name] = { prev, value }
    end
    pos = eol + 1
  end
  return status, headers, str_sub(s, pos + 1), stored_at, ttl
end
_M.decode = decode

-- Cache-Control directives of a header value (a string or a list), as
-- { ["no-store"] = true, ["max-age"] = 60, ... } (numbers for numeric
-- directives), or nil when there is none.
function _M.cache_control(v)
  if v == nil then
    return nil
  end
  if type(v) == "table" then
    v = tbl_concat(v, ",")
  end
  local out = {}
  for part in v:gmatch("[^,]+") do
    local name, value = str_match(part, "^%s*([%w%-]+)%s*=?%s*\"?([^\"]*)\"?%s*$")
    if name then
      name = str_lower(name)
      out[name] = tonumber(value) or (value ~= "" and value) or true
    end
  end
  return out
end

-- Seconds until an HTTP date (IMF-fixdate, as Expires carries) from now, or
-- nil when v is not such a date. A date in the past gives a value <= 0.
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                 Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

function _M.seconds_until(v, now)
  if type(v) ~= "string" then
    return nil
  end
  local d, mon, y, h, mi, sec = str_match(v,
    "^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = MONTHS[mon]
  if not m then
    return nil
  end
  -- Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm), in UTC.
  y = tonumber(y)
  if m <= 2 then
    y = y - 1
  end
  local era = math_floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math_floor((153 * mp + 2) / 5) + tonumber(d) - 1
  local doe = yoe * 365 + math_floor(yoe / 4) - math_floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec) - now
end

-- Whether the media type ctype (a Content-Type value, or nil) is one of the
-- configured ones: entries are lower-cased at configure time into
-- { exact = { ["type/sub"] = true }, with_params = { ["type/sub;a=b"] = true },
-- wildcard_types = { ["text"] = true }, any = true|nil } (see _M.content_types).
function _M.content_type_allowed(types, ctype)
  if types.any then
    return true
  end
  if type(ctype) ~= "string" then
    return false
  end
  local lowered = str_lower(ctype)
  local media = str_match(lowered, "^%s*([^;%s]+)")
  if not media then
    return false
  end
  if types.exact[media] then
    return true
  end
  if types.wildcard_types[str_match(media, "^([^/]+)/")] then
    return true
  end
  return types.with_params[(lowered:gsub("%s", ""))] == true
end

-- The configured content_type list, compiled for content_type_allowed.
function _M.content_types(list)
  local t = { exact = {}, with_params = {}, wildcard_types = {} }
  for _, v in ipairs(list) do
    v = str_lower(v):gsub("%s", "")
    if v == "*/*" then
      t.any = true
    elseif str_find(v, ";", 1, true) then
      t.with_params[v] = true
    else
      local main, sub = str_match(v, "^([^/]+)/(.+)$")
      if sub == "*" then
        t.wildcard_types[main] = true
      else
        t.exact[v] = true
      end
    end
  end
  return t
end

return _M
