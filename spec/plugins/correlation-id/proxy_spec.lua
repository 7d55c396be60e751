-- correlation-id through the real binary: the id reaches the upstream, the client (echo)
-- and the access log line; counters per worker; a client's id kept.
local helpers = require("spec.helpers")

local fmt = string.format

local UUID = "%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x"

local function gateway(up, workers)
  return helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: counter
        paths: ["/counter"]
        plugins:
          - name: correlation-id
            config: { echo_downstream: true }
          - name: post-function
            config:
              header_filter:
                - "sluice.response.set_header('X-Serialized',
                    sluice.log.serialize().correlation_id)"
      - name: tracker
        paths: ["/tracker"]
        plugins:
          - name: correlation-id
            config: { generator: tracker, header_name: X-Trace, echo_downstream: true }
      - name: refused
        paths: ["/refused"]
        plugins:
          - name: correlation-id
            config: { generator: uuid, echo_downstream: true }
          - name: request-termination
            config: { status_code: 403, message: no }
]], up.port), { workers = workers or 1 })
end

local function get(s, path, extra)
  return helpers.curl(fmt("%s 'http://127.0.0.1:%d%s'", extra or "", s.port, path))
end

-- The access log lines of s so far, decoded (the log is flushed as it fills,
-- and when sluice stops).
local function access_lines(s)
  local out = {}
  for line in (helpers.read_file(s.access_log) or ""):gmatch("[^\n]+") do
    out[#out + 1] = helpers.json(line)
  end
  return out
end

describe("plugin: correlation-id (proxy)", function()
  local up

  setup(function()
    up = helpers.start_upstream()
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("sends the same id upstream, to the client, to the serializer and to the access log",
    function()
      local s = gateway(up)
      local ids = {}
      for i = 1, 3 do
        local status, headers, body = get(s, "/counter/" .. i)
        assert.equal(200, status)
        local sent = helpers.lower_headers(helpers.json(body).headers)["kong-request-id"]
        assert.matches("^" .. UUID .. "#%d+$", sent)
        assert.equal(sent, headers["kong-request-id"])
        assert.equal(sent, headers["x-serialized"])
        ids[i] = sent
      end
      -- One worker: one UUID, a counter going up by one.
      local u1, n1 = ids[1]:match("^(.+)#(%d+)$")
      local u3, n3 = ids[3]:match("^(.+)#(%d+)$")
      assert.equal(u1, u3)
      assert.equal(tonumber(n1) + 2, tonumber(n3))
      -- Stopping sluice flushes its access log.
      helpers.kill(s.pid)
      local lines = access_lines(s)
      assert.equal(3, #lines)
      for i, l in ipairs(lines) do
        assert.equal("/counter/" .. i, l.path)
        assert.equal(ids[i], l.correlation_id)
        assert.equal(200, l.status)
      end
    end)

  it("keeps the client's id, upstream and in the log", function()
    local s = gateway(up)
    local status, headers, body = get(s, "/counter/mine", "-H 'Kong-Request-ID: order-7\"x'")
    assert.equal(200, status)
    assert.equal('order-7"x',
      helpers.lower_headers(helpers.json(body).headers)["kong-request-id"])
    assert.equal('order-7"x', headers["kong-request-id"])
    helpers.kill(s.pid)
    assert.equal('order-7"x', access_lines(s)[1].correlation_id)
  end)

  it("gives each worker its own UUID for uuid#counter", function()
    local s = gateway(up, 2)
    local uuids = {}
    -- Connections spread over the workers by hash: enough of them reach both.
    for i = 1, 40 do
      local _, headers = get(s, "/counter/w" .. i)
      local u = headers["kong-request-id"]:match("^(.+)#%d+$")
      uuids[u] = (uuids[u] or 0) + 1
    end
    local n = 0
    for _ in pairs(uuids) do
      n = n + 1
    end
    assert.equal(2, n)
    helpers.kill(s.pid)
  end)

  it("makes tracker ids from the connection, as Kong's", function()
    local s = gateway(up)
    -- Two requests on one connection: the same connection number, requests 1 and 2.
    local out = helpers.run(fmt("curl -sS -o /dev/null -D - 'http://127.0.0.1:%d/tracker/a' "
      .. "-o /dev/null -D - 'http://127.0.0.1:%d/tracker/b'", s.port, s.port))
    local ids = {}
    for id in out:gmatch("[Xx]%-[Tt]race: ([^\r\n]+)") do
      ids[#ids + 1] = id
    end
    assert.equal(2, #ids, out)
    local pattern = "^127%.0%.0%.1%-" .. s.port .. "%-(%d+)%-(%d+)%-(%d+)%-%d+%.%d%d%d$"
    local pid1, conn1, req1 = ids[1]:match(pattern)
    local pid2, conn2, req2 = ids[2]:match(pattern)
    assert.is_string(pid1, ids[1])
    assert.equal(tostring(helpers.children(s.pid)[1]), pid1)
    assert.equal(pid1, pid2)
    assert.equal(conn1, conn2)
    assert.same({ "1", "2" }, { req1, req2 })
    helpers.kill(s.pid)
  end)

  it("logs and echoes the id of a request another plugin refused", function()
    local s = gateway(up)
    local status, headers = get(s, "/refused/x")
    assert.equal(403, status)
    assert.matches("^" .. UUID .. "$", headers["kong-request-id"])
    helpers.kill(s.pid)
    local l = access_lines(s)[1]
    assert.equal(403, l.status)
    assert.equal(headers["kong-request-id"], l.correlation_id)
  end)
end)
