-- cors: a config compiled once into what requests need: origin sets, regexes, header values.
local regex = require("sluice.plugins.cors.regex")

local ipairs = ipairs
local math_floor = math.floor
local setmetatable = setmetatable
local str_find = string.find
local str_format = string.format
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub
local tbl_concat = table.concat

-- Kong's test for an origin written as a plain string; anything else
-- (besides "*") is a regex.
local PLAIN_ORIGIN = "^[%w%.:/%-]+$"
local DEFAULT_PORTS = { http = "80", https = "443" }
-- How many distinct request origins each config remembers the verdict for;
-- past this the memo starts over (a client can send any Origin it likes).
-- Longer origins than MEMO_MAX_LEN (no real one is: a host name is at most
-- 253 bytes) are matched every time, so the memo stays under ~300 KB.
local MEMO_SIZE = 1024
local MEMO_MAX_LEN = 300

local _M = {}

-- Per worker: config table -> its compiled policy (shape in compile below).
local compiled = setmetatable({}, { __mode = "k" })

-- "HTTPS://Example.com:443/" -> "https://example.com": the origin a browser
-- would send for it (scheme and host in lower case, no default port, no
-- path). Strings without "://" ("null") are kept as they are.
function _M.normalize(origin)
  local scheme, rest = str_match(origin, "^(%a[%w+.%-]*)://(.*)$")
  if not scheme then
    return origin
  end
  scheme = str_lower(scheme)
  local slash = str_find(rest, "/", 1, true)
  if slash then
    rest = str_sub(rest, 1, slash - 1)
  end
  rest = str_lower(rest)
  local host, port = str_match(rest, "^(.*):(%d+)$")
  if host and DEFAULT_PORTS[scheme] == port
      and (str_sub(host, 1, 1) == "[" or not str_find(host, ":", 1, true)) then
    rest = host
  end
  return scheme .. "://" .. rest
end

-- The host of a normalized origin ("https://[::1]:8443" -> "[::1]"), or
-- the origin itself when it has no scheme.
local function host_of(origin)
  local rest = str_match(origin, "^[^:/]+://(.*)$")
  if not rest then
    return origin
  end
  if str_sub(rest, 1, 1) == "[" then
    return str_match(rest, "^(%[[^%]]*%])") or rest
  end
  return str_match(rest, "^([^:]*)") or rest
end
_M.host_of = host_of

-- Whether an origins entry is a regex (as Kong tells them apart).
function _M.is_regex(entry)
  return entry ~= "*" and not str_find(entry, PLAIN_ORIGIN)
end

local function joined(list)
  if list == nil or #list == 0 then
    return nil
  end
  return tbl_concat(list, ",")
end

-- Compiles conf into:
--   { allow_all = origins empty or holding "*",
--     exact = { [normalized origin] = true }, regexes = { { re =, by_host = } },
--     single = the one plain origin when origins holds just that (for
--       requests without an Origin, as Kong),
--     echo = whether Access-Control-Allow-Origin repeats the request's Origin
--       (false: "*"),
--     vary = whether an actual request's answer depends on its Origin,
--     preflight = the constant headers of an allowed preflight's answer,
--     refused = the headers of a refused preflight's answer,
--     expose = the Access-Control-Expose-Headers value or nil,
--     echo_headers = whether a preflight echoes Access-Control-Request-Headers,
--     memo = { [request origin] = true | false }, memo_n = its size }
-- Raises on a regex PCRE2 refuses (the schema refused it first).
local function compile(conf)
  local p = { exact = {}, regexes = {}, memo = {}, memo_n = 0 }
  local origins = conf.origins or {}
  local plain = 0
  p.allow_all = #origins == 0
  for _, entry in ipairs(origins) do
    if entry == "*" then
      p.allow_all = true
    elseif _M.is_regex(entry) then
      local re = assert(regex.compile(entry))
      -- Kong: a regex without ':' is matched against the origin's host only.
      p.regexes[#p.regexes + 1] = { re = re, by_host = not str_find(entry, ":", 1, true) }
    else
      local o = _M.normalize(entry)
      p.exact[o] = true
      p.single = o
      plain = plain + 1
    end
  end
  if plain ~= 1 or #origins ~= 1 then
    p.single = nil
  end
  p.credentials = conf.credentials
  p.echo = not p.allow_all or conf.credentials
  p.vary = p.echo or not conf.allow_origin_absent
  p.expose = joined(conf.exposed_headers)

  local allow_headers = joined(conf.headers)
  p.echo_headers = allow_headers == nil
  local vary = {}
  if p.echo then
    vary[#vary + 1] = "Origin"
  end
  if p.echo_headers then
    vary[#vary + 1] = "Access-Control-Request-Headers"
  end
  if conf.private_network then
    vary[#vary + 1] = "Access-Control-Request-Private-Network"
  end
  vary = #vary > 0 and tbl_concat(vary, ", ") or nil

  p.preflight = {
    ["Access-Control-Allow-Methods"] = tbl_concat(conf.methods, ","),
    ["Access-Control-Allow-Headers"] = allow_headers,
    ["Access-Control-Max-Age"] = conf.max_age and str_format("%d", math_floor(conf.max_age)),
    ["Access-Control-Allow-Credentials"] = conf.credentials and "true" or nil,
    ["Vary"] = vary,
  }
  -- A refused origin learns nothing but that the answer depends on it.
  p.refused = { ["Vary"] = p.echo and "Origin" or nil }
  return p
end

-- The compiled policy of conf, compiled on first use (configure does it
-- for every config in use when the worker starts).
function _M.get(conf)
  local p = compiled[conf]
  if not p then
    p = compile(conf)
    compiled[conf] = p
  end
  return p
end

-- Whether origin (a request's Origin header) is allowed by policy p.
-- Exact origins are a table lookup; a miss is normalized and tried
-- against the regexes once, and the verdict remembered.
function _M.allowed(p, origin)
  if p.allow_all or p.exact[origin] then
    return true
  end
  local verdict = p.memo[origin]
  if verdict ~= nil then
    return verdict
  end
  local o = _M.normalize(origin)
  verdict = p.exact[o] == true
  if not verdict then
    local regexes = p.regexes
    for i = 1, #regexes do
      local r = regexes[i]
      if r.re:matches(r.by_host and host_of(o) or o) then
        verdict = true
        break
      end
    end
  end
  if #origin <= MEMO_MAX_LEN then
    if p.memo_n >= MEMO_SIZE then
      p.memo, p.memo_n = {}, 0
    end
    p.memo[origin] = verdict
    p.memo_n = p.memo_n + 1
  end
  return verdict
end

return _M
