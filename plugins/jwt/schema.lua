-- jwt: where tokens are found, which claims are checked, scopes, and JWKS keys.
local HEADER_NAME = require("sluice.schema").HEADER_NAME
local COOKIE_NAME = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"

local function check_jwks_uri(uri)
  if uri:find("^https://") then
    return nil, "https:// is not supported yet (sluice.http has no TLS): serve the key set "
      .. "over http://, e.g. from a local sidecar or a cache in front of the issuer"
  end
  if not uri:find("^http://[^/?#]+") then
    return nil, "expected an http:// URL"
  end
  return true
end

local function contains(list, v)
  for _, x in ipairs(list or {}) do
    if x == v then
      return true
    end
  end
  return false
end

return {
  name = "jwt",
  fields = {
    { config = {
        type = "record",
        fields = {
          { uri_param_names = {
              type = "set", default = { "jwt" }, elements = { type = "string", len_min = 1 },
              description = "Query arguments a token is read from." } },
          { cookie_names = {
              type = "set", default = {},
              elements = { type = "string", match = COOKIE_NAME },
              description = "Cookies a token is read from." } },
          { header_names = {
              type = "set", default = { "authorization" },
              elements = { type = "string", match = HEADER_NAME },
              description = "Headers a token is read from, as `Bearer <token>` (any case "
                .. "of the header name; `Bearer` or `bearer`)." } },
          { key_claim_name = {
              type = "string", default = "iss", len_min = 1,
              description = "The claim (in the payload, else in the header) naming the "
                .. "credential's key: `iss`, or `kid` to read the header's key id." } },
          { secret_is_base64 = {
              type = "boolean", default = false,
              description = "The credentials' secrets are base64; tokens are signed with "
                .. "the decoded bytes." } },
          { claims_to_verify = {
              type = "set", default = {},
              elements = { type = "string", one_of = { "exp", "nbf" } },
              description = "Registered claims that must be present, numbers, and hold: "
                .. "`exp` (not expired), `nbf` (already valid)." } },
          { leeway = {
              type = "number", default = 0, between = { 0, 3600 },
              description = "Seconds of clock skew allowed when checking exp, nbf and "
                .. "maximum_expiration (sluice; Kong has none)." } },
          { maximum_expiration = {
              type = "number", default = 0, between = { 0, 31536000 },
              description = "When above 0, tokens whose exp is more than this many seconds "
                .. "ahead are refused; claims_to_verify must then contain exp." } },
          { anonymous = {
              type = "string", len_min = 1,
              description = "A consumer (id or username) a request that fails to "
                .. "authenticate goes on as, instead of getting a 401." } },
          { run_on_preflight = {
              type = "boolean", default = true,
              description = "Authenticate OPTIONS requests too; false lets them through." } },
          { realm = {
              type = "string", match = "^[^\"\\%c]+$",
              description = "The realm of the WWW-Authenticate challenge of a 401." } },
          { required_scopes = {
              type = "set", default = {}, elements = { type = "string", match = "^%S+$" },
              description = "Scopes a valid token must carry (sluice); without them the "
                .. "answer is 403. Empty: no scope check." } },
          { scopes_claim = {
              type = "string", default = "scope", len_min = 1,
              description = "The claim holding the token's scopes: a space-separated "
                .. "string or a list. With the default `scope`, `scp` is read when "
                .. "`scope` is absent." } },
          { scopes_match = {
              type = "string", default = "all", one_of = { "all", "any" },
              description = "`all`: every required scope must be there; `any`: one is "
                .. "enough." } },
          { jwks_uri = {
              type = "string", custom = check_jwks_uri,
              description = "Verify tokens with the keys of this JSON Web Key Set (http://) "
                .. "instead of jwt_secrets: the token's `kid` picks the key (sluice)." } },
          { jwks_cache_ttl = {
              type = "number", default = 300, between = { 1, 86400 },
              description = "Seconds a fetched key set is used before it is fetched again." } },
          { jwks_refresh_interval = {
              type = "number", default = 10, between = { 0, 3600 },
              description = "The fewest seconds between two fetches: after a token with an "
                .. "unknown kid, or after a failed fetch." } },
          { jwks_timeout = {
              type = "number", default = 5, between = { 0.01, 60 },
              description = "Seconds a fetch of the key set may take." } },
          { consumer_claim = {
              type = "string", len_min = 1,
              description = "With jwks_uri: the claim whose value is the consumer's id or "
                .. "username (`sub`, ...). Without it, JWKS tokens have no consumer." } },
        },
        check = function(c)
          if c.maximum_expiration > 0 and not contains(c.claims_to_verify, "exp") then
            return nil, "must contain 'exp' when maximum_expiration is set", "claims_to_verify"
          end
          if c.consumer_claim and not c.jwks_uri then
            return nil, "needs jwks_uri: a jwt_secrets credential names its consumer",
              "consumer_claim"
          end
          return true
        end,
      } },
  },
}
