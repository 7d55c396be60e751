-- jwt: the jwt_secrets a consumer signs its tokens with (Kong's entity).
local keys = require("sluice.plugins.jwt.keys")

local ALGORITHMS = { "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
                     "PS512", "ES256", "ES384", "ES512", "EdDSA" }

-- HS* need a secret; the others a public key PEM that parses and fits the
-- algorithm. The PEM is parsed here, once, and kept for the requests.
local function check(cred)
  local alg = cred.algorithm
  if keys.HMAC_DIGESTS[alg] then
    if cred.secret == nil or cred.secret == "" then
      return nil, "a secret is required for algorithm " .. alg, "secret"
    end
    return true
  end
  if cred.rsa_public_key == nil then
    return nil, "a public key (PEM) is required for algorithm " .. alg, "rsa_public_key"
  end
  local key, err = keys.public_key(cred.rsa_public_key)
  if not key then
    return nil, "invalid key: " .. err, "rsa_public_key"
  end
  if not keys.KEY_TYPES[alg][key:type()] then
    return nil, "a key of type " .. key:type() .. " cannot verify " .. alg, "rsa_public_key"
  end
  return true
end

return {
  jwt_secrets = {
    fields = {
      { key = { type = "string", required = true, unique = true, len_min = 1,
                description = "What a token names in its key claim (config.key_claim_name, "
                  .. "`iss` by default) to be checked with this credential. Kong generates "
                  .. "one when absent; a declarative file must say it." } },
      { secret = { type = "string",
                   description = "The HMAC secret of HS256/HS384/HS512 (required for them); "
                     .. "base64 when the plugin's secret_is_base64 is true." } },
      { rsa_public_key = { type = "string",
                           description = "The PEM public key (or certificate) for RS*, PS*, "
                             .. "ES* and EdDSA (required for them; despite the name, any "
                             .. "key type the algorithm takes)." } },
      { algorithm = { type = "string", default = "HS256", one_of = ALGORITHMS,
                      description = "The only algorithm this credential's tokens may use; "
                        .. "a token whose header says another is refused." } },
    },
    check = check,
  },
}
