-- acl's config and acls: exactly one of allow and deny, consumer groups refused, groups required.
local config = require("sluice.config")

local function load(body)
  return config.load_string('_format_version: "3.0"\n' .. body, "acl.yaml")
end

local ROUTE = [[
services:
  - name: s
    url: http://127.0.0.1:3000
    routes: [{ name: r, paths: ["/"] }]
]]

describe("plugin: acl (schema)", function()
  it("fills Kong's defaults", function()
    local out = assert(load(ROUTE .. "plugins: [{ name: acl, config: { allow: [a] } }]\n"))
    assert.same({ allow = { "a" }, hide_groups_header = false, include_consumer_groups = false,
                  always_use_authenticated_groups = false }, out.plugins[1].config)
  end)

  it("wants exactly one of allow and deny, non-empty", function()
    for _, conf in ipairs({ "{ allow: [a], deny: [b] }", "{}", "{ allow: [] }" }) do
      local out, err = load(ROUTE .. "plugins: [{ name: acl, config: " .. conf .. " }]\n")
      assert.is_nil(out, conf)
      assert.matches("acl.yaml:6: plugins%[0%]%.config", err)
    end
  end)

  it("refuses include_consumer_groups: consumer groups are not supported", function()
    local out, err = load(ROUTE .. [[
plugins:
  - name: acl
    config: { allow: [a], include_consumer_groups: true }
]])
    assert.is_nil(out)
    assert.matches("acl.yaml:8: plugins%[0%]%.config%.include_consumer_groups: consumer groups "
      .. "are not supported", err)
  end)

  it("checks acls nested and top-level", function()
    local out, err = load([[
consumers:
  - username: alice
    acls: [{ group: admins }, { grop: ops }]
acls:
  - { consumer: alice, group: "" }
]])
    assert.is_nil(out)
    assert.matches("acl.yaml:4: consumers%[0%]%.acls%[1%]%.grop: unknown field", err)
    assert.matches("acl.yaml:6: acls%[0%]%.group:", err)
  end)
end)
