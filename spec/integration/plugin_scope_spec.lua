-- sluice.plugin.get_scope and sluice.now through the real binary.
local helpers = require("spec.helpers")
local cjson = require("cjson")

local fmt = string.format

local SCOPE = [[
return sluice.response.exit(200, { scope = sluice.plugin.get_scope(),
  elapsed = sluice.now() * 1000 - sluice.request.get_start_time() })
]]

local GLOBAL = [[
if sluice.request.get_path() == "/global" then
  return sluice.response.exit(200, { scope = sluice.plugin.get_scope() })
end
]]

describe("sluice.plugin.get_scope and sluice.now", function()
  local s

  setup(function()
    local up = helpers.start_upstream()
    local code = cjson.encode(SCOPE)
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: orders
    url: http://127.0.0.1:%d
    plugins:
      - name: pre-function
        config: { access: [%s] }
    routes:
      - name: by-service
        paths: ["/service"]
      - name: by-route
        paths: ["/route"]
        plugins:
          - name: pre-function
            config: { access: [%s] }
      - name: by-both
        paths: ["/both"]
plugins:
  - name: post-function
    config: { rewrite: [%s] }
  - name: pre-function
    route: by-both
    service: orders
    config: { access: [%s] }
]], up.port, code, code, cjson.encode(GLOBAL), code))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function scope(path)
    local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d%s", s.port, path))
    assert.equal(200, status)
    return cjson.decode(body)
  end

  it("says where the running instance is attached", function()
    assert.equal("global", scope("/global").scope)
    assert.equal("service", scope("/service").scope)
    assert.equal("route", scope("/route").scope)
    assert.equal("route+service", scope("/both").scope)
  end)

  it("sluice.now is the clock of get_start_time, in seconds", function()
    local elapsed = scope("/route").elapsed
    assert.is_true(elapsed >= 0 and elapsed < 1000, tostring(elapsed))
  end)
end)
