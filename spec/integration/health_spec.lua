-- Health checks through the real binary against nginx upstreams: active
-- probes mark targets down and up, passive checks and outlier ejection count
-- real traffic, threshold and all-down answers, two workers sharing the
-- state, a killed prober, and one of three targets killed under load.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

-- /b/... answers with the upstream's port and the status /ctl/status/N set
-- (200 by default); /health answers with the status /ctl/health/N set. /ctl/
-- is called directly, not through sluice.
local LOCATIONS = [[
    location /b/ {
      content_by_lua_block {
        ngx.status = ngx.shared.ctl:get("status") or 200
        if ngx.status == 444 then
          return ngx.exit(444) -- closes the connection without an answer
        end
        ngx.print(ngx.var.server_port)
      }
    }
    location = /health {
      content_by_lua_block {
        ngx.status = ngx.shared.ctl:get("health") or 200
        ngx.shared.ctl:set("probe", (ngx.req.get_headers()["x-probe"] or "-") .. " "
          .. (ngx.var.http_host or "-") .. " " .. ngx.req.http_version())
      }
    }
    location = /seen {
      content_by_lua_block {
        ngx.print(ngx.shared.ctl:get("probe") or "")
      }
    }
    location /ctl/ {
      content_by_lua_block {
        local what, n = ngx.var.uri:match("^/ctl/(%a+)/(%d+)$")
        ngx.shared.ctl:set(what, tonumber(n))
        ngx.print("ok")
      }
    }
]]

local function start_upstream(port)
  return helpers.start_upstream({ locations = LOCATIONS, http = "lua_shared_dict ctl 1m;",
                                  port = port })
end

local function ctl(u, what, n)
  local res = assert(helpers.request(u.port, fmt("GET /ctl/%s/%d HTTP/1.1\r\nHost: x\r\n\r\n",
    what, n)))
  assert.equal(200, res.status)
end

local function targets(ports)
  local lines = { "    targets:" }
  for _, port in ipairs(ports) do
    lines[#lines + 1] = fmt("      - target: 127.0.0.1:%d", port)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- A config with one upstream "ups" and its healthchecks block (YAML text,
-- indented under it), a proxied route /b/ and a /health-of route that
-- answers with sluice.upstream.get_health("ups") as JSON.
local function config(ports, healthchecks, retries)
  return fmt([[
_format_version: "3.0"
services:
  - name: b
    url: http://ups
    retries: %d
    routes:
      - name: b
        paths: ["/b/"]
        strip_path: false
  - name: health
    url: http://127.0.0.1:1
    routes:
      - name: health
        paths: ["/health-of"]
    plugins:
      - name: pre-function
        config:
          access:
            - |
              local h, err = sluice.upstream.get_health("ups")
              sluice.response.exit(200, h or { message = err })
upstreams:
  - name: ups
    healthchecks:
%s
%s]], retries or 0, healthchecks, targets(ports))
end

local function get(s, path)
  local res, err = helpers.request(s.port, fmt("GET %s HTTP/1.1\r\nHost: gw.test\r\n\r\n", path))
  assert(res, err)
  return res.status, res.body, res.headers
end

local function health(s)
  local status, body = get(s, "/health-of")
  assert.equal(200, status, body)
  return helpers.json(body)
end

local function target_health(s, port)
  for _, t in ipairs(health(s).data) do
    if t.target == "127.0.0.1:" .. port then
      return t.health, t
    end
  end
end

local function wait_health(s, port, want, seconds)
  local t0 = socket.gettime()
  local ok = helpers.wait_for(function()
    return target_health(s, port) == want
  end, seconds or 5, 0.02)
  return ok, socket.gettime() - t0
end

-- Which ports answered n requests to /b/x.
local function spread(s, n)
  local seen = {}
  for _ = 1, n do
    local _, body = get(s, "/b/x")
    seen[body] = (seen[body] or 0) + 1
  end
  return seen
end

local function probes(u)
  local n = 0
  for _, line in ipairs(helpers.upstream_requests(u)) do
    if line:find("GET /health ", 1, true) then
      n = n + 1
    end
  end
  return n
end

local ACTIVE = [[
      active:
        http_path: /health
        timeout: 0.5
        headers:
          X-Probe: ["sluice"]
        healthy:
          interval: 0.2
          successes: 2
        unhealthy:
          interval: 0.2
          http_failures: 2
          tcp_failures: 1
          timeouts: 1
]]

describe("health checks:", function()
  after_each(function()
    helpers.stop_all()
  end)

  it("get_health checks its argument and names an unknown upstream", function()
    assert.has_error(function() sluice.upstream.get_health(nil) end,
      "bad argument #1 to 'get_health' (string expected, got nil)")
    local h, err = sluice.upstream.get_health("nope")
    assert.is_nil(h)
    assert.equal("could not find an upstream named 'nope'", err)
  end)

  it("get_health says HEALTHCHECKS_OFF for an upstream without checks", function()
    local a = start_upstream()
    local s = helpers.start_sluice(config({ a.port }, "      threshold: 0"))
    local h = health(s)
    assert.equal("HEALTHCHECKS_OFF", h.health)
    assert.equal("HEALTHCHECKS_OFF", h.data[1].health)
    assert.equal(100, h.data[1].weight)
    assert.equal("127.0.0.1:" .. a.port, h.data[1].address)
  end)

  it("sluice check summarises an upstream's checks", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/s.yaml", config({ 8001, 8002 }, ACTIVE .. [[
      passive: { unhealthy: { tcp_failures: 2 } }
      outlier: { consecutive_5xx: 3 }
      threshold: 30
]]))
    local out = helpers.run(fmt("%s check -c %s/s.yaml 2>&1", helpers.bin, dir))
    os.execute("rm -rf " .. dir)
    assert.matches("; checks: active http /health every 0%.2s %(0%.2s when down%), passive, "
      .. "outlier, threshold 30%%", out)
  end)

  describe("active", function()
    it("marks a target unhealthy and healthy again within interval x successes", function()
      local a, b = start_upstream(), start_upstream()
      local s = helpers.start_sluice(config({ a.port, b.port }, ACTIVE))
      assert.equal("HEALTHY", target_health(s, a.port))
      assert.equal("HEALTHY", health(s).health)

      ctl(a, "health", 500)
      assert.is_truthy(wait_health(s, a.port, "UNHEALTHY", 3))
      -- Traffic avoids it: every request reaches b.
      assert.same({ [tostring(b.port)] = 20 }, spread(s, 20))
      assert.matches(fmt("upstream ups target 127.0.0.1:%d: healthy %%-> unhealthy %%(2 http "
        .. "failures%%)", a.port), helpers.read_file(s.log))

      ctl(a, "health", 200)
      local ok, took = wait_health(s, a.port, "HEALTHY", 3)
      assert.is_truthy(ok)
      -- 2 successes 0.2 s apart, plus up to one interval before the first
      -- and one 100 ms tick of slack on each side.
      assert.is_true(took <= 0.2 * 2 + 0.2 + 0.3, "took " .. took)
      local seen = spread(s, 20)
      assert.is_true((seen[tostring(a.port)] or 0) > 0)
      assert.matches("unhealthy %-> healthy %(2 successes%)", helpers.read_file(s.log))
      -- The probes carried the configured header, path and Kong's Host.
      assert.is_true(helpers.upstream_saw(a, "GET /health HTTP/1.0 200"))
      local res = assert(helpers.request(a.port, "GET /seen HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert.equal("sluice 127.0.0.1 1", res.body)
    end)

    it("probes with tcp connects, and a closed port is unhealthy", function()
      local a = start_upstream()
      local dead = helpers.free_port()
      local s = helpers.start_sluice(config({ a.port, dead }, [[
      active:
        type: tcp
        healthy: { interval: 0.2, successes: 1 }
        unhealthy: { interval: 0.2, tcp_failures: 1 }
]]))
      assert.is_truthy(wait_health(s, dead, "UNHEALTHY", 3))
      assert.equal("HEALTHY", target_health(s, a.port))
      assert.equal(0, probes(a)) -- a tcp check sends no request
      -- The dead port comes back when something listens there.
      local b = start_upstream(dead)
      assert.is_truthy(wait_health(s, b.port, "HEALTHY", 3))
    end)

    it("probes each target once per interval with 2 workers (one prober per target)", function()
      local a = start_upstream()
      local s = helpers.start_sluice(config({ a.port }, ACTIVE), { workers = 2 })
      assert.is_truthy(helpers.wait_for(function() return #helpers.children(s.pid) == 2 end))
      helpers.sleep(0.5)
      local n0, t0 = probes(a), socket.gettime()
      helpers.sleep(2)
      local n = probes(a) - n0
      local expected = (socket.gettime() - t0) / 0.2
      -- Two probers would send about twice as many; a slow machine (the
      -- ASan build under load) may send fewer than one per interval.
      assert.is_true(n >= expected * 0.5 and n <= expected * 1.3,
        fmt("%d probes in 2 s at 0.2 s intervals", n))
    end)

    it("keeps probing after the prober worker is killed with SIGKILL", function()
      local a = start_upstream()
      local s = helpers.start_sluice(config({ a.port }, ACTIVE), { workers = 2 })
      helpers.sleep(0.5)
      for _, pid in ipairs(helpers.children(s.pid)) do
        helpers.kill(pid, "KILL")
      end
      -- Both workers died; the respawned ones take the lease back.
      local n0 = probes(a)
      assert.is_truthy(helpers.wait_for(function() return probes(a) >= n0 + 5 end, 5))
      ctl(a, "health", 503)
      assert.is_truthy(wait_health(s, a.port, "UNHEALTHY", 3))
      -- Killing just one of the two workers: probes continue as well.
      local pids = helpers.children(s.pid)
      helpers.kill(pids[1], "KILL")
      ctl(a, "health", 200)
      assert.is_truthy(wait_health(s, a.port, "HEALTHY", 4))
    end)
  end)

  describe("passive", function()
    it("marks a target unhealthy after http_failures answers from real traffic", function()
      local a, b = start_upstream(), start_upstream()
      local s = helpers.start_sluice(config({ a.port, b.port }, [[
      passive:
        unhealthy:
          http_failures: 3
          http_statuses: [500]
]]))
      ctl(a, "status", 500)
      local fives = 0
      for _ = 1, 20 do
        local status = get(s, "/b/x")
        if status == 500 then
          fives = fives + 1
        end
      end
      -- Round-robin sent every other request to a until its third 500.
      assert.equal(3, fives)
      assert.equal("UNHEALTHY", target_health(s, a.port))
      assert.equal("HEALTHY", target_health(s, b.port))
      assert.matches("healthy %-> unhealthy %(3 http failures%)", helpers.read_file(s.log))
    end)

    it("counts connect failures, and retries hide them from clients", function()
      local a = start_upstream()
      local dead = helpers.free_port()
      local s = helpers.start_sluice(config({ a.port, dead }, [[
      passive:
        unhealthy:
          tcp_failures: 2
]], 2))
      for _ = 1, 10 do
        assert.equal(200, (get(s, "/b/x")))
      end
      assert.equal("UNHEALTHY", target_health(s, dead))
      assert.matches("healthy %-> unhealthy %(2 tcp failures%)", helpers.read_file(s.log))
    end)

    it("retries idempotent requests whose connection the target cut, not the others",
      function()
      local a, b = start_upstream(), start_upstream()
      local s = helpers.start_sluice(config({ a.port, b.port }, [[
      passive:
        unhealthy:
          tcp_failures: 100
]], 1))
      ctl(a, "status", 444)
      for _ = 1, 10 do
        local status, body = get(s, "/b/x")
        assert.equal(200, status)
        assert.equal(tostring(b.port), body)
      end
      -- A POST may have been processed: it is not sent twice.
      local posts = 0
      for _ = 1, 10 do
        local res = assert(helpers.request(s.port, "POST /b/x HTTP/1.1\r\nHost: gw.test\r\n"
          .. "Content-Length: 1\r\n\r\nx"))
        posts = posts + (res.status == 502 and 1 or 0)
      end
      assert.is_true(posts > 0)
      local _, t = target_health(s, a.port)
      assert.is_true(t.counters.tcp_failures >= 5, "tcp_failures " .. t.counters.tcp_failures)
    end)

    it("agrees across 2 workers", function()
      local a, b = start_upstream(), start_upstream()
      local s = helpers.start_sluice(config({ a.port, b.port }, [[
      passive:
        unhealthy:
          http_failures: 2
          http_statuses: [500]
]]), { workers = 2 })
      ctl(a, "status", 500)
      helpers.wait_for(function()
        get(s, "/b/x")
        return target_health(s, a.port) == "UNHEALTHY"
      end, 5)
      assert.equal("UNHEALTHY", target_health(s, a.port))
      -- Fresh connections land on both workers; none sends to a any more.
      assert.same({ [tostring(b.port)] = 40 }, spread(s, 40))
    end)
  end)

  describe("outlier ejection", function()
    it("ejects after consecutive 5xx, for longer each time", function()
      local a, b = start_upstream(), start_upstream()
      local s = helpers.start_sluice(config({ a.port, b.port }, [[
      outlier:
        consecutive_5xx: 2
        base_ejection_time: 0.5
        max_ejection_time: 10
        max_ejection_percent: 50
]]))
      ctl(a, "status", 502)
      for _ = 1, 6 do
        get(s, "/b/x")
      end
      local state, t = target_health(s, a.port)
      assert.equal("EJECTED", state)
      assert.equal(1, t.ejections)
      assert.is_true(t.ejected_for > 0 and t.ejected_for <= 0.5)
      assert.same({ [tostring(b.port)] = 10 }, spread(s, 10))
      -- Back after base_ejection_time; still failing, so out again for twice as long.
      assert.is_truthy(wait_health(s, a.port, "HEALTHY", 2))
      helpers.wait_for(function()
        get(s, "/b/x")
        return target_health(s, a.port) == "EJECTED"
      end, 3)
      state, t = target_health(s, a.port)
      assert.equal("EJECTED", state)
      assert.equal(2, t.ejections)
      assert.is_true(t.ejected_for > 0.5, "ejected for " .. t.ejected_for)
      local log = helpers.read_file(s.log)
      assert.matches("healthy %-> ejected for 0%.5s %(2 consecutive 5xx, ejection 1%)", log)
      assert.matches("ejected for 1%.0s %(2 consecutive 5xx, ejection 2%)", log)
    end)

    it("ejects no more than max_ejection_percent of the targets", function()
      local a, b, c = start_upstream(), start_upstream(), start_upstream()
      local s = helpers.start_sluice(config({ a.port, b.port, c.port }, [[
      outlier:
        consecutive_gateway_failure: 1
        base_ejection_time: 30
        max_ejection_percent: 34
]]))
      for _, u in ipairs({ a, b, c }) do
        ctl(u, "status", 503)
      end
      for _ = 1, 12 do
        get(s, "/b/x")
      end
      local ejected = 0
      for _, t in ipairs(health(s).data) do
        ejected = ejected + (t.health == "EJECTED" and 1 or 0)
      end
      assert.equal(1, ejected)
    end)
  end)

  describe("unhealthy upstreams", function()
    it("answer 503 at once when below the threshold", function()
      local a = start_upstream()
      local dead = helpers.free_port()
      local s = helpers.start_sluice(config({ a.port, dead }, ACTIVE .. [[
      threshold: 60
]]))
      assert.is_truthy(wait_health(s, dead, "UNHEALTHY", 3))
      assert.equal("UNHEALTHY", health(s).health)
      local status, body = get(s, "/b/x")
      assert.equal(503, status)
      assert.same({ message = "failure to get a peer from the ring-balancer" }, helpers.json(body))
      local n = #helpers.upstream_requests(a)
      get(s, "/b/x")
      -- a is healthy but the upstream as a whole is not: a got nothing.
      local lines = helpers.upstream_requests(a)
      for i = n + 1, #lines do
        assert.is_falsy(lines[i]:find("/b/", 1, true))
      end
    end)

    it("answer 503 JSON immediately when every target is down", function()
      local d1, d2 = helpers.free_port(), helpers.free_port()
      local s = helpers.start_sluice(config({ d1, d2 }, ACTIVE))
      assert.is_truthy(wait_health(s, d1, "UNHEALTHY", 3))
      assert.is_truthy(wait_health(s, d2, "UNHEALTHY", 3))
      local t0 = socket.gettime()
      local status, body, headers = get(s, "/b/x")
      assert.is_true(socket.gettime() - t0 < 0.1)
      assert.equal(503, status)
      assert.matches("application/json", headers["content-type"])
      assert.same({ message = "failure to get a peer from the ring-balancer" }, helpers.json(body))
    end)
  end)

  describe("under load", function()
    it("absorbs one of three targets killed and brings it back when it restarts", function()
      local ups = { start_upstream(), start_upstream(), start_upstream() }
      local ports = { ups[1].port, ups[2].port, ups[3].port }
      local s = helpers.start_sluice(config(ports, [[
      active:
        http_path: /health
        healthy: { interval: 0.2, successes: 2 }
        unhealthy: { interval: 0.2, tcp_failures: 1, http_failures: 1, timeouts: 1 }
      passive:
        unhealthy: { tcp_failures: 1, timeouts: 1 }
]], 3), { workers = 2 })
      local out = s.dir .. "/wrk.txt"
      -- 200 connections for 6 s; kill the third target at 1.5 s, restart it at 3.5 s.
      os.execute(fmt("wrk -t2 -c200 -d6s http://127.0.0.1:%d/b/x >%s 2>&1 &", s.port, out))
      helpers.sleep(1.5)
      helpers.kill(ups[3].pid, "KILL")
      assert.is_truthy(wait_health(s, ports[3], "UNHEALTHY", 2))
      helpers.sleep(2 - 0.0)
      ups[3] = start_upstream(ports[3])
      assert.is_truthy(wait_health(s, ports[3], "HEALTHY", 3))
      local report = helpers.wait_for(function()
        local text = helpers.read_file(out) or ""
        return text:find("Requests/sec") and text
      end, 10)
      assert.is_truthy(report, helpers.read_file(out))
      local requests = tonumber(report:match("(%d+) requests in"))
      assert.is_true(requests > 1000, report)
      assert.is_falsy(report:find("Non%-2xx"), report)
      assert.is_falsy(report:find("Socket errors"), report)
      -- The restarted target takes traffic again.
      local seen = spread(s, 30)
      assert.is_true((seen[tostring(ports[3])] or 0) > 0)
    end)
  end)
end)
