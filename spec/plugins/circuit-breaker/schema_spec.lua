-- circuit-breaker's config: defaults, cross-field checks, and the shared dict it brings.
local config = require("sluice.config")

local HEAD = '_format_version: "3.0"\n'

local function load(plugin_yaml, server_yaml)
  return config.load_string(HEAD .. (server_yaml or "") .. [[
services:
  - name: orders
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
    plugins:
      - name: circuit-breaker
]] .. (plugin_yaml or ""), "t.yaml")
end

local function dicts(out)
  local t = {}
  for _, d in ipairs(out.server.shared_dicts) do
    t[d.name] = d.size
  end
  return t
end

describe("plugin: circuit-breaker (schema)", function()
  it("fills opossum's defaults, in milliseconds", function()
    local out = assert(load())
    local c = out.plugins[1].config
    assert.same({ timeout = 10000, error_threshold_percentage = 50, window = 10000,
                  window_buckets = 10, volume_threshold = 10, reset_timeout = 30000 }, c)
  end)

  it("takes durations as strings and fills the fallback's defaults", function()
    local out = assert(load([[
        config:
          timeout: 2s
          reset_timeout: 1m
          fallback: { cached: true }
]]))
    local c = out.plugins[1].config
    assert.equal(2000, c.timeout)
    assert.equal(60000, c.reset_timeout)
    assert.same({ status = 200, headers = {}, cached = true,
                  cache_key = { "method", "path", "query" }, cache_ttl = 300000,
                  max_body_size = 65536 }, c.fallback)
  end)

  it("refuses a fallback with nothing to serve, naming the file, line and path", function()
    local out, err = load([[
        config:
          fallback: { status: 200 }
]])
    assert.is_nil(out)
    assert.matches("t.yaml:%d+: services%[0%]%.plugins%[0%]%.config%.fallback: a fallback "
      .. "needs a 'body', 'cached: true', or both", err)
  end)

  it("refuses bad values with what was expected", function()
    local _, err = load([[
        config:
          error_threshold_percentage: 0
          window: 100
          window_buckets: 200
          fallback: { body: 3, cached: true, cache_key: ["cookie"] }
]])
    assert.matches("config.error_threshold_percentage: value should be between 1 and 100",
      err, 1, true)
    assert.matches("config.window_buckets: value should be between 1 and 100", err, 1, true)
    assert.matches("config.fallback.body: expected a string or a mapping (sent as JSON), got "
      .. "number", err, 1, true)
    assert.matches("config.fallback.cache_key[0]: expected one of method, host, path, query "
      .. "or header:NAME, got 'cookie'", err, 1, true)
  end)

  it("checks that a bucket is at least 1 ms", function()
    local _, err = load([[
        config: { window: 50, window_buckets: 60 }
]])
    assert.matches("config.window_buckets: window_buckets (60) must not exceed window (50 ms)",
      err, 1, true)
  end)

  it("brings its shared dict, 8m, without the user declaring it", function()
    local out = assert(load())
    assert.same({ ["circuit-breaker"] = 8 * 1024 * 1024 }, dicts(out))
  end)

  it("keeps the user's size and the user's other dicts", function()
    local out = assert(load(nil, [[
server:
  shared_dicts: { circuit-breaker: 1m, cache: 64k }
]]))
    assert.same({ ["circuit-breaker"] = 1024 * 1024, cache = 65536 }, dicts(out))
    assert.equal("cache", out.server.shared_dicts[1].name)
  end)

  it("brings no dict to a config that does not use it", function()
    local out = assert(config.load_string(HEAD, "t.yaml"))
    assert.same({}, out.server.shared_dicts)
  end)
end)
