-- jwt in-process: where tokens are found, every algorithm, every attack and refusal, claims,
-- scopes, anonymous, and JWKS keys (fetched from a real nginx).
local t = require("sluice.test")
local crypto = require("sluice.crypto")
local cjson = require("cjson")
local tokens = require("spec.plugins.jwt.tokens")

local encode, pem = tokens.encode, tokens.pem

local ALICE = "7e0f4b1c-1d2e-4f3a-8b4c-5d6e7f800001"
local BOB = "7e0f4b1c-1d2e-4f3a-8b4c-5d6e7f800002"
local GUEST = "7e0f4b1c-1d2e-4f3a-8b4c-5d6e7f800009"
local SECRET = "alice-secret"
local RAW_SECRET = "\0\1raw bytes\255"

local CONSUMERS = {
  { id = ALICE, username = "alice", custom_id = "crm-1", jwt_secrets = {
      { key = "alice-iss", secret = SECRET },
      { key = "alice-384", secret = SECRET, algorithm = "HS384" },
      { key = "alice-512", secret = SECRET, algorithm = "HS512" },
      { key = "alice-b64", secret = crypto.base64_encode(RAW_SECRET) },
      { key = "alice-not-b64", secret = "not base64!" },
  } },
  { id = BOB, username = "bob", jwt_secrets = {
      { key = "bob-rs256", algorithm = "RS256", rsa_public_key = pem["rsa.pub"] },
      { key = "bob-rs384", algorithm = "RS384", rsa_public_key = pem["rsa.pub"] },
      { key = "bob-rs512", algorithm = "RS512", rsa_public_key = pem["rsa.pub"] },
      { key = "bob-ps256", algorithm = "PS256", rsa_public_key = pem["rsa.pub"] },
      { key = "bob-ps384", algorithm = "PS384", rsa_public_key = pem["rsa.pub"] },
      { key = "bob-ps512", algorithm = "PS512", rsa_public_key = pem["rsa.pub"] },
      { key = "bob-es256", algorithm = "ES256", rsa_public_key = pem["p256.pub"] },
      { key = "bob-es384", algorithm = "ES384", rsa_public_key = pem["p384.pub"] },
      { key = "bob-es512", algorithm = "ES512", rsa_public_key = pem["p521.pub"] },
      { key = "bob-eddsa", algorithm = "EdDSA", rsa_public_key = pem["ed25519.pub"] },
      { key = "bob-ed448", algorithm = "EdDSA", rsa_public_key = pem["ed448.pub"] },
  } },
  { username = "carol" },
  { id = GUEST, username = "guest" },
}

local function plugin(conf)
  return t.plugin("jwt", conf or {}, { consumers = CONSUMERS })
end

local function bearer(token)
  return { headers = { Authorization = "Bearer " .. token } }
end

local function hs(claims, key)
  return encode(claims, "HS256", key or SECRET)
end

-- The body of a refusal with this status, decoded.
local function body(res, status)
  return cjson.decode(assert.res_status(status, res))
end

local function message(res, status)
  return body(res, status or 401).message
end

local now = os.time

describe("plugin: jwt (access)", function()
  local p = plugin()

  describe("finding the token", function()
    it("takes a Bearer token and tells the upstream who it is", function()
      local res = p:run(bearer(hs({ iss = "alice-iss" })))
      assert.res_status(200, res)
      local h = res.upstream.headers
      assert.equal(ALICE, h["x-consumer-id"])
      assert.equal("alice", h["x-consumer-username"])
      assert.equal("crm-1", h["x-consumer-custom-id"])
      assert.equal("alice-iss", h["x-credential-identifier"])
      assert.is_nil(h["x-anonymous-consumer"])
    end)

    it("replaces the X-Consumer-* headers a client sent itself", function()
      local res = p:run({ headers = { Authorization = "Bearer " .. hs({ iss = "alice-iss" }),
                                      ["X-Consumer-Username"] = "admin",
                                      ["X-Credential-Identifier"] = "evil",
                                      ["X-Anonymous-Consumer"] = "true" } })
      local h = res.upstream.headers
      assert.equal("alice", h["x-consumer-username"])
      assert.equal("alice-iss", h["x-credential-identifier"])
      assert.is_nil(h["x-anonymous-consumer"])
    end)

    it("reads 'bearer' in any case of the word's first letter, with spaces around", function()
      local token = hs({ iss = "alice-iss" })
      assert.res_status(200, p:run({ headers = { authorization = "  bearer   " .. token .. " " } }))
      assert.equal("Unauthorized", message(p:run({ headers = { Authorization = "Basic "
        .. token } })))
      assert.equal("Unauthorized", message(p:run({ headers = { Authorization = "Bearer" } })))
    end)

    it("takes the token from the jwt query argument", function()
      assert.res_status(200, p:run({ query = { jwt = hs({ iss = "alice-iss" }), page = "2" } }))
    end)

    it("takes the token from configured cookies and headers", function()
      local q = plugin({ cookie_names = { "session", "tok" }, header_names = { "X-Token" } })
      local token = hs({ iss = "alice-iss" })
      assert.res_status(200, q:run({ headers = { Cookie = "a=1; tok=" .. token .. "; b=2" } }))
      assert.res_status(200, q:run({ headers = { Cookie = "session=" .. token } }))
      assert.res_status(200, q:run({ headers = { ["x-token"] = "Bearer " .. token } }))
      -- A cookie whose name ends in a configured one is another cookie.
      assert.equal("Unauthorized", message(q:run({ headers = { Cookie = "xtok=" .. token } })))
      -- The default header is not read once header_names is set.
      assert.equal("Unauthorized", message(q:run(bearer(token))))
    end)

    it("answers 401 Unauthorized with a Bearer challenge when there is no token", function()
      local res = p:run({})
      assert.same({ message = "Unauthorized" }, body(res, 401))
      assert.equal("Bearer", res.headers["www-authenticate"])
      assert.is_nil(res.upstream)
      local q = plugin({ realm = "orders" })
      res = q:run({})
      assert.equal('Bearer realm="orders"', res.headers["www-authenticate"])
      res = q:run(bearer("x.y.z"))
      assert.equal('Bearer realm="orders", error="invalid_token"', res.headers["www-authenticate"])
    end)

    it("refuses different tokens in one request, and takes the same one twice", function()
      local a, b = hs({ iss = "alice-iss" }), hs({ iss = "alice-iss", n = 1 })
      local res = p:run({ query = { jwt = a }, headers = { Authorization = "Bearer " .. b } })
      assert.equal("Multiple tokens provided", message(res))
      assert.equal('Bearer error="invalid_token"', res.headers["www-authenticate"])
      res = p:run({ query = "jwt=" .. a .. "&jwt=" .. b })
      assert.equal("Multiple tokens provided", message(res))
      assert.res_status(200, p:run({ query = { jwt = a }, headers = { Authorization = "Bearer "
        .. a } }))
    end)

    it("lets OPTIONS through untouched with run_on_preflight false, and checks it by default",
      function()
        local q = plugin({ run_on_preflight = false })
        local res = q:run({ method = "OPTIONS" })
        assert.res_status(200, res)
        assert.is_nil(res.upstream.headers["x-consumer-id"])
        assert.res_status(401, p:run({ method = "OPTIONS" }))
      end)
  end)

  describe("algorithms", function()
    it("verifies HS256, HS384 and HS512 with the credential's secret", function()
      assert.res_status(200, p:run(bearer(encode({ iss = "alice-384" }, "HS384", SECRET))))
      assert.res_status(200, p:run(bearer(encode({ iss = "alice-512" }, "HS512", SECRET))))
      assert.equal("Invalid signature", message(p:run(bearer(hs({ iss = "alice-iss" }, "other")))))
    end)

    local PUBLIC = {
      { "bob-rs256", "RS256", "rsa" }, { "bob-rs384", "RS384", "rsa" },
      { "bob-rs512", "RS512", "rsa" }, { "bob-ps256", "PS256", "rsa" },
      { "bob-ps384", "PS384", "rsa" }, { "bob-ps512", "PS512", "rsa" },
      { "bob-es256", "ES256", "p256" }, { "bob-es384", "ES384", "p384" },
      { "bob-es512", "ES512", "p521" }, { "bob-eddsa", "EdDSA", "ed25519" },
      { "bob-ed448", "EdDSA", "ed448" },
    }
    for _, case in ipairs(PUBLIC) do
      local key, alg, priv = case[1], case[2], case[3]
      it("verifies " .. alg .. " with the credential's " .. priv .. " public key", function()
        local res = p:run(bearer(encode({ iss = key }, alg, pem[priv])))
        assert.res_status(200, res)
        assert.equal("bob", res.upstream.headers["x-consumer-username"])
        assert.equal(key, res.upstream.headers["x-credential-identifier"])
        -- Signed by another key of the same type: refused.
        local other = priv == "rsa" and pem["rsa-pss"] or nil
        if other and alg:sub(1, 2) == "PS" then
          assert.equal("Invalid signature",
            message(p:run(bearer(encode({ iss = key }, alg, other)))))
        end
        local h, _, s = encode({ iss = key }, alg, pem[priv]):match("^(.-)%.(.-)%.(.*)$")
        local tampered = h .. "." .. crypto.base64url_encode(cjson.encode({ iss = key,
          admin = true })) .. "." .. s
        assert.equal("Invalid signature", message(p:run(bearer(tampered))))
      end)
    end

    it("verifies secrets as base64 with secret_is_base64 (either alphabet, unpadded)", function()
      local q = plugin({ secret_is_base64 = true })
      assert.res_status(200, q:run(bearer(hs({ iss = "alice-b64" }, RAW_SECRET))))
      assert.equal("Invalid signature",
        message(q:run(bearer(hs({ iss = "alice-b64" }, crypto.base64_encode(RAW_SECRET))))))
      assert.equal("Invalid key/secret", message(q:run(bearer(hs({ iss = "alice-not-b64" },
        "x")))))
    end)

    it("finds the credential by the header's kid with key_claim_name: kid", function()
      local q = plugin({ key_claim_name = "kid" })
      local token = encode({ sub = "x" }, "HS256", SECRET, { alg = "HS256", kid = "alice-iss" })
      assert.res_status(200, q:run(bearer(token)))
      -- The payload's claim wins over the header's, as in Kong.
      token = encode({ kid = "bob-rs256" }, "HS256", SECRET, { alg = "HS256", kid = "alice-iss" })
      assert.equal("Invalid algorithm", message(q:run(bearer(token))))
    end)
  end)

  describe("attacks: the credential's algorithm, never the token's", function()
    local function refused(token, expected)
      local res = p:run(bearer(token))
      assert.equal(expected, message(res, 401))
      assert.is_nil(res.upstream)
      assert.equal('Bearer error="invalid_token"', res.headers["www-authenticate"])
    end

    it("refuses alg none, with or without a signature", function()
      refused(encode({ iss = "alice-iss" }, "none"), "Bad token; invalid alg")
      refused(encode({ iss = "alice-iss" }, "HS256", SECRET, { alg = "none" }),
        "Bad token; invalid alg")
      refused(encode({ iss = "alice-iss" }, "HS256", SECRET, { alg = "None" }),
        "Bad token; invalid alg")
      refused(encode({ iss = "alice-iss" }, "HS256", SECRET, { typ = "JWT" }),
        "Bad token; invalid alg")
      refused(encode({ iss = "alice-iss" }, "HS256", SECRET, { alg = 256 }),
        "Bad token; invalid alg")
    end)

    it("refuses an HS256 token MACed with an RS256 credential's public key", function()
      for _, key in ipairs({ "bob-rs256", "bob-es256", "bob-eddsa" }) do
        local public = CONSUMERS[2].jwt_secrets[1].rsa_public_key
        refused(hs({ iss = key }, public), "Invalid algorithm")
        -- Even a token that claims the credential's own alg fails on the MAC.
        refused(encode({ iss = key }, "HS256", public, { alg = key == "bob-rs256" and "RS256"
          or key == "bob-es256" and "ES256" or "EdDSA" }), "Invalid signature")
      end
    end)

    it("refuses a token whose alg is not its credential's", function()
      refused(encode({ iss = "bob-rs512" }, "RS256", pem.rsa), "Invalid algorithm")
      refused(encode({ iss = "bob-ps256" }, "RS256", pem.rsa), "Invalid algorithm")
      refused(encode({ iss = "alice-512" }, "HS256", SECRET), "Invalid algorithm")
      refused(encode({ iss = "alice-iss" }, "HS512", SECRET), "Invalid algorithm")
    end)

    it("refuses a missing, empty, unknown or odd key claim", function()
      refused(hs({ sub = "alice" }), "No mandatory 'iss' in claims")
      refused(hs({ iss = "" }), "Invalid 'iss' in claims")
      refused(hs({ iss = "mallory" }), "No credentials found for given 'iss'")
      refused(hs({ iss = 42 }), "No credentials found for given 'iss'")
      refused(hs({ iss = { "alice-iss" } }), "No credentials found for given 'iss'")
      -- The payload's claim is the one that counts.
      assert.res_status(200, p:run(bearer(encode({ iss = "alice-iss" }, "HS256", SECRET,
        { alg = "HS256", iss = "mallory" }))))
    end)

    it("refuses malformed tokens with Kong's messages, never a 500", function()
      local good = hs({ iss = "alice-iss" })
      local h, c, s = good:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      local b64 = crypto.base64url_encode
      local cases = {
        { "abc", "Bad token; invalid JSON" },
        { h .. "." .. c, "Bad token; invalid JSON" },
        { ".." , "Bad token; invalid JSON" },
        { "!!!." .. c .. "." .. s, "Bad token; invalid JSON" },
        { h .. ".%%%." .. s, "Bad token; invalid JSON" },
        { b64("{alg") .. "." .. c .. "." .. s, "Bad token; invalid JSON" },
        { b64('"HS256"') .. "." .. c .. "." .. s, "Bad token; invalid JSON" },
        { b64("null") .. "." .. c .. "." .. s, "Bad token; invalid JSON" },
        { h .. "." .. b64("{iss") .. "." .. s, "Bad token; invalid JSON" },
        { h .. "." .. b64("42") .. "." .. s, "Bad token; invalid claims" },
        { h .. "." .. b64("null") .. "." .. s, "Bad token; invalid claims" },
        { h .. "." .. c .. ".a+b/", "Bad token; invalid signature" },
        { h .. "." .. c .. "." .. s .. ".extra", "Bad token; invalid signature" },
        { h .. "." .. c .. ".", "Invalid signature" },
        { h .. "." .. c .. "." .. b64(crypto.base64url_decode(s):sub(1, 16)), "Invalid signature" },
        { h .. "." .. c .. "." .. s:sub(1, -3), "Bad token; invalid signature" },
        { h .. "." .. c .. "." .. b64(("x"):rep(32)), "Invalid signature" },
      }
      for _, case in ipairs(cases) do
        local res = p:run(bearer(case[1]))
        assert.equal(case[2], message(res, 401), case[1])
      end
    end)

    it("refuses deep JSON and long tokens cleanly", function()
      local deep = crypto.base64url_encode(("["):rep(5000) .. ("]"):rep(5000))
      assert.equal("Bad token; invalid JSON", message(p:run(bearer(deep .. ".e30.e30"))))
      local h = crypto.base64url_encode('{"alg":"HS256"}')
      local big = h .. "." .. crypto.base64url_encode(cjson.encode({ iss = "alice-iss",
        pad = ("x"):rep(6000) })) .. ".AAAA"
      assert.equal("Invalid signature", message(p:run(bearer(big))))
    end)
  end)

  describe("claims", function()
    local q = plugin({ claims_to_verify = { "exp", "nbf" } })

    it("takes a token that is valid now", function()
      assert.res_status(200, q:run(bearer(hs({ iss = "alice-iss", exp = now() + 60,
                                               nbf = now() - 60 }))))
    end)

    it("refuses expired and not yet valid tokens with Kong's bodies", function()
      local res = q:run(bearer(hs({ iss = "alice-iss", exp = now() - 1, nbf = now() - 60 })))
      assert.same({ exp = "token expired" }, body(res, 401))
      assert.equal('Bearer error="invalid_token"', res.headers["www-authenticate"])
      res = q:run(bearer(hs({ iss = "alice-iss", exp = now() + 60, nbf = now() + 30 })))
      assert.same({ nbf = "token not valid yet" }, body(res, 401))
      res = q:run(bearer(hs({ iss = "alice-iss", exp = now() - 5, nbf = now() + 30 })))
      assert.same({ exp = "token expired", nbf = "token not valid yet" }, body(res, 401))
    end)

    it("requires the claims to be numbers", function()
      local res = q:run(bearer(hs({ iss = "alice-iss" })))
      assert.same({ exp = "must be a number", nbf = "must be a number" }, body(res, 401))
      res = q:run(bearer(hs({ iss = "alice-iss", exp = tostring(now() + 60), nbf = 0 })))
      assert.same({ exp = "must be a number" }, body(res, 401))
    end)

    it("checks only the claims it is told to", function()
      assert.res_status(200, p:run(bearer(hs({ iss = "alice-iss", exp = now() - 100 }))))
    end)

    it("allows leeway seconds of clock skew either way", function()
      local l = plugin({ claims_to_verify = { "exp", "nbf" }, leeway = 30 })
      assert.res_status(200, l:run(bearer(hs({ iss = "alice-iss", exp = now() - 10,
                                               nbf = now() + 10 }))))
      local res = l:run(bearer(hs({ iss = "alice-iss", exp = now() - 40, nbf = now() })))
      assert.same({ exp = "token expired" }, body(res, 401))
    end)

    it("refuses tokens living longer than maximum_expiration", function()
      local m = plugin({ claims_to_verify = { "exp" }, maximum_expiration = 300 })
      assert.res_status(200, m:run(bearer(hs({ iss = "alice-iss", exp = now() + 250 }))))
      local res = m:run(bearer(hs({ iss = "alice-iss", exp = now() + 400 })))
      assert.same({ exp = "exceeds maximum allowed expiration" }, body(res, 401))
    end)

    it("checks claims only after the signature: a forged exp never reaches the check", function()
      local res = q:run(bearer(hs({ iss = "alice-iss", exp = 1 }, "wrong")))
      assert.equal("Invalid signature", message(res))
    end)
  end)

  describe("scopes (sluice)", function()
    it("requires every scope with scopes_match all", function()
      local q = plugin({ required_scopes = { "orders:read", "orders:write" } })
      assert.res_status(200, q:run(bearer(hs({ iss = "alice-iss",
        scope = "profile orders:write orders:read" }))))
      assert.res_status(200, q:run(bearer(hs({ iss = "alice-iss",
        scp = { "orders:read", "orders:write" } }))))
      local res = q:run(bearer(hs({ iss = "alice-iss", scope = "orders:read" })))
      assert.same({ message = "Missing required scopes: orders:write" }, body(res, 403))
      assert.equal('Bearer error="insufficient_scope", scope="orders:read orders:write"',
        res.headers["www-authenticate"])
      assert.is_nil(res.upstream)
      res = q:run(bearer(hs({ iss = "alice-iss" })))
      assert.same({ message = "Missing required scopes: orders:read orders:write" },
        body(res, 403))
      -- A scope is a whole word: "orders:reader" is not "orders:read".
      res = q:run(bearer(hs({ iss = "alice-iss", scope = "orders:reader orders:write" })))
      assert.same({ message = "Missing required scopes: orders:read" }, body(res, 403))
    end)

    it("takes one of them with scopes_match any", function()
      local q = plugin({ required_scopes = { "admin", "orders:write" }, scopes_match = "any" })
      assert.res_status(200, q:run(bearer(hs({ iss = "alice-iss", scope = "orders:write" }))))
      local res = q:run(bearer(hs({ iss = "alice-iss", scope = { "orders:read" } })))
      assert.same({ message = "Missing required scope: one of admin orders:write" },
        body(res, 403))
    end)

    it("reads another claim with scopes_claim, without falling back to scp", function()
      local q = plugin({ required_scopes = { "a" }, scopes_claim = "permissions" })
      assert.res_status(200, q:run(bearer(hs({ iss = "alice-iss", permissions = { "a" } }))))
      assert.res_status(403, q:run(bearer(hs({ iss = "alice-iss", scp = "a" }))))
    end)

    it("answers 403 even with anonymous: the token was valid, its scopes are not enough",
      function()
        local q = plugin({ required_scopes = { "a" }, anonymous = "guest" })
        assert.res_status(403, q:run(bearer(hs({ iss = "alice-iss" }))))
      end)
  end)

  describe("anonymous", function()
    local q = plugin({ anonymous = "guest" })

    it("lets a request that fails in as the anonymous consumer", function()
      for _, req in ipairs({ {}, bearer("x.y.z"), bearer(hs({ iss = "alice-iss" }, "bad")) }) do
        local res = q:run(req)
        assert.res_status(200, res)
        assert.equal(GUEST, res.upstream.headers["x-consumer-id"])
        assert.equal("guest", res.upstream.headers["x-consumer-username"])
        assert.equal("true", res.upstream.headers["x-anonymous-consumer"])
        assert.is_nil(res.upstream.headers["x-credential-identifier"])
      end
    end)

    it("authenticates a good token as its own consumer", function()
      local res = q:run(bearer(hs({ iss = "alice-iss" })))
      assert.equal("alice", res.upstream.headers["x-consumer-username"])
      assert.is_nil(res.upstream.headers["x-anonymous-consumer"])
    end)

    it("does nothing when another plugin already authenticated the request", function()
      local res = q:run({ credential = { id = "other" }, consumer = { id = BOB } })
      assert.res_status(200, res)
      assert.is_nil(res.upstream.headers["x-consumer-id"])
    end)

    it("answers 500 when the anonymous consumer does not exist", function()
      local res = plugin({ anonymous = "nobody" }):run({})
      assert.res_status(500, res)
      assert.matches("anonymous consumer nobody is configured but doesn't exist",
        table.concat(res.logs, "\n"))
    end)
  end)

  it("refuses every token when the config has no jwt_secrets at all", function()
    local q = t.plugin("jwt", {}, { consumers = { { username = "dave" } } })
    assert.equal("No credentials found for given 'iss'",
      message(q:run(bearer(hs({ iss = "alice-iss" })))))
  end)
end)
