-- Shared dicts through the real binary: created by the master, seen by every worker.
local helpers = require("spec.helpers")

local fmt = string.format

describe("shared dicts: server.shared_dicts", function()
  local s

  setup(function()
    s = helpers.start_sluice([[
_format_version: "3.0"
server:
  listen: ["127.0.0.1:{PORT}"]
  workers: 2
  pid_file: "{DIR}/sluice.pid"
  access_log: "off"
  shared_dicts: { counters: 1m }
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: count
        paths: ["/count"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local n = sluice.shared.counters:incr("hits", 1, 0)
                    local wid = sluice.node.get_worker_id()
                    sluice.shared.counters:incr("worker:" .. wid, 1, 0)
                    return sluice.response.exit(200, { hits = n })
                  end
      - name: read
        paths: ["/read"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local d = sluice.shared.counters
                    return sluice.response.exit(200, { hits = d:get("hits"),
                      w0 = d:get("worker:0") or 0, w1 = d:get("worker:1") or 0,
                      missing = sluice.shared.nope == nil })
                  end
]])
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("counts exactly across workers, one increment per request", function()
    -- New connections spread over both workers (SO_REUSEPORT).
    helpers.run(fmt("for i in $(seq 200); do curl -s -o /dev/null "
      .. "http://127.0.0.1:%d/count & done; wait", s.port))
    local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d/read", s.port))
    assert.equal(200, status)
    local t = helpers.json(body)
    assert.equal(200, t.hits)
    assert.equal(200, t.w0 + t.w1)
    assert.is_true(t.w0 > 0 and t.w1 > 0, "both workers served requests")
    assert.is_true(t.missing)
  end)
end)
