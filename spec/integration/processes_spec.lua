-- Processes: master + workers, respawn of a killed worker, graceful stop on SIGTERM.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

local LOCATIONS = [[
    location = /slow {
      content_by_lua_block {
        ngx.sleep(1)
        ngx.say("slow done")
      }
    }
    location = /slower {
      content_by_lua_block {
        ngx.sleep(2)
        ngx.say("slower done")
      }
    }
]]

local function config(upstream)
  return fmt([[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: all
        paths: ["/"]
]], upstream.port)
end

local function get(port, path)
  return helpers.curl(fmt("http://127.0.0.1:%d%s", port, path or "/"))
end

describe("processes: workers", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream({ locations = LOCATIONS })
    s = helpers.start_sluice(config(upstream), { workers = 2 })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("runs a master and server.workers workers", function()
    local workers = helpers.wait_for(function()
      local w = helpers.children(s.pid)
      return #w == 2 and w
    end, 3)
    assert.is_truthy(workers, "expected 2 workers under the master")
    for _, pid in ipairs(workers) do
      assert.is_true(helpers.alive(pid))
    end
    local status, _, body = get(s.port, "/ping")
    assert.equals(200, status)
    assert.equals("/ping", helpers.json(body).uri)
  end)

  it("respawns a worker killed with SIGKILL and keeps serving", function()
    local before = helpers.wait_for(function()
      local w = helpers.children(s.pid)
      return #w == 2 and w
    end, 3)
    assert.is_truthy(before)
    local victim = before[1]
    helpers.kill(victim, "KILL", 5)

    local after = helpers.wait_for(function()
      local w = helpers.children(s.pid)
      if #w ~= 2 then
        return nil
      end
      for _, pid in ipairs(w) do
        if pid == victim then
          return nil
        end
      end
      return w
    end, 5)
    assert.is_truthy(after, "the killed worker was not replaced")
    assert.is_true(helpers.alive(s.pid))

    for i = 1, 20 do
      local status, _, body = get(s.port, "/after-kill-" .. i)
      assert.equals(200, status)
      assert.equals("/after-kill-" .. i, helpers.json(body).uri)
    end
  end)
end)

describe("processes: graceful stop", function()
  local upstream

  setup(function()
    upstream = helpers.start_upstream({ locations = LOCATIONS })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("SIGTERM lets an in-flight request finish, then the master exits 0", function()
    local s = helpers.start_sluice(config(upstream))
    local c = helpers.connect(s.port)
    c:send("GET /slow HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    socket.sleep(0.3)
    os.execute(fmt("kill -TERM %d", s.pid))

    local res, err = c:read_response()
    assert.is_truthy(res, err)
    assert.equals(200, res.status)
    assert.equals("slow done\n", res.body)
    c:close()

    assert.equals(0, helpers.exit_code(s, 10))
    assert.is_false(helpers.alive(s.pid))
    assert.is_nil(helpers.read_file(s.pid_file))
  end)

  it("refuses new connections once shutdown has started", function()
    local s = helpers.start_sluice(config(upstream))
    -- Keep the worker draining for 2 s with a slow request.
    local busy = helpers.connect(s.port)
    busy:send("GET /slower HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    socket.sleep(0.2)
    os.execute(fmt("kill -TERM %d", s.pid))
    socket.sleep(0.2)

    local t0 = socket.gettime()
    local c = socket.tcp()
    c:settimeout(0.5)
    local ok, cerr = c:connect("127.0.0.1", s.port)
    local served = false
    local outcome = "refused: " .. tostring(cerr)
    if ok then
      -- Accepted by the kernel: it must be closed at once, not left hanging until
      -- the drain ends, and not served.
      c:send("GET /late HTTP/1.1\r\nHost: gw.test\r\n\r\n")
      local data, rerr, partial = c:receive("*a")
      data = data or partial or ""
      served = data:find("^HTTP/") ~= nil
      outcome = fmt("connected; read %q (%s) after %.2fs", data:sub(1, 40), tostring(rerr),
        socket.gettime() - t0)
      assert.is_true(rerr == nil or rerr == "closed" or rerr == "connection reset by peer",
        "a new connection during shutdown hung: " .. outcome)
    end
    c:close()
    assert.is_false(served, outcome)
    assert.is_false(helpers.upstream_saw(upstream, "/late"))

    local res = busy:read_response()
    assert.is_truthy(res)
    assert.equals(200, res.status)
    busy:close()
    assert.equals(0, helpers.exit_code(s, 10))
  end)
end)
