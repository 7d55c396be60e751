-- server.underscores_in_headers: request headers named with '_' are dropped by default (not
-- forwarded, not seen by plugins), so X_Consumer_ID cannot pose as the X-Consumer-ID key-auth
-- sets; kept when the setting is on, where set_header still replaces every spelling.
local helpers = require("spec.helpers")

local fmt = string.format
local concat = table.concat

local ALICE = "7c0d2a9e-5b1f-4c3e-8a6d-000000000001"

-- Reports what the PDK sees of the request's headers, without going upstream.
local PEEK = [[
local cjson = require("cjson")
return {
  PRIORITY = 1000,
  VERSION = "1.0.0",
  access = function()
    local h = sluice.request.get_headers()
    return sluice.response.exit(200, cjson.encode({
      one = sluice.request.get_header("x_consumer_id") or false,
      all = h["x_consumer_id"] or false,
      plain = h["x-plain"] or false,
    }), { ["Content-Type"] = "application/json" })
  end,
}
]]

local CONFIG = [[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: plain
        paths: ["/plain"]
      - name: auth
        paths: ["/auth"]
        plugins:
          - name: key-auth
            config: { key_names: [apikey, x_api_key] }
      - name: peek
        paths: ["/peek"]
        plugins: [{ name: peek }]
consumers:
  - id: "%s"
    username: alice
    keyauth_credentials: [{ key: k-alice }]
]]

-- A raw request: lines are "Name: value" strings sent as they are.
local function raw(path, lines)
  local head = { "GET " .. path .. " HTTP/1.1", "Host: gw.test" }
  for _, l in ipairs(lines or {}) do
    head[#head + 1] = l
  end
  return concat(head, "\r\n") .. "\r\n\r\n"
end

-- Sends raw bytes on a new connection; returns the response (fails the test on a socket error).
local function send(port, bytes)
  local res, err = helpers.request(port, bytes)
  assert.is_truthy(res, err)
  return res
end

-- The headers the echo upstream got, keyed by the name as it arrived.
local function upstream_got(res)
  assert.equals(200, res.status, res.body)
  return helpers.json(res.body).headers
end

local SPOOF = { "X_Consumer_ID: admin", "X-Plain: 1" }

describe("underscores_in_headers", function()
  local upstream, plugins_dir

  setup(function()
    -- nginx drops such headers itself by default; this one keeps them, so what it echoes is
    -- what sluice sent.
    upstream = helpers.start_upstream({ http = "underscores_in_headers on;" })
    plugins_dir = helpers.tmpdir()
    os.execute("mkdir -p " .. plugins_dir .. "/peek")
    helpers.write_file(plugins_dir .. "/peek/handler.lua", PEEK)
    helpers.write_file(plugins_dir .. "/peek/schema.lua",
      'return { name = "peek", fields = { { config = { type = "record", fields = {} } } } }\n')
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("is a boolean, checked at load, and `sluice check` says when it is on", function()
    local dir = helpers.tmpdir()
    local function check(value)
      helpers.write_file(dir .. "/s.yaml", '_format_version: "3.0"\nserver:\n'
        .. "  underscores_in_headers: " .. value .. "\n")
      return helpers.run(fmt("%s check -c %s/s.yaml 2>&1", helpers.bin, dir))
    end
    local out, rc = check('"on"')
    assert.equals(1, rc)
    assert.matches("s.yaml:3: server.underscores_in_headers: expected a boolean", out, 1, true)
    out, rc = check("true")
    assert.equals(0, rc, out)
    assert.matches("(100 headers, '_' in names kept)", out, 1, true)
    out, rc = check("false")
    assert.equals(0, rc, out)
    assert.matches("(100 headers)", out, 1, true)
  end)

  it("the upstream sees headers named with '_' when sluice is not in between", function()
    local h = upstream_got(send(upstream.port, raw("/direct", SPOOF)))
    assert.equals("admin", h["X_Consumer_ID"])
    assert.equals("1", h["X-Plain"])
  end)

  describe("off (the default)", function()
    local s

    setup(function()
      s = helpers.start_sluice(fmt(CONFIG, upstream.port, ALICE), { server = {
        plugin_paths = { plugins_dir }, max_headers = 20, log_level = "info" } })
    end)

    teardown(function()
      helpers.kill(s.pid, "TERM")
    end)

    it("drops them before the upstream and keeps the others", function()
      local h = upstream_got(send(s.port, raw("/plain", { "X_Consumer_ID: admin", "X-Plain: 1",
        "_: x", "A_b_C: y" })))
      assert.is_nil(h["X_Consumer_ID"])
      assert.is_nil(h["_"])
      assert.is_nil(h["A_b_C"])
      assert.equals("1", h["X-Plain"])
      assert.truthy(helpers.wait_for(function()
        local log = helpers.read_file(s.log) or ""
        return log:find("sent a header with '_' in its name; dropped it", 1, true)
      end, 5), "no info line in the error log")
    end)

    it("hides them from sluice.request.get_header and get_headers", function()
      local res = send(s.port, raw("/peek", SPOOF))
      assert.equals(200, res.status, res.body)
      local seen = helpers.json(res.body)
      assert.is_false(seen.one)
      assert.is_false(seen.all)
      assert.equals("1", seen.plain)
    end)

    it("lets no spoofed X_Consumer_ID past key-auth", function()
      local h = upstream_got(send(s.port, raw("/auth", { "apikey: k-alice",
        "X_Consumer_ID: admin", "X_Consumer_Username: root" })))
      assert.equals(ALICE, h["X-Consumer-ID"])
      assert.equals("alice", h["X-Consumer-Username"])
      assert.is_nil(h["X_Consumer_ID"])
      assert.is_nil(h["X_Consumer_Username"])
    end)

    it("hides a key sent under a name with '_' from key-auth", function()
      local res = send(s.port, raw("/auth", { "x_api_key: k-alice" }))
      assert.equals(401, res.status)
      assert.equals('{"message":"No API key found in request"}', res.body)
      -- The same key under the dashed name gets in (get_header's "x_api_key" finds it).
      assert.equals(ALICE, upstream_got(send(s.port, raw("/auth", { "X-Api-Key: k-alice" })))
        ["X-Consumer-ID"])
    end)

    it("still counts dropped lines toward max_headers", function()
      local lines = {}
      for i = 1, 19 do
        lines[i] = fmt("X_Pad_%d: v", i)
      end
      -- Host and 19 dropped lines: 20 lines, the limit.
      local h = upstream_got(send(s.port, raw("/plain", lines)))
      assert.is_nil(h["X_Pad_1"])
      lines[20] = "X_Pad_20: v"
      assert.equals(431, send(s.port, raw("/plain", lines)).status)
    end)

    it("keeps the connection usable after a request whose headers were dropped", function()
      local c = helpers.connect(s.port)
      assert(c:send(raw("/plain", SPOOF) .. raw("/plain", { "X-Plain: 2" })))
      local first = assert(c:read_response())
      local second = assert(c:read_response())
      c:close()
      assert.is_nil(upstream_got(first)["X_Consumer_ID"])
      assert.equals("2", upstream_got(second)["X-Plain"])
    end)
  end)

  describe("on", function()
    local s

    setup(function()
      s = helpers.start_sluice(fmt(CONFIG, upstream.port, ALICE), { server = {
        plugin_paths = { plugins_dir }, underscores_in_headers = true } })
    end)

    teardown(function()
      helpers.kill(s.pid, "TERM")
    end)

    it("forwards them as they came", function()
      local h = upstream_got(send(s.port, raw("/plain", { "X_Consumer_ID: admin", "X-Plain: 1",
        "A_b_C: y" })))
      assert.equals("admin", h["X_Consumer_ID"])
      assert.equals("y", h["A_b_C"])
      assert.equals("1", h["X-Plain"])
    end)

    it("shows them to sluice.request.get_header and get_headers", function()
      local res = send(s.port, raw("/peek", SPOOF))
      assert.equals(200, res.status, res.body)
      local seen = helpers.json(res.body)
      assert.equals("admin", seen.one)
      assert.equals("admin", seen.all)
    end)

    it("lets key-auth find a key sent under a name with '_'", function()
      local h = upstream_got(send(s.port, raw("/auth", { "x_api_key: k-alice" })))
      assert.equals(ALICE, h["X-Consumer-ID"])
    end)

    it("still lets no spoofed X_Consumer_ID past key-auth: set_header replaces every spelling",
      function()
        local h = upstream_got(send(s.port, raw("/auth", { "apikey: k-alice",
          "X_Consumer_ID: admin", "x_consumer_username: root", "X_Anonymous_Consumer: true",
          "X_Credential_Identifier: forged" })))
        assert.equals(ALICE, h["X-Consumer-ID"])
        assert.equals("alice", h["X-Consumer-Username"])
        assert.is_string(h["X-Credential-Identifier"])
        assert.not_equals("forged", h["X-Credential-Identifier"])
        assert.is_nil(h["X_Consumer_ID"])
        assert.is_nil(h["x_consumer_username"])
        assert.is_nil(h["X_Anonymous_Consumer"])
        assert.is_nil(h["X_Credential_Identifier"])
      end)
  end)
end)
