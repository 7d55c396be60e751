-- compose through the real binary: a user profile from three services of a
-- real nginx, called at once; partial answers, required backends, timeouts,
-- sequential chaining, and the latency of four 100 ms backends.
local helpers = require("spec.helpers")
local cjson = require("cjson")
local socket = require("socket")

local fmt = string.format

local function services()
  return helpers.start_upstream({ locations = [=[
    location ~ ^/users/(\d+)$ {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.say(require("cjson").encode({ id = tonumber(ngx.var[1]), name = "Ada",
          account_id = "acc-" .. ngx.var[1], password_hash = "secret",
          auth = ngx.var.http_authorization }))
      }
    }
    location = /orders {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.say(require("cjson").encode({ data = { items = {
          { id = 1, user = ngx.var.arg_user, internal = "x" },
          { id = 2, user = ngx.var.arg_user, internal = "y" } } } }))
      }
    }
    location ~ ^/accounts/([\w-]+)$ {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.say(require("cjson").encode({ account = ngx.var[1], plan = "gold" }))
      }
    }
    location ~ ^/sleep/(\w+)$ {
      content_by_lua_block {
        ngx.sleep(0.1)
        ngx.header["Content-Type"] = "application/json"
        ngx.say(require("cjson").encode({ [ngx.var[1]] = true }))
      }
    }
    location = /fail { return 500 "down"; }
    location = /hang { content_by_lua_block { ngx.sleep(3) ngx.say("{}") } }
    location = /text { return 200 "not json"; }
]=] })
end

local function gateway(up, conf)
  return helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: profile
    url: http://127.0.0.1:%d
    routes:
      - name: profile
        paths: ["~/profile/(?<id>\\d+)$"]
        plugins:
          - name: compose
            config: %s
]], up.port, cjson.encode(conf)), { workers = 1 })
end

local function get(s, path, headers)
  local status, h, body = helpers.curl(fmt("%s 'http://127.0.0.1:%d%s'", headers or "", s.port,
    path))
  return status, h, body and body ~= "" and cjson.decode(body) or body
end

describe("plugin: compose (proxy)", function()
  local up
  setup(function()
    up = services()
  end)
  teardown(function()
    helpers.stop_all()
  end)

  it("merges a user profile from three services, shaped per backend", function()
    local base = fmt("http://127.0.0.1:%d", up.port)
    local s = gateway(up, { backends = {
      { name = "user", url = base, path = "/users/$(uri_captures.id)", required = true,
        deny = { "password_hash" } },
      { name = "orders", url = base, path = "/orders", query = "user=$(uri_captures.id)",
        target = "data.items", allow = { "id", "user" }, mapping = { user = "owner" },
        group = "orders" },
      { name = "extras", url = base, path = "/fail", default = { degraded = true },
        group = "extras" },
    } })
    local status, headers, body = get(s, "/profile/42", "-H 'Authorization: Bearer t0k'")
    assert.equal(200, status)
    assert.equal("false", headers["x-sluice-completed"])
    assert.equal(42, body.id)
    assert.equal("Ada", body.name)
    assert.equal("Bearer t0k", body.auth) -- Authorization is forwarded by default
    assert.is_nil(body.password_hash)
    assert.same({ { id = 1, owner = "42" }, { id = 2, owner = "42" } }, body.orders)
    assert.same({ degraded = true }, body.extras)
    local meta = body._meta
    assert.is_true(meta.partial)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", meta.composed_at)
    assert.equal("fulfilled", meta.backends.user.status)
    assert.equal(200, meta.backends.user.http_status)
    assert.equal("rejected", meta.backends.extras.status)
    assert.equal(500, meta.backends.extras.http_status)
    assert.is_number(meta.backends.orders.latency_ms)
  end)

  it("answers four 100 ms backends in about 100 ms, not 400", function()
    local base = fmt("http://127.0.0.1:%d", up.port)
    local backends = {}
    for i, n in ipairs({ "a", "b", "c", "d" }) do
      backends[i] = { name = n, url = base, path = "/sleep/" .. n }
    end
    local s = gateway(up, { backends = backends })
    get(s, "/profile/1") -- warm the connections
    local best = math.huge
    for _ = 1, 3 do
      local t0 = socket.gettime()
      local status, headers, body = get(s, "/profile/1")
      best = math.min(best, socket.gettime() - t0)
      assert.equal(200, status)
      assert.equal("true", headers["x-sluice-completed"])
      assert.same({ true, true, true, true }, { body.a, body.b, body.c, body.d })
    end
    assert.is_true(best < 0.2, fmt("took %.3f s", best))
  end)

  it("gives 502 with each backend's detail when a required backend fails or times out",
    function()
      local base = fmt("http://127.0.0.1:%d", up.port)
      local s = gateway(up, { backends = {
        { name = "user", url = base, path = "/users/$(uri_captures.id)" },
        { name = "slow", url = base, path = "/hang", timeout = 200, required = true },
      } })
      local status, headers, body = get(s, "/profile/7")
      assert.equal(502, status)
      assert.equal("false", headers["x-sluice-completed"])
      assert.equal("composition failed: backend 'slow' failed", body.message)
      assert.equal("timeout", body.backends.slow.status)
      assert.equal("fulfilled", body.backends.user.status)
    end)

  it("gives 502 when every backend fails, and says why each one did", function()
    local base = fmt("http://127.0.0.1:%d", up.port)
    local s = gateway(up, { backends = {
      { name = "text", url = base, path = "/text" },
      { name = "gone", url = fmt("http://127.0.0.1:%d", helpers.free_port()) },
    } })
    local status, _, body = get(s, "/profile/7")
    assert.equal(502, status)
    assert.equal("composition failed: every backend failed", body.message)
    assert.matches("not JSON", body.backends.text.error)
    assert.equal("connection refused", body.backends.gone.error)
  end)

  it("chains sequential calls: a later path uses an earlier answer", function()
    local base = fmt("http://127.0.0.1:%d", up.port)
    local s = gateway(up, { sequential = true, meta = false, backends = {
      { name = "user", url = base, path = "/users/$(uri_captures.id)", allow = { "name" },
        required = true },
      { name = "account", url = base, path = "/accounts/$(backends.user.body.account_id)",
        group = "account" },
    } })
    local status, _, body = get(s, "/profile/5")
    assert.equal(200, status)
    assert.same({ name = "Ada", account = { account = "acc-5", plan = "gold" } }, body)
  end)

  it("calls a backend named by its service", function()
    local s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: users
    url: http://127.0.0.1:%d/users
  - name: profile
    url: http://127.0.0.1:%d
    routes:
      - name: profile
        paths: ["~/profile/(?<id>\\d+)$"]
        plugins:
          - name: compose
            config:
              backends:
                - { name: user, service: users, path: "/$(uri_captures.id)" }
]], up.port, up.port), { workers = 1 })
    local status, _, body = get(s, "/profile/9")
    assert.equal(200, status)
    assert.equal(9, body.id)
  end)
end)
