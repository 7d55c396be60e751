-- acl in-process: allow and deny lists against consumers' groups, and Kong's 401/403 choices.
local t = require("sluice.test")
local cjson = require("cjson")

local ALICE = "5d0c4b3a-2e1f-4a5b-8c7d-000000000001"
local BOB = "5d0c4b3a-2e1f-4a5b-8c7d-000000000002"
local CAROL = "5d0c4b3a-2e1f-4a5b-8c7d-000000000003"
local GUEST = "5d0c4b3a-2e1f-4a5b-8c7d-000000000004"

local CONSUMERS = {
  { id = ALICE, username = "alice",
    acls = { { group = "admins" }, { group = "ops" }, { group = "admins" } } },
  { id = BOB, username = "bob", acls = { { group = "users" } } },
  { id = CAROL, username = "carol" },
  { id = GUEST, username = "guest", acls = { { group = "guests" } } },
}

local function plugin(conf)
  return t.plugin("acl", conf, { consumers = CONSUMERS })
end

-- A request as an auth plugin before acl would leave it: with a credential,
-- or as the anonymous consumer (none).
local function as(id, anonymous, extra)
  local req = { consumer = { id = id }, credential = not anonymous and { id = "c-" .. id } or nil }
  for k, v in pairs(extra or {}) do
    req[k] = v
  end
  return req
end

local function message(res, status)
  return cjson.decode(assert.res_status(status, res)).message
end

describe("plugin: acl (access)", function()
  local allow = plugin({ allow = { "admins", "users" } })
  local deny = plugin({ deny = { "users" } })

  it("lets a consumer in an allowed group through, with its groups upstream", function()
    local res = allow:run(as(ALICE))
    assert.res_status(200, res)
    assert.equal("admins, ops", res.upstream.headers["x-consumer-groups"]) -- each group once
    res = allow:run(as(BOB))
    assert.equal("users", res.upstream.headers["x-consumer-groups"])
  end)

  it("refuses a consumer in no allowed group with 403", function()
    local res = allow:run(as(GUEST))
    assert.equal("You cannot consume this service", message(res, 403))
    assert.is_nil(res.upstream)
    assert.equal("You cannot consume this service", message(allow:run(as(CAROL)), 403))
  end)

  it("refuses a consumer in a denied group, and lets everyone else through", function()
    assert.equal("You cannot consume this service", message(deny:run(as(BOB)), 403))
    local res = deny:run(as(ALICE))
    assert.equal("admins, ops", res.upstream.headers["x-consumer-groups"])
    -- No groups at all: nothing to deny, and no groups header.
    res = deny:run(as(CAROL, false, { headers = { ["X-Consumer-Groups"] = "admins" } }))
    assert.res_status(200, res)
    assert.is_nil(res.upstream.headers["x-consumer-groups"])
  end)

  it("answers 401 when nobody authenticated", function()
    local res = allow:run({})
    assert.equal("Unauthorized", message(res, 401))
    assert.equal("Unauthorized", message(deny:run({}), 401))
  end)

  it("answers 401 for an anonymous consumer in no group, 403 for one in the wrong group",
    function()
      assert.equal("Unauthorized", message(allow:run(as(CAROL, true)), 401))
      assert.equal("You cannot consume this service", message(allow:run(as(GUEST, true)), 403))
      assert.res_status(200, plugin({ allow = { "guests" } }):run(as(GUEST, true)))
    end)

  it("matches groups exactly, case included", function()
    assert.res_status(403, plugin({ allow = { "Admins" } }):run(as(ALICE)))
  end)

  it("replaces or removes a groups header the client sent", function()
    local res = allow:run(as(BOB, false, { headers = { ["X-Consumer-Groups"] = "admins" } }))
    assert.equal("users", res.upstream.headers["x-consumer-groups"])
    res = plugin({ allow = { "users" }, hide_groups_header = true }):run(
      as(BOB, false, { headers = { ["X-Consumer-Groups"] = "admins" } }))
    assert.res_status(200, res)
    assert.is_nil(res.upstream.headers["x-consumer-groups"])
  end)

  it("answers 403 to a credential that has no consumer", function()
    local res = allow:run({ credential = { id = "ldap-user" } })
    assert.equal("You cannot consume this service", message(res, 403))
  end)

  it("works with a config that holds no acls at all", function()
    local none = t.plugin("acl", { allow = { "admins" } }, { consumers = {} })
    assert.res_status(403, none:run(as(ALICE)))
    local open = t.plugin("acl", { deny = { "admins" } }, { consumers = {} })
    assert.res_status(200, open:run(as(ALICE)))
  end)
end)
