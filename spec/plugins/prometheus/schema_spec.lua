-- prometheus's config: Kong's flags and defaults, serve_metrics, and what sluice check refuses.
local config = require("sluice.config")
local t = require("sluice.test")

local function load(plugin_yaml)
  return config.load_string([[
_format_version: "3.0"
services:
  - name: orders
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
plugins:
  - name: prometheus
]] .. (plugin_yaml or ""), "t.yaml")
end

describe("plugin: prometheus (schema)", function()
  it("fills Kong 3's defaults: every family off, and serving off", function()
    local out = assert(load())
    assert.same({ status_code_metrics = false, latency_metrics = false, bandwidth_metrics = false,
                  upstream_health_metrics = false, per_consumer = false, ai_metrics = false,
                  serve_metrics = false }, out.plugins[1].config)
  end)

  it("takes a Kong file's config unchanged", function()
    local out = assert(load([[
    config:
      per_consumer: false
      status_code_metrics: true
      latency_metrics: true
      bandwidth_metrics: true
      upstream_health_metrics: true
]]))
    local c = out.plugins[1].config
    assert.is_true(c.status_code_metrics and c.latency_metrics and c.bandwidth_metrics
      and c.upstream_health_metrics)
  end)

  it("refuses a wrong type and an unknown field, naming the path and the line", function()
    local out, err = load([[
    config:
      latency_metrics: "yes"
      buckets: [1, 2]
]])
    assert.is_nil(out)
    assert.matches('t.yaml:11: plugins%[0%].config.latency_metrics: expected a boolean', err)
    assert.matches("t.yaml:12: plugins%[0%].config.buckets: unknown field 'buckets'", err)
  end)

  it("describes every field", function()
    local p = t.plugin("prometheus", {})
    for _, f in ipairs(require("sluice.plugins").load("prometheus").schema.fields) do
      if f.config then
        for _, field in ipairs(f.config.fields) do
          local name, def = next(field)
          assert.is_string(def.description, name)
          assert.is_not_nil(def.default, name)
        end
      end
    end
    assert.is_false(p.config.serve_metrics)
  end)
end)
