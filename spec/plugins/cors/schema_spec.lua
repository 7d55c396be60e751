-- cors's config: Kong's defaults, regexes refused at load with the field's path.
local config = require("sluice.config")
local t = require("sluice.test")

local function load(plugin_yaml)
  return config.load_string([[
_format_version: "3.0"
services:
  - name: web
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: cors
]] .. (plugin_yaml or ""), "t.yaml")
end

describe("plugin: cors (schema)", function()
  it("fills Kong's defaults", function()
    local out = assert(load())
    assert.same({
      methods = { "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE",
                  "CONNECT" },
      credentials = false, preflight_continue = false, private_network = false,
      allow_origin_absent = true,
    }, out.plugins[1].config)
  end)

  it("takes every field of a Kong config", function()
    local out = assert(load([[
            config:
              origins: ["https://app.example.com", "https://.*\\.example\\.org", "*"]
              methods: [GET, POST]
              headers: [Content-Type, X-Request-Id]
              exposed_headers: ["X-Total, X-Page"]
              credentials: true
              max_age: 3600
              preflight_continue: true
              private_network: true
              allow_origin_absent: false
]]))
    local c = out.plugins[1].config
    assert.same({ "https://app.example.com", "https://.*\\.example\\.org", "*" }, c.origins)
    assert.same({ "GET", "POST" }, c.methods)
    assert.same({ "Content-Type", "X-Request-Id" }, c.headers)
    assert.same({ "X-Total, X-Page" }, c.exposed_headers)
    assert.equal(3600, c.max_age)
    assert.is_true(c.credentials and c.preflight_continue and c.private_network)
    assert.is_false(c.allow_origin_absent)
  end)

  it("refuses a bad regex at load, naming the file, line, field and PCRE2's reason", function()
    local out, err = load([[
            config:
              origins: ["https://ok.example.com", "https://(.*\\.example\\.com"]
]])
    assert.is_nil(out)
    assert.matches("t.yaml:%d+: services%[0%]%.routes%[0%]%.plugins%[0%]%.config%.origins%[1%]: "
      .. "'https://%(%.%*\\%.example\\%.com' is not a valid regex: missing closing "
      .. "parenthesis at offset %d+", err)
  end)

  it("refuses unknown methods, bad header names and a negative max_age", function()
    local _, err = load([[
            config:
              methods: [GET, BREW]
              headers: ["X-Ok", "Bad Header"]
              exposed_headers: [""]
              max_age: -1
              origins: [""]
              colour: red
]])
    assert.matches("config.methods[1]: expected one of: GET, HEAD, PUT, PATCH, POST, DELETE, "
      .. "OPTIONS, TRACE, CONNECT", err, 1, true)
    assert.matches("config.headers[1]: 'Bad Header' is not a header name", err, 1, true)
    assert.matches("config.exposed_headers[0]: expected a header name, got an empty one", err,
      1, true)
    assert.matches("config.max_age: value should be between 0 and 2147483647", err, 1, true)
    assert.matches("config.origins[0]: length must be at least 1", err, 1, true)
    assert.matches("config.colour: unknown field 'colour'", err, 1, true)
  end)

  it("refuses a bad regex in t.plugin too", function()
    assert.has_error(function()
      t.plugin("cors", { origins = { "[a-" } })
    end)
    local ok, err = pcall(t.plugin, "cors", { origins = { "[a-" } })
    assert.is_false(ok)
    assert.matches("config.origins[0]: '[a-' is not a valid regex", err, 1, true)
  end)
end)
