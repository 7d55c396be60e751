-- file-log's config: Kong's fields and defaults, and what is refused at load.
local t = require("sluice.test")

describe("plugin: file-log (schema)", function()
  it("fills Kong's defaults", function()
    local c = t.plugin("file-log", { path = "/tmp/x.log" }).config
    assert.same({ path = "/tmp/x.log", reopen = false, redact = {}, query_values = false }, c)
  end)

  it("requires a path, and refuses Kong's forbidden characters in it", function()
    local ok, err = pcall(t.plugin, "file-log", {})
    assert.is_false(ok)
    assert.matches("config.path: required field missing", err, 1, true)
    ok, err = pcall(t.plugin, "file-log", { path = "/tmp/a*b" })
    assert.is_false(ok)
    assert.matches("config.path", err, 1, true)
  end)

  it("refuses custom_fields_by_lua that does not compile", function()
    local ok, err = pcall(t.plugin, "file-log", { path = "/tmp/x",
                                                  custom_fields_by_lua = { a = "return +" } })
    assert.is_false(ok)
    assert.matches("field 'a': invalid Lua", err, 1, true)
  end)
end)
