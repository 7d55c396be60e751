-- Upstream failures and balancing: connect refused, connect and read
-- timeouts, retries on another target, weighted round-robin.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

local SLEEP_LOCATION = [[
    location = /sleep1 {
      content_by_lua_block {
        ngx.sleep(1)
        ngx.say("late")
      }
    }
    location = /garbage {
      content_by_lua_block {
        local sock = ngx.req.socket(true)
        sock:send("THIS IS NOT HTTP\r\n\r\n")
      }
    }
    location = /close-early {
      return 444;
    }
    location = /truncated {
      content_by_lua_block {
        local sock = ngx.req.socket(true)
        sock:send("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" .. string.rep("t", 1000))
      }
    }
]]

-- A listening socket whose accept queue is full: connects to it hang, which is
-- how an unreachable host looks on loopback. Returns the port and the sockets
-- to keep open.
local function blackhole()
  local srv = assert(socket.bind("127.0.0.1", 0, 1))
  local _, port = srv:getsockname()
  local keep = { srv }
  for _ = 1, 3 do
    local c = socket.tcp()
    c:settimeout(0.05)
    c:connect("127.0.0.1", port)
    keep[#keep + 1] = c
  end
  -- Check it does hang.
  local probe = socket.tcp()
  probe:settimeout(0.1)
  local ok = probe:connect("127.0.0.1", port)
  keep[#keep + 1] = probe
  assert(not ok, "could not fill the accept queue of the blackhole listener")
  return tonumber(port), keep
end

local function assert_json_error(status, headers, body, code, message)
  assert.equals(code, status, body)
  assert.matches("^application/json", headers["content-type"])
  local decoded = helpers.json(body)
  assert.is_table(decoded, body)
  if message then
    assert.equals(message, decoded.message)
  else
    assert.is_string(decoded.message)
  end
end

describe("upstream failures:", function()
  local upstream, other, s, dead_port, hole_port, hole_keep

  setup(function()
    upstream = helpers.start_upstream({ locations = SLEEP_LOCATION })
    other = helpers.start_upstream()
    dead_port = helpers.free_port()
    hole_port, hole_keep = blackhole()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: refused
    url: http://127.0.0.1:%d
    routes:
      - name: refused
        paths: ["/refused"]
  - name: hole
    url: http://127.0.0.1:%d
    connect_timeout: 300
    retries: 0
    routes:
      - name: hole
        paths: ["/hole"]
  - name: slow
    url: http://127.0.0.1:%d
    read_timeout: 300
    routes:
      - name: slow
        paths: ["/slow"]
  - name: patient
    url: http://127.0.0.1:%d
    read_timeout: 5000
    routes:
      - name: patient
        paths: ["/patient"]
  - name: retry
    url: http://retry-ups
    routes:
      - name: retry
        paths: ["/retry"]
  - name: retry-hole
    url: http://retry-hole-ups
    connect_timeout: 200
    routes:
      - name: retry-hole
        paths: ["/retry-hole"]
  - name: noretry
    url: http://noretry-ups
    retries: 0
    routes:
      - name: noretry
        paths: ["/noretry"]
  - name: weighted
    url: http://weighted-ups
    routes:
      - name: weighted
        paths: ["/weighted"]
upstreams:
  - name: retry-ups
    targets:
      - target: 127.0.0.1:%d
      - target: 127.0.0.1:%d
  - name: retry-hole-ups
    targets:
      - target: 127.0.0.1:%d
      - target: 127.0.0.1:%d
  - name: noretry-ups
    targets:
      - target: 127.0.0.1:%d
      - target: 127.0.0.1:%d
  - name: weighted-ups
    targets:
      - target: 127.0.0.1:%d
        weight: 2
      - target: 127.0.0.1:%d
        weight: 1
]], dead_port, hole_port, upstream.port, upstream.port, dead_port, upstream.port, hole_port,
      upstream.port, dead_port, upstream.port, upstream.port, other.port))
  end)

  teardown(function()
    helpers.stop_all()
    for _, sock in ipairs(hole_keep or {}) do
      sock:close()
    end
  end)

  local function get(path)
    return helpers.curl(fmt("http://127.0.0.1:%d%s", s.port, path))
  end

  describe("timeouts", function()
    it("a refused connect gets 502 with a JSON message", function()
      local status, headers, body = get("/refused")
      assert_json_error(status, headers, body, 502,
        "An invalid response was received from the upstream server")
    end)

    it("a connect that hangs past connect_timeout gets 504", function()
      local t0 = socket.gettime()
      local status, headers, body = get("/hole")
      local elapsed = socket.gettime() - t0
      assert_json_error(status, headers, body, 504, "The upstream server is timing out")
      assert.is_true(elapsed >= 0.25, fmt("504 after %.2fs, before connect_timeout", elapsed))
      assert.is_true(elapsed < 1.5, fmt("504 after %.2fs: connect_timeout not applied", elapsed))
    end)

    it("an upstream slower than read_timeout gets 504", function()
      local t0 = socket.gettime()
      local status, headers, body = get("/slow/sleep1")
      local elapsed = socket.gettime() - t0
      assert_json_error(status, headers, body, 504, "The upstream server is timing out")
      assert.is_true(elapsed >= 0.25, fmt("504 after %.2fs, before read_timeout", elapsed))
      assert.is_true(elapsed < 1.5, fmt("504 after %.2fs: read_timeout not applied", elapsed))
    end)

    it("an upstream within read_timeout is waited for", function()
      local status, _, body = get("/patient/sleep1")
      assert.equals(200, status)
      assert.equals("late\n", body)
    end)
  end)

  describe("broken responses", function()
    it("a response that is not HTTP gets 502", function()
      local status, headers, body = get("/patient/garbage")
      assert_json_error(status, headers, body, 502,
        "An invalid response was received from the upstream server")
    end)

    it("an upstream closing without a response gets 502", function()
      local status, headers, body = get("/patient/close-early")
      assert_json_error(status, headers, body, 502,
        "An invalid response was received from the upstream server")
    end)

    it("an upstream dying mid-body cuts the client connection", function()
      local c = helpers.connect(s.port)
      assert(c:send("GET /patient/truncated HTTP/1.1\r\nHost: gw.test\r\n\r\n"))
      local res, err = c:read_response()
      assert.is_nil(res, "a truncated response looked complete")
      -- Closed (before or after the head went out), not left hanging until
      -- the read times out.
      assert.is_true(err == "closed" or err == "truncated body: closed", err)
      c:close()
    end)
  end)

  describe("retries", function()
    it("a refused connect is retried on the other target", function()
      for i = 1, 10 do
        local status, _, body = get("/retry/" .. i)
        assert.equals(200, status, body)
        assert.equals("/" .. i, helpers.json(body).uri)
      end
    end)

    it("a connect timeout is retried on the other target", function()
      for i = 1, 4 do
        local status, _, body = get("/retry-hole/" .. i)
        assert.equals(200, status, body)
        assert.equals("/" .. i, helpers.json(body).uri)
      end
    end)

    it("with retries: 0 the requests sent to the dead target fail with 502", function()
      local counts = { [200] = 0, [502] = 0 }
      for i = 1, 10 do
        local status, headers, body = get("/noretry/" .. i)
        assert.is_truthy(counts[status], "unexpected status " .. tostring(status))
        counts[status] = counts[status] + 1
        if status == 502 then
          assert_json_error(status, headers, body, 502)
        end
      end
      assert.is_true(counts[502] >= 3, fmt("%d of 10 failed", counts[502]))
      assert.is_true(counts[200] >= 3, fmt("%d of 10 succeeded", counts[200]))
    end)
  end)

  describe("round-robin", function()
    it("splits requests by target weight (2:1)", function()
      local by_port = {}
      for i = 1, 30 do
        local status, _, body = get("/weighted/" .. i)
        assert.equals(200, status)
        local port = helpers.json(body).port
        by_port[port] = (by_port[port] or 0) + 1
      end
      local a, b = by_port[upstream.port] or 0, by_port[other.port] or 0
      assert.equals(30, a + b)
      assert.is_true(math.abs(a - 20) <= 1 and math.abs(b - 10) <= 1,
        fmt("weight 2 got %d, weight 1 got %d", a, b))
    end)
  end)
end)
