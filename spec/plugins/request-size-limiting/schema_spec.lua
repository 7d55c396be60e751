-- request-size-limiting's config: Kong's fields and defaults, refused values named by path.
local t = require("sluice.test")
local config = require("sluice.config")

local function load(plugin_yaml)
  return config.load_string([[
_format_version: "3.0"
services:
  - name: uploads
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: request-size-limiting
]] .. (plugin_yaml or ""), "t.yaml")
end

describe("plugin: request-size-limiting (schema)", function()
  it("fills Kong's defaults: 128 megabytes, no Content-Length required", function()
    local p = t.plugin("request-size-limiting", {})
    assert.same({ allowed_payload_size = 128, size_unit = "megabytes",
                  require_content_length = false }, p.config)
  end)

  it("loads from a kong.yml as Kong writes it", function()
    local out = assert(load([[
            config:
              allowed_payload_size: 10
              size_unit: kilobytes
              require_content_length: true
]]))
    assert.same({ allowed_payload_size = 10, size_unit = "kilobytes",
                  require_content_length = true }, out.plugins[1].config)
  end)

  it("refuses an unknown unit, naming the file, line and field", function()
    local out, err = load([[
            config: { size_unit: gigabytes }
]])
    assert.is_nil(out)
    assert.matches("t.yaml:%d+: services%[0%]%.routes%[0%]%.plugins%[0%]%.config%.size_unit: ",
      err)
    assert.matches("megabytes", err, 1, true)
  end)

  it("refuses a negative, fractional or textual size", function()
    local ok, err = pcall(t.plugin, "request-size-limiting", { allowed_payload_size = -1 })
    assert.is_false(ok)
    assert.matches("config.allowed_payload_size: value should be between 0 and 1073741824",
      err, 1, true)
    ok, err = pcall(t.plugin, "request-size-limiting", { allowed_payload_size = 1.5 })
    assert.is_false(ok)
    assert.matches("config.allowed_payload_size: expected an integer", err, 1, true)
    ok, err = load([[
            config: { allowed_payload_size: "1m" }
]])
    assert.is_nil(ok)
    assert.matches("config.allowed_payload_size: expected an integer", err, 1, true)
  end)

  it("refuses a limit of more than 10^15 bytes", function()
    local _, err = load([[
            config: { allowed_payload_size: 1000000000 }
]])
    assert.matches("config.allowed_payload_size: allowed_payload_size is at most 10^15 bytes",
      err, 1, true)
    assert.truthy(load([[
            config: { allowed_payload_size: 1000000000, size_unit: bytes }
]]))
  end)

  it("refuses unknown fields", function()
    local _, err = load([[
            config: { allowed_size: 1 }
]])
    assert.matches("config.allowed_size: unknown field", err, 1, true)
  end)
end)
