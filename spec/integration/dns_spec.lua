-- DNS through the real binary: sluice.http to host names, answered by a real
-- DNS server on 127.0.0.1 (sluice.test's dns_server.lua), and the hosts file.
local helpers = require("spec.helpers")

local fmt = string.format

-- A route that calls the URL in ?url= and answers with what came back.
local CALL = [[
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - paths: ["/call"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local res, err = sluice.http.request({
                      url = sluice.request.get_query_arg("url"), timeout = 8 })
                    if not res then
                      return sluice.response.exit(502, { err = err })
                    end
                    local echo = sluice.json.decode(res.body) or {}
                    return sluice.response.exit(200, { status = res.status, addr = echo.addr })
                  end
]]

describe("DNS", function()
  local dns, a, hosts_dir

  setup(function()
    -- Two upstreams on one port, on two loopback addresses.
    a = helpers.start_upstream()
    helpers.start_upstream({ address = "127.0.0.2", port = a.port })
    hosts_dir = helpers.tmpdir()
    helpers.write_file(hosts_dir .. "/hosts", "127.0.0.2 from-hosts.test\n")
  end)

  teardown(function()
    helpers.stop_all()
    os.execute("rm -rf " .. hosts_dir)
  end)

  local s
  before_each(function()
    dns = helpers.start_dns({})
  end)

  local function start(server)
    server = server or {}
    server.dns_resolver = { "127.0.0.1:" .. dns.port }
    server.dns_hostsfile = hosts_dir .. "/hosts"
    s = helpers.start_sluice(CALL, { server = server })
    return s
  end

  local function call(name)
    local url = fmt("http://%s:%d/", name, a.port)
    local status, _, body = helpers.curl(fmt("'http://127.0.0.1:%d/call?url=%s'", s.port, url))
    return status, helpers.json(body) or {}
  end

  it("resolves a name and caches the answer for its TTL", function()
    dns.set({ "svc.test A 127.0.0.2 60" })
    start()
    for _ = 1, 5 do
      local status, out = call("svc.test")
      assert.equals(200, status, out.err)
      assert.equals("127.0.0.2", out.addr)
    end
    assert.equals(1, dns.queries("svc.test", "A"))
  end)

  it("asks again once the TTL has passed, and follows the new answer", function()
    dns.set({ "moving.test A 127.0.0.1 1" })
    start({ dns_stale_ttl = "0s" })
    local _, out = call("moving.test")
    assert.equals("127.0.0.1", out.addr)
    dns.set({ "moving.test A 127.0.0.2 1" })
    helpers.sleep(1.3)
    _, out = call("moving.test")
    assert.equals("127.0.0.2", out.addr)
    assert.equals(2, dns.queries("moving.test", "A"))
  end)

  it("takes turns among several addresses", function()
    dns.set({ "both.test A 127.0.0.1 60", "both.test A 127.0.0.2 60" })
    start()
    local seen = {}
    for _ = 1, 4 do
      local _, out = call("both.test")
      seen[#seen + 1] = out.addr
    end
    table.sort(seen)
    assert.same({ "127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2" }, seen)
  end)

  it("says which name does not exist, and remembers it for dns_not_found_ttl", function()
    start()
    local status, out = call("nope.test")
    assert.equals(502, status)
    assert.equals("could not resolve 'nope.test': Domain name not found", out.err)
    status, out = call("nope.test")
    assert.equals(502, status)
    assert.equals("could not resolve 'nope.test': Domain name not found", out.err)
    assert.equals(1, dns.queries("nope.test", "A"))
  end)

  it("keeps using the last answer while the server fails, within dns_stale_ttl", function()
    dns.set({ "flaky.test A 127.0.0.2 1" })
    start({ dns_stale_ttl = "30s" })
    assert.equals("127.0.0.2", select(2, call("flaky.test")).addr)
    dns.set({ "flaky.test SERVFAIL" })
    helpers.sleep(1.2)
    for _ = 1, 3 do
      local status, out = call("flaky.test")
      assert.equals(200, status, out.err)
      assert.equals("127.0.0.2", out.addr)
    end
    assert.is_truthy(helpers.wait_for(function()
      return (helpers.read_file(s.log) or "")
        :find("refreshing 'flaky.test' failed", 1, true)
    end, 3))
  end)

  it("times out on a server that never answers, without blocking other requests", function()
    dns.set({ "silent.test DROP", "svc.test A 127.0.0.2 60" })
    start()
    local out_file = s.dir .. "/silent.json"
    -- The silent lookup waits in the background while another request is served.
    helpers.run(fmt("(curl -s --max-time 15 'http://127.0.0.1:%d/call?url=http://silent.test:%d/'"
      .. " >%s 2>/dev/null </dev/null &)", s.port, a.port, out_file))
    local t0 = require("socket").gettime()
    local status = call("svc.test")
    assert.equals(200, status)
    assert.is_true(require("socket").gettime() - t0 < 1)
    assert.is_truthy(helpers.wait_for(function()
      return helpers.read_file(out_file) ~= nil and helpers.read_file(out_file) ~= ""
    end, 12))
    assert.matches("could not resolve 'silent.test'", helpers.json(helpers.read_file(out_file)).err)
  end)

  it("reads dns_hostsfile before asking DNS", function()
    start()
    local status, out = call("from-hosts.test")
    assert.equals(200, status, out.err)
    assert.equals("127.0.0.2", out.addr)
    assert.equals(0, dns.queries("from-hosts.test", "A"))
  end)

  it("lets set_target and sluice.redis take names too", function()
    local redis = require("sluice.test").redis()
    dns.set({ "backend.test A 127.0.0.2 60", "cache.test A 127.0.0.1 60" })
    local yaml = fmt([[
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - paths: ["/target"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local ok, err = sluice.service.set_target("Backend.test", %d)
                  if not ok then return sluice.response.exit(502, { err = err }) end
      - paths: ["/redis"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local red, err = sluice.redis.connect({ host = "cache.test", port = %d })
                  if not red then return sluice.response.exit(502, { err = err }) end
                  red:set("dns-spec", "seen")
                  local v = red:get("dns-spec")
                  red:set_keepalive()
                  return sluice.response.exit(200, { value = v })
]], a.port, redis.port)
    s = helpers.start_sluice(yaml, { server = {
      dns_resolver = { "127.0.0.1:" .. dns.port }, dns_hostsfile = hosts_dir .. "/hosts" } })
    local status, _, body = helpers.curl(fmt("'http://127.0.0.1:%d/target'", s.port))
    assert.equals(200, status, body)
    local echo = helpers.json(body)
    assert.equals("127.0.0.2", echo.addr)
    -- The upstream is named in Host, not its address.
    assert.equals("backend.test:" .. a.port, helpers.lower_headers(echo.headers).host)
    status, _, body = helpers.curl(fmt("'http://127.0.0.1:%d/redis'", s.port))
    assert.equals(200, status, body)
    assert.same({ value = "seen" }, helpers.json(body))
  end)

  it("refuses a dns_resolver that is not an address, naming the field", function()
    local dir = helpers.tmpdir()
    local file = dir .. "/bad.yaml"
    helpers.write_file(file, [[
_format_version: "3.0"
server:
  dns_resolver: ["dns.example.com"]
]])
    local out, code = helpers.run(fmt("%s check -c %s 2>&1", helpers.bin, file))
    os.execute("rm -rf " .. dir)
    assert.equals(1, code)
    assert.matches("bad.yaml:3: server.dns_resolver%[0%]: expected an IP address", out)
  end)
end)

-- Target names re-resolved while sluice runs: the master looks each name up
-- again when its TTL runs out and every worker follows (docs/upstreams.md#dns).
-- Both addresses are loopback (127.0.0.1 and 127.0.0.2) with an nginx on
-- each, on one port; names come from the spec's DNS server only.
describe("DNS: target names follow their records", function()
  local socket = require("socket")
  local dns, port, hosts_dir
  local up = {}

  before_each(function()
    up[1] = helpers.start_upstream()
    port = up[1].port
    up[2] = helpers.start_upstream({ address = "127.0.0.2", port = port })
    dns = helpers.start_dns({})
    hosts_dir = helpers.tmpdir()
    helpers.write_file(hosts_dir .. "/hosts", "\n")
    helpers.track({ dir = hosts_dir })
  end)

  after_each(function()
    helpers.stop_all()
  end)

  -- A service on the name itself (an implicit upstream), and a named
  -- upstream "pool" with the name as its target; /health answers with
  -- get_health("pool").
  local function start(name, upstream_extra, server)
    server = server or {}
    server.dns_resolver = { "127.0.0.1:" .. dns.port }
    server.dns_hostsfile = hosts_dir .. "/hosts"
    server.workers = server.workers or 2
    local yaml = fmt([[
_format_version: "3.0"
services:
  - name: direct
    url: http://%s:%d
    routes:
      - paths: ["/direct"]
  - name: pooled
    host: pool
    routes:
      - paths: ["/pool"]
  - name: health
    url: http://127.0.0.1:1
    routes:
      - paths: ["/health"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local h, err = sluice.upstream.get_health("pool")
                  return sluice.response.exit(200, h or { message = err })
upstreams:
  - name: pool
%s    targets:
      - target: %s:%d
]], name, port, upstream_extra or "", name, port)
    return helpers.start_sluice(yaml, { server = server })
  end

  -- One request on a new connection (so the workers take turns); returns
  -- its status and the address that answered.
  local function get(s, path, key)
    local res, err = helpers.request(s.port, fmt("GET %s HTTP/1.1\r\nHost: gw.test\r\n%s\r\n",
      path, key and ("X-Key: " .. key .. "\r\n") or ""))
    assert(res, err)
    local echo = res.status == 200 and helpers.json(res.body) or {}
    return res.status, echo.addr, res.body
  end

  local function addresses(s)
    local res = assert(helpers.request(s.port, "GET /health HTTP/1.1\r\nHost: gw.test\r\n\r\n"))
    local list = {}
    for _, t in ipairs(helpers.json(res.body).data or {}) do
      list[#list + 1] = t.address .. " " .. t.health
    end
    table.sort(list)
    return table.concat(list, ", ")
  end

  local function probes(u)
    local n = 0
    for _, line in ipairs(helpers.upstream_requests(u)) do
      n = n + (line:find("GET /probe", 1, true) and 1 or 0)
    end
    return n
  end

  it("moves traffic to the new address within the TTL, failing no request", function()
    dns.set({ "moving.test A 127.0.0.1 1" })
    local s = start("moving.test")
    for _, path in ipairs({ "/direct", "/pool" }) do
      for _ = 1, 4 do
        local status, addr, body = get(s, path)
        assert.equals(200, status, body)
        assert.equals("127.0.0.1", addr)
      end
    end
    dns.set({ "moving.test A 127.0.0.2 1" })
    local t0 = socket.gettime()
    -- Until ten requests in a row on each path reach the new address.
    local streak, requests = { ["/direct"] = 0, ["/pool"] = 0 }, 0
    while (streak["/direct"] < 10 or streak["/pool"] < 10) and socket.gettime() - t0 < 10 do
      for _, path in ipairs({ "/direct", "/pool" }) do
        local status, addr, body = get(s, path)
        requests = requests + 1
        assert.equals(200, status, body)
        streak[path] = addr == "127.0.0.2" and streak[path] + 1 or 0
      end
      socket.sleep(0.02)
    end
    local took = socket.gettime() - t0
    assert.is_true(streak["/direct"] >= 10 and streak["/pool"] >= 10,
      "traffic did not move in 10 s")
    -- TTL 1 s, then a lookup and a worker tick; generous for a loaded CI.
    assert.is_true(took < 5, "took " .. took .. " s")
    assert.is_true(requests > 20)
    -- The old address is gone for good: stopping its server costs nothing.
    assert.is_true(helpers.kill(up[1].pid, "TERM", 5))
    for _ = 1, 20 do
      local status, addr, body = get(s, "/pool")
      assert.equals(200, status, body)
      assert.equals("127.0.0.2", addr)
      status, addr, body = get(s, "/direct")
      assert.equals(200, status, body)
      assert.equals("127.0.0.2", addr)
    end
    assert.matches("upstream pool target moving.test:" .. port
      .. ": DNS answer changed: %+127.0.0.2 %-127.0.0.1 %(1 address%)", helpers.read_file(s.log))
  end)

  it("keeps the last addresses while the DNS server fails, forgets the name, or is gone", function()
    dns.set({ "steady.test A 127.0.0.2 1" })
    local s = start("steady.test")
    local function all_ok()
      for _ = 1, 6 do
        for _, path in ipairs({ "/direct", "/pool" }) do
          local status, addr, body = get(s, path)
          assert.equals(200, status, body)
          assert.equals("127.0.0.2", addr)
        end
      end
    end
    all_ok()
    local asked = dns.queries("steady.test", "A")
    dns.set({ "steady.test SERVFAIL" })
    assert.is_truthy(helpers.wait_for(function()
      return (helpers.read_file(s.log) or ""):find("cannot resolve it again", 1, true)
    end, 5))
    all_ok()
    dns.set({}) -- NXDOMAIN
    helpers.sleep(1.5)
    all_ok()
    helpers.kill(dns.pid, "KILL", 5) -- nobody answers any more
    helpers.sleep(2)
    all_ok()
    assert.is_true(dns.queries("steady.test", "A") > asked + 1, "the name was asked again")
    local log = helpers.read_file(s.log)
    -- Logged once per name, not once per failed lookup.
    local _, warnings = log:gsub("cannot resolve it again", "")
    assert.equals(2, warnings)
    assert.matches("upstream pool target steady.test:" .. port .. ": cannot resolve it again "
      .. "%(.-%); keeping its last 1 address", log)
  end)

  it("makes every address a target; addresses that come and go leave the others be", function()
    dns.set({ "multi.test A 127.0.0.1 1", "multi.test A 127.0.0.2 1" })
    local s = start("multi.test", [[
    healthchecks:
      active:
        http_path: /probe
        healthy: { interval: 0.2, successes: 1 }
        unhealthy: { interval: 0.2, tcp_failures: 1 }
]])
    local both = fmt("127.0.0.1:%d HEALTHY, 127.0.0.2:%d HEALTHY", port, port)
    assert.equals(both, addresses(s))
    local seen = {}
    for _ = 1, 20 do
      local status, addr, body = get(s, "/pool")
      assert.equals(200, status, body)
      seen[addr] = (seen[addr] or 0) + 1
    end
    assert.is_true((seen["127.0.0.1"] or 0) >= 5 and (seen["127.0.0.2"] or 0) >= 5)

    dns.set({ "multi.test A 127.0.0.2 1" })
    assert.equals(fmt("127.0.0.2:%d HEALTHY", port), helpers.wait_for(function()
      local now = addresses(s)
      return now == fmt("127.0.0.2:%d HEALTHY", port) and now
    end, 5))
    helpers.sleep(0.3) -- every worker has adopted it (100 ms ticks)
    for _ = 1, 10 do
      local status, addr, body = get(s, "/pool")
      assert.equals(200, status, body)
      assert.equals("127.0.0.2", addr)
    end
    -- The address that left is no longer probed; the one that stayed is,
    -- by one worker: about 2 s / 0.2 s probes, not twice that.
    local gone, stayed = probes(up[1]), probes(up[2])
    helpers.sleep(2)
    assert.is_true(probes(up[1]) <= gone + 1, "the address that left is still probed")
    local n = probes(up[2]) - stayed
    assert.is_true(n >= 3 and n <= 15, n .. " probes in 2 s")

    dns.set({ "multi.test A 127.0.0.1 1", "multi.test A 127.0.0.2 1" })
    assert.equals(both, helpers.wait_for(function()
      local now = addresses(s)
      return now == both and now
    end, 5))
    helpers.sleep(0.3)
    seen = {}
    for _ = 1, 20 do
      local status, addr, body = get(s, "/pool")
      assert.equals(200, status, body)
      seen[addr] = (seen[addr] or 0) + 1
    end
    assert.is_true((seen["127.0.0.1"] or 0) >= 5 and (seen["127.0.0.2"] or 0) >= 5)
  end)

  it("rebuilds the consistent-hashing ring: each key sticks to one address in every worker",
    function()
      dns.set({ "hashed.test A 127.0.0.1 1" })
      local s = start("hashed.test", [[
    algorithm: consistent-hashing
    hash_on: header
    hash_on_header: X-Key
]])
      for k = 1, 12 do
        local status, addr, body = get(s, "/pool", "key-" .. k)
        assert.equals(200, status, body)
        assert.equals("127.0.0.1", addr)
      end
      dns.set({ "hashed.test A 127.0.0.1 1", "hashed.test A 127.0.0.2 1" })
      assert.is_truthy(helpers.wait_for(function()
        return addresses(s):find("127.0.0.2", 1, true)
      end, 5))
      helpers.sleep(0.3)
      local owners = {}
      for k = 1, 24 do
        local first
        for _ = 1, 3 do
          local status, addr, body = get(s, "/pool", "key-" .. k)
          assert.equals(200, status, body)
          first = first or addr
          assert.equals(first, addr, "key-" .. k .. " moved between requests")
        end
        owners[first] = (owners[first] or 0) + 1
      end
      -- Both addresses own keys (each about half of 24).
      assert.is_true((owners["127.0.0.1"] or 0) >= 4 and (owners["127.0.0.2"] or 0) >= 4)
    end)

  it("still refuses a config whose name never resolved at load", function()
    local dir = helpers.tmpdir()
    helpers.track({ dir = dir })
    local file = dir .. "/nowhere.yaml"
    helpers.write_file(file, fmt([[
_format_version: "3.0"
server:
  dns_resolver: ["127.0.0.1:%d"]
  dns_hostsfile: "%s/hosts"
upstreams:
  - name: pool
    targets:
      - target: nowhere.test:80
]], dns.port, hosts_dir))
    local out, code = helpers.run(fmt("%s check -c %s 2>&1", helpers.bin, file))
    assert.equals(1, code)
    assert.matches('upstreams%[0%]%.targets%[0%]%.target: cannot resolve "nowhere.test": '
      .. "Domain name not found", out)
  end)

  it("refuses dns_min_ttl above dns_max_ttl, naming the field", function()
    local dir = helpers.tmpdir()
    helpers.track({ dir = dir })
    local file = dir .. "/ttl.yaml"
    helpers.write_file(file, [[
_format_version: "3.0"
server:
  dns_min_ttl: 10m
  dns_max_ttl: 1m
]])
    local out, code = helpers.run(fmt("%s check -c %s 2>&1", helpers.bin, file))
    assert.equals(1, code)
    assert.matches("server.dns_min_ttl: must not be more than dns_max_ttl", out)
  end)
end)
