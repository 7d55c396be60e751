-- jwt: Kong's jwt plugin: HS/RS/PS/ES/EdDSA tokens checked against jwt_secrets, or a JWKS.
local auth = require("sluice.auth")
local token = require("sluice.plugins.jwt.token")
local keys = require("sluice.plugins.jwt.keys")
local jwks = require("sluice.plugins.jwt.jwks")

local sluice = sluice

local ipairs = ipairs
local type = type
local setmetatable = setmetatable
local str_format = string.format
local str_gsub = string.gsub
local str_lower = string.lower
local str_match = string.match
local tbl_concat = table.concat

local HMAC_DIGESTS = keys.HMAC_DIGESTS
local BEARER = "^%s*[Bb]earer%s+(.-)%s*$"

local Jwt = {
  PRIORITY = 1450, -- Kong 3.x's: after cors (2000) and before key-auth (1250)
  VERSION = "1.0.0",
  SHARED_DICTS = { [jwks.DICT] = 1024 * 1024 },
}

-- Per worker, made once per config table (weak keys: a reload's old configs
-- go away): conf -> { header_names = lower-cased, cookies = { { name, pattern } },
-- challenge = for "no token", invalid = for a bad token, claims =
-- claims_to_verify as a list, ... the conf fields the request path reads }.
local prepared = setmetatable({}, { __mode = "k" })

local function prepare(conf)
  local p = prepared[conf]
  if p then
    return p
  end
  local base = conf.realm and str_format('Bearer realm="%s"', conf.realm) or "Bearer"
  local header_names = {}
  for i, name in ipairs(conf.header_names) do
    header_names[i] = str_lower(name)
  end
  -- Two patterns per cookie: "name=value" first in the header, or after a ";".
  local cookies = {}
  for _, name in ipairs(conf.cookie_names) do
    local escaped = str_gsub(name, "%p", "%%%0")
    cookies[#cookies + 1] = "^%s*" .. escaped .. "=([^;%s]*)"
    cookies[#cookies + 1] = ";%s*" .. escaped .. "=([^;%s]*)"
  end
  local scope_list = tbl_concat(conf.required_scopes, " ")
  p = {
    header_names = header_names,
    cookies = cookies,
    uri_param_names = conf.uri_param_names,
    challenge = base,
    invalid = base .. (conf.realm and ", " or " ") .. 'error="invalid_token"',
    forbidden = base .. (conf.realm and ", " or " ")
      .. str_format('error="insufficient_scope", scope="%s"', scope_list),
    key_claim = conf.key_claim_name,
    claims = conf.claims_to_verify,
    leeway = conf.leeway,
    maximum_expiration = conf.maximum_expiration,
    base64 = conf.secret_is_base64,
    scopes = conf.required_scopes,
    scopes_claim = conf.scopes_claim,
    scopes_match = conf.scopes_match,
    scope_list = scope_list,
    jwks_uri = conf.jwks_uri,
    jwks_cache_ttl = conf.jwks_cache_ttl,
    jwks_refresh_interval = conf.jwks_refresh_interval,
    jwks_timeout = conf.jwks_timeout,
    consumer_claim = conf.consumer_claim,
  }
  prepared[conf] = p
  return p
end

-- The token of the request, Kong's way: every query argument of
-- uri_param_names, every cookie of cookie_names and every header of
-- header_names holding "Bearer <token>" is looked at, and they must all be
-- the same token. Returns the token, nil when there is none, or false when
-- the request carries different ones.
local function add(found, t)
  if t == "" or t == found then
    return found
  end
  if found == nil then
    return t
  end
  return false
end

local function find_token(p)
  local found
  local params = p.uri_param_names
  if #params > 0 and sluice.request.get_raw_query() ~= "" then
    local args = sluice.request.get_query()
    for i = 1, #params do
      local v = args[params[i]]
      if type(v) == "string" then
        found = add(found, v)
      elseif type(v) == "table" then
        for j = 1, #v do
          if type(v[j]) == "string" then
            found = add(found, v[j])
          end
        end
      end
      if found == false then
        return false
      end
    end
  end
  local cookies = p.cookies
  if #cookies > 0 then
    local header = sluice.request.get_header("cookie")
    if header then
      for i = 1, #cookies do
        local v = str_match(header, cookies[i])
        if v then
          found = add(found, v)
          if found == false then
            return false
          end
        end
      end
    end
  end
  local names = p.header_names
  for i = 1, #names do
    local v = sluice.request.get_header(names[i])
    local t = v and str_match(v, BEARER)
    if t then
      found = add(found, t)
      if found == false then
        return false
      end
    end
  end
  return found
end

-- Refuses the request (or lets it in as the anonymous consumer): status with
-- body, a table ({ message = } or Kong's claim errors), and challenge.
local function fail(conf, status, body, challenge)
  if conf.anonymous ~= nil then
    return auth.fail(conf, status, body.message or "Unauthorized")
  end
  return sluice.response.exit(status, body, { ["WWW-Authenticate"] = challenge })
end

local function unauthorized(conf, p, message)
  return fail(conf, 401, { message = message }, p.invalid)
end

-- Checks the signature of a token against a jwt_secrets credential. Returns
-- nil when it holds, else the message of the 401.
local function verify_with_credential(p, cred, alg, input, signature)
  if alg ~= cred.algorithm then
    return "Invalid algorithm"
  end
  local digest = HMAC_DIGESTS[alg]
  if digest then
    local secret = keys.hmac_key(cred, p.base64)
    if not secret then
      return "Invalid key/secret"
    end
    if not token.hmac_matches(digest, secret, input, signature) then
      return "Invalid signature"
    end
    return nil
  end
  local key = keys.public_key(cred.rsa_public_key)
  if not key then
    return "Invalid key/secret"
  end
  if key:verify(alg, input, signature) ~= true then
    return "Invalid signature"
  end
  return nil
end

-- The claims checks every token goes through, in Kong's order, then the
-- scopes. Returns nothing when the token may go on, else what exit returned.
local function check_claims(conf, p, claims, now)
  if #p.claims > 0 then
    local errors = token.check_claims(claims, p.claims, p.leeway, now)
    if errors then
      return fail(conf, 401, errors, p.invalid)
    end
  end
  if p.maximum_expiration > 0
      and token.exceeds_maximum(claims, p.maximum_expiration, p.leeway, now) then
    return fail(conf, 401, { exp = "exceeds maximum allowed expiration" }, p.invalid)
  end
  if #p.scopes > 0 then
    local missing = token.missing_scopes(claims, p.scopes_claim, p.scopes, p.scopes_match)
    if #missing > 0 then
      local message = p.scopes_match == "any"
        and "Missing required scope: one of " .. p.scope_list
        or "Missing required scopes: " .. tbl_concat(missing, " ")
      return sluice.response.exit(403, { message = message },
        { ["WWW-Authenticate"] = p.forbidden })
    end
  end
end

local function accepted(consumer, credential, identifier, jwt, claims)
  auth.accept(consumer, credential, identifier)
  local shared = sluice.ctx.shared
  shared.authenticated_jwt_token = jwt
  shared.authenticated_jwt_claims = claims
end

-- A token checked with the JWKS: the key its kid names; its consumer, if
-- any, from consumer_claim.
local function authenticate_jwks(conf, p, jwt, header, claims, input, signature, now)
  local kid = header.kid
  if kid ~= nil and type(kid) ~= "string" then
    return unauthorized(conf, p, "Invalid 'kid' in header")
  end
  local entry, status, message = jwks.key(p, kid, now)
  if not entry then
    if status == 503 then
      return sluice.response.exit(503, { message = message })
    end
    return unauthorized(conf, p, message)
  end
  local alg = header.alg
  if HMAC_DIGESTS[alg] or (entry.alg and entry.alg ~= alg)
      or not keys.KEY_TYPES[alg][entry.key:type()] then
    return unauthorized(conf, p, "Invalid algorithm")
  end
  if entry.key:verify(alg, input, signature) ~= true then
    return unauthorized(conf, p, "Invalid signature")
  end
  local done = check_claims(conf, p, claims, now)
  if done then
    return done
  end
  local consumer
  local claim = p.consumer_claim
  if claim then
    local v = claims[claim]
    if type(v) ~= "string" or v == "" then
      return unauthorized(conf, p, "No mandatory '" .. claim .. "' in claims")
    end
    consumer = auth.consumer(v)
    if not consumer then
      return unauthorized(conf, p, str_format("Could not find consumer for '%s=%s'", claim, v))
    end
  end
  return accepted(consumer, entry.credential, entry.kid, jwt, claims)
end

function Jwt.access(_, conf)
  if auth.skip(conf) then
    return
  end
  local p = prepare(conf)
  local jwt = find_token(p)
  if jwt == nil then
    return fail(conf, 401, { message = "Unauthorized" }, p.challenge)
  elseif jwt == false then
    return unauthorized(conf, p, "Multiple tokens provided")
  end
  local header, claims, input, signature = token.decode(jwt)
  if not header then
    return unauthorized(conf, p, "Bad token; " .. claims)
  end
  local now = sluice.now()
  if p.jwks_uri then
    return authenticate_jwks(conf, p, jwt, header, claims, input, signature, now)
  end

  local key_claim = p.key_claim
  local key = claims[key_claim] or header[key_claim]
  if not key then
    return unauthorized(conf, p, "No mandatory '" .. key_claim .. "' in claims")
  elseif key == "" then
    return unauthorized(conf, p, "Invalid '" .. key_claim .. "' in claims")
  end
  -- No jwt_secrets at all in the config: there is no collection to look in.
  local dao = sluice.db.jwt_secrets
  local cred = dao and type(key) == "string" and dao:select_by_key(key)
  if not cred then
    return unauthorized(conf, p, "No credentials found for given '" .. key_claim .. "'")
  end
  local err = verify_with_credential(p, cred, header.alg, input, signature)
  if err then
    return unauthorized(conf, p, err)
  end
  local done = check_claims(conf, p, claims, now)
  if done then
    return done
  end
  local consumer = auth.consumer(cred.consumer.id)
  if not consumer then
    return unauthorized(conf, p, str_format("Could not find consumer for '%s=%s'", key_claim, key))
  end
  return accepted(consumer, cred, cred.key, jwt, claims)
end

-- Prepares every config of the worker once, before its first request.
function Jwt.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    prepare(conf)
  end
end

-- The parts the perf script drives directly (spec/plugins/jwt/perf.lua).
Jwt._prepare = prepare
Jwt._verify_with_credential = verify_with_credential

return Jwt
