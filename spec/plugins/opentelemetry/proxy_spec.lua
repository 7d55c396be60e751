-- opentelemetry through the real binary: a real collector checks the OTLP/HTTP JSON, a real
-- upstream gets the traceparent of the try that answered, retries and compose backends are
-- child spans of the request's.
local t = require("sluice.test")
local helpers = require("spec.helpers")
local collector = require("spec.plugins.http-log.collector")
local otlp = require("spec.plugins.opentelemetry.otlp")
local cjson = require("cjson.safe")

local TRACE = "0af7651916cd43dd8448eb211c80319c"
local PARENT = "b7ad6b7169203331"

describe("plugin: opentelemetry (proxy)", function()
  local c, upstream, proxy, dead

  lazy_setup(function()
    c = collector.start()
    upstream = t.mock_upstream({ routes = { ["/users/1"] = { body = { name = "ada" } },
                                            ["/orders/1"] = { body = { total = 3 } } } })
    dead = helpers.free_port()
    proxy = t.start({
      upstreams = { { name = "pool", targets = { { target = "127.0.0.1:" .. dead },
                                                 { target = "127.0.0.1:" .. upstream.port } } } },
      services = {
        { name = "api", url = upstream.url,
          routes = { { name = "api", paths = { "/api" } },
                     { name = "composed", paths = { "/composed" },
                       plugins = { { name = "compose", config = { backends = {
                         { name = "user", url = upstream.url, path = "/users/1" },
                         { name = "orders", url = upstream.url, path = "/orders/1" } } } } } } } },
        { name = "pooled", host = "pool", retries = 2,
          routes = { { name = "pooled", paths = { "/pooled" } } } },
      },
      plugins = { { name = "opentelemetry", config = {
        traces_endpoint = c.url .. "/c/v1/traces",
        headers = { ["X-Api-Token"] = "collector-token" },
        queue = { max_batch_size = 50, max_coalescing_delay = 0.1 } } } },
    })
  end)

  lazy_teardown(t.stop)

  local function spans_of(trace_id, n)
    local got
    c:wait("/c/v1/traces", function(r)
      got = {}
      for _, s in ipairs(otlp.spans(r)) do
        if s.traceId == trace_id then
          got[#got + 1] = s
        end
      end
      return #got >= n
    end)
    return got
  end

  it("continues the client's trace; the upstream's parent is the try's span", function()
    local res = proxy:get("/api/items", { headers = {
      traceparent = "00-" .. TRACE .. "-" .. PARENT .. "-01" } })
    local seen = assert(cjson.decode(assert.res_status(200, res)))
    local tid, parent = otlp.traceparent(seen.headers.traceparent)
    assert.equal(TRACE, tid)

    local spans = spans_of(TRACE, 2)
    local reqs = c:requests("/c/v1/traces")
    assert.equal("collector-token", reqs[1].headers["x-api-token"])
    assert.equal("POST", reqs[1].method)
    local root = otlp.named(spans, "sluice")[1]
    local try = otlp.named(spans, "sluice.balancer")[1]
    assert.equal(PARENT, root.parentSpanId)
    assert.equal(2, root.kind)
    assert.equal("/api/items", root.attrs["http.target"])
    assert.equal(200, root.attrs["http.status_code"])
    assert.equal(3, try.kind)
    assert.equal(root.spanId, try.parentSpanId)
    assert.equal(parent, try.spanId)
    assert.equal(upstream.port, try.attrs["net.peer.port"])
    assert.equal(200, try.attrs["http.status_code"])
    assert.is_true(tonumber(try.startTimeUnixNano) >= tonumber(root.startTimeUnixNano))
    assert.is_true(tonumber(try.endTimeUnixNano) <= tonumber(root.endTimeUnixNano))
  end)

  it("makes a span per try: the failed connect, then the target that answered", function()
    local trace
    for i = 1, 2 do
      local res = proxy:get("/pooled/x", { headers = {
        traceparent = "00-" .. TRACE:sub(1, 30) .. "0" .. i .. "-" .. PARENT .. "-01" } })
      local seen = assert(cjson.decode(assert.res_status(200, res)))
      trace = otlp.traceparent(seen.headers.traceparent)
      local spans = spans_of(trace, 2)
      local tries = otlp.named(spans, "sluice.balancer")
      if #tries == 2 then
        local _, parent = otlp.traceparent(seen.headers.traceparent)
        assert.equal(2, tries[1].status.code)
        assert.equal("connect", tries[1].status.message)
        assert.equal(dead, tries[1].attrs["net.peer.port"])
        assert.equal(upstream.port, tries[2].attrs["net.peer.port"])
        assert.equal(parent, tries[2].spanId)
        assert.not_equal(tries[1].spanId, tries[2].spanId)
        return
      end
    end
    error("round-robin never sent a request to the dead target first")
  end)

  it("makes each compose backend a child span and propagates the trace to it", function()
    local res = proxy:get("/composed", { headers = {
      traceparent = "00-" .. TRACE:sub(1, 31) .. "f-" .. PARENT .. "-01" } })
    assert.res_status(200, res)
    local trace = TRACE:sub(1, 31) .. "f"
    local spans = spans_of(trace, 3)
    local root = otlp.named(spans, "sluice")[1]
    local user = otlp.named(spans, "compose user")[1]
    local orders = otlp.named(spans, "compose orders")[1]
    assert.is_table(user)
    assert.is_table(orders)
    for _, s in ipairs({ user, orders }) do
      assert.equal(3, s.kind)
      assert.equal(root.spanId, s.parentSpanId)
      assert.equal(200, s.attrs["http.status_code"])
      assert.equal("GET", s.attrs["http.method"])
    end
    -- The backends got the trace, each with its own span as the parent.
    local parents = {}
    for _, r in ipairs(upstream:requests()) do
      if r.uri == "/users/1" or r.uri == "/orders/1" then
        local tid, p = otlp.traceparent(r.headers.traceparent or "")
        if tid == trace then
          parents[r.uri] = p
        end
      end
    end
    assert.equal(user.spanId, parents["/users/1"])
    assert.equal(orders.spanId, parents["/orders/1"])
  end)
end)
