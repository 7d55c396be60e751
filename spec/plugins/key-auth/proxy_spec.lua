-- key-auth through the real binary: what reaches a real upstream, anonymous consumers, and a
-- consumer-scoped plugin that applies once the key says who the request is from.
local t = require("sluice.test")

local ALICE = "3b1e0a2c-9d8f-4e7a-b6c5-000000000001"

describe("plugin: key-auth (proxy)", function()
  local upstream, proxy

  lazy_setup(function()
    upstream = t.mock_upstream()
    proxy = t.start({
      consumers = {
        { id = ALICE, username = "alice", custom_id = "crm-1",
          keyauth_credentials = { { key = "k-alice" } } },
        { username = "bob", keyauth_credentials = { { key = "k-bob" } },
          plugins = { { name = "request-termination",
                        config = { status_code = 403, message = "bob is suspended" } } } },
        { username = "guest" },
      },
      services = { {
        name = "api", url = upstream.url,
        routes = {
          { name = "hidden", paths = { "/hidden" },
            plugins = { { name = "key-auth", config = { hide_credentials = true,
                                                         realm = "api" } } } },
          { name = "open", paths = { "/open" },
            plugins = { { name = "key-auth", config = { anonymous = "guest" } } } },
        },
      } },
    })
  end)

  lazy_teardown(t.stop)

  it("sends the consumer upstream and not the key", function()
    local res = proxy:get("/hidden/items", { headers = { apikey = "k-alice",
      ["X-Consumer-ID"] = "spoofed" } })
    assert.res_status(200, res)
    local got = upstream:last_request()
    assert.equal(ALICE, got.headers["x-consumer-id"])
    assert.equal("alice", got.headers["x-consumer-username"])
    assert.equal("crm-1", got.headers["x-consumer-custom-id"])
    assert.is_string(got.headers["x-credential-identifier"])
    assert.is_nil(got.headers["apikey"])
    assert.is_nil(got.headers["x-anonymous-consumer"])
  end)

  it("removes a key sent in the query and keeps the rest of it", function()
    assert.res_status(200, proxy:get("/hidden/items?page=2&apikey=k-alice"))
    local got = upstream:last_request()
    assert.equal("/items?page=2", got.uri) -- strip_path, as in Kong
    assert.equal("alice", got.headers["x-consumer-username"])
  end)

  it("refuses requests without a valid key before they reach the upstream", function()
    local before = #upstream:requests()
    local res = proxy:get("/hidden/items", { headers = { apikey = "wrong" } })
    assert.equal('{"message":"Unauthorized"}', assert.res_status(401, res))
    assert.equal('Key realm="api"', res.headers["www-authenticate"])
    res = proxy:get("/hidden/items")
    assert.equal('{"message":"No API key found in request"}', assert.res_status(401, res))
    assert.equal(before, #upstream:requests())
  end)

  it("lets requests without a key in as the anonymous consumer", function()
    assert.res_status(200, proxy:get("/open/x"))
    local got = upstream:last_request()
    assert.equal("true", got.headers["x-anonymous-consumer"])
    assert.equal("guest", got.headers["x-consumer-username"])
  end)

  it("runs the plugins configured for the consumer the key belongs to", function()
    local res = proxy:get("/open/x", { headers = { apikey = "k-bob" } })
    assert.equal('{"message":"bob is suspended"}', assert.res_status(403, res))
    assert.res_status(200, proxy:get("/open/x", { headers = { apikey = "k-alice" } }))
  end)
end)
