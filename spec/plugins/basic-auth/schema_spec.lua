-- basic-auth's config and credentials: Kong's defaults, password hashing at load, bad ones refused.
local config = require("sluice.config")

local function load(body)
  return config.load_string('_format_version: "3.0"\n' .. body, "users.yaml")
end

local ROUTE = [[
services:
  - name: s
    url: http://127.0.0.1:3000
    routes: [{ name: r, paths: ["/"] }]
]]

local HASHED = "$pbkdf2-sha256$i=1000$MDEyMzQ1Njc4OWFiY2RlZg$"
  .. "erCPmpcVBrXal833JRIwhzuHUMa/1rbAQyIkg3pPHtA"

describe("plugin: basic-auth (schema)", function()
  it("fills Kong's defaults", function()
    local out = assert(load(ROUTE .. "plugins: [{ name: basic-auth }]\n"))
    assert.same({ realm = "service", hide_credentials = false, run_on_preflight = true },
      out.plugins[1].config)
  end)

  it("hashes plain passwords at load with a fresh salt each, and keeps hashes as they are",
    function()
      local out = assert(load([[
consumers:
  - username: alice
    basicauth_credentials:
      - { username: a1, password: same }
      - { username: a2, password: same }
      - { username: a3, password: "]] .. HASHED .. [[" }
      - { username: a4, password: 3160d49fab11cff53e0b8044ed65542bf921d71a }
]]))
      local c = out.consumers[1].basicauth_credentials
      assert.matches("^%$pbkdf2%-sha256%$i=100000%$", c[1].password)
      assert.matches("^%$pbkdf2%-sha256%$i=100000%$", c[2].password)
      assert.not_equal(c[1].password, c[2].password)
      assert.is_nil(c[1].password:find("same", 1, true))
      assert.equal(HASHED, c[3].password)
      assert.equal("3160d49fab11cff53e0b8044ed65542bf921d71a", c[4].password)
    end)

  it("refuses bad credentials with the file, line and path", function()
    local out, err = load([[
consumers:
  - username: alice
    basicauth_credentials:
      - { username: "a:b", password: x }
      - { username: a, password: "$pbkdf2-sha256$i=10$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" }
      - { username: b, password: "$pbkdf2-md5$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" }
      - { username: c, password: "$pbkdf2-sha256$1000$x$y" }
      - { username: d }
      - { username: e, password: p }
  - username: bob
    basicauth_credentials: [{ username: e, password: q }]
]])
    assert.is_nil(out)
    assert.matches("users.yaml:5: consumers%[0%]%.basicauth_credentials%[0%]: a basic%-auth "
      .. "username cannot hold ':'", err)
    assert.matches("users.yaml:6: consumers%[0%]%.basicauth_credentials%[1%]: PBKDF2 "
      .. "iterations must be from 1000 to 10000000", err)
    assert.matches("users.yaml:7: consumers%[0%]%.basicauth_credentials%[2%]: unsupported "
      .. "PBKDF2 digest 'md5'", err)
    assert.matches("users.yaml:8: consumers%[0%]%.basicauth_credentials%[3%]: a password "
      .. "starting with %$pbkdf2%- must be", err)
    assert.matches("users.yaml:9: consumers%[0%]%.basicauth_credentials%[4%]%.password: "
      .. "required field missing", err)
    assert.matches("consumers%[1%]%.basicauth_credentials%[0%]%.username: duplicate "
      .. "basicauth_credentials username", err)
  end)

  it("refuses a realm that would break the challenge header", function()
    local out, err = load(ROUTE .. 'plugins: [{ name: basic-auth, config: { realm: "a\\"b" } }]\n')
    assert.is_nil(out)
    assert.matches("users.yaml:6: plugins%[0%]%.config%.realm:", err)
  end)
end)
