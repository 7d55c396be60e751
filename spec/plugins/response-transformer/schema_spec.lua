-- response-transformer's config: Kong's shape and defaults; bad entries and values refused with
-- their paths.
local config = require("sluice.config")

local HEAD = '_format_version: "3.0"\n'

local function load(plugin_yaml)
  return config.load_string(HEAD .. [[
services:
  - name: orders
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
    plugins:
      - name: response-transformer
]] .. (plugin_yaml or ""), "t.yaml")
end

local VALUES = { json = {}, json_types = {}, headers = {} }

describe("plugin: response-transformer (schema)", function()
  it("fills Kong's defaults: every list empty, keys taken as they are", function()
    local c = assert(load()).plugins[1].config
    assert.same({ remove = { json = {}, headers = {} }, rename = { json = {}, headers = {} },
                  replace = VALUES, add = VALUES, append = VALUES, dots_in_keys = true }, c)
  end)

  it("takes Kong's entries and json_types", function()
    local c = assert(load([[
        config:
          remove: { headers: [server], json: [internal] }
          rename: { headers: ["x-old:X-New"], json: ["old:new"] }
          add: { json: ["count:3", "ok:true", "name:x"], json_types: [number, boolean] }
]])).plugins[1].config
    assert.same({ "number", "boolean" }, c.add.json_types)
  end)

  it("refuses a json value that is not of its json_type, naming the entry", function()
    local out, err = load([[
        config:
          add: { json: ["a:1", "b:12abc"], json_types: [number, number] }
          replace: { json: ["c:yes"], json_types: [boolean] }
]])
    assert.is_nil(out)
    assert.matches("config.add.json[1]: 'b': '12abc' is not a number", err, 1, true)
    assert.matches("config.replace.json[0]: 'c': 'yes' is not a boolean (true or false)", err,
      1, true)
  end)

  it("refuses JSON's invalid numbers", function()
    for _, n in ipairs({ "01", "1.", ".5", "0x10", "1e", "inf", "+1" }) do
      local _, err = load("        config: { add: { json: [\"a:" .. n .. "\"], "
        .. "json_types: [number] } }\n")
      assert.matches("is not a number", err, 1, true)
    end
    assert(load("        config: { add: { json: [\"a:-0.5e+3\"], json_types: [number] } }\n"))
  end)

  it("refuses a json_type Kong does not have, bad headers and entries without a colon", function()
    local _, err = load([[
        config:
          append: { json_types: [object] }
          remove: { headers: ["bad header"] }
          rename: { headers: ["x-a:not valid"], json: ["nocolon"] }
          add: { headers: ["X-A"] }
]])
    assert.matches("config.append.json_types[0]: expected one of", err, 1, true)
    assert.matches("config.remove.headers[0]: 'bad header' is not a valid header", err, 1, true)
    assert.matches("config.rename.headers[0]: 'not valid' is not a valid header", err, 1, true)
    assert.matches("config.rename.json[0]: 'nocolon' is not a 'name:value' pair", err, 1, true)
    assert.matches("config.add.headers[0]: 'X-A' is not a 'name:value' pair", err, 1, true)
  end)
end)
