-- The api-version plugin: its schema and its behaviour in-process (t.plugin: no
-- sockets, milliseconds), then end to end through a real sluice and upstream.
local t = require("sluice.test")
local config = require("sluice.config")

local fmt = string.format

-- This plugin's folder, absolute: the spec runs from wherever `sluice test`
-- was started (the repository root, or the plugin's own folder).
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."
if HERE:sub(1, 1) ~= "/" then
  HERE = os.getenv("PWD") .. "/" .. HERE
end
local PLUGINS = HERE .. "/plugins"

-- The config under test; with_server adds the server block that points
-- plugin_paths here (start_sluice writes its own, with the same setting).
local function yaml(upstream_port, plugin_config, with_server)
  local server = with_server and fmt('server:\n  plugin_paths: ["%s"]\n', PLUGINS) or ""
  return fmt([[
_format_version: "3.0"
%sservices:
  - name: catalog
    url: http://127.0.0.1:%d
    routes:
      - name: catalog
        paths: ["/products"]
        strip_path: false
        plugins:
          - name: api-version
            config:
%s
]], server, upstream_port, plugin_config)
end

describe("plugin: api-version (schema)", function()
  it("accepts a version map and fills the defaults", function()
    local out, err = config.load_string(yaml(1, [[
              versions: { v1: /legacy, v2: /api/v2 }
              default: v2]], true), "t.yaml")
    assert.is_table(out, err)
    local conf = out.plugins[1].config
    assert.equal("Accept-Version", conf.header)
    assert.equal("version", conf.query_arg)
    assert.is_true(conf.reject_unknown)
  end)

  it("refuses a default that is not a known version, naming the field", function()
    local out, err = config.load_string(yaml(1, [[
              versions: { v1: /legacy }
              default: v3]], true), "t.yaml")
    assert.is_nil(out)
    assert.matches("plugins%[0%]%.config%.default: the default version 'v3' is not in "
      .. "versions", err)
  end)

  it("refuses a prefix that is not a path", function()
    local out, err = config.load_string(yaml(1, [[
              versions: { v1: legacy }]], true), "t.yaml")
    assert.is_nil(out)
    assert.matches("config%.versions%.v1", err)
  end)
end)

describe("plugin: api-version (in-process)", function()
  local plugin

  setup(function()
    plugin = t.plugin("api-version", { versions = { v1 = "/legacy", v2 = "/api/v2" },
                                       default = "v2" },
      { plugin_paths = { PLUGINS }, route = { paths = { "/products" }, strip_path = false } })
  end)

  it("fills the defaults from its schema", function()
    assert.equal("Accept-Version", plugin.config.header)
    assert.is_true(plugin.config.reject_unknown)
  end)

  it("refuses a default that is not a known version, naming the field", function()
    local ok, err = pcall(t.plugin, "api-version", { versions = { v1 = "/legacy" },
                                                     default = "v3" },
      { plugin_paths = { PLUGINS } })
    assert.is_false(ok)
    assert.matches("config%.default: the default version 'v3' is not in versions", err)
  end)

  it("sends a request without a version to the default version's prefix", function()
    local res = plugin:run({ path = "/products/42" })
    assert.res_status(200, res)
    assert.equal("/api/v2/products/42", res.upstream.path)
    assert.equal("v2", res.upstream.headers["x-api-version"])
    assert.equal("v2", assert.response(res).has.header("x-api-version"))
  end)

  it("honours the header first, then the query argument, keeping the query", function()
    local res = plugin:run({ path = "/products/42", headers = { ["Accept-Version"] = "v1" },
                             query = { version = "v2" } })
    assert.equal("/legacy/products/42", res.upstream.path)
    res = plugin:run({ path = "/products", query = { version = "v1", page = 2 } })
    assert.equal("/legacy/products", res.upstream.path)
    assert.equal("page=2&version=v1", res.upstream.query)
  end)

  it("answers 400 to an unknown version without reaching the upstream", function()
    local res = plugin:run({ path = "/products/7", headers = { ["Accept-Version"] = "v9" } })
    assert.res_status(400, res)
    assert.same({ message = "unknown API version 'v9'" }, res:json())
    assert.is_nil(res.upstream)
    assert.is_nil(res.headers["x-api-version"])
  end)

  it("says which version answered even when the upstream fails", function()
    local res = plugin:run({ path = "/products/1", upstream = { status = 503, body = "down" } })
    assert.res_status(503, res)
    assert.equal("down", res.body)
    assert.equal("v2", res.headers["x-api-version"])
  end)
end)

describe("plugin: api-version (through sluice)", function()
  local upstream, proxy

  setup(function()
    upstream = t.mock_upstream()
    proxy = t.start({
      services = { {
        name = "catalog", url = upstream.url,
        routes = { {
          name = "catalog", paths = { "/products" }, strip_path = false,
          plugins = { { name = "api-version", config = {
            versions = { v1 = "/legacy", v2 = "/api/v2" }, default = "v2" } } },
        } },
      } },
    }, { plugin_paths = { PLUGINS } })
  end)

  teardown(function()
    t.stop()
  end)

  it("sends a request without a version to the default version's prefix", function()
    local res = assert(proxy:get("/products/42"))
    assert.res_status(200, res)
    local seen = upstream:last_request()
    assert.equal("/api/v2/products/42", seen.uri)
    assert.equal("v2", seen.headers["x-api-version"])
    assert.equal("v2", assert.response(res).has.header("x-api-version"))
  end)

  it("honours the Accept-Version header", function()
    local res = assert(proxy:get("/products/42", { headers = { ["Accept-Version"] = "v1" } }))
    assert.res_status(200, res)
    assert.equal("/legacy/products/42", upstream:last_request().uri)
    assert.equal("v1", res.headers["x-api-version"])
  end)

  it("falls back to the version query argument and keeps the query", function()
    local res = assert(proxy:get("/products", { query = { version = "v1", page = 2 } }))
    assert.res_status(200, res)
    assert.equal("/legacy/products?page=2&version=v1", upstream:last_request().uri)
  end)

  it("answers 400 to an unknown version without calling the upstream", function()
    local before = #upstream:requests()
    local res = assert(proxy:get("/products/7", { headers = { ["Accept-Version"] = "v9" } }))
    assert.res_status(400, res)
    assert.matches("^application/json", res.headers["content-type"])
    assert.same({ message = "unknown API version 'v9'" }, res:json())
    assert.equal(before, #upstream:requests())
  end)
end)
