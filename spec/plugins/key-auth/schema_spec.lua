-- key-auth's config and credentials: Kong's defaults, and bad ones refused with file:line: path.
local config = require("sluice.config")

local function load(body)
  return config.load_string('_format_version: "3.0"\n' .. body, "keys.yaml")
end

local ROUTE = [[
services:
  - name: s
    url: http://127.0.0.1:3000
    routes: [{ name: r, paths: ["/"] }]
]]

describe("plugin: key-auth (schema)", function()
  it("fills Kong's defaults", function()
    local out = assert(load(ROUTE .. "plugins: [{ name: key-auth }]\n"))
    assert.same({ key_names = { "apikey" }, key_in_header = true, key_in_query = true,
                  key_in_body = false, hide_credentials = false, run_on_preflight = true },
      out.plugins[1].config)
  end)

  it("refuses key names that cannot be header names, and realms that break the header",
    function()
      local out, err = load(ROUTE .. [[
plugins:
  - name: key-auth
    config:
      key_names: ["api key"]
      realm: 'a"b'
]])
      assert.is_nil(out)
      assert.matches("keys.yaml:9: plugins%[0%]%.config%.key_names%[0%]:", err)
      assert.matches("keys.yaml:10: plugins%[0%]%.config%.realm:", err)
    end)

  it("checks credentials: a key is required and unique, and never repeated in the error",
    function()
      local out, err = load([[
consumers:
  - username: alice
    keyauth_credentials:
      - key: s3cret-key
      - { ttl: 10 }
  - username: bob
    keyauth_credentials: [{ key: s3cret-key }]
  - username: carol
    keyauth_credentials: [{ key: k3, ttl: 0 }]
keyauth_credentials:
  - { consumer: nobody, key: other }
]])
      assert.is_nil(out)
      assert.matches("keys.yaml:6: consumers%[0%]%.keyauth_credentials%[1%]%.key: required field "
        .. "missing", err)
      assert.matches("consumers%[1%]%.keyauth_credentials%[0%]%.key: duplicate "
        .. "keyauth_credentials key %(also consumers%[0%]%.keyauth_credentials%[0%]", err)
      assert.matches("keys.yaml:10: consumers%[2%]%.keyauth_credentials%[0%]%.ttl:", err)
      assert.matches("keys.yaml:12: keyauth_credentials%[0%]%.consumer:", err)
      assert.is_nil(err:find("s3cret-key", 1, true))
    end)

  it("indexes keys, nested or top-level, and starts a ttl at load", function()
    local out = assert(load([[
consumers:
  - username: alice
    keyauth_credentials: [{ key: k1, ttl: 60 }]
keyauth_credentials:
  - { consumer: alice, key: k2, tags: [ops] }
]]))
    local creds = out.consumers[1].keyauth_credentials
    assert.equal("k1", creds[1].key)
    assert.is_true(math.abs(creds[1].created_at - os.time()) <= 2)
    assert.same({ id = out.consumers[1].id }, creds[2].consumer)
    assert.same({ "ops" }, creds[2].tags)
  end)
end)
