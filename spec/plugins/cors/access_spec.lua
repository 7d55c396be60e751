-- cors in-process (t.plugin): preflights answered without the upstream, the
-- headers of actual requests for every field, and Vary.
local t = require("sluice.test")
local policy = require("sluice.plugins.cors.policy")

local APP = "https://app.example.com"
local DEFAULT_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"

local function preflight(p, origin, extra)
  local headers = { Origin = origin, ["Access-Control-Request-Method"] = "PUT" }
  for k, v in pairs(extra or {}) do
    headers[k] = v
  end
  return p:run({ method = "OPTIONS", path = "/items", headers = headers })
end

local function get(p, origin, upstream, method)
  return p:run({ method = method or "GET", path = "/items", headers = { Origin = origin },
                 upstream = upstream })
end

-- Every Access-Control-* header of a response, by lower-case name.
local function cors_headers(res)
  local out = {}
  for k, v in pairs(res.headers) do
    if k:find("^access%-control%-") then
      out[k] = v
    end
  end
  return out
end

describe("plugin: cors (access)", function()
  describe("with the defaults (any origin)", function()
    local p = t.plugin("cors", {})

    it("answers a preflight itself with 200 and Kong's headers, not the upstream", function()
      local res = preflight(p, APP, { ["Access-Control-Request-Headers"] = "content-type,x-id" })
      assert.res_status(200, res)
      assert.equal("", res.body)
      assert.is_nil(res.upstream)
      assert.same({
        ["access-control-allow-origin"] = "*",
        ["access-control-allow-methods"] = DEFAULT_METHODS,
        ["access-control-allow-headers"] = "content-type,x-id",
      }, cors_headers(res))
      -- The answer repeats the asked headers, so it depends on them; not on Origin.
      assert.equal("Access-Control-Request-Headers", res.headers.vary)
    end)

    it("sends no Allow-Headers to a preflight that asks for none", function()
      local res = preflight(p, APP)
      assert.res_status(200, res)
      assert.is_nil(res.headers["access-control-allow-headers"])
    end)

    it("gives an actual request Allow-Origin * and no Vary: the same for all", function()
      local res = get(p, APP)
      assert.res_status(200, res)
      assert.is_table(res.upstream)
      assert.same({ ["access-control-allow-origin"] = "*" }, cors_headers(res))
      assert.is_nil(res.headers.vary)
    end)

    it("adds * to requests without an Origin too (allow_origin_absent)", function()
      local res = p:run({ path = "/items" })
      assert.equal("*", res.headers["access-control-allow-origin"])
    end)

    it("proxies an OPTIONS without Access-Control-Request-Method: it is no preflight", function()
      local res = get(p, APP, { status = 204 }, "OPTIONS")
      assert.res_status(204, res)
      assert.equal("OPTIONS", res.upstream.method)
      assert.equal("*", res.headers["access-control-allow-origin"])
    end)

    it("proxies an OPTIONS without Origin", function()
      local res = p:run({ method = "OPTIONS", path = "/items",
                          headers = { ["Access-Control-Request-Method"] = "PUT" } })
      assert.equal("OPTIONS", res.upstream.method)
    end)

    it("adds its headers to other responses too, such as the upstream's errors", function()
      local res = get(p, APP, { status = 503, body = "down" })
      assert.res_status(503, res)
      assert.equal("*", res.headers["access-control-allow-origin"])
    end)
  end)

  describe("with exact origins", function()
    local p = t.plugin("cors", { origins = { APP, "http://127.0.0.1:8080" } })

    it("echoes an allowed origin, with Vary: Origin", function()
      local res = get(p, APP)
      assert.equal(APP, res.headers["access-control-allow-origin"])
      assert.equal("Origin", res.headers.vary)
      res = get(p, "http://127.0.0.1:8080")
      assert.equal("http://127.0.0.1:8080", res.headers["access-control-allow-origin"])
    end)

    it("gives a refused origin no CORS headers, with Vary: Origin, and still proxies", function()
      for _, o in ipairs({ "https://evil.example.com", "http://app.example.com",
                           "https://app.example.com:8443", "http://localhost:8080", "null" }) do
        local res = get(p, o)
        assert.res_status(200, res)
        assert.same({}, cors_headers(res), o)
        assert.equal("Origin", res.headers.vary)
      end
    end)

    it("removes the upstream's own Allow-Origin for a refused origin", function()
      local res = get(p, "https://evil.example.com", { headers = {
        ["Access-Control-Allow-Origin"] = "*", ["Access-Control-Allow-Credentials"] = "true" } })
      assert.same({}, cors_headers(res))
    end)

    it("overrides the upstream's Allow-Origin for an allowed origin", function()
      local res = get(p, APP, { headers = { ["Access-Control-Allow-Origin"] = "*" } })
      assert.equal(APP, res.headers["access-control-allow-origin"])
    end)

    it("answers an allowed preflight with the origin, a refused one with 200 only", function()
      local res = preflight(p, APP)
      assert.res_status(200, res)
      assert.equal(APP, res.headers["access-control-allow-origin"])
      assert.equal(DEFAULT_METHODS, res.headers["access-control-allow-methods"])
      assert.equal("Origin, Access-Control-Request-Headers", res.headers.vary)
      res = preflight(p, "https://evil.example.com")
      assert.res_status(200, res)
      assert.is_nil(res.upstream)
      assert.same({}, cors_headers(res))
      assert.equal("Origin", res.headers.vary)
    end)

    it("matches origins written with a default port, upper case or a path", function()
      local q = t.plugin("cors", { origins = { "HTTPS://App.Example.com:443/" } })
      assert.equal(APP, get(q, APP).headers["access-control-allow-origin"])
      -- And a request origin with the default port (no browser sends one).
      assert.equal("https://app.example.com:443",
        get(q, "https://app.example.com:443").headers["access-control-allow-origin"])
    end)

    it("with one origin, sends it to requests without an Origin (as Kong)", function()
      local q = t.plugin("cors", { origins = { APP } })
      local res = q:run({ path = "/" })
      assert.equal(APP, res.headers["access-control-allow-origin"])
      assert.equal("Origin", res.headers.vary)
      -- With several, there is no one to send.
      res = p:run({ path = "/" })
      assert.same({}, cors_headers(res))
      assert.equal("Origin", res.headers.vary)
    end)

    it("with allow_origin_absent false, leaves requests without an Origin alone, but for Vary",
      function()
        local q = t.plugin("cors", { origins = { APP }, allow_origin_absent = false,
                                     credentials = true })
        local res = q:run({ path = "/", upstream = { headers = {
          ["Access-Control-Allow-Origin"] = "https://upstream.example.com" } } })
        assert.same({ ["access-control-allow-origin"] = "https://upstream.example.com" },
          cors_headers(res))
        assert.equal("Origin", res.headers.vary)
        -- Even with any origin allowed, the answer now depends on the Origin.
        q = t.plugin("cors", { allow_origin_absent = false })
        res = q:run({ path = "/" })
        assert.same({}, cors_headers(res))
        assert.equal("Origin", res.headers.vary)
        assert.equal("*", get(q, APP).headers["access-control-allow-origin"])
      end)
  end)

  describe("with regex origins", function()
    it("anchors a regex to the whole origin", function()
      local p = t.plugin("cors", { origins = { "https://[a-z]+\\.example\\.com" } })
      assert.equal(APP, get(p, APP).headers["access-control-allow-origin"])
      for _, o in ipairs({ "https://app.example.com.evil.net", "http://app.example.com",
                           "https://evil.net/https://app.example.com", "https://a1.example.com",
                           "https://app.example.com:8443" }) do
        assert.is_nil(get(p, o).headers["access-control-allow-origin"], o)
      end
    end)

    it("anchors every branch of an alternation", function()
      local p = t.plugin("cors", { origins = { "https://a\\.test|https://b\\.test" } })
      for _, o in ipairs({ "https://a.test", "https://b.test" }) do
        assert.equal(o, get(p, o).headers["access-control-allow-origin"])
      end
      assert.is_nil(get(p, "https://a.test.evil").headers["access-control-allow-origin"])
      assert.is_nil(get(p, "https://x.https://b.test").headers["access-control-allow-origin"])
    end)

    it("matches a regex without ':' against the origin's host, any scheme and port (as Kong)",
      function()
        local p = t.plugin("cors", { origins = { "(.+\\.)?example\\.org" } })
        for _, o in ipairs({ "https://example.org", "http://www.example.org:8080",
                             "https://a.b.example.org" }) do
          assert.equal(o, get(p, o).headers["access-control-allow-origin"], o)
        end
        for _, o in ipairs({ "https://example.org.evil.net", "https://notexample.org" }) do
          assert.is_nil(get(p, o).headers["access-control-allow-origin"], o)
        end
      end)

    it("mixes exact origins and regexes, and answers preflights by them", function()
      local p = t.plugin("cors",
        { origins = { "http://127.0.0.1:9000", "https://.*\\.example\\.com" } })
      assert.equal("http://127.0.0.1:9000",
        preflight(p, "http://127.0.0.1:9000").headers["access-control-allow-origin"])
      assert.equal(APP, preflight(p, APP).headers["access-control-allow-origin"])
      assert.is_nil(preflight(p, "http://127.0.0.1:9001").headers["access-control-allow-origin"])
    end)

    it("remembers verdicts per origin, and stays right past the memo's size", function()
      local conf = t.plugin("cors", { origins = { "https://[0-9]+\\.example\\.com" } }).config
      local pol = policy.get(conf)
      for i = 1, 2500 do
        assert.is_true(policy.allowed(pol, "https://" .. i .. ".example.com"))
        assert.is_false(policy.allowed(pol, "https://" .. i .. ".evil.com"))
      end
      assert.is_true(pol.memo_n <= 1024)
      assert.is_true(policy.allowed(pol, "https://7.example.com"))
      -- Over-long origins are matched, never remembered.
      local long = "https://" .. ("1"):rep(400) .. ".example.com"
      local n = pol.memo_n
      assert.is_true(policy.allowed(pol, long))
      assert.is_false(policy.allowed(pol, long .. ".evil"))
      assert.equal(n, pol.memo_n)
    end)
  end)

  describe("credentials", function()
    it("sends Allow-Credentials with an allowed exact origin", function()
      local p = t.plugin("cors", { origins = { APP }, credentials = true })
      local res = get(p, APP)
      assert.equal(APP, res.headers["access-control-allow-origin"])
      assert.equal("true", res.headers["access-control-allow-credentials"])
      res = preflight(p, APP)
      assert.equal("true", res.headers["access-control-allow-credentials"])
      assert.is_nil(get(p, "https://evil.example.com").headers["access-control-allow-credentials"])
    end)

    it("echoes the origin, not * (browsers refuse * with credentials), with Vary", function()
      local p = t.plugin("cors", { origins = { "*" }, credentials = true })
      local res = get(p, "http://127.0.0.1:5555")
      assert.equal("http://127.0.0.1:5555", res.headers["access-control-allow-origin"])
      assert.equal("true", res.headers["access-control-allow-credentials"])
      assert.equal("Origin", res.headers.vary)
      res = preflight(p, "http://127.0.0.1:5555")
      assert.equal("http://127.0.0.1:5555", res.headers["access-control-allow-origin"])
      assert.equal("true", res.headers["access-control-allow-credentials"])
      assert.equal("Origin, Access-Control-Request-Headers", res.headers.vary)
      -- Without an Origin: * and no credentials, but Vary still says it depends.
      res = p:run({ path = "/" })
      assert.same({ ["access-control-allow-origin"] = "*" }, cors_headers(res))
      assert.equal("Origin", res.headers.vary)
    end)
  end)

  describe("the other fields", function()
    local p = t.plugin("cors", {
      origins = { APP }, methods = { "GET", "POST" }, headers = { "Content-Type", "X-Id" },
      exposed_headers = { "X-Total", "X-Page" }, max_age = 3600, private_network = true,
    })

    it("answers preflights with methods, headers and max_age, as Kong joins them", function()
      local res = preflight(p, APP, { ["Access-Control-Request-Headers"] = "x-other" })
      assert.same({
        ["access-control-allow-origin"] = APP,
        ["access-control-allow-methods"] = "GET,POST",
        ["access-control-allow-headers"] = "Content-Type,X-Id",
        ["access-control-max-age"] = "3600",
      }, cors_headers(res))
      assert.equal("Origin, Access-Control-Request-Private-Network", res.headers.vary)
    end)

    it("allows a private network only to a preflight that asks for it", function()
      local res = preflight(p, APP, { ["Access-Control-Request-Private-Network"] = "true" })
      assert.equal("true", res.headers["access-control-allow-private-network"])
      res = preflight(p, APP, { ["Access-Control-Request-Private-Network"] = "false" })
      assert.is_nil(res.headers["access-control-allow-private-network"])
      local q = t.plugin("cors", { origins = { APP } })
      res = preflight(q, APP, { ["Access-Control-Request-Private-Network"] = "true" })
      assert.is_nil(res.headers["access-control-allow-private-network"])
      res = preflight(p, "https://evil.example.com",
        { ["Access-Control-Request-Private-Network"] = "true" })
      assert.is_nil(res.headers["access-control-allow-private-network"])
    end)

    it("exposes headers on actual answers only", function()
      local res = get(p, APP, { headers = { ["X-Total"] = "7" } })
      assert.equal("X-Total,X-Page", res.headers["access-control-expose-headers"])
      assert.is_nil(preflight(p, APP).headers["access-control-expose-headers"])
      assert.is_nil(get(p, "https://evil.example.com").headers["access-control-expose-headers"])
    end)

    it("sends max_age in whole seconds", function()
      local q = t.plugin("cors", { max_age = 7.9 })
      assert.equal("7", preflight(q, APP).headers["access-control-max-age"])
      q = t.plugin("cors", { max_age = 0 })
      assert.equal("0", preflight(q, APP).headers["access-control-max-age"])
    end)

    it("lets the upstream answer preflights with preflight_continue, adding nothing", function()
      local q = t.plugin("cors", { origins = { APP }, preflight_continue = true })
      local res = q:run({ method = "OPTIONS", path = "/items", headers = {
        Origin = APP, ["Access-Control-Request-Method"] = "PUT" },
        upstream = { status = 204, headers = { ["Access-Control-Allow-Origin"] = "*" } } })
      assert.res_status(204, res)
      assert.equal("OPTIONS", res.upstream.method)
      assert.equal(APP, res.upstream.headers.origin)
      assert.same({ ["access-control-allow-origin"] = "*" }, cors_headers(res))
      assert.is_nil(res.headers.vary)
      -- Actual requests still get the headers.
      assert.equal(APP, get(q, APP).headers["access-control-allow-origin"])
    end)
  end)

  describe("Vary", function()
    local p = t.plugin("cors", { origins = { APP } })

    it("adds Origin to the upstream's Vary, keeping it", function()
      local res = get(p, APP, { headers = { Vary = "Accept-Encoding" } })
      assert.same({ "Accept-Encoding", "Origin" }, res.headers.vary)
    end)

    it("does not repeat Origin when the upstream names it, in any case or position", function()
      for _, v in ipairs({ "Origin", "origin", "Accept-Encoding, ORIGIN", "origin,accept",
                           "Accept-Encoding,Origin ", "*" }) do
        local res = get(p, APP, { headers = { Vary = v } })
        assert.equal(v:gsub("%s+$", ""), res.headers.vary, v)
      end
    end)

    it("adds Origin next to names that only contain it", function()
      local res = get(p, APP, { headers = { Vary = "X-Origin-Id, Origin-Trial" } })
      assert.same({ "X-Origin-Id, Origin-Trial", "Origin" }, res.headers.vary)
    end)

    it("adds it for refused origins too", function()
      local res = get(p, "https://evil.example.com", { headers = { Vary = "Accept" } })
      assert.same({ "Accept", "Origin" }, res.headers.vary)
    end)
  end)
end)
