-- opentelemetry in-process: W3C propagation upstream, and the spans exported to a real
-- collector as OTLP/HTTP JSON.
local t = require("sluice.test")
local collector = require("spec.plugins.http-log.collector")
local otlp = require("spec.plugins.opentelemetry.otlp")

local TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
local PARENT = "00f067aa0ba902b7"

describe("plugin: opentelemetry (in-process)", function()
  local c

  setup(function()
    c = collector.start()
  end)

  teardown(function()
    require("sluice.tracing").reset()
    t.stop()
  end)

  local function plugin(path, extra)
    local conf = { traces_endpoint = c.url .. path,
                   queue = { max_coalescing_delay = 0.05 },
                   resource_attributes = { ["deployment.environment"] = "spec" } }
    for k, v in pairs(extra or {}) do
      conf[k] = v
    end
    return t.plugin("opentelemetry", conf)
  end

  it("continues an incoming trace upstream and exports a SERVER span with a CLIENT try", function()
    local p = plugin("/c/continue")
    local res = p:run({ path = "/orders", query = "token=sekrit",
                        headers = { traceparent = "00-" .. TRACE .. "-" .. PARENT .. "-01",
                                    tracestate = "vendor=x" } })
    assert.res_status(200, res)
    local tid, upstream_parent, flags = otlp.traceparent(res.upstream.headers.traceparent)
    assert.equal(TRACE, tid)
    assert.equal("01", flags)
    assert.not_equal(PARENT, upstream_parent)
    assert.equal("vendor=x", res.upstream.headers.tracestate)

    local reqs = c:wait("/c/continue", function(r) return #otlp.spans(r) >= 2 end)
    local spans = otlp.spans(reqs)
    local root = otlp.named(spans, "sluice")[1]
    local try = otlp.named(spans, "sluice.balancer")[1]
    assert.equal(TRACE, root.traceId)
    assert.equal(PARENT, root.parentSpanId)
    assert.equal(2, root.kind)
    assert.equal("GET", root.attrs["http.method"])
    assert.equal(200, root.attrs["http.status_code"])
    assert.equal("http://localhost:8000/orders", root.attrs["http.url"])
    assert.equal("/", root.attrs["http.route"])
    assert.equal("127.0.0.1", root.attrs["net.peer.ip"])
    assert.equal("t-plugin", root.attrs["sluice.route.name"])
    assert.equal("vendor=x", root.traceState)
    assert.equal(TRACE, try.traceId)
    assert.equal(root.spanId, try.parentSpanId)
    assert.equal(upstream_parent, try.spanId)
    assert.equal(3, try.kind)
    assert.equal("127.0.0.1", try.attrs["net.peer.ip"])
    assert.equal(8080, try.attrs["net.peer.port"])
    assert.equal("sluice", root.resource["service.name"])
    assert.equal("spec", root.resource["deployment.environment"])
    assert.is_true(tonumber(root.endTimeUnixNano) >= tonumber(root.startTimeUnixNano))
    assert.is_nil(reqs[1].body:find("sekrit", 1, true))
  end)

  it("starts a new trace for a missing or invalid traceparent", function()
    local p = plugin("/c/new")
    local bad = "00-" .. TRACE:upper() .. "-" .. PARENT .. "-01"
    local res = p:run({ path = "/", headers = { traceparent = bad } })
    local tid, parent = otlp.traceparent(res.upstream.headers.traceparent)
    assert.not_equal(TRACE, tid:lower())
    local spans = otlp.spans(c:wait("/c/new", function(r) return #otlp.spans(r) >= 2 end))
    local root = otlp.named(spans, "sluice")[1]
    assert.equal(tid, root.traceId)
    assert.is_nil(root.parentSpanId)
    assert.equal(parent, otlp.named(spans, "sluice.balancer")[1].spanId)
  end)

  it("marks a 5xx as an error, and returns the trace id in a header when asked", function()
    local p = plugin("/c/error", { http_response_header_for_traceid = "X-Trace-Id" })
    local res = p:run({ path = "/", upstream = { status = 503 } })
    assert.res_status(503, res)
    local id = assert.response(res).has.header("x-trace-id")
    local spans = otlp.spans(c:wait("/c/error", function(r) return #otlp.spans(r) >= 2 end))
    local root = otlp.named(spans, "sluice")[1]
    assert.equal(id, root.traceId)
    assert.equal(2, root.status.code)
    assert.equal(503, root.attrs["http.status_code"])
  end)

  it("does not read incoming traces with extract = [], nor send any with inject = []", function()
    local p = plugin("/c/noprop", { propagation = { extract = {}, inject = {} } })
    local res = p:run({ path = "/", headers = { traceparent = "00-" .. TRACE .. "-" .. PARENT
      .. "-01" } })
    -- The client's header is passed through untouched; no trace of ours is sent.
    assert.equal("00-" .. TRACE .. "-" .. PARENT .. "-01", res.upstream.headers.traceparent)
    local spans = otlp.spans(c:wait("/c/noprop", function(r) return #otlp.spans(r) >= 1 end))
    assert.not_equal(TRACE, otlp.named(spans, "sluice")[1].traceId)
  end)

  it("exports nothing for an unsampled trace, and still propagates it", function()
    local p = plugin("/c/unsampled")
    local res = p:run({ path = "/", headers = { traceparent = "00-" .. TRACE .. "-" .. PARENT
      .. "-00" } })
    local tid, _, flags = otlp.traceparent(res.upstream.headers.traceparent)
    assert.equal(TRACE, tid)
    assert.equal("00", flags)
    sluice.sleep(0.3)
    assert.equal(0, #c:requests("/c/unsampled"))
  end)
end)
