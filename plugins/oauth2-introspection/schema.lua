-- oauth2-introspection: where tokens are introspected, how the gateway authenticates there,
-- how long answers are cached, and what the upstream is told.
local HEADER_NAME = require("sluice.schema").HEADER_NAME
-- RFC 6749 3.3 scope-token: printable ASCII but space, '"' and '\'.
local SCOPE_TOKEN = "^[%w!#%$%%&'%(%)%*%+,%-%./:;<=>%?@%[%]%^_`{|}~]+$"

-- The introspection endpoint: an absolute http:// URL with a host. sluice.http
-- has no TLS yet, so https:// is refused here rather than failing on every
-- request.
local function check_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then
    return nil, "expected an absolute URL (http://host[:port]/path), got '" .. url .. "'"
  end
  scheme = scheme:lower()
  if scheme == "https" then
    return nil, "https:// introspection URLs are not supported yet: sluice.http has no TLS "
      .. "(reach the endpoint over http://, e.g. through a local TLS-originating proxy)"
  end
  if scheme ~= "http" then
    return nil, "expected an http:// URL, got scheme '" .. scheme .. "'"
  end
  local authority = rest:match("^([^/?#]*)")
  local host, port
  if authority:sub(1, 1) == "[" then
    host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
  else
    host, port = authority:match("^([^:@]+):?(%d*)$")
  end
  if not host or host == "" then
    return nil, "expected a host in '" .. url .. "'"
  end
  port = tonumber(port)
  if port and (port < 1 or port > 65535) then
    return nil, "invalid port in '" .. url .. "'"
  end
  if url:find("#", 1, true) then
    return nil, "a URL with a #fragment cannot be requested: '" .. url .. "'"
  end
  return true
end

local function check_header_value(v)
  if v:find("[%z\r\n]") then
    return nil, "a header value cannot hold CR, LF or NUL"
  end
  return true
end

return {
  name = "oauth2-introspection",
  fields = {
    { config = {
        type = "record",
        fields = {
          { introspection_url = {
              type = "string", required = true, custom = check_url,
              description = "The RFC 7662 introspection endpoint, e.g. "
                .. "http://auth.internal:8080/oauth2/introspect (http:// only for now)." } },
          { authorization_value = {
              type = "string", len_min = 1, custom = check_header_value,
              description = "The whole Authorization header sent to the introspection "
                .. "endpoint (Kong's field), e.g. \"Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW\". "
                .. "Set this or client_id and client_secret." } },
          { client_id = {
              type = "string", len_min = 1,
              description = "The gateway's client id at the authorization server, sent with "
                .. "client_secret as HTTP Basic (RFC 6749 2.3.1). Instead of "
                .. "authorization_value." } },
          { client_secret = {
              type = "string", len_min = 1,
              description = "The secret that goes with client_id." } },
          { token_type_hint = {
              type = "string", len_min = 1,
              description = "Sent as token_type_hint with every introspection (e.g. "
                .. "access_token); not sent when unset, as in Kong." } },
          { ttl = {
              type = "number", default = 30, between = { 0, 31536000 },
              description = "Seconds an active token's introspection is cached, never past "
                .. "the token's exp. 0: no limit but exp (and the dict's eviction)." } },
          { inactive_ttl = {
              type = "number", default = 5, between = { 0, 86400 },
              description = "Seconds an inactive answer (\"active\": false) is cached, so a "
                .. "replayed bad token does not reach the endpoint each time. 0: not "
                .. "cached." } },
          { timeout = {
              type = "duration", default = 10000, between = { 1, 2147483646 },
              description = "Milliseconds an introspection may take (connect, send and "
                .. "read together); slower answers 503." } },
          { keepalive = {
              type = "duration", default = 60000, between = { 0, 2147483646 },
              description = "Kong's idle time of introspection connections, in ms. "
                .. "Accepted for Kong configs; sluice.http keeps its own pool (per "
                .. "worker, 30 s idle)." } },
          { hide_credentials = {
              type = "boolean", default = false,
              description = "Remove the token from the request (Authorization header, "
                .. "access_token query or body parameter) before proxying." } },
          { run_on_preflight = {
              type = "boolean", default = true,
              description = "Authenticate OPTIONS requests too; false lets them through "
                .. "untouched." } },
          { anonymous = {
              type = "string",
              description = "A consumer id or username to let the request in as when "
                .. "authentication fails (missing, invalid or under-scoped token); \"\" "
                .. "is the same as unset. Never used when the endpoint fails (503)." } },
          { consumer_by = {
              type = "string", default = "username", one_of = { "username", "client_id" },
              description = "Which claim names the consumer: username (a consumer's "
                .. "username) or client_id (a consumer's custom_id). No match: the "
                .. "request goes on without a consumer." } },
          { introspect_request = {
              type = "boolean", default = false,
              description = "Send X-Request-Path and X-Request-Http-Method of the "
                .. "client's request to the endpoint; answers are then cached per token, "
                .. "method and path." } },
          { custom_introspection_headers = {
              type = "map", default = {},
              keys = { type = "string", match = HEADER_NAME },
              values = { type = "string", custom = check_header_value },
              description = "More headers for the introspection request." } },
          { custom_claims_forward = {
              type = "set", default = {},
              elements = { type = "string", match = HEADER_NAME },
              description = "Claims of the introspection answer sent upstream as "
                .. "X-Credential-<claim> (objects and lists as JSON)." } },
          { required_scopes = {
              type = "set", default = {},
              elements = { type = "string", match = SCOPE_TOKEN },
              description = "Scopes the token's scope claim must hold (see "
                .. "scopes_match); without them the answer is 403. Empty: no scope "
                .. "check." } },
          { scopes_match = {
              type = "string", default = "all", one_of = { "all", "any" },
              description = "all: every required scope must be there; any: one is "
                .. "enough (the jwt plugin's field)." } },
        },
        shorthand_fields = {
          { scopes_required_mode = {
              type = "string",
              func = function(v)
                return { scopes_match = v }
              end,
              description = "Another name for scopes_match." } },
        },
        check = function(c)
          if c.authorization_value and (c.client_id or c.client_secret) then
            return nil, "set authorization_value or client_id and client_secret, not both "
              .. "(RFC 6749 2.3: one client authentication method per request)"
          end
          if (c.client_id == nil) ~= (c.client_secret == nil) then
            return nil, "client_id and client_secret go together"
          end
          if not c.authorization_value and not c.client_id then
            return nil, "the introspection endpoint needs client credentials: set "
              .. "authorization_value, or client_id and client_secret"
          end
          return true
        end,
      } },
  },
}
