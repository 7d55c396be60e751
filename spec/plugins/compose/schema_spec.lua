-- compose's schema: what a config must say, refused with the field's path.
local t = require("sluice.test")

local function refused(conf)
  local ok, err = pcall(t.plugin, "compose", conf)
  assert.is_false(ok)
  return err
end

describe("plugin: compose (schema)", function()
  it("fills in the defaults", function()
    local c = t.plugin("compose", { backends = { { name = "a", url = "http://127.0.0.1:1" } } })
      .config
    local b = c.backends[1]
    assert.equal("GET", b.method)
    assert.same({ "Authorization" }, b.forward_headers)
    assert.equal(5000, b.timeout)
    assert.is_false(b.required)
    assert.is_false(c.sequential)
    assert.is_true(c.meta)
  end)

  it("refuses bad backends, naming the field", function()
    assert.matches("config.backends: required field missing", refused({}))
    assert.matches("config.backends%[0%]: exactly one of these fields must be non%-empty: "
      .. "'url', 'service'", refused({ backends = { { name = "a" } } }))
    assert.matches("config.backends%[0%].url: expected an http:// URL",
      refused({ backends = { { name = "a", url = "https://x" } } }))
    assert.matches("duplicate backend name 'a'", refused({ backends = {
      { name = "a", url = "http://x" }, { name = "a", url = "http://y" } } }))
    assert.matches("config.backends%[0%].path: bad template %$%(nope.x%): unknown template "
      .. "variable 'nope'", refused({ backends = { { name = "a", url = "http://x",
                                                    path = "/$(nope.x)" } } }))
    assert.matches("backends.NAME can only be used with sequential: true", refused({
      backends = { { name = "a", url = "http://x", path = "/$(backends.b.body.id)" } } }))
    assert.matches("give 'allow' or 'deny', not both", refused({ backends = {
      { name = "a", url = "http://x", allow = { "a" }, deny = { "b" } } } }))
  end)
end)
