-- compose in-process: t.plugin runs the request while the backends are real
-- HTTP servers (t.mock_upstream), and nothing reaches the route's upstream.
local t = require("sluice.test")

describe("plugin: compose (access)", function()
  local users, orders
  setup(function()
    users = t.mock_upstream({ routes = {
      ["/users/1"] = { body = { id = 1, name = "Ada", tags = { "a", "b" } } } } })
    orders = t.mock_upstream({ routes = {
      ["/orders"] = { body = { { id = 10 }, { id = 11 } } },
      ["/broken"] = { status = 503, body = "no" } } })
  end)
  teardown(function()
    t.stop()
  end)

  it("answers from the backends, forwarding the configured headers", function()
    local p = t.plugin("compose", { backends = {
      { name = "user", url = users.url, path = "/users/1", forward_headers = { "X-Tenant" },
        headers = { ["X-From"] = "compose $(headers.x_tenant)" } },
      { name = "orders", url = orders.url, path = "/orders" },
    } })
    local res = p:run({ path = "/me", headers = { ["X-Tenant"] = "acme" } })
    assert.is_nil(res.upstream)
    local body = assert(res:json())
    assert.equal("Ada", body.name)
    assert.same({ { id = 10 }, { id = 11 } }, body.orders) -- a list goes under its name
    assert.equal("true", res.headers["x-sluice-completed"])
    assert.is_false(body._meta.partial)
    local seen = users:last_request()
    assert.equal("acme", seen.headers["x-tenant"])
    assert.equal("compose acme", seen.headers["x-from"])
  end)

  it("reports a failing optional backend in _meta and answers with the rest", function()
    local p = t.plugin("compose", { backends = {
      { name = "user", url = users.url, path = "/users/1", allow = { "name" } },
      { name = "orders", url = orders.url, path = "/broken", group = "orders",
        default = {} },
    } })
    local res = p:run({ path = "/me" })
    local body = assert(res:json())
    assert.equal(200, res.status)
    assert.equal("false", res.headers["x-sluice-completed"])
    assert.equal("Ada", body.name)
    assert.is_nil(body.id)
    assert.same({}, body.orders)
    assert.equal("rejected", body._meta.backends.orders.status)
    assert.equal(503, body._meta.backends.orders.http_status)
    assert.equal("answered 503", body._meta.backends.orders.error)
  end)
end)
