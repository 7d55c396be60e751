-- acl through the real binary, behind key-auth: groups upstream, 403s and 401s, anonymous
-- consumers, and groups another plugin authenticated.
local t = require("sluice.test")

describe("plugin: acl (proxy)", function()
  local upstream, proxy

  lazy_setup(function()
    upstream = t.mock_upstream()
    proxy = t.start({
      consumers = {
        { username = "alice", keyauth_credentials = { { key = "k-alice" } },
          acls = { { group = "admins" }, { group = "ops" } } },
        { username = "bob", keyauth_credentials = { { key = "k-bob" } } },
        { username = "guest" },
      },
      acls = { { consumer = "bob", group = "users" } },
      services = { {
        name = "api", url = upstream.url,
        routes = {
          { name = "admin", paths = { "/admin" }, plugins = {
              { name = "key-auth", config = { anonymous = "guest" } },
              { name = "acl", config = { allow = { "admins" } } } } },
          { name = "public", paths = { "/public" }, plugins = {
              { name = "key-auth" },
              { name = "acl", config = { deny = { "admins" }, hide_groups_header = true } } } },
          { name = "sso", paths = { "/sso" }, plugins = {
              { name = "pre-function", config = { access = {
                  "sluice.ctx.shared.authenticated_groups = { 'staff', 'admins' }" } } },
              { name = "acl", config = { allow = { "admins" } } } } },
        },
      } },
    })
  end)

  lazy_teardown(t.stop)

  it("lets an allowed group through and sends the consumer's groups upstream", function()
    assert.res_status(200, proxy:get("/admin/x", { headers = { apikey = "k-alice",
      ["X-Consumer-Groups"] = "spoofed" } }))
    assert.equal("admins, ops", upstream:last_request().headers["x-consumer-groups"])
  end)

  it("answers 403 to a consumer outside the allowed groups, 401 to the anonymous one", function()
    local before = #upstream:requests()
    local res = proxy:get("/admin/x", { headers = { apikey = "k-bob" } })
    assert.equal('{"message":"You cannot consume this service"}', assert.res_status(403, res))
    res = proxy:get("/admin/x")
    assert.equal('{"message":"Unauthorized"}', assert.res_status(401, res))
    assert.equal(before, #upstream:requests())
  end)

  it("refuses a denied group and hides the groups of the others", function()
    assert.res_status(403, proxy:get("/public/x", { headers = { apikey = "k-alice" } }))
    assert.res_status(200, proxy:get("/public/x", { headers = { apikey = "k-bob",
      ["X-Consumer-Groups"] = "admins" } }))
    local got = upstream:last_request()
    assert.equal("bob", got.headers["x-consumer-username"])
    assert.is_nil(got.headers["x-consumer-groups"])
  end)

  it("checks groups another plugin authenticated, without a consumer", function()
    assert.res_status(200, proxy:get("/sso/x", { headers = { ["X-Consumer-Groups"] = "x" } }))
    local got = upstream:last_request()
    assert.equal("staff, admins", got.headers["x-authenticated-groups"])
    assert.is_nil(got.headers["x-consumer-groups"])
  end)
end)
