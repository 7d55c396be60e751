-- keys.lua: the key material of jwt_secrets, made once per credential and kept per worker.
--
-- Credentials are shared, read-only tables (sluice.db hands out the loaded
-- config's own), so what is derived from them lives here, keyed by the
-- credential or by its PEM text, and is computed on first use: at config
-- load for public keys (daos.lua checks them there), on the first request
-- for a base64 secret (secret_is_base64 is a plugin setting, not the
-- credential's).
local crypto = require("sluice.crypto")

local setmetatable = setmetatable
local str_gsub = string.gsub
local str_rep = string.rep

local _M = {}

-- The key types each public-key algorithm verifies with (crypto's key:type()).
local RSA = { RSA = true }
local PSS = { RSA = true, ["RSA-PSS"] = true }
_M.KEY_TYPES = {
  RS256 = RSA, RS384 = RSA, RS512 = RSA,
  PS256 = PSS, PS384 = PSS, PS512 = PSS,
  ES256 = { ["P-256"] = true }, ES384 = { ["P-384"] = true }, ES512 = { ["P-521"] = true },
  EdDSA = { Ed25519 = true, Ed448 = true },
}

-- The HMAC digest of each symmetric algorithm.
_M.HMAC_DIGESTS = { HS256 = "sha256", HS384 = "sha384", HS512 = "sha512" }

-- Parsed public keys by PEM text: { [pem] = key }. Bounded by the PEMs the
-- configs of this process's life name; a key is a few hundred bytes.
local public_keys = {}

-- The key object of a PEM (SubjectPublicKeyInfo or certificate), parsed once;
-- nil, err for a PEM that does not parse.
function _M.public_key(pem)
  local key = public_keys[pem]
  if key then
    return key
  end
  local err
  key, err = crypto.load_public_key(pem)
  if not key then
    return nil, err
  end
  public_keys[pem] = key
  return key
end

-- Decoded secrets by credential, for secret_is_base64: false when the
-- secret is not base64. Weak keys: a reload's old credentials go away.
local decoded = setmetatable({}, { __mode = "k" })

-- Kong's decoding of a base64 secret: either alphabet, padding optional.
local function decode_secret(secret)
  local s = str_gsub(str_gsub(secret, "-", "+"), "_", "/")
  local rest = #s % 4
  if rest > 0 then
    s = s .. str_rep("=", 4 - rest)
  end
  return crypto.base64_decode(s) or false
end

-- The HMAC key of credential cred: its secret, or the secret base64-decoded
-- when base64 is true (nil when it is not base64).
function _M.hmac_key(cred, base64)
  if not base64 then
    return cred.secret
  end
  local v = decoded[cred]
  if v == nil then
    v = decode_secret(cred.secret or "")
    decoded[cred] = v
  end
  return v or nil
end

return _M
