-- request-transformer's config: Kong's shape and defaults; bad entries and templates refused
-- with their paths.
local config = require("sluice.config")
local t = require("sluice.test")

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
      - name: request-transformer
]] .. (plugin_yaml or ""), "t.yaml")
end

local EMPTY3 = { body = {}, headers = {}, querystring = {} }

describe("plugin: request-transformer (schema)", function()
  it("fills Kong's defaults: every list empty", function()
    local c = assert(load()).plugins[1].config
    assert.same({ remove = EMPTY3, rename = EMPTY3, replace = EMPTY3, add = EMPTY3,
                  append = EMPTY3 }, c)
  end)

  it("takes Kong's name:value entries and upper-cases the method", function()
    local c = assert(load([[
        config:
          http_method: post
          remove: { headers: [x-internal], querystring: [debug], body: [password] }
          rename: { headers: ["x-old:X-New"] }
          replace: { uri: "/v2/$(uri_captures.rest)", body: ["a:b:c"] }
          add: { headers: ["X-Tenant:$(headers.x_tenant)", "X-Plain:v"] }
          append: { querystring: ["tag:$(query_params.t or 'none')"] }
]])).plugins[1].config
    assert.equal("POST", c.http_method)
    assert.same({ "x-internal" }, c.remove.headers)
    assert.equal("/v2/$(uri_captures.rest)", c.replace.uri)
    assert.same({ "a:b:c" }, c.replace.body)
  end)

  it("refuses an entry without a value, naming the file, line and path", function()
    local out, err = load([[
        config:
          add:
            querystring: ["ok:1", "novalue"]
]])
    assert.is_nil(out)
    assert.matches("t.yaml:%d+: services%[0%]%.plugins%[0%]%.config%.add%.querystring%[1%]: "
      .. "key 'novalue' has no value", err)
  end)

  it("refuses bad header names and values", function()
    local _, err = load([[
        config:
          remove: { headers: ["bad header"] }
          rename: { headers: ["x-a:not valid"] }
          add: { headers: ["X(:1"] }
]])
    assert.matches("config.remove.headers[0]: 'bad header' is not a valid header", err, 1, true)
    assert.matches("config.rename.headers[0]: 'not valid' is not a valid header", err, 1, true)
    assert.matches("config.add.headers[0]: 'X(' is not a valid header", err, 1, true)
  end)

  it("refuses a template that does not compile, with the field's path", function()
    local _, err = load([[
        config:
          add:
            headers: ["X-A:$(header.x_tenant)"]
            body: ["b:$(query_params.id ==)"]
          append:
            querystring: ["q:$(uri_captures.a.b)"]
]])
    assert.matches("config.add.headers[0]: bad template $(header.x_tenant): unknown template "
      .. "variable 'header'", err, 1, true)
    assert.matches("config.add.body[0]: bad template $(query_params.id ==): invalid Lua "
      .. "expression", err, 1, true)
    assert.matches("config.append.querystring[0]: bad template $(uri_captures.a.b): "
      .. "uri_captures takes one key", err, 1, true)
  end)

  it("refuses a bad uri and method", function()
    local _, err = load([[
        config:
          http_method: "GET /"
          replace: { uri: "v2/x y" }
]])
    assert.matches("config.http_method: ", err, 1, true)
    assert.matches("config.replace.uri: must start with '/'", err, 1, true)
    local _, err2 = load([[
        config: { http_method: head }
]])
    assert.matches("config.http_method: changing the method to HEAD is not supported", err2,
      1, true)
  end)

  it("is checked the same way by t.plugin", function()
    assert.has_error(function()
      t.plugin("request-transformer", { add = { headers = { "X-A" } } })
    end)
    local p = t.plugin("request-transformer", { add = { headers = { "X-A:1" } } })
    assert.same({ "X-A:1" }, p.config.add.headers)
  end)
end)
