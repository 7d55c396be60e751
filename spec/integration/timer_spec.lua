-- sluice.timer through the real binary: at, every, cancel, errors, shutdown.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

describe("sluice.timer", function()
  local s

  setup(function()
    s = helpers.start_sluice([[
_format_version: "3.0"
server:
  listen: ["127.0.0.1:{PORT}"]
  workers: 1
  pid_file: "{DIR}/sluice.pid"
  access_log: "off"
  error_log: "{DIR}/error.log"
  shutdown_timeout: 10s
  shared_dicts: { t: 1m }
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: arm
        paths: ["/arm"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local d = sluice.shared.t
                    sluice.timer.at(0.05, function(a, b) d:set("once", a .. b) end, "x", "y")
                    d:set("every", 0)
                    local h
                    h = sluice.timer.every(0.02, function()
                      if d:incr("every", 1) >= 3 then sluice.timer.cancel(h) end
                    end)
                    sluice.timer.at(0, function() error("boom in a timer") end)
                    -- A far-away timer must not hold up a graceful stop.
                    sluice.timer.at(3600, function() end)
                    return sluice.response.exit(200, { armed = true })
                  end
      - name: read
        paths: ["/read"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local d = sluice.shared.t
                    return sluice.response.exit(200, { once = d:get("once"),
                                                       every = d:get("every") })
                  end
]])
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function read()
    local _, _, body = helpers.curl(fmt("http://127.0.0.1:%d/read", s.port))
    return helpers.json(body)
  end

  it("runs at once with its arguments, every until cancelled, and logs errors", function()
    local status = helpers.curl(fmt("http://127.0.0.1:%d/arm", s.port))
    assert.equal(200, status)
    socket.sleep(0.4)
    local t = read()
    assert.equal("xy", t.once)
    assert.equal(3, t.every)
    socket.sleep(0.2)
    assert.equal(3, read().every, "a cancelled timer does not run again")
    local log = helpers.read_file(s.dir .. "/error.log") or ""
    assert.matches("timer function failed: .*boom in a timer", log)
    assert.matches("stack traceback", log)
    assert.equal(200, (helpers.curl(fmt("http://127.0.0.1:%d/read", s.port))))
  end)

  it("does not hold up a graceful stop", function()
    local t0 = socket.gettime()
    assert.is_true(helpers.kill(s.pid, "TERM", 8))
    assert.is_true(socket.gettime() - t0 < 5)
  end)
end)
