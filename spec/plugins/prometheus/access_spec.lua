-- prometheus in-process: what its access phase does on a metrics route and everywhere else.
-- (Counting happens in the C core of a running sluice: see proxy_spec.lua.)
local t = require("sluice.test")

describe("plugin: prometheus (access)", function()
  it("never touches a request of a route without serve_metrics", function()
    local p = t.plugin("prometheus", { status_code_metrics = true, latency_metrics = true })
    local res = p:run({ path = "/orders", headers = { ["X-A"] = "1" },
                        upstream = { status = 201, body = "made" } })
    assert.equal(201, res.status)
    assert.equal("made", res.body)
    assert.equal("1", res.upstream.headers["x-a"])
    assert.same({}, res.logs)
  end)

  it("keeps an instance without serve_metrics out of every phase's chain", function()
    local h = t.plugin("prometheus", {}).handler
    for _, phase in ipairs({ "rewrite", "access", "header_filter", "body_filter", "log" }) do
      assert.is_falsy(h.uses_phase({ serve_metrics = false }, phase), phase)
    end
    assert.is_true(h.uses_phase({ serve_metrics = true }, "access"))
  end)

  it("refuses methods other than GET and HEAD on the metrics route", function()
    local p = t.plugin("prometheus", { serve_metrics = true })
    for _, method in ipairs({ "POST", "PUT", "DELETE", "PATCH" }) do
      local res = p:run({ method = method, path = "/metrics", body = "x" })
      assert.equal(405, res.status, method)
      assert.equal("GET, HEAD", res.headers["allow"])
      assert.same({ message = "Method not allowed" }, require("cjson").decode(res.body))
      assert.is_nil(res.upstream)
    end
  end)

  it("answers a scrape itself, and says so when this process counts nothing", function()
    -- A spec's process maps no counters (the master of a running sluice
    -- does): the scrape is answered, never proxied, with a 500 and a log line.
    local p = t.plugin("prometheus", { serve_metrics = true })
    local res = p:run({ path = "/metrics" })
    assert.is_nil(res.upstream)
    assert.equal(500, res.status)
    assert.matches("cannot render the metrics: no metrics are collected in this process",
      table.concat(res.logs, "\n"), 1, true)
  end)
end)
