-- credentials_spec.lua: credentials are checked with their plugin's daos.lua at
-- load, get ids and their consumer, and are found through sluice.db.
require("sluice.pdk")
local config = require("sluice.config")
local runner = require("sluice.runner")

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)spec/config/[^/]+$") or "./"
local DAOS = ROOT .. "spec/fixtures/plugins-daos"

local function load(body)
  return config.load_string([[
_format_version: "3.0"
server:
  plugin_paths: ["]] .. DAOS .. [["]
]] .. body, "creds.yaml")
end

describe("config: credentials", function()
  it("checks each credential with its plugin's entity schema, naming the place", function()
    local cfg, err = load([[
consumers:
  - username: alice
    acls:
      - group: Admins
        label: a
      - { label: b }
      - { group: forbidden }
      - { group: x, colour: red }
acls:
  - consumer: alice
    group: untransformable
]])
    assert.is_nil(cfg)
    assert.matches("creds.yaml:9: consumers%[0%].acls%[1%].group: required field missing", err)
    assert.matches("creds.yaml:10: consumers%[0%].acls%[2%]: the group 'forbidden' is reserved",
      err)
    assert.matches("creds.yaml:11: consumers%[0%].acls%[3%].colour: unknown field 'colour'", err)
    assert.matches("creds.yaml:13: acls%[0%]: cannot transform this one", err)
  end)

  it("refuses a unique field that repeats, without repeating its value", function()
    local cfg, err = load([[
consumers:
  - username: alice
    acls: [{ group: a, label: secret-1 }]
  - username: bob
acls:
  - { consumer: bob, group: b, label: secret-1 }
]])
    assert.is_nil(cfg)
    assert.matches("acls%[0%].label: duplicate acls label %(also consumers%[0%].acls%[0%]", err)
    assert.is_nil(err:find("secret-1", 1, true))
  end)

  it("normalizes credentials and indexes them for sluice.db", function()
    local cfg = assert(load([[
consumers:
  - username: alice
    acls:
      - { group: Admins, label: a }
      - { group: ops }
  - username: bob
acls:
  - consumer: bob
    id: 0b1e3b8c-2b8f-4c39-9a43-5d1b0a7b6c01
    group: readers
    label: r
]]))
    runner.init(cfg)
    local alice, bob = cfg.consumers[1], cfg.consumers[2]
    local a = sluice.db.acls:select_by_label("a")
    assert.equal("admins", a.group) -- transformed once at load
    assert.equal(1, a.weight)       -- defaulted
    assert.same({ id = alice.id }, a.consumer)
    assert.matches("^%x+%-%x+%-5%x+%-%x+%-%x+$", a.id)
    assert.equal(a, sluice.db.acls:select(a.id))
    assert.equal(a, sluice.db.acls:select({ id = a.id }))
    local r = sluice.db.acls:select("0b1e3b8c-2b8f-4c39-9a43-5d1b0a7b6c01")
    assert.equal("readers", r.group)
    assert.same({ id = bob.id }, r.consumer)
    assert.is_nil(sluice.db.acls:select_by_label("nope"))

    local groups = {}
    for row in sluice.db.acls:each_for_consumer(alice.id) do
      groups[#groups + 1] = row.group
    end
    assert.same({ "admins", "ops" }, groups)
    local all = 0
    for _ in sluice.db.acls:each() do
      all = all + 1
    end
    assert.equal(3, all)
    -- The same config loads to the same ids.
    local again = assert(load([[
consumers:
  - username: alice
    acls:
      - { group: Admins, label: a }
]]))
    assert.equal(a.id, again.consumers[1].acls[1].id)
  end)

  it("has no lookup for fields that are not unique, nor for collections nobody declared",
    function()
      runner.init(assert(load("consumers: [{ username: alice, acls: [{ group: a }] }]\n")))
      assert.is_nil(sluice.db.acls.select_by_group)
      assert.is_nil(sluice.db.oauth2_credentials)
      assert.has_error(function() sluice.db.acls.select("x") end,
        "bad argument #1 to 'select' (call it as sluice.db.NAME:select(...))")
      assert.has_error(function() sluice.db.acls:select(42) end,
        "bad argument #2 to 'select' (an id or { id = ID } expected, got number)")
    end)

  it("keeps a collection whose plugin is not available as written", function()
    local cfg = assert(load([[
consumers:
  - username: alice
    hmacauth_credentials: [{ username: alice-hmac, secret: s }]
]]))
    assert.same({ { username = "alice-hmac", secret = "s" } },
      cfg.consumers[1].hmacauth_credentials)
  end)
end)
