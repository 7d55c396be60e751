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
