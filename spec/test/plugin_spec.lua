-- t.plugin(name, conf):run{...}: plugins run in-process against a synthetic
-- request through the real parser, router, runner and head rendering.
local t = require("sluice.test")
local socket = require("socket")

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/spec/test/[^/]*$") or "."
local FIXTURES = { HERE .. "/spec/fixtures/plugins" }

describe("t.plugin (bundled plugins)", function()
  it("request-termination answers without reaching the upstream", function()
    local p = t.plugin("request-termination", { status_code = 403, message = "go away" })
    local res = p:run({ path = "/anything" })
    assert.res_status(403, res)
    assert.same({ message = "go away" }, res:json())
    assert.matches("^application/json", res.headers["content-type"])
    assert.equal(tostring(#res.body), res.headers["content-length"])
    assert.is_nil(res.upstream)
  end)

  it("request-termination's defaults come from its schema", function()
    local res = t.plugin("request-termination"):run()
    assert.res_status(503, res)
    assert.is_nil(res.upstream)
  end)

  it("set_query and set_body encode numeric keys, lists, bare and false values", function()
    local p = t.plugin("pre-function", { access = { [[
      sluice.service.request.set_query({ [2] = "two", b = { "x y", "z" }, flag = true,
                                         off = false })
      sluice.service.request.set_body({ [1] = "one", a = "b" },
                                      "application/x-www-form-urlencoded")
    ]] } })
    local res = p:run({ method = "POST", path = "/q", body = "x=1",
                        headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } })
    assert.equal("2=two&b=x%20y&b=z&flag", res.upstream.query)
    assert.equal("1=one&a=b", res.upstream.body)
  end)

  it("pre-function sets headers upstream from the query and the body", function()
    local p = t.plugin("pre-function", { access = { [[
      local body = sluice.request.get_body()
      sluice.service.request.set_header("X-Tenant", sluice.request.get_query_arg("tenant"))
      sluice.service.request.set_header("X-Item", body.item)
      sluice.service.request.clear_header("X-Secret")
      sluice.log.notice("tenant ", sluice.request.get_query_arg("tenant"))
    ]] } })
    local res = p:run({ method = "POST", path = "/orders/7", query = { tenant = "acme co" },
                        headers = { ["X-Secret"] = "s3", ["X-Trace"] = "t1" },
                        body = { item = "book" } })
    assert.res_status(200, res)
    local up = res.upstream
    assert.equal("POST", up.method)
    assert.equal("/orders/7", up.path)
    assert.equal("tenant=acme%20co", up.query)
    assert.equal("acme co", up.headers["x-tenant"])
    assert.equal("book", up.headers["x-item"])
    assert.equal("t1", up.headers["x-trace"])
    assert.is_nil(up.headers["x-secret"])
    assert.equal('{"item":"book"}', up.body)
    assert.equal("127.0.0.1:8080", up.headers.host)
    assert.equal("127.0.0.1", up.headers["x-forwarded-for"])
    assert.same({ "[notice] [pre-function] tenant acme co" }, res.logs)
  end)

  it("post-function changes the upstream's answer in header_filter", function()
    local p = t.plugin("post-function", { header_filter = { [[
      sluice.response.set_header("X-Upstream-Status", sluice.service.response.get_status())
      sluice.response.clear_header("X-Internal")
      if sluice.response.get_header("X-Fail") then sluice.response.set_status(502) end
    ]] } })
    local res = p:run({ upstream = { status = 201, body = { id = 9 },
                                     headers = { ["X-Internal"] = "yes", ["X-Fail"] = "1",
                                                 ["Set-Cookie"] = { "a=1", "b=2" } } } })
    assert.res_status(502, res)
    assert.equal("201", res.headers["x-upstream-status"])
    assert.is_nil(res.headers["x-internal"])
    assert.same({ "a=1", "b=2" }, res.headers["set-cookie"])
    assert.same({ id = 9 }, res:json())
    assert.is_table(res.upstream)
  end)

  it("runs body_filter on the upstream's body and on a plugin's exit", function()
    local p = t.plugin("post-function", { body_filter = { [[
      local chunk, eof = sluice.response.get_chunk()
      sluice.response.set_chunk(chunk:upper() .. (eof and "!" or ""))
    ]] } })
    local res = p:run({ upstream = { body = "hello" } })
    assert.res_status(200, res)
    assert.equal("HELLO!", res.body)
  end)

  it("reads and replaces bodies in both directions", function()
    local p = t.plugin("pre-function", {
      access = { [[
        local body = sluice.request.get_body()
        sluice.service.request.set_raw_body(sluice.json.encode({ n = body.n + 1 }))
        sluice.service.request.enable_buffering()
      ]] },
      header_filter = { [[
        local up = sluice.service.response.get_raw_body()
        sluice.response.set_raw_body("seen " .. #up .. " bytes")
      ]] },
    })
    local res = p:run({ method = "POST", body = { n = 41 },
                        upstream = { body = "0123456789" } })
    assert.res_status(200, res)
    assert.equal('{"n":42}', res.upstream.body)
    assert.equal("8", res.upstream.headers["content-length"])
    assert.equal("seen 10 bytes", res.body)
    assert.equal("13", res.headers["content-length"])
  end)

  it("runs rewrite before routing, as a global plugin", function()
    local p = t.plugin("pre-function", { rewrite = { [[
      sluice.service.request.set_header("X-Rewrite", sluice.request.get_path())
    ]] } })
    local res = p:run({ path = "/a/b" })
    assert.equal("/a/b", res.upstream.headers["x-rewrite"])
  end)
end)

describe("t.plugin (plugins from plugin_paths)", function()
  it("shows exits, their headers and the header_filter that ran on them", function()
    local p = t.plugin("key-check", { keys = { ["key-of-alice"] = "alice" } },
      { plugin_paths = FIXTURES })
    local refused = p:run({ path = "/x" })
    assert.res_status(401, refused)
    assert.is_nil(refused.upstream)
    assert.is_nil(refused.headers["x-key-owner"])
    assert.matches("refused GET /x from 127.0.0.1", refused.logs[1])

    local ok = p:run({ path = "/x", headers = { ["X-Api-Key"] = "key-of-alice" },
                       client_ip = "10.1.2.3" })
    assert.res_status(200, ok)
    assert.equal("alice", ok.upstream.headers["x-key-owner"])
    assert.is_nil(ok.upstream.headers["x-api-key"])
    assert.equal("10.1.2.3", ok.upstream.headers["x-real-ip"])
    assert.equal("alice", ok.headers["x-key-owner"])
  end)

  it("gives every PDK getter its real value", function()
    local p = t.plugin("spec-echo", { headers = { "x-one" }, query_arg = "b" },
      { plugin_paths = FIXTURES, route = { paths = { "~/items/(?<id>\\d+)$" } } })
    local res = p:run({ method = "PUT", path = "/items/42", query = "a=1&b=2&b=3",
                        headers = { ["X-One"] = "1", Host = "api.example.com:8443" },
                        body = "k=v&w=x y", client_ip = "::1", client_port = 5555 })
    assert.res_status(200, res)
    local e = res:json()
    assert.equal("PUT", e.method)
    assert.equal("api.example.com", e.host)
    assert.equal(8000, e.port)
    assert.equal("/items/42", e.path)
    assert.equal("a=1&b=2&b=3", e.raw_query)
    assert.equal("2", e.query_arg)
    assert.equal("1", e.header["x-one"])
    assert.equal("k=v&w=x y", e.raw_body)
    assert.equal("42", e.captures.named.id)
    assert.equal("::1", e.client_ip)
    assert.equal(5555, e.client_port)
  end)

  it("follows the route and service it is given (strip_path, service path)", function()
    local p = t.plugin("spec-logger", nil, { plugin_paths = FIXTURES,
      service = { url = "http://127.0.0.1:9000/v2" },
      route = { paths = { "/api" }, strip_path = true } })
    local res = p:run({ path = "/api/users" })
    assert.equal("/v2/users", res.upstream.path)
    assert.equal("127.0.0.1:9000", res.upstream.headers.host)
    assert.same({ "[notice] [spec-logger] spec-logger: GET /api/users answered 200" }, res.logs)
    local miss = p:run({ path = "/elsewhere" })
    assert.res_status(404, miss)
  end)

  it("lets a plugin sleep: the spec blocks in the event loop meanwhile", function()
    local p = t.plugin("spec-sleep", { seconds = 0.1 }, { plugin_paths = FIXTURES })
    local fired = false
    sluice.timer.at(0.05, function() fired = true end)
    local t0 = socket.gettime()
    local res = p:run()
    local took = socket.gettime() - t0
    assert.res_status(200, res)
    assert.equal(0.1, res:json().slept)
    assert.is_true(took >= 0.09 and took < 1, "took " .. took)
    assert.is_true(fired, "a timer ran while the plugin slept")
  end)

  it("reports a plugin that raises as a 500 with its error in the logs", function()
    local p = t.plugin("spec-boom", { phase = "access" }, { plugin_paths = FIXTURES })
    local res = p:run()
    assert.res_status(500, res)
    assert.is_nil(res.upstream)
    assert.matches("plugin 'spec%-boom' failed in access: .*spec%-boom exploded in access",
      res.logs[1])
    assert.matches("stack traceback", res.logs[1])
  end)

  it("passes a consumer as sluice.client.authenticate would have", function()
    local p = t.plugin("pre-function", { access = { [[
      local c = sluice.client.get_consumer()
      local cred = sluice.client.get_credential()
      sluice.service.request.set_header("X-Consumer", c and c.username or "anonymous")
      sluice.service.request.set_header("X-Credential", cred and cred.id or "none")
    ]] } })
    local res = p:run({ consumer = { id = "c-1", username = "alice" },
                        credential = { id = "k-9" } })
    assert.equal("alice", res.upstream.headers["x-consumer"])
    assert.equal("k-9", res.upstream.headers["x-credential"])
    res = p:run()
    assert.equal("anonymous", res.upstream.headers["x-consumer"])
    assert.equal("none", res.upstream.headers["x-credential"])
  end)

  it("gives up on a plugin that does not finish within the timeout", function()
    local p = t.plugin("spec-sleep", { seconds = 5 }, { plugin_paths = FIXTURES })
    local ok, err = pcall(p.run, p, { timeout = 0.05 })
    assert.is_false(ok)
    assert.matches("did not finish within", err)
  end)
end)

describe("t.plugin (calls from plugins)", function()
  local upstream

  setup(function()
    upstream = t.mock_upstream({ routes = {
      ["/introspect"] = { status = 200, body = { active = true, sub = "svc-7" } },
    } })
  end)

  teardown(function()
    t.stop()
  end)

  it("lets a plugin call a real upstream with sluice.http", function()
    local p = t.plugin("pre-function", { access = { string.format([[
      local res, err = sluice.http.request({ method = "POST", url = %q,
        body = sluice.request.get_header("Authorization") })
      if not res then return sluice.response.exit(502, { err = err }) end
      local info = sluice.json.decode(res.body)
      if not info.active then return sluice.response.exit(401) end
      sluice.service.request.set_header("X-Subject", info.sub)
    ]], upstream.url .. "/introspect") } })
    local res = p:run({ headers = { Authorization = "Bearer abc" } })
    assert.res_status(200, res)
    assert.equal("svc-7", res.upstream.headers["x-subject"])
    assert.equal("Bearer abc", upstream:last_request().body)
  end)
end)

describe("t.plugin (mistakes)", function()
  it("refuses a config its schema refuses, naming the field", function()
    local ok, err = pcall(t.plugin, "request-termination", { status_code = "teapot" })
    assert.is_false(ok)
    assert.matches("invalid config for plugin 'request%-termination'", err)
    assert.matches("config%.status_code: ", err)
  end)

  it("refuses a config missing a required field", function()
    local ok, err = pcall(t.plugin, "key-check", {}, { plugin_paths = FIXTURES })
    assert.is_false(ok)
    assert.matches("config%.keys: ", err)
  end)

  it("names an unknown plugin and where it looked", function()
    local ok, err = pcall(t.plugin, "no-such-plugin")
    assert.is_false(ok)
    assert.matches("plugin 'no%-such%-plugin' not found", err)
  end)

  it("checks its arguments", function()
    assert.has_error(function() t.plugin(nil) end,
      "bad argument #1 to 'plugin' (string expected, got nil)")
    local p = t.plugin("request-termination")
    assert.has_error(function() p:run("GET /") end,
      "bad argument #1 to 'run' (table expected, got string)")
    local ok, err = pcall(p.run, p, { client_ip = "not-an-ip" })
    assert.is_false(ok)
    assert.matches("bad client_ip 'not%-an%-ip'", err)
    ok, err = pcall(p.run, p, { headers = { ["X-Bad"] = "a\r\nb" } })
    assert.is_false(ok)
    assert.matches("the request does not parse", err)
  end)
end)
