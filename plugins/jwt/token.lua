-- token.lua: decoding a compact JWS and checking its signature and registered claims.
--
-- The messages are Kong's jwt_parser's (the handler prefixes "Bad token; "),
-- so clients and tests written against Kong see the same texts. Nothing here
-- touches a request; the handler and the perf script call it directly.
local crypto = require("sluice.crypto")
local cjson = require("cjson.safe")

local type = type
local str_find = string.find
local str_sub = string.sub
local b64url_decode = crypto.base64url_decode
local hmac = crypto.hmac
local ct_equals = crypto.constant_time_equals
local json_decode = cjson.decode

local _M = {}

-- The algorithms a token may name at all (Kong's list). Which one a token
-- must use is its credential's (or its JWK's) business, never the token's.
_M.ALGORITHMS = {
  HS256 = true, HS384 = true, HS512 = true, RS256 = true, RS384 = true, RS512 = true,
  PS256 = true, PS384 = true, PS512 = true, ES256 = true, ES384 = true, ES512 = true,
  EdDSA = true,
}
local ALGORITHMS = _M.ALGORITHMS

-- Decoded headers by their base64url text: { [segment] = header table }.
-- The header of a client's tokens rarely changes ({"alg":"HS256","typ":"JWT"}),
-- so most requests decode it zero times. The tables are shared: read them,
-- never change them. Emptied when full, so a client sending a new header
-- every time costs a decode, not memory.
local HEADER_CACHE_MAX = 256
local headers, header_count = {}, 0

-- Decodes a compact JWS: header, claims, signing input and signature, or
-- nil and Kong's reason: "invalid JSON" (not three segments, bad base64url
-- or JSON, a header that is not an object), "invalid alg" (no alg, or one
-- outside ALGORITHMS: "none" included), "invalid claims" (a payload that is
-- not an object), "invalid signature" (its segment is not base64url).
function _M.decode(token)
  local p1 = str_find(token, ".", 1, true)
  local p2 = p1 and str_find(token, ".", p1 + 1, true)
  if not p2 then
    return nil, "invalid JSON"
  end
  local h64 = str_sub(token, 1, p1 - 1)
  local header = headers[h64]
  if not header then
    local raw = b64url_decode(h64)
    header = raw and json_decode(raw)
    if type(header) ~= "table" then
      return nil, "invalid JSON"
    end
    if header_count >= HEADER_CACHE_MAX then
      headers, header_count = {}, 0
    end
    headers[h64] = header
    header_count = header_count + 1
  end
  local raw = b64url_decode(str_sub(token, p1 + 1, p2 - 1))
  local claims = raw and json_decode(raw)
  if claims == nil then
    return nil, "invalid JSON"
  end
  local alg = header.alg
  if type(alg) ~= "string" or not ALGORITHMS[alg] then
    return nil, "invalid alg"
  end
  if type(claims) ~= "table" then
    return nil, "invalid claims"
  end
  local signature = b64url_decode(str_sub(token, p2 + 1))
  if not signature then
    return nil, "invalid signature"
  end
  return header, claims, str_sub(token, 1, p2 - 1), signature
end

-- Whether signature is the HMAC (digest "sha256", ...) of input with key,
-- compared in constant time.
function _M.hmac_matches(digest, key, input, signature)
  local mac = hmac(digest, key, input)
  return mac ~= nil and ct_equals(mac, signature)
end

-- Checks the registered claims named in list ("exp", "nbf") at time now,
-- allowing leeway seconds of skew. Returns nil when they hold, else the
-- errors as Kong's body has them: { exp = "token expired", nbf = "must be a
-- number" }.
function _M.check_claims(claims, list, leeway, now)
  local errors
  for i = 1, #list do
    local name = list[i]
    local v = claims[name]
    local err
    if type(v) ~= "number" then
      err = "must be a number"
    elseif name == "exp" then
      if v + leeway <= now then
        err = "token expired"
      end
    elseif v - leeway > now then -- nbf
      err = "token not valid yet"
    end
    if err then
      errors = errors or {}
      errors[name] = err
    end
  end
  return errors
end

-- Whether exp lies more than maximum (+ leeway) seconds after now; a
-- missing exp counts as too far, as in Kong.
function _M.exceeds_maximum(claims, maximum, leeway, now)
  local exp = claims.exp
  return type(exp) ~= "number" or exp - now > maximum + leeway
end

-- The token's scopes are in claims[name] (with name "scope", also "scp"):
-- a space-separated string or a list of strings. Returns the required
-- scopes (a list) that are missing: all of them for mode "any" when none is
-- there, else those not there (empty list: nothing missing).
local function scope_set(v)
  local set = {}
  if type(v) == "string" then
    for s in v:gmatch("%S+") do
      set[s] = true
    end
  elseif type(v) == "table" then
    for i = 1, #v do
      if type(v[i]) == "string" then
        set[v[i]] = true
      end
    end
  end
  return set
end

function _M.missing_scopes(claims, name, required, mode)
  local v = claims[name]
  if v == nil and name == "scope" then
    v = claims.scp
  end
  local have = scope_set(v)
  local missing = {}
  for i = 1, #required do
    local s = required[i]
    if have[s] then
      if mode == "any" then
        return {}
      end
    else
      missing[#missing + 1] = s
    end
  end
  return missing
end

return _M
