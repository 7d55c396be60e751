-- introspect.lua: RFC 7662 introspection with a cache every worker shares, keyed by a
-- hash of the token, and one introspection per token at a time across workers.
--
--   local claims, err = introspect.lookup(st, token, extra)
--   -- claims: the answer's object for an active token; false: inactive (or
--   -- expired); nil, err: the endpoint could not say (down, slow, 5xx, not JSON).
--
-- The dict (DICT) holds, per token and endpoint (the key is the hex SHA-256
-- of st.salt, the token and, with introspect_request, the method and path):
--   "t:" .. h  ->  the answer's JSON for an active token, expiring at
--                  min(now + ttl, exp); INACTIVE for an inactive one
--                  (inactive_ttl)
--   "l:" .. h  ->  the owner id of the introspection under way (the lock),
--                  expiring after timeout + LOCK_MARGIN in case its worker dies
--   "f:" .. h  ->  owner id .. "\n" .. reason: that owner's introspection
--                  failed; its waiters answer with it (FAIL_TTL)
--
-- Waiting: a request that finds the lock taken polls the dict (2 ms, doubling
-- to 20 ms) for the answer or the failure, until timeout + LOCK_MARGIN. sluice
-- has no primitive that wakes one request from another, so this costs a few
-- dict reads per waiting request; an introspection storm costs one call.
local sluice = sluice
local crypto = require("sluice.crypto")
local json = require("cjson.safe")

local worker_id = sluice.worker.id
local sha256 = crypto.sha256
local hex = crypto.hex
local json_decode = json.decode
local math_min = math.min
local str_find = string.find
local str_gsub = string.gsub
local str_sub = string.sub
local pairs = pairs
local tonumber = tonumber
local type = type

local DICT = "oauth2-introspection"
local INACTIVE = "-"
local LOCK_MARGIN = 1
local FAIL_TTL = 2
local POLL_FIRST, POLL_MAX = 0.002, 0.02
local MAX_ANSWER = 1024 * 1024

-- Form encoding (application/x-www-form-urlencoded, RFC 3986 unreserved kept).
local FORM_ESCAPES = {}
for b = 0, 255 do
  FORM_ESCAPES[string.char(b)] = string.format("%%%02X", b)
end

local _M = { DICT = DICT }

-- Introspections this worker started: the owner ids of its locks.
local owner_seq = 0

function _M.form_escape(s)
  return (str_gsub(s, "[^%w%-%._~]", FORM_ESCAPES))
end

-- The cache key suffix for this token (and, when introspect_request is on,
-- the client's method and path): never the token itself.
function _M.hash(st, token, method, path)
  if st.introspect_request then
    return hex(sha256(st.salt .. method .. " " .. path .. "\n" .. token))
  end
  return hex(sha256(st.salt .. token))
end

-- Calls the endpoint. Returns the body of a 200 answer and its decoded object,
-- or nil, err.
local function call(st, token, method, path)
  local headers = st.headers
  if st.introspect_request then
    headers = {}
    for k, v in pairs(st.headers) do
      headers[k] = v
    end
    headers["X-Request-Path"] = path
    headers["X-Request-Http-Method"] = method
  end
  local res, err = sluice.http.request({
    method = "POST", url = st.url, headers = headers,
    body = "token=" .. _M.form_escape(token) .. st.body_tail,
    timeout = st.timeout, max_size = MAX_ANSWER,
  })
  if not res then
    return nil, err
  end
  if res.status ~= 200 then
    return nil, "the endpoint answered " .. res.status
  end
  local doc = json_decode(res.body)
  if type(doc) ~= "table" then
    return nil, "the endpoint's answer is not a JSON object"
  end
  if type(doc.active) ~= "boolean" then
    return nil, "the endpoint's answer has no boolean 'active'"
  end
  return res.body, doc
end

-- Introspects (this request holds the lock) and caches the answer. Returns
-- what lookup returns.
local function introspect(st, h, token, method, path, owner)
  local dict = sluice.shared[DICT]
  local body, doc = call(st, token, method, path)
  if not body then
    dict:set("f:" .. h, owner .. "\n" .. doc, FAIL_TTL)
    dict:delete("l:" .. h)
    return nil, doc
  end
  local claims = false
  local ttl = st.inactive_ttl
  if doc.active then
    local exp = tonumber(doc.exp)
    ttl = st.ttl
    if exp then
      local left = exp - sluice.now()
      if left <= 0 then
        ttl = st.inactive_ttl
      else
        ttl = ttl > 0 and math_min(ttl, left) or left
        claims = doc
      end
    else
      claims = doc
    end
  end
  local ok, err = true, nil
  if claims then
    ok, err = dict:set("t:" .. h, body, ttl)
  elseif ttl > 0 then
    ok, err = dict:set("t:" .. h, INACTIVE, ttl)
  end
  if not ok then
    sluice.log.warn("could not cache an introspection answer of ", #body, " bytes: ", err)
  end
  dict:delete("l:" .. h)
  return claims, false
end

-- A cached value as lookup returns it; nil when it cannot be read.
local function cached(v)
  if v == INACTIVE then
    return false
  end
  local doc = json_decode(v)
  if type(doc) ~= "table" then
    return nil
  end
  -- The dict's expiry is bounded by exp already; this guards a clock step.
  local exp = tonumber(doc.exp)
  if exp and exp <= sluice.now() then
    return false
  end
  return doc
end

-- The introspection answer for token: claims (a table) when active, false
-- when inactive or expired, nil, err when the endpoint failed; and true when
-- the answer came from the cache. h is _M.hash(st, token, method, path); the
-- method and path are sent along when introspect_request is on.
function _M.lookup(st, h, token, method, path)
  local dict = sluice.shared[DICT]
  local key = "t:" .. h
  local v = dict:get(key)
  if v then
    local claims = cached(v)
    if claims ~= nil then
      return claims, true
    end
  end
  local lock, fail = "l:" .. h, "f:" .. h
  local deadline = sluice.now() + st.timeout + LOCK_MARGIN
  local delay = POLL_FIRST
  local waiting_on
  while true do
    owner_seq = owner_seq + 1
    local owner = worker_id() .. ":" .. owner_seq
    local locked, lock_err = dict:add(lock, owner, st.timeout + LOCK_MARGIN)
    if locked or lock_err ~= "exists" then
      -- Ours (or the dict cannot hold a lock at all: introspect unlocked).
      return introspect(st, h, token, method, path, owner)
    end
    -- Another request introspects this token: wait for its answer. A lock
    -- whose owner never finishes (its worker died) expires, and the next
    -- turn of this loop takes it.
    waiting_on = dict:get(lock) or waiting_on
    sluice.sleep(delay)
    delay = math_min(delay * 2, POLL_MAX)
    v = dict:get(key)
    if v then
      local claims = cached(v)
      if claims ~= nil then
        return claims, true
      end
    end
    local f = waiting_on and dict:get(fail)
    if f then
      local nl = str_find(f, "\n", 1, true)
      if nl and str_sub(f, 1, nl - 1) == waiting_on then
        return nil, str_sub(f, nl + 1)
      end
    end
    if sluice.now() >= deadline then
      return nil, "timed out waiting for another request's introspection of the same token"
    end
  end
end

return _M
