-- sluice.sleep and sluice.thread through the real binary: waits that overlap.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

describe("sluice.thread", function()
  local s, upstream

  setup(function()
    upstream = helpers.start_upstream()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:%d
    routes:
      - name: par
        paths: ["/par"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local threads = {}
                    for i = 1, 4 do
                      threads[i] = sluice.thread.spawn(function(n)
                        sluice.sleep(0.2)
                        return n * 10
                      end, i)
                    end
                    local out = {}
                    for i, r in ipairs(sluice.thread.wait_all(unpack(threads))) do
                      out[i] = r[2]
                    end
                    return sluice.response.exit(200, { results = out })
                  end
      - name: first
        paths: ["/first"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local spawn = sluice.thread.spawn
                    local slow = spawn(function() sluice.sleep(0.5) return "slow" end)
                    local fast = spawn(function() sluice.sleep(0.05) return "fast" end)
                    local ok, v = sluice.thread.wait(slow, fast)
                    return sluice.response.exit(200, { ok = ok, first = v })
                  end
      - name: fails
        paths: ["/fails"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local t = sluice.thread.spawn(function()
                      sluice.sleep(0.01)
                      error("thread boom")
                    end)
                    local ok, err = sluice.thread.wait(t)
                    return sluice.response.exit(200, { ok = ok, err = tostring(err) })
                  end
      - name: background
        paths: ["/background"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    sluice.thread.spawn(function()
                      sluice.sleep(0.1)
                      sluice.service.request.set_header("X-From-Thread", "yes")
                    end)
                  end
]], upstream.port), { workers = 1 })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function get(path)
    local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d%s", s.port, path))
    return status, helpers.json(body)
  end

  it("runs threads concurrently: four 200 ms sleeps take about 200 ms", function()
    local t0 = socket.gettime()
    local status, body = get("/par")
    local took = socket.gettime() - t0
    assert.equal(200, status)
    assert.same({ 10, 20, 30, 40 }, body.results)
    assert.is_true(took < 0.6, "took " .. took)
  end)

  it("wait returns the first thread to end", function()
    local t0 = socket.gettime()
    local status, body = get("/first")
    assert.equal(200, status)
    assert.same({ ok = true, first = "fast" }, body)
    assert.is_true(socket.gettime() - t0 < 0.45)
  end)

  it("reports a thread's error to wait", function()
    local status, body = get("/fails")
    assert.equal(200, status)
    assert.is_false(body.ok)
    assert.matches("thread boom", body.err)
  end)

  it("finishes the phase's threads before proxying", function()
    local status, body = get("/background")
    assert.equal(200, status)
    assert.equal("yes", helpers.lower_headers(body.headers)["x-from-thread"])
  end)

  it("keeps the worker free while requests sleep", function()
    local t0 = socket.gettime()
    helpers.run(fmt("for i in 1 2 3 4 5 6; do curl -s -o /dev/null "
      .. "http://127.0.0.1:%d/par & done; wait", s.port))
    assert.is_true(socket.gettime() - t0 < 1.2)
  end)
end)
