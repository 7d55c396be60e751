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

describe("sluice.timer functions that wait for I/O", function()
  local s, upstream, redis

  setup(function()
    upstream = helpers.start_upstream()
    redis = require("sluice.test").redis()
    s = helpers.start_sluice(fmt([[
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
      - name: io
        paths: ["/io"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local d = sluice.shared.t
                    sluice.timer.at(0, function()
                      sluice.sleep(0.05)
                      local res, err = sluice.http.request({
                        url = "http://127.0.0.1:%d/from-timer" })
                      d:set("http", res and res.status or err)
                      local a = sluice.thread.spawn(function()
                        local red = assert(sluice.redis.connect({ port = %d }))
                        local n = red:incr("timer-hits")
                        red:set_keepalive()
                        return n
                      end)
                      local ok, n = sluice.thread.wait(a)
                      d:set("redis", ok and n or tostring(n))
                      error("late boom")
                    end)
                    return sluice.response.exit(200, { armed = true })
                  end
      - name: slow-every
        paths: ["/slow-every"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local d = sluice.shared.t
                    d:set("runs", 0)
                    d:set("busy", 0)
                    d:set("overlap", 0)
                    local h
                    h = sluice.timer.every(0.02, function()
                      d:incr("runs", 1)
                      if d:incr("busy", 1) > 1 then d:incr("overlap", 1) end
                      sluice.sleep(0.1)
                      d:incr("busy", -1)
                    end)
                    sluice.timer.at(0.35, function() sluice.timer.cancel(h) end)
                    return sluice.response.exit(200)
                  end
      - name: at-exit
        paths: ["/at-exit"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    sluice.timer.at(3600, function()
                      local exiting = sluice.worker.exiting()
                      sluice.sleep(0.3)
                      local f = io.open("{DIR}/flushed", "w")
                      f:write("exiting=" .. tostring(exiting))
                      f:close()
                    end)
                    return sluice.response.exit(200)
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
                    return sluice.response.exit(200, { http = d:get("http"),
                      redis = d:get("redis"), runs = d:get("runs"),
                      overlap = d:get("overlap") })
                  end
]], upstream.port, redis.port))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function read()
    local _, _, body = helpers.curl(fmt("http://127.0.0.1:%d/read", s.port))
    return helpers.json(body)
  end

  it("sleep, call HTTP and Redis from threads, and log errors after a wait", function()
    assert.equal(200, (helpers.curl(fmt("http://127.0.0.1:%d/io", s.port))))
    local got = helpers.wait_for(function()
      local t = read()
      return t.redis ~= nil and t
    end, 5)
    assert.is_table(got)
    assert.equal(200, got.http)
    assert.equal(1, got.redis)
    assert.matches("GET /from%-timer HTTP/1.1 200",
      helpers.read_file(upstream.dir .. "/access.log") or "")
    local log = helpers.wait_for(function()
      local text = helpers.read_file(s.dir .. "/error.log") or ""
      return text:find("late boom", 1, true) and text
    end, 5)
    assert.matches("timer function failed: .*late boom.*stack traceback", log)
  end)

  it("skips the ticks of a repeating timer while its previous run waits", function()
    assert.equal(200, (helpers.curl(fmt("http://127.0.0.1:%d/slow-every", s.port))))
    socket.sleep(0.6)
    local t = read()
    assert.equal(0, t.overlap)
    -- A run takes 0.1 s and starts on a 0.02 s tick: 2 to 4 runs fit in 0.35 s,
    -- where runs that piled up would have been 17.
    assert.is_true(t.runs >= 2 and t.runs <= 4, "runs: " .. tostring(t.runs))
    socket.sleep(0.2)
    assert.equal(t.runs, read().runs, "a cancelled timer does not run again")
  end)

  it("runs pending timers once at a graceful stop and waits for them", function()
    assert.equal(200, (helpers.curl(fmt("http://127.0.0.1:%d/at-exit", s.port))))
    local t0 = socket.gettime()
    assert.is_true(helpers.kill(s.pid, "TERM", 8))
    assert.is_true(socket.gettime() - t0 >= 0.25, "the stop waited for the timer's sleep")
    assert.equal("exiting=true", helpers.read_file(s.dir .. "/flushed"))
  end)
end)
