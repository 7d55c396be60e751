-- Consumers through the real binary: an auth plugin authenticates from a header,
-- and from then on the request runs what is configured for that consumer,
-- with Kong's precedence; the log sees the consumer; a route without
-- plugins still never enters Lua.
--
-- spec-consumer-auth (priority 1250, like key-auth) loads the consumer named
-- by X-Consumer and authenticates; spec-scope (500) answers with its tag in
-- X-Scope; spec-consumer-mark (100, header_filter + log only) is configured
-- for alice alone.
local helpers = require("spec.helpers")
local cjson = require("cjson")
local config = require("sluice.config")

local fmt = string.format

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)spec/integration/[^/]+$") or ""
ROOT = helpers.run("cd '" .. (ROOT ~= "" and ROOT or ".") .. "' && pwd"):gsub("%s+$", "")
local FIXTURES = ROOT .. "/spec/fixtures/plugins"

local LOAD_CONSUMER = [[
local a = sluice.client.load_consumer("alice", true)
a.username = "mallory"
a.tags[1] = "changed"
local again = sluice.client.load_consumer("alice", true)
local by_id = sluice.client.load_consumer(again.id)
local by_custom_id = sluice.client.load_consumer("crm-1", true)
local ok, err = pcall(sluice.client.load_consumer, "alice")
return sluice.response.exit(200, { username = again.username, tags = again.tags,
  by_id = by_id.username, by_custom_id = by_custom_id == nil, err = err,
  missing = sluice.client.load_consumer("nobody", true) == nil,
  has_credentials = again.keyauth_credentials ~= nil })
]]

local MISUSE = [[
local _, none = pcall(sluice.client.authenticate)
local _, str = pcall(sluice.client.authenticate, "alice")
local _, cred = pcall(sluice.client.authenticate, nil, 42)
return sluice.response.exit(200, { none = none, str = str, cred = cred,
  consumer = sluice.client.get_consumer() == nil,
  credential = sluice.client.get_credential() == nil })
]]

local HF_MISUSE = [[
local _, err = pcall(sluice.client.authenticate, { id = "x" })
sluice.response.set_header("X-HF-Auth", err)
]]

local REWRITE_AUTH = [[
if sluice.request.get_header("x-rewrite-consumer") then
  sluice.client.authenticate(sluice.client.load_consumer("alice", true))
end
]]

local function main_config(up)
  return fmt([=[
_format_version: "3.0"
server:
  listen: ["127.0.0.1:{PORT}"]
  workers: 1
  pid_file: "{DIR}/sluice.pid"
  access_log: "{DIR}/access.log"
  error_log: "{DIR}/error.log"
  plugin_paths: ["%s"]
services:
- name: s1
  url: http://127.0.0.1:%d
  plugins: [{ name: spec-scope, config: { tag: service } }]
  routes:
  - name: r-route
    paths: [/route]
    plugins: [{ name: spec-scope, config: { tag: route } }]
  - { name: r-both, paths: [/both] }
  - { name: r-plain, paths: [/plain] }
  - name: r-early
    paths: [/early]
    plugins: [{ name: spec-scope, priority: 2000, config: { tag: early-route } }]
- name: s2
  url: http://127.0.0.1:%d
  routes:
  - { name: r-other, paths: [/other] }
  - name: r-load
    paths: [/load]
    plugins: [{ name: pre-function, config: { access: [%s] } }]
  - name: r-misuse
    paths: [/misuse]
    plugins:
    - name: post-function
      config: { access: [%s], header_filter: [%s] }
consumers:
- username: alice
  custom_id: crm-1
  tags: [gold]
  keyauth_credentials: [{ key: alice-key }]
  plugins:
  - { name: spec-scope, config: { tag: consumer } }
  - { name: spec-consumer-mark, config: { tag: alice-mark } }
- username: bob
- username: carol
- username: dave
plugins:
- { name: spec-consumer-auth }
- { name: pre-function, config: { rewrite: [%s] } }
- { name: spec-scope, config: { tag: global } }
- { name: spec-scope, route: r-both, service: s1, config: { tag: route+service } }
- { name: spec-scope, service: s1, consumer: carol, config: { tag: service+consumer } }
- { name: spec-scope, route: r-route, consumer: bob, config: { tag: route+consumer } }
- name: spec-scope
  route: r-both
  service: s1
  consumer: dave
  config: { tag: route+service+consumer }
]=], FIXTURES, up.port, up.port, cjson.encode(LOAD_CONSUMER), cjson.encode(MISUSE),
    cjson.encode(HF_MISUSE), cjson.encode(REWRITE_AUTH))
end

describe("consumers:", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream()
    s = helpers.start_sluice(main_config(upstream))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function get(path, consumer, extra)
    local args = consumer and fmt("-H 'X-Consumer: %s' ", consumer) or ""
    return helpers.curl(fmt("%s%s 'http://127.0.0.1:%d%s'", args, extra or "", s.port, path))
  end

  local function error_log()
    return helpers.read_file(s.dir .. "/error.log") or ""
  end

  it("applies the most specific instance: route+service+consumer down to global", function()
    local want = {
      --              nobody                   alice           bob              carol
      --              dave
      ["/route"] = { "route", "consumer", "route+consumer", "service+consumer", "route" },
      ["/both"] = { "route+service", "route+service", "route+service", "service+consumer",
                    "route+service+consumer" },
      ["/plain"] = { "service", "consumer", "service", "service+consumer", "service" },
      ["/other"] = { "global", "consumer", "global", "global", "global" },
    }
    for path, tags in pairs(want) do
      local got = {}
      for i, who in ipairs({ false, "alice", "bob", "carol", "dave" }) do
        local status, headers = get(path, who or nil)
        assert.equals(200, status, path)
        got[i] = headers["x-scope"]
      end
      assert.same(tags, got, path)
    end
  end)

  it("keeps the default for plugins whose turn came before the authentication", function()
    -- spec-scope runs at priority 2000 here, before the auth plugin (1250):
    -- it was decided without a consumer. alice's mark (100) comes after.
    local _, headers = get("/early", "alice")
    assert.equals("early-route", headers["x-scope"])
    assert.equals("alice-mark:alice", headers["x-mark"])
  end)

  it("adds a consumer's own plugins and their phases to a route that has none of them", function()
    local _, headers, body = get("/plain", "alice")
    assert.equals("alice-mark:alice", headers["x-mark"])
    assert.equals(upstream.port, helpers.json(body).port, "the request was proxied")
    local _, others = get("/plain", "bob")
    assert.is_nil(others["x-mark"])
    local _, anonymous = get("/plain")
    assert.is_nil(anonymous["x-mark"])
  end)

  it("refuses an unknown consumer from the auth plugin, with no consumer plugins", function()
    local status, headers, body = get("/plain", "mallory")
    assert.equals(401, status)
    assert.same({ message = "unknown consumer mallory" }, helpers.json(body))
    assert.is_nil(headers["x-mark"])
  end)

  it("authenticates from rewrite: the route's whole chain is the consumer's", function()
    local _, headers = get("/early", nil, "-H 'X-Rewrite-Consumer: 1'")
    assert.equals("consumer", headers["x-scope"])
    assert.equals("alice-mark:alice", headers["x-mark"])
  end)

  it("log serialize() carries the consumer and the authenticated entity", function()
    get("/plain?secret=1", "alice")
    local line = helpers.wait_for(function()
      return error_log():match("spec%-consumer%-mark alice%-mark (%b{})")
    end, 3)
    assert.is_string(line, error_log())
    local entry = helpers.json(line)
    local id = config.consumer_id("alice")
    assert.same({ id = id, username = "alice", custom_id = "crm-1", tags = { "gold" } },
      entry.consumer)
    assert.same({ id = "cred-alice", consumer_id = id }, entry.authenticated_entity)
    assert.equals(200, entry.response.status)
  end)

  it("load_consumer finds by id or username, returns copies, and refuses a non-id", function()
    local status, _, body = get("/load")
    assert.equals(200, status, body)
    local out = helpers.json(body)
    assert.equals("alice", out.username)
    assert.same({ "gold" }, out.tags)
    assert.equals("alice", out.by_id)
    assert.is_true(out.by_custom_id, "custom ids are not usernames")
    assert.is_true(out.missing)
    assert.is_false(out.has_credentials)
    assert.matches("bad argument #1 to 'load_consumer' (consumer ids are UUIDs; pass true as "
      .. "argument #2 to look up a username)", out.err, 1, true)
  end)

  it("authenticate raises on bad arguments and outside rewrite and access", function()
    local status, headers, body = get("/misuse")
    assert.equals(200, status, body)
    local out = helpers.json(body)
    assert.matches("bad argument #1 to 'authenticate' (a consumer or a credential expected, "
      .. "got neither)", out.none, 1, true)
    assert.matches("bad argument #1 to 'authenticate' (table or nil expected, got string)",
      out.str, 1, true)
    assert.matches("bad argument #2 to 'authenticate' (table or nil expected, got number)",
      out.cred, 1, true)
    assert.is_true(out.consumer)
    assert.is_true(out.credential)
    assert.matches("sluice.client.authenticate is not allowed in phase header_filter",
      headers["x-hf-auth"], 1, true)
  end)
end)

describe("consumers: sluice check --routes", function()
  it("shows consumer chains, and a route without plugins still never enters Lua", function()
    local dir = helpers.tmpdir()
    helpers.track({ dir = dir })
    local file = dir .. "/c.yaml"
    helpers.write_file(file, fmt([[
_format_version: "3.0"
server: { plugin_paths: ["%s"] }
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - { name: bare, paths: [/bare] }
  - name: guarded
    paths: [/guarded]
    plugins: [{ name: spec-consumer-auth }, { name: spec-scope, config: { tag: route } }]
consumers:
- username: alice
  plugins:
  - { name: spec-consumer-mark, config: { tag: a } }
  - { name: spec-scope, config: { tag: consumer } }
]], FIXTURES))
    local out, rc = helpers.run(fmt("%s check -c %s --routes", helpers.bin, file))
    assert.equals(0, rc, out)
    -- Nothing on bare can authenticate: no consumer line there.
    assert.matches("\n  bare  %(no plugins: never enters Lua%)\n  guarded ", out)
    assert.matches("\n  guarded  access:spec%-consumer%-auth %-> access:spec%-scope\n"
      .. "    consumer alice  access:spec%-consumer%-auth %-> access:spec%-scope%(consumer%) %-> "
      .. "header_filter:spec%-consumer%-mark%(consumer%) %-> log:spec%-consumer%-mark%(consumer%)",
      out)
    helpers.stop_all()
  end)
end)
