-- jwk_spec.lua: sluice.crypto.load_jwk against the fixture keys as JSON Web Keys.
--
-- fixtures/jwk/jwks.json holds the public keys of fixtures/crypto/*.pub.pem as JWKs
-- (written by fixtures/jwk/make.py and committed); the signatures are the openssl CLI's
-- from fixtures/crypto/.
local crypto = require("sluice.crypto")
local cjson = require("cjson")

local DIR = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "fixtures/"

local function fixture(name)
  local f = assert(io.open(DIR .. name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local JWKS = cjson.decode(fixture("jwk/jwks.json"))
local DATA = fixture("crypto/data.txt")

local function copy(t, changes)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  for k, v in pairs(changes or {}) do
    out[k] = v
  end
  return out
end

describe("sluice.crypto.load_jwk", function()
  -- jwk -> the key type it loads as, and an alg + CLI signature it must verify.
  local CASES = {
    { "rsa", "RSA", "RS256", "crypto/rs256.sig" },
    { "rsa", "RSA", "PS384", "crypto/ps384.sig" },
    { "p256", "P-256", "ES256", "crypto/es256.sig" },
    { "p384", "P-384", "ES384", "crypto/es384.sig" },
    { "p521", "P-521", "ES512", "crypto/es512.sig" },
    { "ed25519", "Ed25519", "EdDSA", "crypto/eddsa-ed25519.sig" },
    { "ed448", "Ed448", "EdDSA", "crypto/eddsa-ed448.sig" },
  }
  for _, case in ipairs(CASES) do
    local name, kind, alg, sig = case[1], case[2], case[3], case[4]
    it("loads the " .. name .. " JWK as the PEM's key: it verifies the CLI's " .. alg, function()
      local key = assert(crypto.load_jwk(JWKS[name]))
      assert.equal(kind, key:type())
      assert.is_false(key:is_private())
      local signature = fixture(sig)
      assert.is_true(key:verify(alg, DATA, signature))
      assert.is_false(key:verify(alg, DATA .. "x", signature))
    end)
  end

  it("takes the public half of a private JWK and ignores alg, use and kid", function()
    local key = assert(crypto.load_jwk(copy(JWKS.p256, { d = "AAAA", alg = "RS256", use = "enc",
                                                         kid = "k1" })))
    assert.is_false(key:is_private())
    assert.is_true(key:verify("ES256", DATA, fixture("crypto/es256.sig")))
  end)

  it("accepts an RSA modulus with a leading zero byte", function()
    local n = crypto.base64url_decode(JWKS.rsa.n)
    local key = assert(crypto.load_jwk(copy(JWKS.rsa, { n = crypto.base64url_encode("\0" .. n) })))
    assert.is_true(key:verify("RS256", DATA, fixture("crypto/rs256.sig")))
  end)

  it("refuses what is not a usable public JWK, saying why", function()
    local cases = {
      { {}, "invalid JWK: unsupported key type 'nil'" },
      { { kty = "oct", k = "c2VjcmV0" }, "invalid JWK: unsupported key type 'oct'" },
      { copy(JWKS.rsa, { n = false }), "invalid JWK: 'n' missing" },
      { copy(JWKS.rsa, { e = "" }), "invalid JWK: 'e' missing" },
      { copy(JWKS.rsa, { e = "AQ+B" }), "invalid JWK: 'e' is not base64url" },
      { JWKS.secp256k1, "invalid JWK: unsupported EC curve 'secp256k1'" },
      { copy(JWKS.p256, { crv = "P-384" }), "invalid JWK: 'x' and 'y' must be 48 bytes on P-384" },
      { copy(JWKS.p256, { y = false }), "invalid JWK: 'y' missing" },
      { copy(JWKS.ed25519, { crv = "X25519" }), "invalid JWK: unsupported OKP curve 'X25519'" },
      { copy(JWKS.ed25519, { crv = "Ed448" }), "invalid JWK: 'x' must be 57 bytes on Ed448" },
    }
    for _, case in ipairs(cases) do
      local key, err = crypto.load_jwk(case[1])
      assert.is_nil(key)
      assert.equal(case[2], err)
    end
  end)

  it("refuses an EC point that is not on its curve", function()
    local y = crypto.base64url_decode(JWKS.p256.y)
    local bad = y:sub(1, 31) .. string.char(bit.bxor(y:byte(32), 1))
    local key, err = crypto.load_jwk(copy(JWKS.p256, { y = crypto.base64url_encode(bad) }))
    assert.is_nil(key)
    assert.matches("^invalid JWK: ", err)
  end)

  it("raises on a JWK that is not a table", function()
    assert.has_error(function() crypto.load_jwk("{}") end,
      "bad argument #1 to 'load_jwk' (table expected, got string)")
  end)
end)
