-- Balancing algorithms through the real binary, against four nginx upstreams:
-- weighted round-robin, least-connections around a slow target, consistent
-- hashing on every key source (and sticky cookies), and latency.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)spec/integration/[^/]+$") or ""
ROOT = helpers.run("cd '" .. (ROOT ~= "" and ROOT or ".") .. "' && pwd"):gsub("%s+$", "")
local FIXTURES = ROOT .. "/spec/fixtures/plugins"

-- /b/... answers with the upstream's port after the delay (ms) that
-- /ctl/delay/N set on that upstream; /ctl/... is called directly, not
-- through sluice.
local LOCATIONS = [[
    location /b/ {
      content_by_lua_block {
        local d = ngx.shared.ctl:get("delay") or 0
        if d > 0 then
          ngx.sleep(d / 1000)
        end
        ngx.header["Content-Type"] = "text/plain"
        ngx.print(ngx.var.server_port)
      }
    }
    location /ctl/ {
      content_by_lua_block {
        ngx.shared.ctl:set("delay", tonumber(ngx.var.uri:match("^/ctl/delay/(%d+)$")) or 0)
        ngx.print("ok")
      }
    }
]]

local function route(name, upstream, path, extra)
  return fmt([[
  - name: %s
    url: http://%s
    %s
    routes:
      - name: %s
        paths: ["%s"]
        strip_path: false
]], name, upstream, extra or "", name, path)
end

local function targets(ports, weights)
  local lines = { "    targets:" }
  for i, port in ipairs(ports) do
    lines[#lines + 1] = fmt("      - target: 127.0.0.1:%d", port)
    if weights then
      lines[#lines + 1] = fmt("        weight: %d", weights[i])
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

describe("balancing:", function()
  local ups, ports, s, dead_port

  setup(function()
    ups, ports = {}, {}
    for i = 1, 4 do
      ups[i] = helpers.start_upstream({ locations = LOCATIONS,
        http = "lua_shared_dict ctl 1m;" })
      ports[i] = ups[i].port
    end
    dead_port = helpers.free_port()
    local hash = function(name, fields, tlist)
      return fmt("  - name: %s\n    algorithm: consistent-hashing\n%s%s", name, fields,
        targets(tlist or ports))
    end
    local yaml = '_format_version: "3.0"\nservices:\n'
      .. route("rr", "rr-ups", "/b/rr")
      .. route("lc", "lc-ups", "/b/lc")
      .. route("lat", "lat-ups", "/b/lat")
      .. route("header", "header-ups", "/b/header")
      .. route("ip", "ip-ups", "/b/ip")
      .. route("path", "path-ups", "/b/path")
      .. route("query", "query-ups", "/b/query")
      .. route("capture", "capture-ups", "~/b/capture/(?<tenant>[^/]+)/")
      .. route("consumer", "consumer-ups", "/b/consumer")
      .. route("cookie", "cookie-ups", "/b/cookie")
      .. route("nokey", "nokey-ups", "/b/nokey")
      .. route("retry", "retry-ups", "/b/retry", "retries: 5")
      .. "upstreams:\n"
      .. "  - name: rr-ups\n" .. targets({ ports[1], ports[2], ports[3] }, { 50, 30, 20 })
      .. "  - name: lc-ups\n    algorithm: least-connections\n"
      .. targets({ ports[1], ports[2], ports[3] })
      .. "  - name: lat-ups\n    algorithm: latency\n" .. targets({ ports[1], ports[2], ports[3] })
      .. hash("header-ups", "    hash_on: header\n    hash_on_header: X-User\n")
      .. hash("ip-ups", "    hash_on: ip\n")
      .. hash("path-ups", "    hash_on: path\n")
      .. hash("query-ups", "    hash_on: query_arg\n    hash_on_query_arg: user\n")
      .. hash("capture-ups", "    hash_on: uri_capture\n    hash_on_uri_capture: tenant\n")
      .. hash("consumer-ups", "    hash_on: consumer\n    hash_fallback: header\n"
        .. "    hash_fallback_header: X-User\n")
      .. hash("cookie-ups", "    hash_on: cookie\n    hash_on_cookie: sticky\n"
        .. "    hash_on_cookie_path: /b\n")
      .. hash("nokey-ups", "    hash_on: header\n    hash_on_header: X-User\n",
        { ports[1], ports[2] })
      .. hash("retry-ups", "    hash_on: header\n    hash_on_header: X-User\n",
        { dead_port, ports[1], ports[2], ports[3] })
    -- Consumers c1..c12; spec-consumer-auth authenticates the one that
    -- X-Consumer names, with a credential of its own.
    yaml = yaml .. "consumers:\n"
    for k = 1, 12 do
      yaml = yaml .. fmt("  - username: c%d\n    id: 00000000-0000-4000-8000-%012d\n", k, k)
    end
    yaml = yaml .. "plugins:\n  - name: spec-consumer-auth\n    route: consumer\n"
    s = helpers.start_sluice(yaml, { server = { trusted_ips = { "127.0.0.1/32" },
      plugin_paths = { FIXTURES } } })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function set_delay(i, ms)
    local status = helpers.curl(fmt("http://127.0.0.1:%d/ctl/delay/%d", ports[i], ms))
    assert.equals(200, status)
  end

  -- A keep-alive client: get(path, headers) returns the status, the port
  -- that answered (a number) and the response headers.
  local function client()
    local c = helpers.connect(s.port)
    return function(path, headers)
      local extra = {}
      for k, v in pairs(headers or {}) do
        extra[#extra + 1] = k .. ": " .. v .. "\r\n"
      end
      assert(c:send(fmt("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n", path, table.concat(extra))))
      local res = assert(c:read_response())
      if res.headers.connection == "close" then
        -- server.keepalive_requests ends a connection now and then.
        c:close()
        c = helpers.connect(s.port)
      end
      return res.status, tonumber(res.body), res.headers
    end
  end

  -- Sends each request once through a fresh keep-alive client and returns
  -- the port that answered it.
  local function port_of(path, headers)
    local status, port = client()(path, headers)
    assert.equals(200, status)
    return port
  end

  local function distinct(t)
    local seen, n = {}, 0
    for _, v in pairs(t) do
      if not seen[v] then
        seen[v], n = true, n + 1
      end
    end
    return n
  end

  -- Requests the upstream i answered on `path` so far, from its access log.
  local function served(i, path)
    local n = 0
    for _, line in ipairs(helpers.upstream_requests(ups[i])) do
      if line:find(path, 1, true) then
        n = n + 1
      end
    end
    return n
  end

  describe("round-robin", function()
    it("splits 1,000 requests 50/30/20 by weight, to within 1%", function()
      local get = client()
      local count = {}
      for i = 1, 1000 do
        local status, port = get("/b/rr/" .. i)
        assert.equals(200, status)
        count[port] = (count[port] or 0) + 1
      end
      for i, want in ipairs({ 500, 300, 200 }) do
        local got = count[ports[i]] or 0
        assert.is_true(math.abs(got - want) <= 10, fmt("target %d got %d of 1000, want %d", i,
          got, want))
      end
      assert.is_nil(count[ports[4]])
    end)
  end)

  describe("least-connections", function()
    it("routes around a target that takes 200 ms, under concurrency", function()
      set_delay(1, 200)
      finally(function()
        set_delay(1, 0)
      end)
      local before = { served(1, "/b/lc/"), served(2, "/b/lc/"), served(3, "/b/lc/") }
      -- 8 clients at once, 400 requests in all.
      helpers.run(fmt("curl -s --no-progress-meter --parallel --parallel-max 8 "
        .. "'http://127.0.0.1:%d/b/lc/[1-400]' >/dev/null", s.port))
      local n = {}
      helpers.wait_for(function()
        for i = 1, 3 do
          n[i] = served(i, "/b/lc/") - before[i]
        end
        return n[1] + n[2] + n[3] >= 400
      end, 5)
      assert.equals(400, n[1] + n[2] + n[3])
      -- Round-robin would send it a third (133); it only gets a request when
      -- it is no busier than the others.
      assert.is_true(n[1] < 30, fmt("the slow target got %d of 400", n[1]))
      assert.is_true(n[2] > 80 and n[3] > 80, fmt("the others got %d and %d", n[2], n[3]))
    end)
    it("forgets a request whose client went away", function()
      -- Two requests in flight on two of the three targets, slow to answer
      -- and their bodies half sent; then the clients leave.
      for i = 1, 3 do
        set_delay(i, 500)
      end
      finally(function()
        for i = 1, 3 do
          set_delay(i, 0)
        end
      end)
      local conns = {}
      for i = 1, 2 do
        conns[i] = helpers.connect(s.port)
        conns[i]:send("POST /b/lc/gone HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
          .. string.rep("x", 10))
      end
      socket.sleep(0.2)
      for i = 1, 2 do
        conns[i]:close()
      end
      socket.sleep(0.1)
      for i = 1, 3 do
        set_delay(i, 0)
      end
      -- Had any of them stayed counted as busy, it would get nothing now.
      local get = client()
      local count = {}
      for i = 1, 30 do
        local status, port = get("/b/lc/after/" .. i)
        assert.equals(200, status)
        count[port] = (count[port] or 0) + 1
      end
      -- (Ties go round-robin, whose state earlier tests left uneven: 10 each,
      -- give or take two.)
      for i = 1, 3 do
        local n = count[ports[i]] or 0
        assert.is_true(n >= 8 and n <= 12, fmt("target %d got %d of 30", i, n))
      end
    end)
  end)

  describe("consistent-hashing", function()
    -- Sends each of 24 keys three times; every key must stick to one target
    -- and the keys must spread over at least three of the four.
    local function assert_sticky(request)
      local by_key = {}
      for k = 1, 24 do
        local first = request(k)
        assert.is_number(first)
        for _ = 1, 2 do
          assert.equals(first, request(k), "key " .. k .. " moved")
        end
        by_key[k] = first
      end
      local n = distinct(by_key)
      assert.is_true(n >= 3, fmt("24 keys went to %d targets", n))
      return by_key
    end

    it("on a header", function()
      local by_key = assert_sticky(function(k)
        return port_of("/b/header/x", { ["X-User"] = "user-" .. k })
      end)
      -- The path does not matter, only the key.
      assert.equals(by_key[1], port_of("/b/header/other?a=1", { ["X-User"] = "user-1" }))
    end)

    it("on the client address, and on X-Forwarded-For from a trusted proxy", function()
      -- From 127.0.0.N (untrusted): the peer address.
      assert_sticky(function(k)
        local out = helpers.run(fmt("curl -s --interface 127.0.0.%d http://127.0.0.1:%d/b/ip/",
          k + 1, s.port))
        return tonumber(out, 10)
      end)
      -- From 127.0.0.1 (trusted): the address the proxy forwarded.
      local by_key = assert_sticky(function(k)
        return port_of("/b/ip/", { ["X-Forwarded-For"] = "10.1.0." .. k .. ", 127.0.0.1" })
      end)
      -- 10.1.0.1 direct and 10.1.0.1 forwarded hash alike only by chance; but
      -- a forwarded 127.0.0.2 must land where 127.0.0.2 itself does.
      local direct = tonumber((helpers.run(fmt(
        "curl -s --interface 127.0.0.2 http://127.0.0.1:%d/b/ip/", s.port))), 10)
      assert.equals(direct, port_of("/b/ip/", { ["X-Forwarded-For"] = "127.0.0.2" }))
      assert.is_number(by_key[1])
    end)

    it("on the path", function()
      assert_sticky(function(k)
        return port_of("/b/path/item-" .. k)
      end)
    end)

    it("on a query argument, decoded, in any order", function()
      local by_key = assert_sticky(function(k)
        return port_of("/b/query?x=1&user=u" .. k)
      end)
      assert.equals(by_key[7], port_of("/b/query?user=%75" .. 7))
      assert.equals(by_key[7], port_of("/b/query?user=u7&z=9"))
    end)

    it("on a named capture of the route's regex", function()
      assert_sticky(function(k)
        return port_of(fmt("/b/capture/t%d/%d", k, math.random(1000)))
      end)
    end)

    it("on the authenticated consumer, else on the fallback header", function()
      -- The consumer decides, whatever the fallback header says.
      local by_consumer = {}
      for k = 1, 12 do
        by_consumer[k] = port_of("/b/consumer/", { ["X-Consumer"] = "c" .. k,
          ["X-User"] = "user-1" })
        for j = 2, 3 do
          assert.equals(by_consumer[k], port_of("/b/consumer/" .. j, { ["X-Consumer"] = "c" .. k,
            ["X-User"] = "user-" .. j }), "consumer c" .. k .. " moved")
        end
      end
      assert.is_true(distinct(by_consumer) >= 3, fmt("12 consumers went to %d targets",
        distinct(by_consumer)))
      -- Anonymous: the fallback header, on the same ring as header-ups.
      for k = 1, 8 do
        assert.equals(port_of("/b/header/", { ["X-User"] = "user-" .. k }),
          port_of("/b/consumer/", { ["X-User"] = "user-" .. k }))
      end
    end)

    it("without a key, requests spread over the ring", function()
      local get = client()
      local count = {}
      for i = 1, 200 do
        local status, port = get("/b/nokey/" .. i)
        assert.equals(200, status)
        count[port] = (count[port] or 0) + 1
      end
      assert.is_true((count[ports[1]] or 0) > 50 and (count[ports[2]] or 0) > 50,
        fmt("%s / %s", tostring(count[ports[1]]), tostring(count[ports[2]])))
    end)

    it("retries a dead target's keys on the next target of the ring, always the same", function()
      local by_key = assert_sticky(function(k)
        return port_of("/b/retry/", { ["X-User"] = "user-" .. k })
      end)
      for _, port in pairs(by_key) do
        assert.is_not.equals(dead_port, port)
      end
    end)

    describe("on a cookie", function()
      it("sets one on the first response, then sticks to the same target", function()
        local status, port, headers = client()("/b/cookie/")
        assert.equals(200, status)
        local value = (headers["set-cookie"] or ""):match("^sticky=([%x%-]+); Path=/b$")
        assert.is_string(value, "Set-Cookie: " .. tostring(headers["set-cookie"]))
        assert.equals(36, #value)
        local get = client()
        for i = 1, 10 do
          local st, p, h = get("/b/cookie/" .. i, { Cookie = "a=1; sticky=" .. value .. "; b=2" })
          assert.equals(200, st)
          assert.equals(port, p)
          assert.is_nil(h["set-cookie"])
        end
      end)

      it("gives new clients new cookies, spread over the targets", function()
        local by_client, values = {}, {}
        for k = 1, 24 do
          local _, port, headers = client()("/b/cookie/")
          local value = headers["set-cookie"]:match("^sticky=([^;]+)")
          assert.is_nil(values[value])
          values[value] = true
          by_client[k] = port
          assert.equals(port, port_of("/b/cookie/", { Cookie = "sticky=" .. value }))
        end
        assert.is_true(distinct(by_client) >= 3)
      end)
    end)
  end)

  describe("latency", function()
    it("moves traffic away from a target slowed to 50 ms within seconds", function()
      local get = client()
      local count = {}
      for i = 1, 300 do
        local _, port = get("/b/lat/" .. i)
        count[port] = (count[port] or 0) + 1
      end
      -- Every target is tried; how evenly they share depends on the noise in
      -- their response times (one slow answer keeps a target out for a while).
      for i = 1, 3 do
        assert.is_true((count[ports[i]] or 0) >= 1, fmt("target %d got nothing of 300 while all "
          .. "were fast", i))
      end

      set_delay(1, 50)
      finally(function()
        set_delay(1, 0)
      end)
      -- Two seconds of requests, one at a time: round-robin would send the
      -- slow target a third of them.
      local slow, total = 0, 0
      local deadline = socket.gettime() + 2
      while socket.gettime() < deadline do
        local status, port = get("/b/lat/slow")
        assert.equals(200, status)
        total = total + 1
        if port == ports[1] then
          slow = slow + 1
        end
      end
      assert.is_true(total > 100, "only " .. total .. " requests in 2 s")
      assert.is_true(slow <= 3, fmt("the slow target got %d of %d", slow, total))
    end)
  end)
end)
