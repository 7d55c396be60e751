-- The api-version plugin: its schema in-process, its behaviour through a real sluice.
local helpers = require("spec.helpers")
local config = require("sluice.config")

local fmt = string.format

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$")
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

describe("plugin: api-version (through sluice)", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream()
    s = helpers.start_sluice(yaml(upstream.port, [[
              versions: { v1: /legacy, v2: /api/v2 }
              default: v2]]), { server = { plugin_paths = { PLUGINS } } })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function get(args)
    local status, headers, body = helpers.curl(fmt("http://127.0.0.1:%d%s", s.port, args))
    return status, headers, helpers.json(body)
  end

  it("sends a request without a version to the default version's prefix", function()
    local status, headers, body = get("/products/42")
    assert.equal(200, status)
    assert.equal("/api/v2/products/42", body.uri)
    assert.equal("v2", helpers.lower_headers(body.headers)["x-api-version"])
    assert.equal("v2", headers["x-api-version"])
  end)

  it("honours the Accept-Version header", function()
    local status, headers, body = get("/products/42 -H 'Accept-Version: v1'")
    assert.equal(200, status)
    assert.equal("/legacy/products/42", body.uri)
    assert.equal("v1", headers["x-api-version"])
  end)

  it("falls back to the version query argument and keeps the query", function()
    local status, _, body = get("'/products?version=v1&page=2'")
    assert.equal(200, status)
    assert.equal("/legacy/products?version=v1&page=2", body.uri)
  end)

  it("answers 400 to an unknown version without calling the upstream", function()
    local status, headers, body = get("/products/7 -H 'Accept-Version: v9'")
    assert.equal(400, status)
    assert.matches("^application/json", headers["content-type"])
    assert.same({ message = "unknown API version 'v9'" }, body)
    assert.is_false(helpers.upstream_saw(upstream, "/products/7"))
  end)
end)
