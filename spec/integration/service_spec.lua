-- sluice.service through the real binary: a plugin sends a request to another
-- configured upstream, to one address of its choosing, with other timeouts
-- or other retries, and misuse is named.
local helpers = require("spec.helpers")
local cjson = require("cjson")

local fmt = string.format

-- A location that answers after a second: slower than the timeouts set below.
local SLOW = [[
    location /slow {
      content_by_lua_block {
        ngx.sleep(1)
        ngx.say("late")
      }
    }
]]

local SET_UPSTREAM = [[
local ok, err = sluice.service.set_upstream(sluice.request.get_header("x-upstream"))
if not ok then
  return sluice.response.exit(500, { err = err })
end
]]

local SET_TARGET = [[
local ok, err = sluice.service.set_target(sluice.request.get_header("x-host"),
  tonumber(sluice.request.get_header("x-port")))
if not ok then
  return sluice.response.exit(500, { err = err })
end
]]

local MISUSE = [[
local calls = {
  upstream_type = function() sluice.service.set_upstream(1) end,
  target_host = function() sluice.service.set_target(nil, 80) end,
  target_port = function() sluice.service.set_target("127.0.0.1", 0) end,
  timeouts_zero = function() sluice.service.set_timeouts(0, 1000, 1000) end,
  timeouts_fraction = function() sluice.service.set_timeouts(1000, 1000, 1.5) end,
  timeouts_missing = function() sluice.service.set_timeouts(1000) end,
  retries_negative = function() sluice.service.set_retries(-1) end,
  retries_big = function() sluice.service.set_retries(32768) end,
}
local out = {}
for name, fn in pairs(calls) do
  local _, err = pcall(fn)
  out[name] = err
end
return sluice.response.exit(200, out)
]]

local LATE = [[
local _, err = pcall(sluice.service.set_upstream, "second")
local _, err2 = pcall(sluice.service.set_timeouts, 1, 1, 1)
sluice.response.set_header("X-Late", err .. " | " .. err2)
]]

local function pre(phase, code)
  return fmt("[{ name: pre-function, config: { %s: [%s] } }]", phase, cjson.encode(code))
end

local function main_config(up1, up2, dead)
  return fmt([=[
_format_version: "3.0"
upstreams:
- name: first
  targets: [{ target: "127.0.0.1:%d" }]
- name: Second
  host_header: second.internal
  targets: [{ target: "127.0.0.1:%d" }]
- name: flaky
  targets:
  - { target: "127.0.0.1:%d", weight: 1000 }
  - { target: "127.0.0.1:%d", weight: 1 }
services:
- name: svc
  host: first
  routes:
  - { name: plain, paths: [/plain] }
  - { name: to-upstream, paths: [/to-upstream], plugins: %s }
  - { name: to-target, paths: [/to-target], plugins: %s }
  - name: timeouts
    paths: [/timeouts]
    plugins: %s
  - { name: no-timeouts, paths: [/no-timeouts] }
  - { name: misuse, paths: [/misuse], plugins: %s }
  - name: late
    paths: [/late]
    plugins: [{ name: pre-function, config: { header_filter: [%s] } }]
- name: flaky
  host: flaky
  routes:
  - { name: flaky-default, paths: [/flaky/default] }
  - { name: flaky-none, paths: [/flaky/none], plugins: %s }
]=], up1.port, up2.port, dead, up2.port, pre("access", SET_UPSTREAM),
    pre("access", SET_TARGET), pre("access", "sluice.service.set_timeouts(1000, 1000, 200)"),
    pre("access", MISUSE), cjson.encode(LATE), pre("access", "sluice.service.set_retries(0)"))
end

describe("sluice.service:", function()
  local up1, up2, s

  setup(function()
    up1 = helpers.start_upstream({ locations = SLOW })
    up2 = helpers.start_upstream({ locations = SLOW })
    -- Names fail without a query leaving the machine: nothing answers DNS on
    -- port 9 of 127.0.0.1 (spec/integration/dns_spec.lua resolves real ones).
    s = helpers.start_sluice(main_config(up1, up2, helpers.free_port()),
      { server = { dns_resolver = { "127.0.0.1:9" } } })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function get(path, headers)
    local args = {}
    for k, v in pairs(headers or {}) do
      args[#args + 1] = fmt("-H '%s: %s'", k, v)
    end
    return helpers.curl(fmt("%s 'http://127.0.0.1:%d%s'", table.concat(args, " "), s.port, path))
  end

  local function echo(body)
    local e = helpers.json(body)
    assert.is_table(e, body)
    e.h = helpers.lower_headers(e.headers)
    return e
  end

  it("set_upstream sends the request to another configured upstream, with its Host", function()
    local _, _, body = get("/plain")
    assert.equals(up1.port, echo(body).port)
    local status, _, moved = get("/to-upstream", { ["X-Upstream"] = "second" })
    assert.equals(200, status, moved)
    local e = echo(moved)
    assert.equals(up2.port, e.port)
    assert.equals("second.internal", e.h.host)
    local _, _, back = get("/to-upstream", { ["X-Upstream"] = "FIRST" })
    assert.equals(up1.port, echo(back).port)
  end)

  it("set_upstream returns nil, err for an upstream that is not configured", function()
    local status, _, body = get("/to-upstream", { ["X-Upstream"] = "nowhere" })
    assert.equals(500, status)
    assert.same({ err = "could not find an upstream named 'nowhere'" }, helpers.json(body))
  end)

  it("set_target sends the request to that address, keeping its connection alive", function()
    local status, _, body = get("/to-target", { ["X-Host"] = "127.0.0.1", ["X-Port"] = up2.port })
    assert.equals(200, status, body)
    local first = echo(body)
    assert.equals(up2.port, first.port)
    assert.equals("127.0.0.1:" .. up2.port, first.h.host)
    local _, _, again = get("/to-target", { ["X-Host"] = "127.0.0.1", ["X-Port"] = up2.port })
    assert.equals(first.connection, echo(again).connection, "the pooled connection was reused")
    local _, _, named = get("/to-target", { ["X-Host"] = "localhost", ["X-Port"] = up2.port })
    assert.equals("localhost:" .. up2.port, echo(named).h.host)
  end)

  it("set_target returns nil, err for a host name that does not resolve", function()
    local status, _, body = get("/to-target", { ["X-Host"] = "example.invalid", ["X-Port"] = 80 })
    assert.equals(500, status)
    assert.matches("^could not resolve 'example.invalid': ", helpers.json(body).err)
  end)

  it("set_timeouts answers 504 at the new read timeout", function()
    local t0 = require("socket").gettime()
    local status, _, body = get("/timeouts/slow")
    local took = require("socket").gettime() - t0
    assert.equals(504, status, body)
    assert.is_true(took < 0.8, "took " .. took .. " s")
    -- Without the plugin, the service's 60 s read timeout lets it finish.
    local ok_status, _, late = get("/no-timeouts/slow")
    assert.equals(200, ok_status)
    assert.equals("late\n", late)
  end)

  it("set_retries(0) fails at once on a dead target that the default retries past", function()
    -- flaky's first pick is a dead port (weight 1000 to 1): the default
    -- retries move to the live target; with 0 retries the client gets a 502.
    local status = get("/flaky/default")
    assert.equals(200, status)
    local failed = get("/flaky/none")
    assert.equals(502, failed)
  end)

  it("raises on bad arguments, naming them", function()
    local status, _, body = get("/misuse")
    assert.equals(200, status, body)
    local out = helpers.json(body)
    local want = {
      upstream_type = "bad argument #1 to 'set_upstream' (string expected, got number)",
      target_host = "bad argument #1 to 'set_target' (non-empty string expected, got nil)",
      target_port = "bad argument #2 to 'set_target' (integer from 1 to 65535 expected, got 0)",
      timeouts_zero = "bad argument #1 to 'set_timeouts' (integer from 1 to 2147483646 "
        .. "expected, got 0)",
      timeouts_fraction = "bad argument #3 to 'set_timeouts' (integer from 1 to 2147483646 "
        .. "expected, got 1.5)",
      timeouts_missing = "bad argument #2 to 'set_timeouts' (integer from 1 to 2147483646 "
        .. "expected, got nil)",
      retries_negative = "bad argument #1 to 'set_retries' (integer from 0 to 32767 expected, "
        .. "got -1)",
      retries_big = "bad argument #1 to 'set_retries' (integer from 0 to 32767 expected, "
        .. "got 32768)",
    }
    for name, message in pairs(want) do
      assert.matches(message, out[name], 1, true)
    end
  end)

  it("refuses calls after the upstream was chosen", function()
    local status, headers = get("/late")
    assert.equals(200, status)
    assert.equals("sluice.service.set_upstream is not allowed in phase header_filter | "
      .. "sluice.service.set_timeouts is not allowed in phase header_filter",
      (headers["x-late"]:gsub("[^|]-: (sluice%.)", "%1")))
  end)
end)
