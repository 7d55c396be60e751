-- The event loop of `sluice test`: a spec's own code calls the PDK functions
-- that wait, and timers and threads run while it waits.
require("sluice.pdk")
local t = require("sluice.test")
local socket = require("socket")

describe("sluice test: the event loop", function()
  local upstream, redis

  setup(function()
    upstream = t.mock_upstream({ routes = {
      ["/slow"] = { status = 201, body = "made", headers = { ["X-Up"] = "yes" } },
    } })
    redis = t.redis()
  end)

  teardown(function()
    t.stop()
  end)

  it("sluice.sleep blocks the spec for the time asked", function()
    local t0 = socket.gettime()
    assert.is_true(sluice.sleep(0.1))
    local took = socket.gettime() - t0
    assert.is_true(took >= 0.095 and took < 0.5, "took " .. took)
  end)

  it("sluice.http.request calls a real upstream", function()
    local res, err = sluice.http.request({ method = "POST", url = upstream.url .. "/slow",
                                           body = "hi" })
    assert.is_table(res, err)
    assert.equal(201, res.status)
    assert.equal("made", res.body)
    assert.equal("yes", res.headers["x-up"])
    assert.equal("hi", upstream:last_request().body)
    local named = assert(sluice.http.request({ url = "http://localhost:" .. upstream.port
      .. "/by-name" }))
    assert.equal(200, named.status)
    assert.equal("/by-name", upstream:last_request().uri)
    local none, cerr = sluice.http.request({ url = "http://127.0.0.1:9/" })
    assert.is_nil(none)
    assert.equal("connection refused", cerr)
  end)

  it("sluice.redis talks to a real redis-server", function()
    local red = assert(sluice.redis.connect({ port = redis.port }))
    assert.equal("OK", red:set("k", "v"))
    assert.equal("v", red:get("k"))
    assert.equal(sluice.redis.null, red:get("missing"))
    assert.is_true(red:set_keepalive())
  end)

  it("runs timers, which may wait for I/O, while the spec waits", function()
    local seen = {}
    sluice.timer.at(0.02, function(tag)
      seen[#seen + 1] = tag
      local res = sluice.http.request({ url = upstream.url .. "/from-timer" })
      seen[#seen + 1] = res and res.status
    end, "fired")
    local n = 0
    local h = sluice.timer.every(0.01, function() n = n + 1 end)
    assert.same({}, seen, "nothing runs before the spec waits")
    sluice.sleep(0.2)
    assert.same({ "fired", 200 }, seen)
    assert.is_true(n >= 5, "every ran " .. n .. " times")
    assert.is_true(sluice.timer.cancel(h))
    local after = n
    sluice.sleep(0.05)
    assert.equal(after, n)
  end)

  it("runs threads concurrently and waits for them", function()
    local t0 = socket.gettime()
    local a = sluice.thread.spawn(function(x) sluice.sleep(0.1) return x end, "a")
    local b = sluice.thread.spawn(function() sluice.sleep(0.1) error("b failed") end)
    local all = sluice.thread.wait_all(a, b)
    local took = socket.gettime() - t0
    assert.is_true(took < 0.18, "the threads waited at the same time, took " .. took)
    assert.same({ n = 2, true, "a" }, all[1])
    assert.is_false(all[2][1])
    assert.matches("b failed", all[2][2])
  end)

  it("refuses to block from inside a timer", function()
    local err
    sluice.timer.at(0, function()
      local ok, e = pcall(require("sluice.loop").step)
      err = not ok and e
    end)
    sluice.sleep(0.01)
    assert.matches("cannot be called from a timer or a plugin", err)
  end)

  it("says so when there is nothing to wait for", function()
    local ok, err = pcall(require("sluice.loop").step)
    assert.is_false(ok)
    assert.matches("nothing left to wait for", err)
  end)
end)
