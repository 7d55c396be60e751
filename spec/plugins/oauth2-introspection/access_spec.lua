-- oauth2-introspection in-process (t.plugin): each request introspects at a real
-- nginx endpoint on 127.0.0.1 (server.lua) whose answers the spec sets and whose
-- requests it reads back.
local t = require("sluice.test")
local helpers = require("spec.helpers")
local server = require("spec.plugins.oauth2-introspection.server")
local cjson = require("cjson")

local DICT = "oauth2-introspection"
local AUTH = "Basic Zm9vOmJhcg=="

local as

local function conf(extra)
  local c = { introspection_url = as.url, authorization_value = AUTH,
              token_type_hint = "access_token" }
  for k, v in pairs(extra or {}) do
    c[k] = v
  end
  return c
end

local function bearer(tok, extra)
  local h = { Authorization = "Bearer " .. tok }
  for k, v in pairs(extra or {}) do
    h[k] = v
  end
  return h
end

local function in_future(s)
  return math.floor(sluice.now()) + s
end

local function log_text(res)
  return table.concat(res.logs, "\n")
end

describe("plugin: oauth2-introspection (access)", function()
  setup(function()
    as = server.start()
  end)

  teardown(function()
    helpers.stop_all()
  end)

  before_each(function()
    if sluice.shared[DICT] then
      sluice.shared[DICT]:flush_all()
    end
  end)

  describe("the token", function()
    it("is required: 401 with Kong's body and a Bearer challenge, nothing introspected", function()
      local p = t.plugin("oauth2-introspection", conf())
      local before = #as:requests()
      local res = p:run({ path = "/orders" })
      assert.res_status(401, res)
      assert.same({ error = "invalid_request", error_description = "The access token is missing" },
        cjson.decode(res.body))
      assert.equal('Bearer realm="service"', res.headers["www-authenticate"])
      assert.is_nil(res.upstream)
      assert.equal(before, #as:requests())
      -- Another scheme is not a bearer token either.
      res = p:run({ headers = { Authorization = "Basic Zm9vOmJhcg==" } })
      assert.res_status(401, res)
      assert.equal(before, #as:requests())
    end)

    it("in a malformed Authorization header is an invalid_request", function()
      local p = t.plugin("oauth2-introspection", conf())
      for _, value in ipairs({ "Bearer", "Bearer two tokens" }) do
        local res = p:run({ headers = { Authorization = value } })
        assert.res_status(401, res)
        assert.equal("invalid_request", cjson.decode(res.body).error)
        assert.matches('error="invalid_request"', res.headers["www-authenticate"], 1, true)
      end
    end)

    it("is introspected with the client credentials, form-encoded, then proxied", function()
      local exp = in_future(3600)
      as:answer({ ["tok/+=1"] = { body = {
        active = true, scope = "read write", client_id = "app-1", username = "alice",
        token_type = "Bearer", exp = exp, iat = 1700000000, nbf = 1700000000, sub = "u-42",
        aud = "orders", iss = "http://as.test", jti = "j-1" } } })
      local p = t.plugin("oauth2-introspection", conf())
      local res = p:run({ path = "/orders", headers = bearer("tok/+=1") })
      assert.res_status(200, res)
      local r = as:requests("tok/+=1")
      assert.equal(1, #r)
      assert.equal("POST", r[1].method)
      assert.equal(AUTH, r[1].headers.authorization)
      assert.equal("application/x-www-form-urlencoded", r[1].headers["content-type"])
      assert.equal("application/json", r[1].headers.accept)
      assert.equal("token=tok%2F%2B%3D1&token_type_hint=access_token", r[1].body)
      local up = res.upstream.headers
      assert.equal("read write", up["x-credential-scope"])
      assert.equal("app-1", up["x-credential-client-id"])
      assert.equal("alice", up["x-credential-identifier"])
      assert.equal("Bearer", up["x-credential-token-type"])
      assert.equal(tostring(exp), up["x-credential-exp"])
      assert.equal("1700000000", up["x-credential-iat"])
      assert.equal("1700000000", up["x-credential-nbf"])
      assert.equal("u-42", up["x-credential-sub"])
      assert.equal("orders", up["x-credential-aud"])
      assert.equal("http://as.test", up["x-credential-iss"])
      assert.equal("j-1", up["x-credential-jti"])
      -- The token still goes upstream (hide_credentials is false by default).
      assert.equal("Bearer tok/+=1", up.authorization)
      -- No consumer is configured for alice: the request goes on without one.
      assert.is_nil(up["x-consumer-id"])
      assert.is_nil(up["x-anonymous-consumer"])
    end)

    it("sends client_id and client_secret as HTTP Basic, and no hint unless configured", function()
      as:answer({ t2 = { body = { active = true } } })
      local p = t.plugin("oauth2-introspection", { introspection_url = as.url,
        client_id = "gateway", client_secret = "s3cr:t" })
      assert.res_status(200, p:run({ headers = bearer("t2") }))
      local r = as:requests("t2")[1]
      -- RFC 6749 2.3.1: form-encoded, then base64 ("s3cr:t" -> "s3cr%3At").
      assert.equal("Basic " .. sluice.crypto.base64_encode("gateway:s3cr%3At"),
        r.headers.authorization)
      assert.equal("token=t2", r.body)
    end)

    it("may come as Token, or as the access_token query or body parameter", function()
      as:answer({ q1 = { body = { active = true } }, b1 = { body = { active = true } },
                  k1 = { body = { active = true } } })
      local p = t.plugin("oauth2-introspection", conf())
      assert.res_status(200, p:run({ headers = { Authorization = "token k1" } }))
      local res = p:run({ path = "/x", query = { access_token = "q1", page = "2" } })
      assert.res_status(200, res)
      assert.equal("access_token=q1&page=2", res.upstream.query)
      res = p:run({ method = "POST", path = "/x",
        headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
        body = "access_token=b1&item=7" })
      assert.res_status(200, res)
      assert.equal("access_token=b1&item=7", res.upstream.body)
      assert.equal(1, #as:requests("q1"))
      assert.equal(1, #as:requests("b1"))
      assert.equal(1, #as:requests("k1"))
    end)

    it("is removed from what goes upstream with hide_credentials", function()
      as:answer({ h1 = { body = { active = true } } })
      local p = t.plugin("oauth2-introspection", conf({ hide_credentials = true }))
      local res = p:run({ headers = bearer("h1", { ["X-Keep"] = "1" }) })
      assert.res_status(200, res)
      assert.is_nil(res.upstream.headers.authorization)
      assert.equal("1", res.upstream.headers["x-keep"])
      res = p:run({ path = "/x", query = "a=1&access_token=h1&b=2" })
      assert.res_status(200, res)
      assert.equal("a=1&b=2", res.upstream.query)
      res = p:run({ method = "POST", path = "/x", body = { access_token = "h1", item = 7 } })
      assert.res_status(200, res)
      assert.same({ item = 7 }, cjson.decode(res.upstream.body))
    end)

    it("that is inactive is refused with invalid_token", function()
      local p = t.plugin("oauth2-introspection", conf())
      local res = p:run({ headers = bearer("nope") })
      assert.res_status(401, res)
      assert.same({ error = "invalid_token",
                    error_description = "The access token is invalid or has expired" },
        cjson.decode(res.body))
      assert.equal('Bearer realm="service", error="invalid_token", '
        .. 'error_description="The access token is invalid or has expired"',
        res.headers["www-authenticate"])
      assert.is_nil(res.upstream)
    end)

    it("that the endpoint says is active but past its exp is refused", function()
      as:answer({ old = { body = { active = true, exp = math.floor(sluice.now()) - 10 } } })
      local p = t.plugin("oauth2-introspection", conf())
      assert.res_status(401, p:run({ headers = bearer("old") }))
    end)
  end)

  describe("the cache", function()
    it("answers a token again without the endpoint, keyed by its hash", function()
      local tok = "secret-token-c1"
      as:answer({ [tok] = { body = { active = true, scope = "read", exp = in_future(3600) } } })
      local p = t.plugin("oauth2-introspection", conf())
      for _ = 1, 3 do
        local res = p:run({ headers = bearer(tok) })
        assert.res_status(200, res)
        assert.equal("read", res.upstream.headers["x-credential-scope"])
      end
      assert.equal(1, #as:requests(tok))
      -- Neither the key nor the value holds the token ('-' is not hex).
      local dict = sluice.shared[DICT]
      local keys = dict:get_keys(0)
      assert.equal(1, #keys)
      assert.matches("^t:" .. ("%x"):rep(64) .. "$", keys[1])
      assert.is_nil(dict:get(keys[1]):find(tok, 1, true))
    end)

    it("keeps an active answer for ttl seconds", function()
      as:answer({ c2 = { body = { active = true } } })
      local p = t.plugin("oauth2-introspection", conf({ ttl = 1 }))
      assert.res_status(200, p:run({ headers = bearer("c2") }))
      assert.res_status(200, p:run({ headers = bearer("c2") }))
      assert.equal(1, #as:requests("c2"))
      sluice.sleep(1.1)
      as:answer({})
      assert.res_status(401, p:run({ headers = bearer("c2") }))
      assert.equal(2, #as:requests("c2"))
    end)

    it("never serves an active answer past the token's exp, whatever the ttl", function()
      local exp = math.floor(sluice.now()) + 2
      as:answer({ c3 = { body = { active = true, exp = exp } } })
      local p = t.plugin("oauth2-introspection", conf({ ttl = 3600 }))
      assert.res_status(200, p:run({ headers = bearer("c3") }))
      assert.res_status(200, p:run({ headers = bearer("c3") }))
      assert.equal(1, #as:requests("c3"))
      -- The endpoint would still say active: the cached answer must not.
      while sluice.now() < exp + 0.05 do
        sluice.sleep(0.1)
      end
      assert.res_status(401, p:run({ headers = bearer("c3") }))
    end)

    it("keeps an inactive answer for inactive_ttl seconds, or not at all with 0", function()
      local p = t.plugin("oauth2-introspection", conf({ inactive_ttl = 1 }))
      assert.res_status(401, p:run({ headers = bearer("bad1") }))
      assert.res_status(401, p:run({ headers = bearer("bad1") }))
      assert.equal(1, #as:requests("bad1"))
      sluice.sleep(1.1)
      as:answer({ bad1 = { body = { active = true } } })
      assert.res_status(200, p:run({ headers = bearer("bad1") }))
      p = t.plugin("oauth2-introspection", conf({ inactive_ttl = 0 }))
      assert.res_status(401, p:run({ headers = bearer("bad2") }))
      assert.res_status(401, p:run({ headers = bearer("bad2") }))
      assert.equal(2, #as:requests("bad2"))
    end)

    it("waits for another request's introspection, and takes over one that never ends",
      function()
        as:answer({ orphan = { body = { active = true } } })
        local p = t.plugin("oauth2-introspection", conf({ timeout = 200 }))
        assert.res_status(200, p:run({ headers = bearer("orphan") }))
        local dict = sluice.shared[DICT]
        local key = dict:get_keys(0)[1]
        dict:flush_all()
        -- As if a request on a worker that died had taken the lock for this token.
        dict:add("l:" .. key:sub(3), "9:1", 0.5)
        local started = sluice.now()
        local res = p:run({ headers = bearer("orphan") })
        assert.res_status(200, res)
        -- It waited for the lock's owner until the lock expired, then introspected.
        assert.is_true(sluice.now() - started >= 0.45)
        assert.equal(2, #as:requests("orphan"))
      end)

    it("is not shared by instances that introspect differently", function()
      as:answer({ c4 = { body = { active = true } } })
      local a = t.plugin("oauth2-introspection", conf())
      local b = t.plugin("oauth2-introspection", conf({ authorization_value = "Basic other" }))
      assert.res_status(200, a:run({ headers = bearer("c4") }))
      assert.res_status(200, b:run({ headers = bearer("c4") }))
      local r = as:requests("c4")
      assert.equal(2, #r)
      assert.equal("Basic other", r[2].headers.authorization)
    end)
  end)

  describe("when the endpoint fails", function()
    local function refused_with(p, tok, cause)
      local res = p:run({ headers = bearer(tok) })
      assert.res_status(503, res)
      assert.same({ message = "The access token could not be introspected" },
        cjson.decode(res.body))
      assert.is_nil(res.upstream)
      assert.matches(cause, log_text(res), 1, true)
    end

    it("answers 503 when it refuses connections", function()
      local url = "http://127.0.0.1:" .. helpers.free_port() .. "/introspect"
      local p = t.plugin("oauth2-introspection", conf({ introspection_url = url }))
      refused_with(p, "any", "connection refused")
    end)

    it("answers 503 when it is slower than timeout", function()
      as:answer({ slow = { delay = 1, body = { active = true } } })
      local p = t.plugin("oauth2-introspection", conf({ timeout = 200 }))
      refused_with(p, "slow", "timeout")
    end)

    it("answers 503 for a 5xx, or any answer but 200", function()
      as:answer({ e500 = { status = 500, body = "boom" }, e401 = { status = 401, body = "no" } })
      local p = t.plugin("oauth2-introspection", conf())
      refused_with(p, "e500", "the endpoint answered 500")
      refused_with(p, "e401", "the endpoint answered 401")
    end)

    it("answers 503 for an answer that is not RFC 7662 JSON", function()
      as:answer({ html = { body = "<html>hi</html>" }, noactive = { body = { scope = "x" } } })
      local p = t.plugin("oauth2-introspection", conf())
      refused_with(p, "html", "not a JSON object")
      refused_with(p, "noactive", "has no boolean 'active'")
    end)

    it("does not cache the failure, and a cached token still gets in", function()
      as:answer({ ok1 = { body = { active = true } }, flaky = { status = 502, body = "" } })
      local p = t.plugin("oauth2-introspection", conf())
      assert.res_status(200, p:run({ headers = bearer("ok1") }))
      assert.res_status(503, p:run({ headers = bearer("flaky") }))
      as:answer({ flaky = { body = { active = true } } })
      assert.res_status(200, p:run({ headers = bearer("flaky") }))
      -- The endpoint goes away entirely: ok1 is answered from the cache.
      local down = t.plugin("oauth2-introspection", conf())
      as:answer({ ok1 = { status = 500, body = "" } })
      assert.res_status(200, down:run({ headers = bearer("ok1") }))
      assert.equal(1, #as:requests("ok1"))
    end)

    it("answers 503 even with anonymous: an unverified token is not let in", function()
      local url = "http://127.0.0.1:" .. helpers.free_port() .. "/introspect"
      local p = t.plugin("oauth2-introspection", conf({ introspection_url = url,
        anonymous = "guest" }))
      assert.res_status(503, p:run({ headers = bearer("x") }))
    end)
  end)

  describe("scopes", function()
    before_each(function()
      as:answer({ rw = { body = { active = true, scope = "orders:read orders:write" } },
                  ro = { body = { active = true, scope = "orders:read" } },
                  none = { body = { active = true } },
                  list = { body = { active = true, scope = { "orders:read", "orders:write" } } } })
    end)

    it("with mode all need every required scope: 403 insufficient_scope otherwise", function()
      local p = t.plugin("oauth2-introspection", conf({
        required_scopes = { "orders:read", "orders:write" } }))
      assert.res_status(200, p:run({ headers = bearer("rw") }))
      assert.res_status(200, p:run({ headers = bearer("list") }))
      for tok, missing in pairs({ ro = "orders:write", none = "orders:read orders:write" }) do
        local res = p:run({ headers = bearer(tok) })
        assert.res_status(403, res)
        assert.same({ message = "Missing required scopes: " .. missing }, cjson.decode(res.body))
        assert.equal('Bearer realm="service", error="insufficient_scope", '
          .. 'scope="orders:read orders:write"', res.headers["www-authenticate"])
        assert.is_nil(res.upstream)
      end
    end)

    it("with mode any need one of them", function()
      local p = t.plugin("oauth2-introspection", conf({
        required_scopes = { "orders:write", "admin" }, scopes_match = "any" }))
      assert.res_status(200, p:run({ headers = bearer("rw") }))
      local res = p:run({ headers = bearer("ro") })
      assert.res_status(403, res)
      assert.same({ message = "Missing required scope: one of orders:write admin" },
        cjson.decode(res.body))
      assert.res_status(403, p:run({ headers = bearer("none") }))
    end)

    it("match whole scopes, not parts of one", function()
      local p = t.plugin("oauth2-introspection", conf({ required_scopes = { "orders" } }))
      assert.res_status(403, p:run({ headers = bearer("rw") }))
    end)
  end)

  describe("what the upstream gets", function()
    it("never a client's own X-Credential-* for a claim the token lacks", function()
      as:answer({ bare = { body = { active = true } } })
      local p = t.plugin("oauth2-introspection", conf({ custom_claims_forward = { "email" } }))
      local res = p:run({ headers = bearer("bare", { ["X-Credential-Scope"] = "admin",
        ["X-Credential-Email"] = "ceo@example.com", ["X-Consumer-ID"] = "forged" }) })
      assert.res_status(200, res)
      assert.is_nil(res.upstream.headers["x-credential-scope"])
      assert.is_nil(res.upstream.headers["x-credential-email"])
      assert.is_nil(res.upstream.headers["x-consumer-id"])
    end)

    it("custom claims as X-Credential-<claim>: lists one line each, objects as JSON", function()
      as:answer({ rich = { body = { active = true, email = "a@example.com",
        roles = { "admin", "dev" }, org = { id = 7 }, verified = true, aud = { "a", "b" },
        evil = "x\r\nInjected: 1" } } })
      local p = t.plugin("oauth2-introspection", conf({
        custom_claims_forward = { "email", "roles", "org", "verified", "evil", "absent" } }))
      local res = p:run({ headers = bearer("rich") })
      assert.res_status(200, res)
      local up = res.upstream.headers
      assert.equal("a@example.com", up["x-credential-email"])
      assert.same({ "admin", "dev" }, up["x-credential-roles"])
      assert.same({ id = 7 }, cjson.decode(up["x-credential-org"]))
      assert.equal("true", up["x-credential-verified"])
      assert.same({ "a", "b" }, up["x-credential-aud"])
      assert.is_nil(up["x-credential-evil"])
      assert.is_nil(up["injected"])
      assert.is_nil(up["x-credential-absent"])
    end)
  end)

  describe("the introspection request", function()
    it("carries custom_introspection_headers", function()
      as:answer({ ch = { body = { active = true } } })
      local p = t.plugin("oauth2-introspection", conf({
        custom_introspection_headers = { ["X-Tenant"] = "acme", accept = "application/x+json" } }))
      assert.res_status(200, p:run({ headers = bearer("ch") }))
      local r = as:requests("ch")[1]
      assert.equal("acme", r.headers["x-tenant"])
      -- A custom header replaces the plugin's own of that name, not adds to it.
      assert.equal("application/x+json", r.headers.accept)
    end)

    it("with introspect_request tells the client's method and path, cached per path", function()
      as:answer({ ir = { body = { active = true } } })
      local p = t.plugin("oauth2-introspection", conf({ introspect_request = true }))
      assert.res_status(200, p:run({ method = "DELETE", path = "/orders/7",
                                     headers = bearer("ir") }))
      assert.res_status(200, p:run({ method = "DELETE", path = "/orders/7",
                                     headers = bearer("ir") }))
      assert.res_status(200, p:run({ path = "/orders/8", headers = bearer("ir") }))
      local r = as:requests("ir")
      assert.equal(2, #r)
      assert.equal("/orders/7", r[1].headers["x-request-path"])
      assert.equal("DELETE", r[1].headers["x-request-http-method"])
      assert.equal("/orders/8", r[2].headers["x-request-path"])
      assert.equal("GET", r[2].headers["x-request-http-method"])
    end)
  end)

  it("lets OPTIONS through untouched with run_on_preflight false", function()
    local p = t.plugin("oauth2-introspection", conf({ run_on_preflight = false }))
    assert.res_status(200, p:run({ method = "OPTIONS", path = "/x" }))
    assert.res_status(401, p:run({ method = "GET", path = "/x" }))
    p = t.plugin("oauth2-introspection", conf())
    assert.res_status(401, p:run({ method = "OPTIONS", path = "/x" }))
  end)
end)
