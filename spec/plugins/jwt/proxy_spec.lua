-- jwt through the real binary: credentials from the YAML (nested and top-level), the
-- consumer headers reaching a real upstream, refusals as clients see them, a JWKS served by
-- a mock upstream and fetched once for two workers, and a bad PEM refused at sluice check.
local t = require("sluice.test")
local cjson = require("cjson")
local helpers = require("sluice.test.helpers")
local tokens = require("spec.plugins.jwt.tokens")

local encode, pem = tokens.encode, tokens.pem
local fmt = string.format

local SECRET = "proxy-secret"

local function bearer(token)
  return { headers = { Authorization = "Bearer " .. token } }
end

describe("plugin: jwt (proxy)", function()
  local upstream, idp, proxy

  setup(function()
    upstream = t.mock_upstream()
    idp = t.mock_upstream({ routes = {
      ["/jwks"] = { body = cjson.decode(tokens.jwks({ { "p256", kid = "idp-1", alg = "ES256" },
                                                      { "rsa", kid = "idp-2" } })) },
    } })
    proxy = t.start({
      consumers = {
        { username = "alice", custom_id = "crm-1",
          jwt_secrets = { { key = "alice-iss", secret = SECRET } } },
        { username = "bob" },
      },
      jwt_secrets = {
        { consumer = "bob", key = "bob-rs256", algorithm = "RS256",
          rsa_public_key = pem["rsa.pub"] },
      },
      services = {
        { name = "api", url = upstream.url, routes = {
            { name = "secrets", paths = { "/api" },
              plugins = { { name = "jwt", config = { claims_to_verify = { "exp" },
                                                     realm = "api" } } } },
            { name = "idp", paths = { "/idp" },
              plugins = { { name = "jwt", config = { jwks_uri = idp.url .. "/jwks",
                                                     consumer_claim = "sub",
                                                     required_scopes = { "read" } } } } },
        } },
      },
    }, { workers = 2 })
  end)

  teardown(function()
    t.stop()
  end)

  it("lets a valid HS256 token through with Kong's consumer headers upstream", function()
    local token = encode({ iss = "alice-iss", exp = os.time() + 60 }, "HS256", SECRET)
    local res = proxy:get("/api/orders", bearer(token))
    assert.res_status(200, res)
    local got = upstream:last_request()
    assert.equal("GET", got.method)
    assert.equal("alice", got.headers["x-consumer-username"])
    assert.equal("crm-1", got.headers["x-consumer-custom-id"])
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", got.headers["x-consumer-id"])
    assert.equal("alice-iss", got.headers["x-credential-identifier"])
    assert.equal("Bearer " .. token, got.headers["authorization"])
  end)

  it("takes an RS256 token of a top-level credential, from the query", function()
    local token = encode({ iss = "bob-rs256", exp = os.time() + 60 }, "RS256", pem.rsa)
    assert.res_status(200, proxy:get("/api/x", { query = { jwt = token } }))
    assert.equal("bob", upstream:last_request().headers["x-consumer-username"])
  end)

  it("refuses with Kong's statuses, bodies and challenges; nothing reaches the upstream",
    function()
      local before = #upstream:requests()
      local res = proxy:get("/api/x")
      assert.same({ message = "Unauthorized" }, cjson.decode(assert.res_status(401, res)))
      assert.equal('Bearer realm="api"', res.headers["www-authenticate"])
      res = proxy:get("/api/x", bearer(encode({ iss = "alice-iss", exp = os.time() - 5 },
        "HS256", SECRET)))
      assert.same({ exp = "token expired" }, cjson.decode(assert.res_status(401, res)))
      assert.equal('Bearer realm="api", error="invalid_token"', res.headers["www-authenticate"])
      res = proxy:get("/api/x", bearer(encode({ iss = "alice-iss", exp = os.time() + 60 },
        "none")))
      assert.equal("Bad token; invalid alg", res:json().message)
      res = proxy:get("/api/x", bearer(encode({ iss = "bob-rs256", exp = os.time() + 60 },
        "HS256", pem["rsa.pub"])))
      assert.equal("Invalid algorithm", res:json().message)
      res = proxy:get("/api/x", bearer("a.b"))
      assert.equal("Bad token; invalid JSON", res:json().message)
      assert.equal(before, #upstream:requests())
    end)

  it("verifies JWKS tokens on both workers with one fetch of the key set", function()
    for i = 1, 12 do
      local token = encode({ sub = "alice", scope = "read write" }, i % 2 == 0 and "ES256"
        or "RS256", i % 2 == 0 and pem.p256 or pem.rsa,
        { alg = i % 2 == 0 and "ES256" or "RS256", kid = i % 2 == 0 and "idp-1" or "idp-2" })
      local res = proxy:get("/idp/me", bearer(token))
      assert.res_status(200, res)
      assert.equal("alice", upstream:last_request().headers["x-consumer-username"])
    end
    local fetches = 0
    for _, r in ipairs(idp:requests()) do
      if r.uri == "/jwks" then
        fetches = fetches + 1
      end
    end
    assert.equal(1, fetches)
    local res = proxy:get("/idp/me", bearer(encode({ sub = "alice" }, "ES256", pem.p256,
      { alg = "ES256", kid = "idp-1" })))
    assert.equal("Missing required scopes: read", cjson.decode(assert.res_status(403, res))
      .message)
  end)

  it("refuses a credential with a bad PEM at sluice check, naming where it is", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/bad.yaml", [[
_format_version: "3.0"
consumers:
  - username: alice
    jwt_secrets:
      - key: alice-iss
        algorithm: ES256
        rsa_public_key: "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"
]])
    local out, rc = helpers.run(fmt("%s check -c %s/bad.yaml 2>&1", helpers.bin, dir))
    assert.is_not.equal(0, rc)
    assert.matches("bad.yaml:7: consumers[0].jwt_secrets[0].rsa_public_key: invalid key: "
      .. "invalid public key: ", out, 1, true)
  end)
end)
