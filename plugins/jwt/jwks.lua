-- jwks.lua: JSON Web Key Sets fetched over HTTP, cached per worker and shared by all workers.
--
-- One key set per jwks_uri. A worker keeps its parsed set in `sets`; the
-- fetched JSON is also kept in the shared dict DICT, so that one worker
-- fetches and the others parse what it got. The dict holds, per uri:
--   "set:" .. uri  the last good JSON document (never expires: a stale set
--                  beats none while the issuer is down)
--   "at:" .. uri   when it was fetched (seconds since the epoch)
--   "try:" .. uri  when the last fetch started, good or not
--   "lock:" .. uri present while a worker fetches (expires with the timeout)
-- A fetch happens when the set is older than jwks_cache_ttl, or when a token
-- names a kid the set lacks; either way at most once per
-- jwks_refresh_interval seconds across all workers, so neither a stream of
-- unknown kids nor a dead issuer makes a fetch per request.
local crypto = require("sluice.crypto")
local cjson = require("cjson.safe")

local sluice = sluice

local type = type
local ipairs = ipairs
local math_max = math.max

local _M = {}

_M.DICT = "jwt_jwks"

-- Largest key set document accepted, and how often a waiting request looks
-- whether the worker that fetches is done.
local MAX_SIZE = 1024 * 1024
local POLL = 0.01

-- Per worker: sets[uri] = { keys = { [kid] = entry }, only = entry or nil
-- (the key of a set that holds one), version = "at" of the document,
-- expires = when to look for a newer one }; entry = { key = crypto key,
-- alg = the JWK's alg or nil, kid =, credential = { id =, key = kid } }.
local sets = {}

-- Parses a key set document into a set; nil, err when it holds no usable
-- signing key. Keys that are not for signatures (use ~= "sig") or that do
-- not load are skipped and logged.
local function parse(body, uri)
  local doc = cjson.decode(body)
  if type(doc) ~= "table" or type(doc.keys) ~= "table" then
    return nil, "not a JSON Web Key Set (no 'keys' list)"
  end
  local keys, count, last = {}, 0, nil
  for i, jwk in ipairs(doc.keys) do
    if type(jwk) == "table" and (jwk.use == nil or jwk.use == "sig") then
      local key, err = crypto.load_jwk(jwk)
      local kid = jwk.kid
      if not key then
        sluice.log.warn("JWKS ", uri, ": key ", i, " skipped: ", err)
      elseif kid ~= nil and type(kid) ~= "string" then
        sluice.log.warn("JWKS ", uri, ": key ", i, " skipped: its kid is not a string")
      else
        local alg = type(jwk.alg) == "string" and jwk.alg or nil
        last = { key = key, alg = alg, kid = kid,
                 credential = { id = kid or uri, key = kid } }
        count = count + 1
        if kid then
          keys[kid] = last
        end
      end
    end
  end
  if count == 0 then
    return nil, "no usable signing key in the set"
  end
  return { keys = keys, only = count == 1 and last or nil }
end

-- Installs the shared document as this worker's set when it is newer than
-- the one it has. Returns the set (possibly the old one).
local function sync(dict, uri, ttl, now)
  local set = sets[uri]
  local at = dict:get("at:" .. uri)
  if at and (not set or at > set.version) then
    local new = parse(dict:get("set:" .. uri) or "", uri)
    if new then
      new.version = at
      new.expires = math_max(at + ttl, now + 1)
      sets[uri] = new
      return new
    end
  end
  return set
end

-- Fetches the set (or waits for the worker that does) and installs it.
local function fetch(dict, p, now)
  local uri = p.jwks_uri
  local lock = "lock:" .. uri
  if dict:add(lock, true, p.jwks_timeout + 1) then
    dict:set("try:" .. uri, now)
    local res, err = sluice.http.request({ url = uri, timeout = p.jwks_timeout,
                                           max_size = MAX_SIZE,
                                           headers = { Accept = "application/json" } })
    local set
    if res and res.status == 200 then
      set, err = parse(res.body, uri)
    elseif res then
      err = "status " .. res.status
    end
    if set then
      local at = sluice.now()
      dict:set("set:" .. uri, res.body)
      dict:set("at:" .. uri, at)
      set.version = at
      set.expires = at + p.jwks_cache_ttl
      sets[uri] = set
    else
      sluice.log.err("could not fetch the JWKS ", uri, ": ", err)
    end
    dict:delete(lock)
    return
  end
  -- Another request (of this worker or another) is fetching: wait for it.
  local deadline = now + p.jwks_timeout + 1
  while dict:get(lock) and sluice.now() < deadline do
    sluice.sleep(POLL)
  end
end

-- The entry for kid (nil: the token has none, which matches a set of one
-- key) in p.jwks_uri's set, fetching the set when it is due. Returns the
-- entry, or nil and the status and message to answer with: 401 for a kid
-- the set does not have, 503 when there is no set at all (never fetched
-- successfully: a gateway must not let tokens through unchecked).
function _M.key(p, kid, now)
  local dict = sluice.shared[_M.DICT]
  local uri = p.jwks_uri
  local set = sets[uri]
  if not set or now >= set.expires then
    set = sync(dict, uri, p.jwks_cache_ttl, now)
    if not set or now >= set.expires then
      local tried = dict:get("try:" .. uri) or 0
      if now - tried >= p.jwks_refresh_interval then
        fetch(dict, p, now)
      end
      set = sync(dict, uri, p.jwks_cache_ttl, now) or sets[uri]
      if set and now >= set.expires then
        -- The fetch failed: keep the stale set until the next try is due.
        set.expires = now + math_max(p.jwks_refresh_interval, 1)
      end
    end
    if not set then
      return nil, 503, "Could not get the keys to verify the token"
    end
  end
  local entry
  if kid == nil then
    entry = set.only
    if not entry then
      return nil, 401, "No mandatory 'kid' in header"
    end
    return entry
  end
  entry = set.keys[kid]
  if entry then
    return entry
  end
  -- An unknown kid: the issuer may have rotated its keys. Fetch again, unless
  -- a fetch started less than jwks_refresh_interval ago.
  local tried = dict:get("try:" .. uri) or 0
  if now - tried >= p.jwks_refresh_interval then
    fetch(dict, p, now)
    set = sync(dict, uri, p.jwks_cache_ttl, now) or set
    entry = set.keys[kid]
    if entry then
      return entry
    end
  end
  return nil, 401, "No key found for given 'kid'"
end

-- Forgets this worker's sets (for the specs).
function _M._reset()
  sets = {}
end

return _M
