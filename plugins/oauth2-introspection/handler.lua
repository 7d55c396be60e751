-- oauth2-introspection: lets a request in when the authorization server says its
-- access token is active (RFC 7662), with Kong Enterprise's fields and headers.
local auth = require("sluice.auth")
local crypto = require("sluice.crypto")
local json = require("cjson.safe")
local introspect = require("sluice.plugins.oauth2-introspection.introspect")
local token = require("sluice.plugins.oauth2-introspection.token")

local sluice = sluice

local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local type = type
local math_floor = math.floor
local str_find = string.find
local str_format = string.format
local str_lower = string.lower
local tbl_concat = table.concat
local tbl_sort = table.sort
local json_encode = json.encode

local REALM = 'Bearer realm="service"'
local JSON_TYPE = "application/json; charset=utf-8"

-- The claims every active token's answer is forwarded as (Kong EE 3.x: the
-- username goes as X-Credential-Identifier, through auth.accept).
local STANDARD_CLAIMS = {
  { "scope", "X-Credential-Scope" }, { "client_id", "X-Credential-Client-ID" },
  { "token_type", "X-Credential-Token-Type" }, { "exp", "X-Credential-Exp" },
  { "iat", "X-Credential-Iat" }, { "nbf", "X-Credential-Nbf" },
  { "sub", "X-Credential-Sub" }, { "aud", "X-Credential-Aud" },
  { "iss", "X-Credential-Iss" }, { "jti", "X-Credential-Jti" },
}

-- A refusal, encoded once: { status =, body = JSON string, headers = {} }.
local function refusal(status, body, challenge)
  return { status = status, body = json_encode(body), message = body.message
             or body.error_description,
           headers = { ["Content-Type"] = JSON_TYPE, ["WWW-Authenticate"] = challenge } }
end

local MISSING = refusal(401, { error = "invalid_request",
                               error_description = "The access token is missing" }, REALM)
local MALFORMED = refusal(401, {
  error = "invalid_request",
  error_description = "The Authorization header does not hold a single bearer token",
}, REALM .. ', error="invalid_request", '
  .. 'error_description="The Authorization header does not hold a single bearer token"')
local INVALID = refusal(401, {
  error = "invalid_token", error_description = "The access token is invalid or has expired",
}, REALM .. ', error="invalid_token", '
  .. 'error_description="The access token is invalid or has expired"')
local UNAVAILABLE = json_encode({ message = "The access token could not be introspected" })
local UNAVAILABLE_HEADERS = { ["Content-Type"] = JSON_TYPE }

local Introspection = {
  PRIORITY = 1700, -- Kong EE's: before key-auth (1250) and the other auth plugins
  VERSION = "1.0.0",
  -- Created at config load when no server.shared_dicts entry names it.
  SHARED_DICTS = { [introspect.DICT] = 16 * 1024 * 1024 },
}

-- Per worker, one per config table (made in configure, or on first use):
-- conf -> { url, headers, body_tail, salt, ttl, inactive_ttl, timeout (s),
-- introspect_request, gate = { run_on_preflight, anonymous }, claim,
-- consumer_field, forward = { { claim, header }, ... }, hide, and with
-- required scopes: scopes = { " s ", ... }, required_scopes, all_scopes,
-- scope_list, scope_challenge }.
local states = setmetatable({}, { __mode = "k" })

-- RFC 6749 2.3.1: the id and secret are form-encoded, then joined for Basic.
local function basic(id, secret)
  return "Basic " .. crypto.base64_encode(introspect.form_escape(id) .. ":"
    .. introspect.form_escape(secret))
end

local function prepare(conf)
  local authorization = conf.authorization_value or basic(conf.client_id, conf.client_secret)
  local headers = { Authorization = authorization, Accept = "application/json",
                    ["Content-Type"] = "application/x-www-form-urlencoded" }
  local lower = { authorization = "Authorization", accept = "Accept",
                  ["content-type"] = "Content-Type" }
  local custom = {}
  for name, value in pairs(conf.custom_introspection_headers) do
    local l = str_lower(name)
    if lower[l] then
      headers[lower[l]] = nil
    end
    headers[name] = value
    custom[#custom + 1] = l .. ":" .. value
  end
  tbl_sort(custom)
  local hint = conf.token_type_hint
  -- Everything that may change the endpoint's answer, so that two instances
  -- never share a cached answer they might disagree on.
  local salt = crypto.sha256(tbl_concat({ conf.introspection_url, authorization, hint or "",
    conf.introspect_request and "request" or "", tbl_concat(custom, "\n") }, "\n") .. "\n")
  local forward = {}
  for i, c in ipairs(STANDARD_CLAIMS) do
    forward[i] = c
  end
  for _, claim in ipairs(conf.custom_claims_forward) do
    forward[#forward + 1] = { claim, "X-Credential-" .. claim }
  end
  local scopes
  if #conf.required_scopes > 0 then
    scopes = {}
    for i, s in ipairs(conf.required_scopes) do
      scopes[i] = " " .. s .. " "
    end
  end
  local anonymous = conf.anonymous
  local st = {
    url = conf.introspection_url,
    headers = headers,
    body_tail = hint and ("&token_type_hint=" .. introspect.form_escape(hint)) or "",
    salt = salt,
    ttl = conf.ttl,
    inactive_ttl = conf.inactive_ttl,
    timeout = conf.timeout / 1000,
    introspect_request = conf.introspect_request,
    gate = { run_on_preflight = conf.run_on_preflight,
             anonymous = anonymous ~= "" and anonymous or nil },
    claim = conf.consumer_by,
    consumer_field = conf.consumer_by == "client_id" and "custom_id" or "username",
    forward = forward,
    scopes = scopes,
    all_scopes = conf.scopes_match == "all",
    hide = conf.hide_credentials,
  }
  if scopes then
    st.required_scopes = conf.required_scopes
    st.scope_list = tbl_concat(conf.required_scopes, " ")
    st.scope_challenge = REALM .. ', error="insufficient_scope", scope="' .. st.scope_list
      .. '"'
  end
  states[conf] = st
  return st
end

function Introspection.configure(_, configs)
  for _, conf in ipairs(configs) do
    if not states[conf] then
      prepare(conf)
    end
  end
end

local function clear_claims(st)
  local clear = sluice.service.request.clear_header
  local forward = st.forward
  for i = 1, #forward do
    clear(forward[i][2])
  end
end

-- The 403 for a token without the required scopes, in the jwt plugin's
-- words: the missing scopes (all), or the ones that would do (any).
local function scope_refusal(st, scope)
  local message
  if st.all_scopes then
    local padded = " " .. (type(scope) == "string" and scope or "") .. " "
    local missing = {}
    for i, s in ipairs(st.required_scopes) do
      if not str_find(padded, st.scopes[i], 1, true) then
        missing[#missing + 1] = s
      end
    end
    message = "Missing required scopes: " .. tbl_concat(missing, " ")
  else
    message = "Missing required scope: one of " .. st.scope_list
  end
  return { status = 403, message = message, body = json_encode({ message = message }),
           headers = { ["Content-Type"] = JSON_TYPE, ["WWW-Authenticate"] = st.scope_challenge } }
end

-- Refuses the request, or lets it in as the anonymous consumer.
local function reject(st, r)
  if st.gate.anonymous then
    clear_claims(st)
    return auth.fail(st.gate, r.status, r.message)
  end
  return sluice.response.exit(r.status, r.body, r.headers)
end

-- The scope claim as a space-separated string (RFC 7662; some servers send
-- a list), or nil.
local function scope_string(scope)
  if type(scope) == "table" then
    for i = 1, #scope do
      if type(scope[i]) ~= "string" then
        return nil
      end
    end
    return tbl_concat(scope, " ")
  end
  return type(scope) == "string" and scope or nil
end

-- Whether the scope string satisfies the required scopes.
local function scopes_ok(st, scope)
  if not scope then
    return false
  end
  local padded = " " .. scope .. " "
  local scopes, all = st.scopes, st.all_scopes
  for i = 1, #scopes do
    local found = str_find(padded, scopes[i], 1, true) ~= nil
    if found ~= all then
      return found
    end
  end
  return all
end

-- A claim as a header value: nil when it cannot be one (a string with CR,
-- LF or NUL). Integral numbers print without exponent; objects go as JSON.
local function header_value(v)
  local t = type(v)
  if t == "string" then
    return not str_find(v, "[%z\r\n]") and v or nil
  elseif t == "number" then
    if v == math_floor(v) and v > -9007199254740992 and v < 9007199254740992 then
      return str_format("%d", v)
    end
    return str_format("%.17g", v)
  elseif t == "boolean" then
    return v and "true" or "false"
  elseif t == "table" then
    return json_encode(v)
  end
  return nil
end

-- Sends a claim upstream: a list of scalars as one header line each (as Kong
-- does), anything else as one line.
local function forward_claim(name, v)
  local svc = sluice.service.request
  if type(v) == "table" and #v > 0 and type(v[1]) ~= "table" then
    local first = header_value(v[1])
    if first then
      svc.set_header(name, first)
    else
      svc.clear_header(name)
    end
    for i = 2, #v do
      local one = type(v[i]) ~= "table" and header_value(v[i])
      if one then
        svc.add_header(name, one)
      end
    end
    return
  end
  local value = v ~= nil and header_value(v)
  if value then
    svc.set_header(name, value)
  else
    svc.clear_header(name)
  end
end

local function accept(st, claims, h)
  local name = claims[st.claim]
  local consumer
  if type(name) == "string" then
    consumer = auth.consumer_by(st.consumer_field, name)
  end
  -- The credential other plugins and the log see: the answer's claims, with
  -- the token's hash as its id (never the token).
  claims.id = h
  claims.consumer_id = consumer and consumer.id
  local username = claims.username
  auth.accept(consumer, claims, type(username) == "string" and header_value(username) or nil)
  local forward = st.forward
  for i = 1, #forward do
    local f = forward[i]
    forward_claim(f[2], claims[f[1]])
  end
end

function Introspection.access(_, conf)
  local st = states[conf] or prepare(conf)
  if auth.skip(st.gate) then
    return
  end
  local tok, where, args = token.find()
  if not tok then
    return reject(st, where == "malformed" and MALFORMED or MISSING)
  end
  if st.hide then
    token.hide(where, args)
  end
  local method, path
  if st.introspect_request then
    method, path = sluice.request.get_method(), sluice.request.get_path()
  end
  local h = introspect.hash(st, tok, method, path)
  local claims, err = introspect.lookup(st, h, tok, method, path)
  if claims == nil then
    sluice.log.err("could not introspect the access token at ", st.url, ": ", err)
    return sluice.response.exit(503, UNAVAILABLE, UNAVAILABLE_HEADERS)
  end
  if not claims then
    return reject(st, INVALID)
  end
  if st.scopes then
    local scope = scope_string(claims.scope)
    if not scopes_ok(st, scope) then
      return reject(st, scope_refusal(st, scope))
    end
  end
  return accept(st, claims, h)
end

return Introspection
