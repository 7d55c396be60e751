-- jwt with jwks_uri, in-process: keys from a real nginx serving a JSON Web Key Set, picked by
-- kid, cached, refreshed on rotation at most once per interval, and what happens when the
-- issuer is down.
local t = require("sluice.test")
local cjson = require("cjson")
local helpers = require("sluice.test.helpers")
local tokens = require("spec.plugins.jwt.tokens")

local encode, pem = tokens.encode, tokens.pem

local CONSUMERS = {
  { id = "7e0f4b1c-1d2e-4f3a-8b4c-5d6e7f800003", username = "carol" },
  { id = "7e0f4b1c-1d2e-4f3a-8b4c-5d6e7f800009", username = "guest" },
}

local function bearer(token)
  return { headers = { Authorization = "Bearer " .. token } }
end

local function signed(claims, alg, priv, kid)
  return encode(claims, alg, pem[priv], { alg = alg, kid = kid, typ = "JWT" })
end

local function message(res, status)
  return cjson.decode(assert.res_status(status or 401, res)).message
end

-- Waits until the server has answered n fetches (nginx logs a request just
-- after answering it), then checks it stays at n.
local function assert_hits(server, n)
  helpers.wait_for(function() return server.hits() >= n end, 5)
  assert.equal(n, server.hits())
end

describe("plugin: jwt (JWKS)", function()
  local SET = tokens.jwks({ { "rsa", kid = "rsa-1" }, { "p256", kid = "ec-1", alg = "ES256" },
                            { "ed25519", kid = "ed-1" }, { "p384", kid = "enc-1", use = "enc" } })

  local function plugin(server, conf)
    conf = conf or {}
    conf.jwks_uri = server.url
    return t.plugin("jwt", conf, { consumers = CONSUMERS })
  end

  after_each(function()
    sluice.shared.jwt_jwks:flush_all()
  end)

  it("verifies tokens with the key their kid names, fetching the set once", function()
    local server = tokens.jwks_server()
    server.set(SET)
    local p = plugin(server)
    for _ = 1, 3 do
      local res = p:run(bearer(signed({ sub = "x" }, "RS256", "rsa", "rsa-1")))
      assert.res_status(200, res)
      local h = res.upstream.headers
      assert.equal("rsa-1", h["x-credential-identifier"])
      assert.is_nil(h["x-consumer-id"])
      assert.is_nil(h["x-anonymous-consumer"])
    end
    assert.res_status(200, p:run(bearer(signed({}, "PS256", "rsa", "rsa-1"))))
    assert.res_status(200, p:run(bearer(signed({}, "ES256", "p256", "ec-1"))))
    assert.res_status(200, p:run(bearer(signed({}, "EdDSA", "ed25519", "ed-1"))))
    assert_hits(server, 1)
  end)

  it("takes the algorithm from the JWK and the key, never from the token alone", function()
    local server = tokens.jwks_server()
    server.set(SET)
    local p = plugin(server)
    local public = pem["rsa.pub"]
    -- HS256 "signed" with the public key as the secret.
    assert.equal("Invalid algorithm", message(p:run(bearer(encode({}, "HS256", public,
      { alg = "HS256", kid = "rsa-1" })))))
    -- The JWK says ES256; ES384 would need another curve anyway, and RS256 another key.
    assert.equal("Invalid algorithm", message(p:run(bearer(signed({}, "RS256", "rsa", "ec-1")))))
    assert.equal("Invalid algorithm", message(p:run(bearer(signed({}, "ES256", "p256",
      "rsa-1")))))
    assert.equal("Bad token; invalid alg", message(p:run(bearer(encode({}, "none", "",
      { alg = "none", kid = "rsa-1" })))))
    -- Signed by another RSA key than rsa-1's.
    assert.equal("Invalid signature", message(p:run(bearer(signed({}, "PS256", "rsa-pss",
      "rsa-1")))))
    -- An encryption key is not a signing key.
    assert.equal("No key found for given 'kid'", message(p:run(bearer(signed({}, "ES384",
      "p384", "enc-1")))))
    assert.equal("Invalid 'kid' in header", message(p:run(bearer(encode({}, "ES256", pem.p256,
      { alg = "ES256", kid = 7 })))))
  end)

  it("needs a kid unless the set holds one key", function()
    local server = tokens.jwks_server()
    server.set(SET)
    local p = plugin(server)
    assert.equal("No mandatory 'kid' in header",
      message(p:run(bearer(signed({}, "RS256", "rsa")))))
    local single = tokens.jwks_server()
    single.set(tokens.jwks({ { "p256" } }))
    assert.res_status(200, plugin(single):run(bearer(signed({}, "ES256", "p256"))))
  end)

  it("fetches again for an unknown kid, at most once per jwks_refresh_interval", function()
    local server = tokens.jwks_server()
    server.set(tokens.jwks({ { "rsa", kid = "old" } }))
    local p = plugin(server, { jwks_refresh_interval = 1 })
    assert.res_status(200, p:run(bearer(signed({}, "RS256", "rsa", "old"))))
    assert_hits(server, 1)
    -- The issuer rotates; the first token with the new kid makes one fetch...
    server.set(tokens.jwks({ { "rsa", kid = "old" }, { "p256", kid = "new" } }))
    sluice.sleep(1.1)
    assert.res_status(200, p:run(bearer(signed({}, "ES256", "p256", "new"))))
    assert_hits(server, 2)
    -- ...and a flood of made-up kids makes none until the interval has passed.
    for i = 1, 20 do
      assert.equal("No key found for given 'kid'",
        message(p:run(bearer(signed({}, "ES256", "p256", "made-up-" .. i)))))
    end
    assert_hits(server, 2)
    sluice.sleep(1.1)
    assert.equal("No key found for given 'kid'",
      message(p:run(bearer(signed({}, "ES256", "p256", "still-unknown")))))
    assert_hits(server, 3)
  end)

  it("answers 503 while no key set could ever be fetched, without a fetch per request",
    function()
      local server = tokens.jwks_server()
      local p = plugin(server, { anonymous = "guest" })
      local res = p:run(bearer(signed({}, "RS256", "rsa", "rsa-1")))
      assert.equal("Could not get the keys to verify the token", message(res, 503))
      assert.is_nil(res.upstream)
      assert.matches("could not fetch the JWKS " .. server.url:gsub("%p", "%%%0")
        .. ": status 503", table.concat(res.logs, "\n"))
      for _ = 1, 5 do
        assert.res_status(503, p:run(bearer(signed({}, "RS256", "rsa", "rsa-1"))))
      end
      assert_hits(server, 1)
      -- Without a token, anonymous needs no keys.
      assert.res_status(200, p:run({}))
      -- A set that is not a key set is no better.
      server.set('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
      local q = plugin(server, { jwks_refresh_interval = 0 })
      res = q:run(bearer(signed({}, "RS256", "rsa", "rsa-1")))
      assert.res_status(503, res)
      assert.matches("no usable signing key in the set", table.concat(res.logs, "\n"))
    end)

  it("keeps using an expired set while the issuer is down", function()
    local server = tokens.jwks_server()
    server.set(SET)
    local p = plugin(server, { jwks_cache_ttl = 1, jwks_refresh_interval = 1 })
    assert.res_status(200, p:run(bearer(signed({}, "RS256", "rsa", "rsa-1"))))
    server.set(nil)
    sluice.sleep(1.1)
    local res = p:run(bearer(signed({}, "RS256", "rsa", "rsa-1")))
    assert.res_status(200, res)
    assert_hits(server, 2)
    for _ = 1, 5 do
      assert.res_status(200, p:run(bearer(signed({}, "RS256", "rsa", "rsa-1"))))
    end
    assert_hits(server, 2)
    -- Back up with a rotated set: the next try picks it up.
    server.set(tokens.jwks({ { "p256", kid = "ec-2" } }))
    sluice.sleep(1.1)
    assert.res_status(200, p:run(bearer(signed({}, "ES256", "p256", "ec-2"))))
    assert.equal("No key found for given 'kid'",
      message(p:run(bearer(signed({}, "RS256", "rsa", "rsa-1")))))
  end)

  it("maps a claim to a consumer with consumer_claim", function()
    local server = tokens.jwks_server()
    server.set(SET)
    local p = plugin(server, { consumer_claim = "sub" })
    local res = p:run(bearer(signed({ sub = "carol" }, "RS256", "rsa", "rsa-1")))
    assert.res_status(200, res)
    assert.equal("carol", res.upstream.headers["x-consumer-username"])
    assert.equal(CONSUMERS[1].id, res.upstream.headers["x-consumer-id"])
    res = p:run(bearer(signed({ sub = CONSUMERS[1].id }, "RS256", "rsa", "rsa-1")))
    assert.equal("carol", res.upstream.headers["x-consumer-username"])
    assert.equal("Could not find consumer for 'sub=zed'",
      message(p:run(bearer(signed({ sub = "zed" }, "RS256", "rsa", "rsa-1")))))
    assert.equal("No mandatory 'sub' in claims",
      message(p:run(bearer(signed({}, "RS256", "rsa", "rsa-1")))))
  end)

  it("checks claims and scopes on JWKS tokens too", function()
    local server = tokens.jwks_server()
    server.set(SET)
    local p = plugin(server, { claims_to_verify = { "exp" }, required_scopes = { "read" } })
    local exp = os.time() + 60
    assert.res_status(200, p:run(bearer(signed({ exp = exp, scope = "read" }, "RS256", "rsa",
      "rsa-1"))))
    local res = p:run(bearer(signed({ exp = os.time() - 1, scope = "read" }, "RS256", "rsa",
      "rsa-1")))
    assert.same({ exp = "token expired" }, cjson.decode(assert.res_status(401, res)))
    assert.equal("Missing required scopes: read",
      message(p:run(bearer(signed({ exp = exp }, "RS256", "rsa", "rsa-1"))), 403))
  end)

  teardown(function()
    t.stop()
  end)
end)
