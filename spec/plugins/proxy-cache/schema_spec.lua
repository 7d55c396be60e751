-- proxy-cache's schema: Kong's defaults, and configs it refuses with the field's path.
local t = require("sluice.test")
local config = require("sluice.config")

describe("plugin: proxy-cache (schema)", function()
  it("fills in Kong's defaults", function()
    local c = t.plugin("proxy-cache", {}).config
    assert.same({ 200, 301, 404 }, c.response_code)
    assert.same({ "GET", "HEAD" }, c.request_method)
    assert.same({ "text/plain", "application/json" }, c.content_type)
    assert.equal(300, c.cache_ttl)
    assert.equal("memory", c.strategy)
    assert.is_false(c.cache_control)
    assert.same({ age = true, ["X-Cache-Status"] = true, ["X-Cache-Key"] = true },
      c.response_headers)
    assert.equal("proxy_cache", c.memory.dictionary_name)
  end)

  it("refuses bad values, naming the field", function()
    assert.has_error(function() t.plugin("proxy-cache", { request_method = { "DELETE" } }) end)
    local ok, err = pcall(t.plugin, "proxy-cache", { content_type = { "json" } })
    assert.is_false(ok)
    assert.matches("config.content_type%[0%]: expected a media type", err)
    ok, err = pcall(t.plugin, "proxy-cache", { cache_ttl = 60, storage_ttl = 10 })
    assert.is_false(ok)
    assert.matches("config.storage_ttl: storage_ttl must be at least cache_ttl", err)
    ok, err = pcall(t.plugin, "proxy-cache", { purge_method = "GET" })
    assert.is_false(ok)
    assert.matches("purge_method may not be one of request_method", err)
    ok, err = pcall(t.plugin, "proxy-cache", { strategy = "redis" })
    assert.is_false(ok)
    assert.matches("config.strategy", err)
  end)

  it("creates the dict its config names", function()
    local cfg = assert(config.load_string([[
_format_version: "3.0"
plugins:
  - name: proxy-cache
    config: { memory: { dictionary_name: edge_cache } }
]], "pc.yaml"))
    local names = {}
    for _, d in ipairs(cfg.server.shared_dicts) do
      names[d.name] = d.size
    end
    assert.equal(16 * 1024 * 1024, names.edge_cache)
  end)
end)
