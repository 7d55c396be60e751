-- circuit-breaker through the real binary: a real nginx upstream whose answers
-- a spec flips with a file (ok, fail, slow), 1 and 2 workers.
local helpers = require("spec.helpers")
local cjson = require("cjson")

local fmt = string.format

-- /api answers as the file MODE says: "ok" (200 JSON), "fail" (500),
-- "slow" (200 after 0.6 s), "slower" (200 after 2 s).
local function upstream(mode_file)
  return helpers.start_upstream({ locations = fmt([[
    location /api {
      content_by_lua_block {
        local f = io.open("%s")
        local mode = f and f:read("*l") or "ok"
        if f then f:close() end
        if mode == "slow" then ngx.sleep(0.6) end
        if mode == "slower" then ngx.sleep(2) end
        if mode == "fail" then
          ngx.status = 500
          ngx.say("boom")
          return
        end
        ngx.header["Content-Type"] = "application/json"
        ngx.say(require("cjson").encode({ mode = mode, uri = ngx.var.request_uri }))
      }
    }
]], mode_file) })
end

-- A gateway with service "flaky" (/api, the breaker with conf) and a route
-- /breaker answering sluice.upstream.get_breaker("flaky").
local function gateway(up, conf, workers)
  return helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: flaky
    url: http://127.0.0.1:%d
    routes:
      - name: api
        paths: ["/api"]
        strip_path: false
    plugins:
      - name: circuit-breaker
        config: %s
  - name: admin
    url: http://127.0.0.1:%d
    routes:
      - name: state
        paths: ["/breaker"]
        plugins:
          - name: pre-function
            config:
              access:
                - "return sluice.response.exit(200, sluice.upstream.get_breaker('flaky') or {})"
]], up.port, cjson.encode(conf), up.port), { workers = workers or 1 })
end

local function get(s, path, extra)
  return helpers.curl(fmt("%s 'http://127.0.0.1:%d%s'", extra or "", s.port, path))
end

local function state(s)
  local status, _, body = get(s, "/breaker")
  assert.equal(200, status)
  return cjson.decode(body)
end

-- Requests the upstream answered whose path starts with path.
local function upstream_hits(up, path)
  local n = 0
  for _, line in ipairs(helpers.upstream_requests(up)) do
    if line:find(" " .. path, 1, true) then
      n = n + 1
    end
  end
  return n
end

-- n requests at once; returns the statuses, sorted.
local function concurrent(s, path, n)
  local out = helpers.run(fmt("for i in $(seq %d); do curl -s -o /dev/null -w '%%{http_code}\\n' "
    .. "--max-time 10 'http://127.0.0.1:%d%s' & done; wait", n, s.port, path))
  local statuses = {}
  for code in out:gmatch("%d+") do
    statuses[#statuses + 1] = tonumber(code)
  end
  table.sort(statuses)
  return statuses
end

local function count(list, v)
  local n = 0
  for _, x in ipairs(list) do
    if x == v then
      n = n + 1
    end
  end
  return n
end

local BASE = { volume_threshold = 4, error_threshold_percentage = 50, window = 10000,
               reset_timeout = 1000, timeout = 300 }

local function with(extra)
  local c = {}
  for k, v in pairs(BASE) do
    c[k] = v
  end
  for k, v in pairs(extra or {}) do
    c[k] = v
  end
  return c
end

describe("plugin: circuit-breaker (proxy)", function()
  local dir, up, mode

  setup(function()
    dir = helpers.tmpdir()
    mode = function(m)
      helpers.write_file(dir .. "/mode", m)
    end
    mode("ok")
    up = upstream(dir .. "/mode")
  end)

  teardown(function()
    helpers.stop_all()
  end)

  describe("with the 503 answer", function()
    local s
    setup(function()
      mode("ok")
      s = gateway(up, BASE, 1)
    end)
    teardown(function()
      helpers.kill(s.pid)
    end)

    it("opens after the threshold, answers 503 JSON naming the service, half-opens and closes",
      function()
        assert.equal(200, (get(s, "/api/a")))
        mode("fail")
        for _ = 1, 3 do
          assert.equal(500, (get(s, "/api/a")))
        end
        -- 4 requests, 3 failures: 75% >= 50%.
        local st = state(s)
        assert.equal("open", st.state)
        assert.equal(3, st.failures)
        assert.equal(4, st.requests)
        assert.is_number(st.opened_at)
        local before = upstream_hits(up, "/api/a")
        local status, headers, body = get(s, "/api/a")
        assert.equal(503, status)
        assert.matches("application/json", headers["content-type"])
        assert.same({ error = "Service temporarily unavailable", service = "flaky" },
          cjson.decode(body))
        -- reset_timeout is 1 s: a probe may go within a second.
        assert.equal("1", headers["retry-after"])
        assert.equal(before, upstream_hits(up, "/api/a"))
        local log = helpers.read_file(s.log)
        assert.matches("service 'flaky': closed %-> open: 3 failures in 4 requests", log)

        -- After reset_timeout one probe goes; it succeeds: closed.
        mode("ok")
        helpers.sleep(1.1)
        assert.equal(200, (get(s, "/api/a")))
        assert.equal(before + 1, upstream_hits(up, "/api/a"))
        st = state(s)
        assert.equal("closed", st.state)
        assert.equal(0, st.failures)
        log = helpers.read_file(s.log)
        assert.matches("service 'flaky': open %-> half_open", log)
        assert.matches("service 'flaky': half_open %-> closed", log)
        assert.equal(200, (get(s, "/api/a")))
      end)
  end)

  describe("probes", function()
    local s
    setup(function()
      mode("ok")
      s = gateway(up, with({ timeout = 2000 }), 1)
    end)
    teardown(function()
      helpers.kill(s.pid)
    end)

    it("re-opens for another reset_timeout when the probe fails", function()
      mode("fail")
      for _ = 1, 4 do
        assert.equal(500, (get(s, "/api/b")))
      end
      local first = state(s)
      assert.equal("open", first.state)
      helpers.sleep(1.1)
      local before = upstream_hits(up, "/api/b")
      assert.equal(500, (get(s, "/api/b"))) -- the probe reaches the failing service
      assert.equal(before + 1, upstream_hits(up, "/api/b"))
      local st = state(s)
      assert.equal("open", st.state)
      assert.is_true(st.opened_at >= first.opened_at + 1000)
      assert.equal(503, (get(s, "/api/b")))
      assert.equal(before + 1, upstream_hits(up, "/api/b"))
      assert.matches("service 'flaky': half_open %-> open: the probe failed %(the service "
        .. "answered 500%)", helpers.read_file(s.log))
      -- And closes on the next good probe.
      mode("ok")
      helpers.sleep(1.1)
      assert.equal(200, (get(s, "/api/b")))
      assert.equal("closed", state(s).state)
    end)
  end)

  describe("timeouts and unreachable services", function()
    local s
    setup(function()
      mode("ok")
      s = gateway(up, with({ timeout = 300 }), 1)
    end)
    teardown(function()
      helpers.kill(s.pid)
    end)

    it("cuts a call slower than timeout with a 504 that counts as a failure", function()
      mode("slow")
      for _ = 1, 4 do
        local t0 = os.time()
        assert.equal(504, (get(s, "/api/slow")))
        assert.is_true(os.time() - t0 <= 1)
      end
      local st = state(s)
      assert.equal("open", st.state)
      assert.equal(4, st.failures)
      assert.matches("closed %-> open: 4 failures in 4 requests over the last 10000 ms "
        .. "%(100%% >= 50%%%), last sluice answered 504", helpers.read_file(s.log))
      mode("ok")
    end)

    it("counts sluice's 502 for a service nobody listens on", function()
      local dead = gateway({ port = helpers.free_port() }, BASE, 1)
      for _ = 1, 4 do
        assert.equal(502, (get(dead, "/api/e")))
      end
      local status, _, body = get(dead, "/api/e")
      assert.equal(503, status)
      assert.same({ error = "Service temporarily unavailable", service = "flaky" },
        cjson.decode(body))
      assert.matches("last sluice answered 502", helpers.read_file(dead.log))
      helpers.kill(dead.pid)
    end)
  end)

  describe("below volume_threshold", function()
    local s
    setup(function()
      mode("ok")
      s = gateway(up, with({ volume_threshold = 10 }), 1)
    end)
    teardown(function()
      helpers.kill(s.pid)
    end)

    it("never opens, and every failure reaches the client as the service sent it", function()
      mode("fail")
      local before = upstream_hits(up, "/api/c")
      for _ = 1, 9 do
        local status, _, body = get(s, "/api/c")
        assert.equal(500, status)
        assert.equal("boom\n", body)
      end
      assert.equal(before + 9, upstream_hits(up, "/api/c"))
      local st = state(s)
      assert.equal("closed", st.state)
      assert.equal(9, st.failures)
      assert.equal(9, st.requests)
      mode("ok")
    end)
  end)

  describe("fallbacks", function()
    local s
    setup(function()
      mode("ok")
      s = gateway(up, with({ fallback = { cached = true, body = { items = {} }, status = 200,
                                          headers = { ["X-Degraded"] = "1" } } }), 1)
    end)
    teardown(function()
      helpers.kill(s.pid)
    end)

    it("serves the last good response with X-Sluice-Fallback: cached, else the static body",
      function()
        local status, _, good = get(s, "/api/list?page=1")
        assert.equal(200, status)
        mode("fail")
        for _ = 1, 4 do
          get(s, "/api/list?page=9")
        end
        assert.equal("open", state(s).state)
        local before = upstream_hits(up, "/api/list")
        local headers, body
        status, headers, body = get(s, "/api/list?page=1")
        assert.equal(200, status)
        assert.equal(good, body)
        assert.equal("cached", headers["x-sluice-fallback"])
        assert.equal("application/json", headers["content-type"])
        status, headers, body = get(s, "/api/list?page=2")
        assert.equal(200, status)
        assert.equal('{"items":{}}', body)
        assert.equal("static", headers["x-sluice-fallback"])
        assert.equal("1", headers["x-degraded"])
        assert.equal(before, upstream_hits(up, "/api/list"))
        mode("ok")
      end)
  end)

  describe("a route's own instance", function()
    local s
    setup(function()
      mode("ok")
      s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: flaky
    url: http://127.0.0.1:%d
    routes:
      - name: fragile
        paths: ["/api/fragile"]
        strip_path: false
        plugins:
          - name: circuit-breaker
            config: %s
      - name: sturdy
        paths: ["/api/sturdy"]
        strip_path: false
      - name: state
        paths: ["/breaker"]
        plugins:
          - name: pre-function
            config:
              access:
                - "return sluice.response.exit(200, {
                     route = sluice.upstream.get_breaker('flaky', 'fragile') or {},
                     service = sluice.upstream.get_breaker('flaky') or {} })"
]], up.port, cjson.encode(BASE)))
    end)
    teardown(function()
      helpers.kill(s.pid)
    end)

    it("keys by route and service: the service's other routes are not affected", function()
      mode("fail")
      for _ = 1, 4 do
        get(s, "/api/fragile")
      end
      assert.equal(503, (get(s, "/api/fragile")))
      assert.equal(500, (get(s, "/api/sturdy")))
      local _, _, body = get(s, "/breaker")
      local doc = cjson.decode(body)
      assert.equal("open", doc.route.state)
      assert.same({}, doc.service)
      assert.matches("route 'fragile' of service 'flaky': closed %-> open",
        helpers.read_file(s.log))
      mode("ok")
    end)
  end)

  describe("with 2 workers", function()
    local s
    setup(function()
      mode("ok")
      s = gateway(up, with({ timeout = 3000 }), 2)
    end)
    teardown(function()
      helpers.kill(s.pid)
    end)

    it("shares the state: both workers count, open, and refuse", function()
      mode("fail")
      -- New connections spread over the workers (SO_REUSEPORT).
      local statuses = concurrent(s, "/api/d", 4)
      assert.same({ 500, 500, 500, 500 }, statuses)
      local st = state(s)
      assert.equal("open", st.state)
      assert.equal(4, st.requests)
      local before = upstream_hits(up, "/api/d")
      statuses = concurrent(s, "/api/d", 20)
      assert.equal(20, count(statuses, 503))
      assert.equal(before, upstream_hits(up, "/api/d"))
      -- Only one worker logged the transition.
      local _, n = helpers.read_file(s.log):gsub("closed %-> open", "")
      assert.equal(1, n)
    end)

    it("lets exactly one probe through across workers, however many ask at once", function()
      mode("slower") -- the probe takes 2 s: everyone else asks meanwhile
      helpers.sleep(1.1)
      local before = upstream_hits(up, "/api/d")
      local statuses = concurrent(s, "/api/d", 20)
      assert.equal(1, count(statuses, 200), table.concat(statuses, " "))
      assert.equal(19, count(statuses, 503))
      assert.equal(before + 1, upstream_hits(up, "/api/d"))
      assert.equal("closed", state(s).state)
      local _, n = helpers.read_file(s.log):gsub("open %-> half_open", "")
      assert.equal(1, n)
      mode("ok")
      assert.same({ 200, 200, 200, 200 }, concurrent(s, "/api/d", 4))
    end)
  end)
end)
