-- proxy-cache: serves GET/HEAD responses from a shared dict every worker sees,
-- with request coalescing, Cache-Control and purging.
local cache = require("sluice.plugins.proxy-cache.cache")

local sluice = sluice

local ipairs = ipairs
local setmetatable = setmetatable
local tbl_concat = table.concat
local math_floor = math.floor
local math_max = math.max
local tonumber = tonumber
local tostring = tostring
local type = type

local DEFAULT_DICT_SIZE = 16 * 1024 * 1024
local LOCK_PREFIX = "lock:"
local LOCK_POLL = 0.005 -- seconds between two looks at an entry another request fetches

local ProxyCache = {
  PRIORITY = 100, -- Kong's: after authentication, rate limiting and transformations
  VERSION = "1.0.0",
  SHARED_DICTS = function(conf)
    return { [conf.memory.dictionary_name] = DEFAULT_DICT_SIZE }
  end,
}

-- Per config, compiled once: conf -> { methods = { GET = true }, codes = {
-- [200] = true }, types = (cache.content_types), headers = the X-Cache-*
-- switches }.
local compiled = setmetatable({}, { __mode = "k" })
-- Per worker: how many coalescing locks its requests hold now (log only
-- looks for one in a request's context when some are held).
local held = 0

local function compile(conf)
  local c = compiled[conf]
  if c then
    return c
  end
  c = { methods = {}, codes = {}, types = cache.content_types(conf.content_type),
        age = conf.response_headers.age,
        status = conf.response_headers["X-Cache-Status"],
        key = conf.response_headers["X-Cache-Key"] }
  for _, m in ipairs(conf.request_method) do
    c.methods[m] = true
  end
  for _, code in ipairs(conf.response_code) do
    c.codes[code] = true
  end
  compiled[conf] = c
  return c
end

function ProxyCache.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    compile(conf)
  end
end

local function dict_of(conf)
  local d = sluice.shared[conf.memory.dictionary_name]
  if not d then
    error("proxy-cache: the shared dict '" .. conf.memory.dictionary_name .. "' does not exist")
  end
  return d
end

local function consumer_id()
  local c = sluice.client.get_consumer()
  return c and c.id or ""
end

-- Answers from a stored entry (headers: its shared table, see
-- cache.decode_cached). status_word: "Hit". header_filter and log see an
-- exit and have nothing to do.
local function serve(c, key, status, headers, body, stored_at, status_word)
  if c.age then
    headers["Age"] = tostring(math_max(0, math_floor(sluice.now() - stored_at)))
  end
  if c.status then
    headers["X-Cache-Status"] = status_word
  end
  if c.key then
    headers["X-Cache-Key"] = key
  end
  return sluice.response.exit(status, body, headers)
end

-- A stored entry still fresh for this request: status, headers, body,
-- stored_at; or nil, and whether an entry was there but stale for this
-- request (then it is fetched again: Refresh). max_age: the request's
-- Cache-Control max-age (cache_control only).
local function fresh(value, now, max_age)
  if not value then
    return nil, false
  end
  local status, headers, body, stored_at, ttl = cache.decode_cached(value)
  if not status then
    return nil, false
  end
  local age = now - stored_at
  if age >= ttl or (max_age and age > max_age) then
    return nil, true
  end
  return status, headers, body, stored_at
end

local function purge(conf, dict)
  local key = sluice.request.get_header("X-Cache-Key")
  if type(key) ~= "string" then
    key = cache.key(conf, "GET", conf.cache_authorized and consumer_id() or nil)
  end
  local existed = dict:get(key) ~= nil
  dict:delete(key)
  if existed then
    return sluice.response.exit(200, { message = "purged", key = key })
  end
  return sluice.response.exit(404, { message = "not in cache", key = key })
end

function ProxyCache.access(_, conf)
  local c = compiled[conf] or compile(conf)
  local dict = dict_of(conf)
  local method = sluice.request.get_method()
  if method == conf.purge_method then
    return purge(conf, dict)
  end
  if not c.methods[method]
      or (not conf.cache_authorized and sluice.request.get_header("Authorization")) then
    sluice.ctx.plugin.state = "Bypass"
    return
  end
  local req_cc = conf.cache_control and cache.cache_control(sluice.request.get_header(
    "Cache-Control"))
  if req_cc and req_cc["no-store"] then
    sluice.ctx.plugin.state = "Bypass"
    return
  end
  -- A HEAD is answered from the GET's entry, as nginx does; it never stores one.
  local key = cache.key(conf, method == "HEAD" and "GET" or method,
    conf.cache_authorized and consumer_id() or nil)
  local now = sluice.now()
  local max_age = req_cc and type(req_cc["max-age"]) == "number" and req_cc["max-age"] or nil
  local refresh = req_cc and (req_cc["no-cache"] or max_age == 0)
  local status, headers, body, stored_at
  local stale = false
  if not refresh then
    -- A hit makes no per-request table: no sluice.ctx (header_filter and
    -- log know a hit by its source, "exit").
    status, headers, body, stored_at = fresh(dict:get(key), now, max_age)
    if status then
      return serve(c, key, status, headers, body, stored_at, "Hit")
    end
    stale = headers
  end
  local pctx = sluice.ctx.plugin
  pctx.key = key
  if req_cc and req_cc["only-if-cached"] then
    return sluice.response.exit(504, { message = "not in cache" })
  end
  pctx.state = (refresh or stale) and "Refresh" or "Miss"
  -- Coalescing: the first request for a missing entry fetches it; the others
  -- wait for it to be stored, up to lock_timeout, then fetch themselves.
  local timeout = conf.lock_timeout
  if timeout > 0 and not refresh then
    local lock = LOCK_PREFIX .. key
    if dict:add(lock, 1, timeout) then
      pctx.lock = lock
      held = held + 1
      return
    end
    local deadline = now + timeout
    repeat
      sluice.sleep(LOCK_POLL)
      status, headers, body, stored_at = fresh(dict:get(key), sluice.now())
      if status then
        return serve(c, key, status, headers, body, stored_at, "Hit")
      end
    until dict:get(lock) == nil or sluice.now() >= deadline
  end
end

local function unlock(conf, pctx)
  if pctx.lock then
    sluice.shared[conf.memory.dictionary_name]:delete(pctx.lock)
    pctx.lock = nil
    held = held - 1
  end
end

-- The TTL a response may be stored with, or nil when it must not be stored.
local function storable_ttl(conf, c)
  local status = sluice.response.get_status()
  if not c.codes[status] or sluice.response.get_source() ~= "service" then
    return nil
  end
  if not cache.content_type_allowed(c.types, sluice.response.get_header("Content-Type")) then
    return nil
  end
  -- Never stored, whatever cache_control says: a response for one client, one
  -- that says so, or one that varies on everything.
  if sluice.response.get_header("Set-Cookie") or sluice.response.get_header("Vary") == "*" then
    return nil
  end
  local cc = cache.cache_control(sluice.response.get_header("Cache-Control"))
  if cc and (cc["no-store"] or cc["private"]) then
    return nil
  end
  if not conf.cache_control then
    return conf.cache_ttl
  end
  if cc and cc["no-cache"] then
    return nil
  end
  local ttl = cc and (type(cc["s-maxage"]) == "number" and cc["s-maxage"]
    or type(cc["max-age"]) == "number" and cc["max-age"])
  if not ttl then
    ttl = cache.seconds_until(sluice.response.get_header("Expires"), sluice.now())
  end
  if ttl == nil then
    return conf.cache_ttl
  end
  ttl = math_floor(ttl)
  return ttl > 0 and ttl or nil
end

function ProxyCache.header_filter(_, conf)
  if sluice.response.get_source() == "exit" then -- a hit, a purge: answered already
    return
  end
  local pctx = sluice.ctx.plugin
  local state = pctx.state
  if state == nil then
    return
  end
  local c = compile(conf)
  if state ~= "Bypass" then
    local ttl = sluice.request.get_method() ~= "HEAD" and storable_ttl(conf, c)
    if ttl then
      local length = sluice.response.get_header("Content-Length")
      if not (length and tonumber(length) and tonumber(length) > conf.max_body_size) then
        pctx.store = { ttl = ttl, size = 0, status = sluice.response.get_status(),
                       headers = sluice.response.get_headers(), stored_at = sluice.now() }
      end
    end
    if not pctx.store then
      unlock(conf, pctx)
      state = "Bypass"
    end
  end
  if c.status then
    sluice.response.set_header("X-Cache-Status", state)
  end
  if c.key and pctx.key then
    sluice.response.set_header("X-Cache-Key", pctx.key)
  end
end

-- The body of a response being stored, collected as it streams to the
-- client (it gets every piece at once, unchanged).
function ProxyCache.body_filter(_, conf)
  local pctx = sluice.ctx.plugin
  local s = pctx.store
  if not s then
    return
  end
  local chunk, eof = sluice.response.get_chunk()
  s.size = s.size + #chunk
  if s.size > conf.max_body_size then
    pctx.store = nil
    unlock(conf, pctx)
    return
  end
  s[#s + 1] = chunk
  if eof then
    pctx.store = nil
    local storage = conf.storage_ttl and math_max(conf.storage_ttl, s.ttl) or s.ttl
    local value = cache.encode(s.status, s.headers, tbl_concat(s), s.stored_at, s.ttl)
    local ok, err = sluice.shared[conf.memory.dictionary_name]:set(pctx.key, value, storage)
    if not ok then
      sluice.log.warn("could not store ", pctx.key, ": ", err)
    end
    unlock(conf, pctx)
  end
end

-- A request that ended before its response was stored (the client left, the
-- upstream failed) lets the requests waiting for it go.
function ProxyCache.log(_, conf)
  -- A hit (an exit) took no lock; a later plugin's exit after a miss may
  -- have left one.
  if held > 0 or sluice.response.get_source() ~= "exit" then
    unlock(conf, sluice.ctx.plugin)
  end
end

return ProxyCache
