-- opentelemetry's config: Kong's fields, defaults and deprecated aliases; what is refused.
local t = require("sluice.test")

local function refused(conf)
  local ok, err = pcall(t.plugin, "opentelemetry", conf)
  assert.is_false(ok)
  return tostring(err)
end

describe("plugin: opentelemetry (schema)", function()
  it("fills Kong's defaults: a queue of 200 spans, w3c propagation", function()
    local c = t.plugin("opentelemetry", { traces_endpoint = "http://127.0.0.1:4318/v1/traces" })
      .config
    assert.equal(200, c.queue.max_batch_size)
    assert.equal(1000, c.connect_timeout)
    assert.equal(5000, c.send_timeout)
    assert.equal(5000, c.read_timeout)
    assert.same({ extract = { "w3c" }, inject = { "preserve" }, clear = {},
                  default_format = "w3c" }, c.propagation)
    assert.is_nil(c.sampling_rate)
  end)

  it("takes Kong's deprecated endpoint, batch_span_count and batch_flush_delay", function()
    local c = t.plugin("opentelemetry", { endpoint = "http://c:4318/v1/traces",
                                          batch_span_count = 50, batch_flush_delay = 2 }).config
    assert.equal("http://c:4318/v1/traces", c.traces_endpoint)
    assert.equal(50, c.queue.max_batch_size)
    assert.equal(2, c.queue.max_coalescing_delay)
  end)

  it("refuses https, a missing endpoint, logs and propagation formats other than w3c", function()
    assert.matches("https endpoints are not supported yet",
      refused({ traces_endpoint = "https://c/v1/traces" }), 1, true)
    assert.matches("traces_endpoint (or Kong's endpoint) is required", refused({}), 1, true)
    assert.matches("exporting logs is not supported yet",
      refused({ traces_endpoint = "http://c/v1/traces", logs_endpoint = "http://c/v1/logs" }),
      1, true)
    assert.matches("propagation format 'b3' is not supported yet (only w3c)",
      refused({ traces_endpoint = "http://c/x", propagation = { extract = { "b3" } } }), 1, true)
    assert.matches("sampling_rate",
      refused({ traces_endpoint = "http://c/x", sampling_rate = 2 }), 1, true)
    assert.matches("if \"preserve\" is specified, it must be the only value",
      refused({ traces_endpoint = "http://c/x", propagation = { inject = { "preserve", "w3c" } } }),
      1, true)
  end)
end)
