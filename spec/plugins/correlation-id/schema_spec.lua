-- correlation-id's config: Kong's fields and defaults; bad values refused with their path.
local t = require("sluice.test")

local function refused(conf)
  local ok, err = pcall(t.plugin, "correlation-id", conf)
  assert.is_false(ok, "accepted")
  return err
end

describe("plugin: correlation-id (schema)", function()
  it("fills Kong's defaults: Kong-Request-ID, uuid#counter, no echo", function()
    local p = t.plugin("correlation-id", {})
    assert.same({ header_name = "Kong-Request-ID", generator = "uuid#counter",
                  echo_downstream = false }, p.config)
  end)

  it("takes each of Kong's generators", function()
    for _, g in ipairs({ "uuid", "uuid#counter", "tracker" }) do
      assert.equal(g, t.plugin("correlation-id", { generator = g }).config.generator)
    end
  end)

  it("refuses an unknown generator and a header name that is not a token", function()
    assert.matches("config.generator: ", refused({ generator = "ulid" }), 1, true)
    assert.matches("config.header_name: ", refused({ header_name = "X Request Id" }), 1, true)
    assert.matches("config.echo_downstream: expected a boolean",
      refused({ echo_downstream = "yes" }), 1, true)
  end)
end)
