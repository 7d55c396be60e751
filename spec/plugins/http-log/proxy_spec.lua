-- http-log through the real binary: entries reach a real collector, API keys never do, the
-- tries of a failing target are in the entry, and a dead collector slows nothing down.
local t = require("sluice.test")
local helpers = require("spec.helpers")
local collector = require("spec.plugins.http-log.collector")
local cjson = require("cjson.safe")

local KEY = "k-9f2d7c41e8"

describe("plugin: http-log (proxy)", function()
  local c, upstream, proxy, dead

  lazy_setup(function()
    c = collector.start()
    upstream = t.mock_upstream()
    dead = helpers.free_port()
    proxy = t.start({
      consumers = { { username = "alice", custom_id = "crm-1",
                      keyauth_credentials = { { key = KEY } } } },
      upstreams = { { name = "pool", targets = { { target = "127.0.0.1:" .. dead },
                                                 { target = "127.0.0.1:" .. upstream.port } } } },
      services = {
        { name = "api", url = upstream.url,
          routes = { { name = "keyed", paths = { "/keyed" },
                       plugins = { { name = "key-auth", config = { key_names = { "apikey" } } },
                                   { name = "http-log",
                                     config = { http_endpoint = c.url .. "/c/keyed" } } } },
                     { name = "down", paths = { "/down" },
                       plugins = { { name = "http-log", config = {
                         http_endpoint = "http://127.0.0.1:" .. dead .. "/nowhere",
                         timeout = 200, queue = { max_retry_time = 1 } } } } } } },
        { name = "pooled", host = "pool", retries = 2,
          routes = { { name = "pooled", paths = { "/pooled" },
                       plugins = { { name = "http-log", config = {
                         http_endpoint = c.url .. "/c/pooled",
                         queue = { max_batch_size = 2, max_coalescing_delay = 0.2 } } } } } } },
      },
    })
  end)

  lazy_teardown(t.stop)

  it("logs an authenticated request without its API key, sent as a header or as apikey", function()
    assert.res_status(200, proxy:get("/keyed/a", { headers = { apikey = KEY } }))
    assert.res_status(200, proxy:get("/keyed/b?apikey=" .. KEY .. "&page=1"))
    assert.res_status(401, proxy:get("/keyed/c", { headers = { Authorization = "Basic " .. KEY } }))
    local reqs = c:wait("/c/keyed", function(r) return #r >= 3 end)
    assert.equal(3, #reqs)
    for _, r in ipairs(reqs) do
      assert.is_nil(r.body:find(KEY, 1, true), "the key reached the collector: " .. r.body)
    end
    local a = assert(cjson.decode(reqs[1].body))
    assert.equal("alice", a.consumer.username)
    assert.equal("REDACTED", a.request.headers.apikey)
    assert.equal("keyed", a.route.name)
    assert.equal("/a", a.upstream_uri)
    local b = assert(cjson.decode(reqs[2].body))
    assert.same({ apikey = "REDACTED", page = "REDACTED" }, b.request.querystring)
    assert.equal("/keyed/b", b.request.uri)
    local cc = assert(cjson.decode(reqs[3].body))
    assert.equal(401, cc.response.status)
    assert.equal("exit", cc.source)
    assert.equal("REDACTED", cc.request.headers.authorization)
  end)

  it("lists every try: a failed connect, then the target that answered", function()
    for _ = 1, 2 do
      assert.res_status(200, proxy:get("/pooled/x"))
    end
    local reqs = c:wait("/c/pooled", function(r) return #r >= 1 end)
    local entries = assert(cjson.decode(reqs[1].body))
    assert.equal(2, #entries) -- one batch of max_batch_size
    local saw_failed = false
    for _, e in ipairs(entries) do
      local last = e.tries[#e.tries]
      assert.equal(upstream.port, last.port)
      assert.is_nil(last.state)
      assert.equal(#e.tries, e.try_count)
      if #e.tries == 2 then
        saw_failed = true
        assert.equal("failed", e.tries[1].state)
        assert.equal("connect", e.tries[1].reason)
        assert.equal(dead, e.tries[1].port)
      end
      assert.is_true(e.latencies.proxy >= 0)
      assert.is_true(e.latencies.request >= e.latencies.proxy)
    end
    assert.is_true(saw_failed, "round-robin sent one of the two to the dead target first")
  end)

  it("never slows requests when the collector is down, and says so in the error log", function()
    local t0 = sluice.now()
    for _ = 1, 5 do
      assert.res_status(200, proxy:get("/down"))
    end
    assert.is_true(sluice.now() - t0 < 2, "requests waited for a dead collector")
    assert.truthy(helpers.wait_for(function()
      return proxy:error_log():find("http-log: dropping a batch of 1 entries after", 1, true)
    end, 8))
  end)
end)
