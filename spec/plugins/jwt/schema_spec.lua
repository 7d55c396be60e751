-- jwt's config and jwt_secrets: defaults, cross-field checks, and credentials refused at load.
local config = require("sluice.config")
local tokens = require("spec.plugins.jwt.tokens")

local HEAD = '_format_version: "3.0"\n'

local function load(plugin_yaml, rest)
  return config.load_string(HEAD .. [[
services:
  - name: orders
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
    plugins:
      - name: jwt
]] .. (plugin_yaml or "") .. (rest or ""), "t.yaml")
end

-- A YAML block scalar holding text, indented for a credential field.
local function block(text, indent)
  local pad = string.rep(" ", indent)
  return "|\n" .. pad .. text:gsub("\n$", ""):gsub("\n", "\n" .. pad)
end

describe("plugin: jwt (schema)", function()
  it("fills Kong's defaults and sluice's own", function()
    local out = assert(load())
    assert.same({
      uri_param_names = { "jwt" }, cookie_names = {}, header_names = { "authorization" },
      key_claim_name = "iss", secret_is_base64 = false, claims_to_verify = {},
      leeway = 0, maximum_expiration = 0, run_on_preflight = true,
      required_scopes = {}, scopes_claim = "scope", scopes_match = "all",
      jwks_cache_ttl = 300, jwks_refresh_interval = 10, jwks_timeout = 5,
    }, out.plugins[1].config)
  end)

  it("needs exp in claims_to_verify for maximum_expiration, as Kong does", function()
    local out, err = load("        config: { maximum_expiration: 60 }\n")
    assert.is_nil(out)
    assert.matches("t.yaml:%d+: services%[0%].plugins%[0%].config.claims_to_verify: must "
      .. "contain 'exp' when maximum_expiration is set", err)
    assert(load("        config: { maximum_expiration: 60, claims_to_verify: [exp] }\n"))
  end)

  it("refuses unknown claims, bad header and cookie names, and bounds", function()
    local _, err = load([[
        config:
          claims_to_verify: [exp, iat]
          header_names: ["x token"]
          cookie_names: ["a;b"]
          maximum_expiration: 31536001
          leeway: -1
          scopes_match: some
          required_scopes: ["a b"]
]])
    assert.matches("config.claims_to_verify%[1%]: expected one of: exp, nbf", err)
    assert.matches("config.header_names%[0%]: ", err)
    assert.matches("config.cookie_names%[0%]: ", err)
    assert.matches("config.maximum_expiration: ", err)
    assert.matches("config.leeway: ", err)
    assert.matches("config.scopes_match: expected one of: all, any", err)
    assert.matches("config.required_scopes%[0%]: ", err)
  end)

  it("takes an http:// jwks_uri and refuses https:// with the reason", function()
    assert(load("        config: { jwks_uri: 'http://127.0.0.1:9/keys' }\n"))
    local _, err = load("        config: { jwks_uri: 'https://idp.example.com/keys' }\n")
    assert.matches("config.jwks_uri: https:// is not supported yet %(sluice.http has no TLS%)",
      err)
    _, err = load("        config: { jwks_uri: 'ftp://x' }\n")
    assert.matches("config.jwks_uri: expected an http:// URL", err)
  end)

  it("takes consumer_claim only with jwks_uri", function()
    local _, err = load("        config: { consumer_claim: sub }\n")
    assert.matches("config.consumer_claim: needs jwks_uri", err)
    assert(load("        config: { consumer_claim: sub, jwks_uri: 'http://127.0.0.1:9/k' }\n"))
  end)

  it("refuses a jwks_cache_ttl of 0 and a negative refresh interval", function()
    local _, err = load("        config: { jwks_cache_ttl: 0, jwks_refresh_interval: -1 }\n")
    assert.matches("config.jwks_cache_ttl: ", err)
    assert.matches("config.jwks_refresh_interval: ", err)
  end)
end)

describe("plugin: jwt (jwt_secrets)", function()
  local function consumers(secrets)
    return load(nil, "consumers:\n  - username: alice\n    jwt_secrets:\n" .. secrets)
  end

  it("fills the algorithm and keeps a credential findable by its key", function()
    local out = assert(consumers("      - { key: alice-iss, secret: s3cr3t }\n"))
    local cred = out.consumers[1].jwt_secrets[1]
    assert.equal("HS256", cred.algorithm)
    assert.equal("alice-iss", cred.key)
    assert.same({ id = out.consumers[1].id }, cred.consumer)
    assert.same({ key = true }, (function()
      local u = {}
      for _, f in ipairs(out.credentials.jwt_secrets.unique) do u[f] = true end
      return u
    end)())
  end)

  it("takes every public-key algorithm with a key of its type", function()
    local cases = { RS256 = "rsa", RS384 = "rsa", RS512 = "rsa", PS256 = "rsa-pss",
                    PS512 = "rsa", ES256 = "p256", ES384 = "p384", ES512 = "p521",
                    EdDSA = "ed25519" }
    local lines = {}
    for alg, name in pairs(cases) do
      lines[#lines + 1] = "      - key: k-" .. alg .. "\n        algorithm: " .. alg
        .. "\n        rsa_public_key: " .. block(tokens.pem[name .. ".pub"], 10) .. "\n"
    end
    lines[#lines + 1] = "      - key: k-cert\n        algorithm: RS256\n        rsa_public_key: "
      .. block(tokens.read(debug.getinfo(1, "S").source:match("^@(.*)spec/plugins/")
        .. "spec/pdk/fixtures/crypto/cert.pem"), 10) .. "\n"
    assert(consumers(table.concat(lines)))
  end)

  it("refuses what cannot verify a token, at load, naming the field", function()
    local _, err = consumers([[
      - { key: a, algorithm: HS384 }
      - { key: b, algorithm: RS256 }
      - { key: c, algorithm: RS256, rsa_public_key: "not a pem" }
      - key: d
        algorithm: ES256
        rsa_public_key: ]] .. block(tokens.pem["rsa.pub"], 10) .. [[

      - key: e
        algorithm: RS256
        rsa_public_key: ]] .. block(tokens.pem["p256.pub"], 10) .. [[

      - { key: f, algorithm: none, secret: x }
      - { secret: x }
      - { key: "", secret: x }
      - { key: h, secret: "" }
]])
    local function at(i, rest)
      assert.matches("t.yaml:%d+: consumers%[0%].jwt_secrets%[" .. i .. "%]" .. rest, err)
    end
    at(0, "%.secret: a secret is required for algorithm HS384")
    at(1, "%.rsa_public_key: a public key %(PEM%) is required for algorithm RS256")
    at(2, "%.rsa_public_key: invalid key: invalid public key: ")
    at(3, "%.rsa_public_key: a key of type RSA cannot verify ES256")
    at(4, "%.rsa_public_key: a key of type P%-256 cannot verify RS256")
    at(5, "%.algorithm: expected one of: HS256, ")
    at(6, "%.key: required field missing")
    at(7, "%.key: length must be at least 1")
    at(8, "%.secret: a secret is required for algorithm HS256")
  end)

  it("refuses two credentials with one key, without repeating it", function()
    local _, err = load(nil, [[
consumers:
  - username: alice
    jwt_secrets: [{ key: shared-iss, secret: a }]
  - username: bob
jwt_secrets:
  - { consumer: bob, key: shared-iss, secret: b }
]])
    assert.matches("jwt_secrets%[0%]%.key: duplicate jwt_secrets key %(also "
      .. "consumers%[0%]%.jwt_secrets%[0%]", err)
    assert.is_nil(err:find("shared-iss", 1, true))
  end)
end)
