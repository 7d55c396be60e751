-- prometheus through the real binary: 2 workers, a real upstream, a dead one, scrapes parsed
-- strictly; every count must be exact whichever worker served the request or the scrape.
local t = require("sluice.test")
local helpers = require("spec.helpers")
local expo = require("spec.plugins.prometheus.exposition")

local fmt = string.format

local function get(s, path)
  local res = assert(s:get(path))
  return res.status, res
end

-- Scrapes /metrics and parses it strictly.
local function scrape(s)
  local res = assert(s:get("/metrics"))
  assert.equal(200, res.status)
  assert.equal("text/plain; version=0.0.4; charset=utf-8", res.headers["content-type"])
  return expo.parse(res.body), res.body
end

local function requests(m, service, route, code, source)
  return expo.value(m, "sluice_http_requests_total",
    { service = service, route = route, code = code, source = source })
end

describe("plugin: prometheus (proxy)", function()
  local s, up, dead

  setup(function()
    up = t.mock_upstream({ routes = { ["/created"] = { status = 201, body = "made" } } })
    dead = helpers.free_port() -- nothing listens there
    s = t.start(fmt([[
_format_version: "3.0"
upstreams:
  - name: pool
    targets:
      - target: 127.0.0.1:%d
      - target: 127.0.0.1:%d
    healthchecks:
      active:
        http_path: /health
        timeout: 0.5
        healthy: { interval: 0.2, successes: 1 }
        unhealthy: { interval: 0.2, tcp_failures: 1, http_failures: 1 }
services:
  - name: orders
    url: http://127.0.0.1:%d
    routes:
      - name: orders
        paths: ["/orders", "/created"]
        strip_path: false
      - name: teapot
        paths: ["/teapot"]
        plugins:
          - name: request-termination
            config: { status_code: 418, message: "short and stout" }
  - name: broken
    url: http://127.0.0.1:%d
    retries: 0
    routes:
      - name: broken
        paths: ["/broken"]
  - name: pooled
    host: pool
    routes:
      - name: pooled
        paths: ["/pooled"]
  - name: metrics
    url: http://127.0.0.1:1
    routes:
      - name: metrics
        paths: ["/metrics"]
        plugins:
          - name: prometheus
            config: { serve_metrics: true }
plugins:
  - name: prometheus
    config:
      status_code_metrics: true
      latency_metrics: true
      bandwidth_metrics: true
      upstream_health_metrics: true
]], up.port, dead, up.port, dead), { workers = 2 })
  end)

  teardown(function()
    t.stop()
  end)

  it("counts every request once, summed over both workers, whichever answers the scrape",
    function()
      -- Each request comes on a connection of its own: SO_REUSEPORT spreads
      -- them over both workers.
      for _ = 1, 20 do
        assert.equal(200, (get(s, "/orders/1")))
      end
      for _ = 1, 6 do
        assert.equal(201, (get(s, "/created")))
      end
      for _ = 1, 4 do
        assert.equal(418, (get(s, "/teapot")))
      end
      for _ = 1, 3 do
        assert.equal(404, (get(s, "/nowhere")))
      end
      for _ = 1, 3 do
        assert.equal(502, (get(s, "/broken")))
      end

      -- Several scrapes, on new connections, so both workers answer some:
      -- each must show the same totals, plus the scrapes before it.
      for k = 1, 6 do
        local m = scrape(s)
        assert.equal(20, requests(m, "orders", "orders", "200", "service"))
        assert.equal(6, requests(m, "orders", "orders", "201", "service"))
        assert.equal(4, requests(m, "orders", "teapot", "418", "exit"))
        assert.equal(3, requests(m, "", "", "404", "error"))
        assert.equal(3, requests(m, "broken", "broken", "502", "error"))
        assert.equal(k > 1 and k - 1 or nil, requests(m, "metrics", "metrics", "200", "exit"))
        -- Nothing else was counted.
        local total = 0
        for _, x in ipairs(expo.samples(m, "sluice_http_requests_total")) do
          total = total + x.value
        end
        assert.equal(36 + k - 1, total)
        -- Both workers are up and publish their Lua VMs.
        assert.equal(2, #expo.samples(m, "sluice_memory_workers_lua_vms_bytes"))
      end
    end)

  it("fills the histograms with one observation per request", function()
    local m = scrape(s)
    local function count(name, route, service)
      return expo.value(m, name .. "_count", { service = service or route, route = route })
    end
    assert.equal(26, count("sluice_request_latency_ms", "orders"))
    assert.equal(26, count("sluice_upstream_latency_ms", "orders"))
    assert.equal(26, count("sluice_latency_ms", "orders"))
    assert.equal(26, expo.value(m, "sluice_request_latency_ms_bucket",
      { service = "orders", route = "orders", le = "+Inf" }))
    -- An exit and a failed upstream have no upstream latency.
    assert.equal(4, count("sluice_request_latency_ms", "teapot", "orders"))
    assert.equal(4, count("sluice_latency_ms", "teapot", "orders"))
    assert.is_nil(count("sluice_upstream_latency_ms", "teapot", "orders"))
    assert.equal(3, count("sluice_request_latency_ms", "broken"))
    assert.is_nil(count("sluice_upstream_latency_ms", "broken"))
    assert.equal(3, count("sluice_request_latency_ms", ""))
    -- Kong's buckets, as boundaries.
    local les = {}
    for _, x in ipairs(expo.samples(m, "sluice_latency_ms_bucket")) do
      if x.labels.route == "orders" then
        les[#les + 1] = x.labels.le
      end
    end
    assert.same({ "1", "2", "5", "7", "10", "15", "20", "30", "50", "75", "100", "200", "500",
                  "750", "1000", "+Inf" }, les)
    local sum = expo.value(m, "sluice_request_latency_ms_sum", { service = "orders",
                                                                 route = "orders" })
    assert.is_true(sum > 0)
  end)

  it("grows the bandwidth by exactly the bytes received and sent", function()
    local function bytes(m, direction)
      return expo.value(m, "sluice_bandwidth_bytes",
        { service = "orders", route = "orders", direction = direction })
    end
    local before = scrape(s)
    local raw = "POST /orders/bw HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
      .. "Connection: close\r\n\r\nhello world"
    local c = helpers.connect(s.port)
    c:send(raw)
    local all = c.sock:receive("*a")
    c:close()
    assert.matches("^HTTP/1.1 200", all)
    local after = scrape(s)
    assert.equal(bytes(before, "ingress") + #raw, bytes(after, "ingress"))
    assert.equal(bytes(before, "egress") + #all, bytes(after, "egress"))
  end)

  it("reports each target's health state, and a target the active checks marked down",
    function()
      local function state(m, port, st)
        return expo.value(m, "sluice_upstream_target_health", {
          upstream = "pool", target = "127.0.0.1:" .. port, address = "127.0.0.1:" .. port,
          state = st })
      end
      local m = helpers.wait_for(function()
        local x = scrape(s)
        return state(x, dead, "unhealthy") == 1 and x
      end, 10)
      assert.is_truthy(m, "the dead target never showed unhealthy")
      assert.equal(0, state(m, dead, "healthy"))
      assert.equal(0, state(m, dead, "healthchecks_off"))
      assert.equal(0, state(m, dead, "dns_error"))
      assert.equal(1, state(m, up.port, "healthy"))
      assert.equal(0, state(m, up.port, "unhealthy"))
      -- Upstreams sluice makes for plain service hosts are not listed.
      for _, x in ipairs(expo.samples(m, "sluice_upstream_target_health")) do
        assert.equal("pool", x.labels.upstream)
      end
    end)

  it("exports connection and shared dict gauges, the node info, and HELP and TYPE lines",
    function()
      local m, text = scrape(s)
      assert.equal("gauge", m.sluice_connections.type)
      assert.equal("counter", m.sluice_http_requests_total.type)
      assert.equal("histogram", m.sluice_request_latency_ms.type)
      -- The scrape's own connection is open while it is rendered.
      assert.is_true(expo.value(m, "sluice_connections", { state = "active" }) >= 1)
      assert.is_true(expo.value(m, "sluice_connections", { state = "writing" }) >= 1)
      assert.is_true(expo.value(m, "sluice_connections_accepted_total") >= 40)
      assert.equal(expo.value(m, "sluice_connections_accepted_total"),
        expo.value(m, "sluice_connections_handled_total"))
      assert.equal(1, expo.value(m, "sluice_node_info", { version = sluice.version or "0.1.0" }))
      -- Every family has its HELP.
      for name, f in pairs(m) do
        assert.is_string(f.help, name)
      end
      assert.matches("# TYPE sluice_memory_lua_shared_dict_total_bytes gauge\n", text, 1, true)
    end)

  it("keeps a worker's counts when the worker is killed and replaced", function()
    local before = scrape(s)
    local pids = {}
    for _, x in ipairs(expo.samples(before, "sluice_memory_workers_lua_vms_bytes")) do
      pids[#pids + 1] = tonumber(x.labels.pid)
    end
    assert.equal(2, #pids)
    helpers.kill(pids[1], "KILL")
    -- The master starts a new worker in the dead one's slot.
    local m = helpers.wait_for(function()
      local x = scrape(s)
      for _, w in ipairs(expo.samples(x, "sluice_memory_workers_lua_vms_bytes")) do
        if tonumber(w.labels.pid) ~= pids[1] and tonumber(w.labels.pid) ~= pids[2] then
          return x
        end
      end
    end, 10)
    assert.is_truthy(m, "no worker replaced the killed one")
    assert.equal(2, #expo.samples(m, "sluice_memory_workers_lua_vms_bytes"))
    for _, x in ipairs(expo.samples(before, "sluice_http_requests_total")) do
      if x.labels.route ~= "metrics" then
        assert.equal(x.value, expo.value(m, "sluice_http_requests_total", x.labels))
      end
    end
  end)

  it("answers only GET and HEAD on the metrics route", function()
    local res = assert(s:post("/metrics", { body = "x" }))
    assert.equal(405, res.status)
    assert.equal("GET, HEAD", res.headers["allow"])
    res = assert(s:head("/metrics"))
    assert.equal(200, res.status)
    assert.equal("", res.body)
  end)
end)

describe("plugin: prometheus (proxy, shared dicts and defaults)", function()
  teardown(function()
    t.stop()
  end)

  it("with Kong's defaults exports only the node gauges; shared dicts show capacity and use",
    function()
      local up = t.mock_upstream()
      local s = t.start(fmt([[
_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:%d
    routes:
      - name: metrics
        paths: ["/metrics"]
        plugins:
          - name: prometheus
            config: { serve_metrics: true }
      - name: fill
        paths: ["/fill"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  sluice.shared.cache:set('k', string.rep('x', 20000))
                  return sluice.response.exit(204)
]], up.port), { workers = 2, shared_dicts = { cache = "1m" } })
      assert.equal(204, (get(s, "/fill")))
      local m = scrape(s)
      assert.is_nil(m.sluice_http_requests_total)
      assert.is_nil(m.sluice_request_latency_ms)
      assert.is_nil(m.sluice_bandwidth_bytes)
      assert.is_nil(m.sluice_upstream_target_health)
      local total = expo.value(m, "sluice_memory_lua_shared_dict_total_bytes",
        { shared_dict = "cache" })
      local used = expo.value(m, "sluice_memory_lua_shared_dict_bytes", { shared_dict = "cache" })
      assert.equal(1024 * 1024, total)
      assert.is_true(used >= 20000 and used < total, tostring(used))
    end)
end)

describe("plugin: prometheus (proxy, per_consumer)", function()
  local s

  setup(function()
    local up = t.mock_upstream()
    s = t.start({
      consumers = {
        { username = "alice", keyauth_credentials = { { key = "k-alice" } } },
        { username = "bob", custom_id = "crm-2", keyauth_credentials = { { key = "k-bob" } } },
      },
      services = { {
        name = "api", url = up.url,
        routes = {
          { name = "keyed", paths = { "/keyed" },
            plugins = { { name = "key-auth" } } },
          { name = "open", paths = { "/open" } },
          { name = "metrics", paths = { "/metrics" },
            plugins = { { name = "prometheus", config = { serve_metrics = true } } } },
        },
      } },
      plugins = { { name = "prometheus", config = { per_consumer = true,
                                                     status_code_metrics = true,
                                                     bandwidth_metrics = true } } },
    }, { workers = 2 })
  end)

  teardown(function()
    t.stop()
  end)

  it("labels a consumer's requests and bytes with its username, and the others with \"\"",
    function()
      for _ = 1, 5 do
        assert.equal(200, assert(s:get("/keyed", { headers = { apikey = "k-alice" } })).status)
      end
      for _ = 1, 3 do
        assert.equal(200, assert(s:get("/keyed", { headers = { apikey = "k-bob" } })).status)
      end
      for _ = 1, 2 do
        assert.equal(401, assert(s:get("/keyed")).status)
        assert.equal(200, assert(s:get("/open")).status)
      end
      for _ = 1, 3 do
        local m = scrape(s)
        local function n(route, code, source, consumer)
          return expo.value(m, "sluice_http_requests_total", { service = "api", route = route,
            code = code, source = source, consumer = consumer })
        end
        assert.equal(5, n("keyed", "200", "service", "alice"))
        assert.equal(3, n("keyed", "200", "service", "bob"))
        assert.equal(2, n("keyed", "401", "exit", ""))
        assert.equal(2, n("open", "200", "service", ""))
        assert.is_true(expo.value(m, "sluice_bandwidth_bytes", { service = "api",
          route = "keyed", direction = "egress", consumer = "alice" }) > 0)
        -- Every series of both families has the label.
        for _, name in ipairs({ "sluice_http_requests_total", "sluice_bandwidth_bytes" }) do
          for _, x in ipairs(expo.samples(m, name)) do
            assert.is_string(x.labels.consumer)
          end
        end
        assert.equal(0, expo.value(m, "sluice_metrics_consumer_overflow_total"))
      end
    end)
end)

describe("plugin: prometheus (proxy, many routes)", function()
  teardown(function()
    t.stop()
  end)

  it("renders a scrape of 300 routes, far larger than its first buffer, exactly", function()
    local up = t.mock_upstream()
    local routes = {}
    for i = 1, 300 do
      routes[i] = { name = "r" .. i, paths = { "/r" .. i } }
    end
    routes[#routes + 1] = { name = "metrics", paths = { "/metrics" },
      plugins = { { name = "prometheus", config = { serve_metrics = true } } } }
    local s = t.start({
      services = { { name = "svc", url = up.url, routes = routes } },
      plugins = { { name = "prometheus", config = { status_code_metrics = true,
                                                     latency_metrics = true } } },
    }, { workers = 2 })
    -- One curl for the 300 requests.
    local dir = helpers.tmpdir()
    local lines = {}
    for i = 1, 300 do
      lines[#lines + 1] = fmt('url = "http://127.0.0.1:%d/r%d"\noutput = /dev/null', s.port, i)
    end
    helpers.write_file(dir .. "/urls", table.concat(lines, "\n") .. "\n")
    local out, rc = helpers.run(fmt("curl -sS -K %s/urls", dir))
    os.execute("rm -rf " .. dir)
    assert.equal(0, rc, out)
    local m, text = scrape(s)
    assert.is_true(#text > 4 * 64 * 1024, tostring(#text))
    for i = 1, 300 do
      local route = "r" .. i
      assert.equal(1, requests(m, "svc", route, "200", "service"), route)
      assert.equal(1, expo.value(m, "sluice_request_latency_ms_count",
        { service = "svc", route = route }), route)
    end
  end)
end)
