-- ip-restriction's config: Kong's fields, and every invalid address refused at load
-- with the path of the entry.
local t = require("sluice.test")
local config = require("sluice.config")

local function load(plugin_yaml)
  return config.load_string([[
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
plugins:
  - name: ip-restriction
]] .. plugin_yaml, "t.yaml")
end

local function refused(conf)
  local ok, err = pcall(t.plugin, "ip-restriction", conf)
  assert.is_false(ok, "accepted")
  return err
end

describe("plugin: ip-restriction (schema)", function()
  it("fills Kong's status and message", function()
    local p = t.plugin("ip-restriction", { allow = { "10.0.0.0/8" } })
    assert.same({ allow = { "10.0.0.0/8" }, status = 403,
                  message = "Your IP address is not allowed" }, p.config)
  end)

  it("loads a kong.yml's lists of IPv4, IPv6 and CIDRs", function()
    local out = assert(load([[
    config:
      allow: ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1", "::ffff:10.0.0.1/128"]
      deny: ["10.6.6.6", "0.0.0.0/0", "::/0"]
      status: 401
      message: go away
]]))
    local c = out.plugins[1].config
    assert.equal(5, #c.allow)
    assert.equal(3, #c.deny)
    assert.equal(401, c.status)
    assert.equal("go away", c.message)
  end)

  it("needs allow or deny, as Kong", function()
    assert.matches("config: at least one of 'allow' or 'deny' is required", refused({}), 1, true)
  end)

  it("refuses invalid entries with the path of each", function()
    local out, err = load([[
    config:
      allow: ["10.0.0.0/8", "10.0.0.256", "10.0.0.0/33", "example.com"]
      deny: ["2001:db8::/129", "1:2:3:4:5:6:7:8:9", "fe80::1%eth0", "10.0.0.1/"]
]])
    assert.is_nil(out)
    for _, want in ipairs({
      "t.yaml:11: plugins[0].config.allow[1]: invalid IP address or CIDR block '10.0.0.256'",
      "plugins[0].config.allow[2]: invalid prefix length in '10.0.0.0/33': at most 32",
      "plugins[0].config.allow[3]: invalid IP address or CIDR block 'example.com'",
      "plugins[0].config.deny[0]: invalid prefix length in '2001:db8::/129': at most 128",
      "plugins[0].config.deny[1]: invalid IP address or CIDR block '1:2:3:4:5:6:7:8:9'",
      "plugins[0].config.deny[2]: invalid IP address or CIDR block 'fe80::1%eth0'",
      "plugins[0].config.deny[3]: invalid prefix length in '10.0.0.1/'",
    }) do
      assert.matches(want, err, 1, true)
    end
  end)

  it("refuses a status out of range and a non-string message", function()
    assert.matches("config.status: value should be between 100 and 599",
      refused({ deny = { "10.0.0.1" }, status = 99 }), 1, true)
    assert.matches("config.message: expected a string",
      refused({ deny = { "10.0.0.1" }, message = 5 }), 1, true)
  end)
end)
