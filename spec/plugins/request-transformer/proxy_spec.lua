-- request-transformer through the real binary and a real (recording) nginx upstream: what reached
-- it after the headers, query, body, path and method were changed, with templates from the
-- request and from another plugin's sluice.ctx.shared.
local t = require("sluice.test")
local helpers = t.helpers
local cjson = require("cjson.safe")

describe("plugin: request-transformer (proxy)", function()
  local upstream, proxy

  setup(function()
    upstream = t.mock_upstream()
    proxy = t.start({ services = {
      { name = "api", url = upstream.url, routes = {
          { name = "users", paths = { [[~/users/(?<id>\d+)$]] }, plugins = {
              { name = "pre-function", config = { access = {
                  "sluice.ctx.shared.tenant = 'acme-' .. sluice.request.get_header('x-org')",
              } } },
              { name = "request-transformer", config = {
                  http_method = "POST",
                  remove = { headers = { "X-Org" }, querystring = { "debug" } },
                  replace = { uri = "/internal/users/$(uri_captures.id)",
                              headers = { "Host:users.internal" } },
                  add = { headers = { "X-Tenant:$(ctx.shared.tenant)", "X-Shared:$(shared.tenant)",
                                      "X-User-Id:$(uri_captures[1])" },
                          querystring = { "source:gateway" },
                          body = { "tenant:$(ctx.shared.tenant)" } },
                  append = { headers = { "X-Trace:gw" } },
              } },
            } },
          { name = "forms", paths = { "/forms" }, strip_path = false, plugins = {
              { name = "request-transformer", config = {
                  rename = { body = { "pw:password" } },
                  add = { body = { "client:$(headers.x_client)" } },
              } },
            } },
        } },
    } })
  end)

  teardown(function()
    t.stop()
  end)

  it("sends the changed request: method, path, Host, headers, query and JSON body", function()
    local res = assert(proxy:request({ method = "PUT", path = "/users/42?debug=1&x=y",
      headers = { ["X-Org"] = "7", ["X-Trace"] = "client", ["Content-Type"] = "application/json" },
      body = '{"name":"bob","big":12345678901234567}' }))
    assert.res_status(200, res)
    local got = upstream:last_request()
    assert.equal("POST", got.method)
    assert.equal("/internal/users/42?source=gateway&x=y", got.uri)
    local h = got.headers
    assert.equal("users.internal", h.host)
    assert.is_nil(h["x-org"])
    assert.equal("acme-7", h["x-tenant"])
    assert.equal("acme-7", h["x-shared"])
    assert.equal("42", h["x-user-id"])
    assert.same({ "client", "gw" }, h["x-trace"])
    assert.equal('{"name":"bob","big":12345678901234567,"tenant":"acme-7"}', got.body)
    assert.equal(tostring(#got.body), h["content-length"])
  end)

  it("transforms a chunked request body and sends it with its Content-Length", function()
    local status = helpers.curl("-H 'Transfer-Encoding: chunked' "
      .. "-H 'Content-Type: application/x-www-form-urlencoded' -H 'X-Client: cli' "
      .. "--data-binary 'pw=s3cret&user=bob' '" .. proxy.url .. "/forms'")
    assert.equal(200, status)
    local got = upstream:last_request()
    assert.equal("/forms", got.uri)
    assert.equal("client=cli&password=s3cret&user=bob", got.body)
    assert.equal(tostring(#got.body), got.headers["content-length"])
    assert.is_nil(got.headers["transfer-encoding"])
  end)

  it("leaves a body of another type exactly as sent", function()
    local res = assert(proxy:request({ method = "POST", path = "/forms",
      headers = { ["Content-Type"] = "text/plain" }, body = "pw=1" }))
    assert.res_status(200, res)
    local got = upstream:last_request()
    assert.equal("pw=1", got.body)
    assert.equal("text/plain", got.headers["content-type"])
    local echoed = cjson.decode(res.body)
    assert.equal("/forms", echoed.uri)
  end)
end)
