-- config_spec.lua: the declarative config: defaults, Kong entities, and errors with file:line:path.
local config = require("sluice.config")

local FIXTURES = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/fixtures"
local PLUGINS_DIR = require("sluice.paths").plugins

-- Loads YAML text; returns the normalized config, or fails showing the errors.
local function ok(text)
  local out, err = config.load_string(text, "t.yaml")
  assert(out, err)
  return out
end

-- Loads YAML text that must be refused; returns the error text.
local function bad(text)
  local out, err = config.load_string(text, "t.yaml")
  assert.is_nil(out)
  assert.is_string(err)
  return err
end

local HEAD = '_format_version: "3.0"\n'

describe("sluice.config", function()
  describe("defaults", function()
    it("fills server defaults", function()
      local s = ok(HEAD).server
      assert.same({ { text = "0.0.0.0:8000", addr = "0.0.0.0", port = 8000, family = 4,
                      reuseport = true, backlog = 511, where = "t.yaml:1: server.listen[0]" } },
        s.listen)
      assert.equal("auto", s.workers)
      assert.equal("sluice.pid", s.pid_file)
      assert.equal("stderr", s.error_log)
      assert.equal("notice", s.log_level)
      assert.equal("stdout", s.access_log)
      assert.equal(65536, s.access_log_buffer)
      assert.equal(8192, s.max_request_line)
      assert.equal(32768, s.max_header_size)
      assert.equal(100, s.max_headers)
      assert.equal(0, s.max_body_size)
      assert.equal(1024 * 1024, s.client_body_buffer_size)
      assert.equal(1024 * 1024, s.response_body_buffer_size)
      assert.equal(60000, s.client_header_timeout)
      assert.equal(60000, s.client_body_timeout)
      assert.equal(75000, s.keepalive_timeout)
      assert.equal(1000, s.keepalive_requests)
      assert.equal(60000, s.send_timeout)
      assert.equal(10000, s.shutdown_timeout)
      assert.equal(512, s.upstream_keepalive_pool_size)
      assert.equal(10000, s.upstream_keepalive_max_requests)
      assert.equal(60000, s.upstream_keepalive_idle_timeout)
      assert.same({}, s.trusted_ips)
    end)

    it("fills service and route defaults", function()
      local c = ok(HEAD .. [[
services:
- name: s
  host: example.internal
  routes:
  - paths: [/]
]])
      local s = c.services[1]
      -- No id in the file: one derived from the name, a version-5 UUID.
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-5%x%x%x%-[89ab]%x%x%x%-%x+$", s.id)
      local same = ok(HEAD .. "services:\n- name: s\n  host: other.internal\n").services[1]
      assert.equal(s.id, same.id)
      assert.not_equal(s.id, ok(HEAD .. "services:\n- name: t\n  host: h\n").services[1].id)
      s.id = nil
      assert.same({ name = "s", protocol = "http", host = "example.internal", port = 80,
                    retries = 5, retry_on = {}, retry_budget = 20, connect_timeout = 60000,
                    write_timeout = 60000, read_timeout = 60000,
                    where = "t.yaml:4: services[0].host" }, s)
      local r = c.routes[1]
      assert.same({ "http", "https" }, r.protocols)
      assert.equal(0, r.regex_priority)
      assert.is_true(r.strip_path)
      assert.is_false(r.preserve_host)
      assert.equal("v0", r.path_handling)
      assert.equal(426, r.https_redirect_status_code)
      assert.equal(1, r.service)
    end)

    it("treats a null as absent", function()
      local c = ok(HEAD .. "services:\n- host: h\n  retries: ~\n  path:\n")
      assert.equal(5, c.services[1].retries)
      assert.is_nil(c.services[1].path)
    end)

    it("reads durations and sizes in the server block", function()
      local s = ok(HEAD .. [[
server:
  keepalive_timeout: 5s
  shutdown_timeout: 1m30s
  client_header_timeout: 2500
  max_body_size: 10m
  max_header_size: 16k
  client_body_buffer_size: 64k
  response_body_buffer_size: 8m
]]).server
      assert.equal(5000, s.keepalive_timeout)
      assert.equal(90000, s.shutdown_timeout)
      assert.equal(2500, s.client_header_timeout)
      assert.equal(10 * 1024 * 1024, s.max_body_size)
      assert.equal(16384, s.max_header_size)
      assert.equal(65536, s.client_body_buffer_size)
      assert.equal(8 * 1024 * 1024, s.response_body_buffer_size)
    end)
  end)

  describe("services", function()
    local function service(fields)
      return ok(HEAD .. "services:\n- " .. fields .. "\n").services[1]
    end

    it("parses url into protocol, host, port and path", function()
      local s = service("url: http://api.internal:8080/v1/base")
      assert.equal("http", s.protocol)
      assert.equal("api.internal", s.host)
      assert.equal(8080, s.port)
      assert.equal("/v1/base", s.path)
      assert.equal("t.yaml:3: services[0].url", s.where)
      s = service("url: http://10.1.2.3")
      assert.equal(80, s.port)
      assert.is_nil(s.path)
      s = service("url: \"http://[::1]:9000/\"")
      assert.equal("::1", s.host)
      assert.equal(9000, s.port)
      assert.equal("/", s.path)
    end)

    it("refuses url next to host, and urls it cannot read", function()
      assert.equal("t.yaml:3: services[0].url: cannot be combined with 'host': give one or the "
        .. "other\n", bad(HEAD .. "services:\n- url: http://a\n  host: b\n"))
      assert.matches("services%[0%]%.url: invalid url \"api%.internal\": expected "
        .. "scheme://host", bad(HEAD .. "services:\n- url: api.internal\n"))
      assert.matches("services%[0%]%.url: invalid url .*query string",
        bad(HEAD .. "services:\n- url: http://a/x?y=1\n"))
    end)

    it("refuses https and other protocols, saying why", function()
      assert.equal("t.yaml:3: services[0].url: protocol 'https' is not supported yet: upstream "
        .. "TLS comes in a later release\n", bad(HEAD .. "services:\n- url: https://a\n"))
      assert.matches("services%[0%]%.protocol: protocol 'grpc' is not supported",
        bad(HEAD .. "services:\n- host: a\n  protocol: grpc\n"))
    end)

    it("needs a host", function()
      assert.equal("t.yaml:3: services[0].host: a service needs a 'url' or a 'host'\n",
        bad(HEAD .. "services:\n- name: a\n"))
    end)

    it("checks ports, paths, retries and timeouts", function()
      local err = bad(HEAD .. [[
services:
- host: a
  port: 0
  path: v1
  retries: 40000
  connect_timeout: 0
  read_timeout: "1x"
]])
      assert.matches("t.yaml:4: services%[0%]%.port: value should be between 1 and 65535", err)
      assert.matches("t.yaml:5: services%[0%]%.path: expected a string starting with '/', "
        .. 'got "v1"', err)
      assert.matches("t.yaml:6: services%[0%]%.retries: value should be between 0 and 32767",
        err)
      assert.matches("t.yaml:7: services%[0%]%.connect_timeout: value should be between 1 and "
        .. "2147483647 %(milliseconds%)", err)
      assert.matches('t.yaml:8: services%[0%]%.read_timeout: expected a duration', err)
    end)

    it("refuses upstream TLS settings", function()
      assert.matches("services%[0%]%.tls_verify: tls_verify is not supported yet",
        bad(HEAD .. "services:\n- host: a\n  tls_verify: true\n"))
    end)

    it("leaves out a disabled service and its routes", function()
      local c = ok(HEAD .. [[
services:
- name: off
  host: a
  enabled: false
  routes: [{ paths: [/off] }]
- name: on
  host: b
  routes: [{ paths: [/on] }]
routes:
- service: off
  paths: [/also-off]
]])
      assert.equal(1, #c.services)
      assert.equal("on", c.services[1].name)
      assert.equal(1, #c.routes)
      assert.equal("/on", c.routes[1].paths[1].value)
      assert.equal(1, c.routes[1].service)
    end)

    it("uses an upstream whose name is the service's host", function()
      local c = ok(HEAD .. [[
upstreams:
- name: Pool.Internal
services:
- host: pool.internal
- host: other.internal
]])
      assert.equal(1, c.services[1].upstream)
      assert.is_nil(c.services[2].upstream)
    end)
  end)

  describe("routes", function()
    it("normalizes hosts, methods, headers and paths", function()
      local r = ok(HEAD .. [[
services:
- host: a
  routes:
  - hosts: [API.Example.COM, "*.example.com", "example.*", "localhost:8000"]
    methods: [GET, PURGE]
    headers:
      X-Version: [V1, "~^v\\d+$"]
      accept: [json]
    paths: [/api, "~/users/\\d+$"]
]]).routes[1]
      assert.same({ "api.example.com", "*.example.com", "example.*", "localhost:8000" }, r.hosts)
      assert.same({ "GET", "PURGE" }, r.methods)
      assert.same({ { name = "accept", values = { "json" } },
                    { name = "x-version", values = { "v1", "~^v\\d+$" } } }, r.headers)
      assert.same({ value = "/api", regex = false,
                    where = "t.yaml:10: services[0].routes[0].paths[0]" }, r.paths[1])
      assert.same({ value = "/users/\\d+$", regex = true,
                    where = "t.yaml:10: services[0].routes[0].paths[1]" }, r.paths[2])
    end)

    it("names the line and path of a bad path", function()
      assert.equal("t.yaml:9: services[0].routes[1].paths[0]: expected a string starting with "
        .. "'/' or '~', got \"api\"\n", bad(HEAD .. [[
services:
- host: a
  routes:
  - paths:
    - /ok
  - name: second
    paths:
    - api
]]))
    end)

    it("refuses bad hosts, methods and headers", function()
      local err = bad(HEAD .. [[
services:
- host: a
  routes:
  - hosts: ["*.example.*", "ex*ample.com", "bad host"]
    methods: [get]
    headers: { Host: [a] }
]])
      assert.matches("routes%[0%]%.hosts%[0%]: invalid wildcard in \"%*%.example%.%*\": must "
        .. "have at most one wildcard", err)
      assert.matches("routes%[0%]%.hosts%[1%]: invalid wildcard in \"ex%*ample%.com\": must be "
        .. "placed at leftmost or rightmost label", err)
      assert.matches('routes%[0%]%.hosts%[2%]: invalid host "bad host"', err)
      assert.matches('routes%[0%]%.methods%[0%]: invalid method "get": methods are upper%-case',
        err)
      assert.matches("routes%[0%]%.headers%.Host: the Host header is matched with 'hosts'", err)
    end)

    it("needs one of hosts, paths, methods or headers", function()
      assert.equal("t.yaml:5: services[0].routes[0]: at least one of these fields must be "
        .. "non-empty: 'methods', 'hosts', 'headers', 'paths'\n",
        bad(HEAD .. "services:\n- host: a\n  routes:\n  - name: empty\n"))
    end)

    it("refuses protocols and stream fields sluice does not route", function()
      local err = bad(HEAD .. [[
services:
- host: a
  routes:
  - paths: [/]
    protocols: [grpc]
    snis: [a.example.com]
]])
      assert.matches('protocols%[0%]: protocol "grpc" is not supported', err)
      assert.matches("routes%[0%]%.snis: snis are not supported", err)
    end)

    it("attaches top-level routes to their service by name", function()
      local c = ok(HEAD .. [[
services:
- name: one
  host: a
- name: two
  host: b
routes:
- name: by-name
  service: two
  paths: [/two]
- name: by-table
  service: { name: one }
  paths: [/one]
]])
      assert.equal(2, c.routes[1].service)
      assert.equal(1, c.routes[2].service)
    end)

    it("refuses a service named in a nested route", function()
      assert.equal("t.yaml:6: services[0].routes[0].service: a route nested under a service "
        .. "belongs to that service: remove 'service'\n", bad(HEAD .. [[
services:
- name: s
  host: a
  routes:
  - service: s
    paths: [/]
]]))
    end)

    it("names the route and the service it cannot find", function()
      local err = bad(HEAD .. [[
services:
- name: one
  host: a
routes:
- name: lost
  service: three
  paths: [/]
- name: loose
  paths: [/]
]])
      assert.matches('t.yaml:7: routes%[0%]%.service: no service named "three"', err)
      assert.matches("t.yaml:9: routes%[1%]: a top%-level route needs 'service: NAME'", err)
    end)

    it("keeps routes in file order", function()
      local c = ok(HEAD .. [[
routes:
- name: first
  service: s
  paths: [/a]
services:
- name: s
  host: a
  routes:
  - name: second
    paths: [/b]
]])
      assert.equal("first", c.routes[1].name)
      assert.equal("second", c.routes[2].name)
    end)

    it("reads regex-looking paths of older formats as regexes, as Kong 3 does", function()
      local c = ok([[
_format_version: "1.1"
services:
- host: a
  routes:
  - paths: ["/users/\\d+", /plain]
]])
      assert.same({ "/users/\\d+", true }, { c.routes[1].paths[1].value,
                                           c.routes[1].paths[1].regex })
      assert.is_false(c.routes[1].paths[2].regex)
    end)
  end)

  describe("upstreams and targets", function()
    it("parses targets, nested and top-level", function()
      local c = ok(HEAD .. [[
upstreams:
- name: pool
  host_header: pool.example.com
  targets:
  - target: 10.0.0.1:8080
  - target: "[::1]"
    weight: 0
targets:
- target: localhost
  upstream: pool
]])
      local u = c.upstreams[1]
      assert.equal("pool", u.name)
      assert.equal("round-robin", u.algorithm)
      assert.equal("pool.example.com", u.host_header)
      assert.same({ host = "10.0.0.1", port = 8080, weight = 100,
                    where = "t.yaml:6: upstreams[0].targets[0].target" }, u.targets[1])
      assert.same({ "::1", 8000, 0 }, { u.targets[2].host, u.targets[2].port,
                                        u.targets[2].weight })
      assert.same({ "localhost", 8000 }, { u.targets[3].host, u.targets[3].port })
    end)

    it("refuses https health checks, which need upstream TLS", function()
      local err = bad(HEAD .. [[
upstreams:
- name: c
  healthchecks: { active: { type: https, healthy: { interval: 5 } } }
]])
      assert.matches("upstreams%[0%]%.healthchecks%.active%.type: type https is not supported "
        .. "yet: upstream TLS", err)
    end)

    it("fills in Kong's healthchecks defaults and the outlier fields", function()
      local c = ok(HEAD .. [[
upstreams:
- name: c
  healthchecks:
    active: { healthy: { interval: 5 }, headers: { X-Probe: [a, b] } }
    outlier: { consecutive_5xx: 5 }
    threshold: 25
]])
      local hc = c.upstreams[1].healthchecks
      assert.same({ 200, 302 }, hc.active.healthy.http_statuses)
      assert.same({ 429, 404, 500, 501, 502, 503, 504, 505 }, hc.active.unhealthy.http_statuses)
      assert.equal("/", hc.active.http_path)
      assert.equal(1, hc.active.timeout)
      assert.equal(10, hc.active.concurrency)
      assert.equal(5, hc.active.healthy.interval)
      assert.equal(0, hc.active.unhealthy.interval)
      assert.same({ 429, 500, 503 }, hc.passive.unhealthy.http_statuses)
      assert.equal(0, hc.passive.unhealthy.tcp_failures)
      assert.same({ "a", "b" }, hc.active.headers["X-Probe"])
      assert.equal(5, hc.outlier.consecutive_5xx)
      assert.equal(30, hc.outlier.base_ejection_time)
      assert.equal(300, hc.outlier.max_ejection_time)
      assert.equal(10, hc.outlier.max_ejection_percent)
      assert.equal(25, hc.threshold)
    end)

    it("names the field of a bad healthchecks value", function()
      local err = bad(HEAD .. [[
upstreams:
- name: c
  healthchecks:
    active: { unhealthy: { http_failures: 300 }, headers: { "bad name": [x] } }
    passive: { healthy: { http_statuses: [99] } }
    threshold: 101
    outlier: { max_ejection_percent: -1 }
]])
      assert.matches("upstreams%[0%]%.healthchecks%.active%.unhealthy%.http_failures: value "
        .. "should be between 0 and 255", err)
      assert.matches("upstreams%[0%]%.healthchecks%.active%.headers", err)
      assert.matches("upstreams%[0%]%.healthchecks%.passive%.healthy%.http_statuses%[0%]", err)
      assert.matches("upstreams%[0%]%.healthchecks%.threshold: value should be between 0 and 100",
        err)
      assert.matches("upstreams%[0%]%.healthchecks%.outlier%.max_ejection_percent", err)
      err = bad(HEAD .. [[
upstreams:
- name: c
  healthchecks:
    active: { headers: { X-Big: []] .. string.rep("x", 3000) .. [[] } }
]])
      assert.matches("upstreams%[0%]%.healthchecks%.active%.headers: the probe headers take "
        .. "3009 bytes; at most 2048 are allowed", err)
    end)

    it("accepts every algorithm and Kong's hashing fields", function()
      local c = ok(HEAD .. [[
upstreams:
- name: a
  algorithm: least-connections
- name: b
  algorithm: latency
- name: c
  algorithm: consistent-hashing
  hash_on: header
  hash_on_header: X-User
  hash_fallback: query_arg
  hash_fallback_query_arg: user
  slots: 100
- name: d
  algorithm: consistent-hashing
  hash_on: cookie
  hash_on_cookie: sticky
  hash_on_cookie_path: /app
- name: e
  algorithm: consistent-hashing
  hash_on: consumer
  hash_fallback: ip
]])
      local u = c.upstreams
      assert.same({ "least-connections", "latency", "consistent-hashing" },
        { u[1].algorithm, u[2].algorithm, u[3].algorithm })
      assert.same({ "header", "X-User", "query_arg", "user", 100 },
        { u[3].hash_on, u[3].hash_on_name, u[3].hash_fallback, u[3].hash_fallback_name,
          u[3].slots })
      assert.same({ "cookie", "sticky", "/app", "none" },
        { u[4].hash_on, u[4].hash_on_name, u[4].hash_on_cookie_path, u[4].hash_fallback })
      assert.same({ "consumer", "ip" }, { u[5].hash_on, u[5].hash_fallback })
      assert.is_nil(u[5].hash_on_name)
      assert.same({ "none", "none", 10000, "/" },
        { u[1].hash_on, u[1].hash_fallback, u[1].slots, u[1].hash_on_cookie_path })
    end)

    it("checks the hashing fields as Kong does", function()
      local function refused(fields, path, message)
        if not fields:find("algorithm:") then
          fields = "  algorithm: consistent-hashing\n" .. fields
        end
        local err = bad(HEAD .. "upstreams:\n- name: u\n" .. fields)
        assert.matches("t%.yaml:%d+: upstreams%[0%]" .. path:gsub("[%.%[%]]", "%%%0")
          .. ": " .. message, err)
      end
      refused("  hash_on: header\n", ".hash_on",
        "hashing on 'header' needs 'hash_on_header' to say which header")
      refused("  hash_on: cookie\n", ".hash_on",
        "hashing on 'cookie' needs 'hash_on_cookie' to say which cookie")
      refused("  hash_on: query_arg\n", ".hash_on", "hashing on 'query_arg' needs "
        .. "'hash_on_query_arg'")
      refused("  hash_on: uri_capture\n", ".hash_on", "hashing on 'uri_capture' needs "
        .. "'hash_on_uri_capture'")
      refused("  hash_on: ip\n  hash_fallback: header\n", ".hash_fallback",
        "hashing on 'header' needs 'hash_fallback_header' to say which header")
      refused("  hash_on: ip\n  hash_fallback: cookie\n", ".hash_fallback",
        "hashing on 'cookie' needs 'hash_on_cookie'")
      refused("  hash_fallback: ip\n", ".hash_fallback",
        "hash_fallback must be 'none' when hash_on is 'none'")
      refused("  hash_on: cookie\n  hash_on_cookie: c\n  hash_fallback: ip\n", ".hash_fallback",
        "hash_fallback must be 'none' when hash_on is 'cookie'")
      refused("  hash_on: ip\n  hash_fallback: ip\n", ".hash_fallback",
        "hash_fallback must differ from hash_on %('ip'%)")
      refused("  hash_on: path\n  hash_fallback: path\n", ".hash_fallback",
        "hash_fallback must differ from hash_on")
      refused("  hash_on: header\n  hash_on_header: X-A\n  hash_fallback: header\n"
        .. "  hash_fallback_header: x-a\n", ".hash_fallback_header",
        "hash_fallback_header must differ from hash_on_header")
      refused("  hash_on: bogus\n", ".hash_on", "expected one of")
      refused("  algorithm: random\n", ".algorithm", "expected one of")
      refused("  hash_on: header\n  hash_on_header: \"bad header\"\n", ".hash_on_header",
        "invalid header name \"bad header\"")
      refused("  hash_on: cookie\n  hash_on_cookie: \"a;b\"\n", ".hash_on_cookie",
        "invalid cookie name")
      refused("  hash_on_cookie_path: app\n", ".hash_on_cookie_path",
        "expected a path starting with '/'")
      refused("  slots: 5\n", ".slots", "")
      -- Two different headers, query arguments or captures are fine.
      ok(HEAD .. [[
upstreams:
- name: u
  algorithm: consistent-hashing
  hash_on: header
  hash_on_header: X-A
  hash_fallback: header
  hash_fallback_header: X-B
]])
    end)

    it("names targets whose upstream is unknown, and duplicates", function()
      local err = bad(HEAD .. [[
upstreams:
- name: pool
  targets:
  - target: 10.0.0.1:80
  - target: 10.0.0.1:80
targets:
- target: 10.0.0.2
  upstream: nowhere
]])
      assert.matches('t.yaml:6: upstreams%[0%]%.targets%[1%]%.target: duplicate target '
        .. '"10%.0%.0%.1:80" %(also upstreams%[0%]%.targets%[0%] at line 5%)', err)
      assert.matches('t.yaml:9: targets%[0%]%.upstream: no upstream named "nowhere"', err)
    end)
  end)

  describe("server", function()
    it("parses listen addresses and trusted ips", function()
      local s = ok(HEAD .. [[
server:
  listen: ["[::]:8443 reuseport backlog=4096", "127.0.0.1:9000 no_reuseport"]
  workers: 3
  trusted_ips: [10.0.0.0/8, 192.168.1.1, "2001:db8::/32"]
]]).server
      assert.same({ "[::]:8443", "::", 8443, 6, true, 4096 }, { s.listen[1].text,
        s.listen[1].addr, s.listen[1].port, s.listen[1].family, s.listen[1].reuseport,
        s.listen[1].backlog })
      assert.same({ "127.0.0.1", 9000, 4, false }, { s.listen[2].addr, s.listen[2].port,
                                                    s.listen[2].family, s.listen[2].reuseport })
      assert.equal(3, s.workers)
      assert.same({ "10.0.0.0", 8, 4 }, { s.trusted_ips[1].addr, s.trusted_ips[1].prefix,
                                          s.trusted_ips[1].family })
      assert.same({ 32, 128 }, { s.trusted_ips[2].prefix + 0, s.trusted_ips[3].prefix + 96 })
    end)

    it("refuses bad listen addresses, workers and ips", function()
      local err = bad(HEAD .. [[
server:
  listen: ["localhost:80", "0.0.0.0", "1.2.3.4:80 ssl", "1.2.3.4:80 fast"]
  workers: 0
  log_level: verbose
  trusted_ips: ["10.0.0.0/33", "::g"]
  access_log_buffer: lots
  client_body_buffer_size: -1
  admin_listen: 1
]])
      assert.matches('server%.listen%[0%]: invalid listen address "localhost:80"', err)
      assert.matches('server%.listen%[1%]: listen address "0%.0%.0%.0" needs a port', err)
      assert.matches("server%.listen%[2%]: listen option 'ssl' is not supported yet", err)
      assert.matches("server%.listen%[3%]: unknown listen option 'fast'", err)
      assert.matches('server%.workers: expected an integer from 1 to 1024 or "auto", got '
        .. "number 0", err)
      assert.matches('server%.log_level: expected one of: err, warn, notice, info, debug, got '
        .. '"verbose"', err)
      assert.matches("server%.trusted_ips%[0%]: invalid prefix length", err)
      assert.matches('server%.trusted_ips%[1%]: invalid address "::g"', err)
      assert.matches("server%.access_log_buffer: expected a size", err)
      assert.matches("server%.client_body_buffer_size: expected a size", err)
      assert.matches("server%.admin_listen: unknown field 'admin_listen'", err)
    end)
  end)

  describe("consumers", function()
    it("loads consumers with Kong's fields, deriving a stable id when there is none", function()
      local out = ok(HEAD .. [[
consumers:
- username: alice
  custom_id: crm-1
  tags: [gold]
- id: 0b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b
  username: bob
- custom_id: crm-3
]])
      assert.equal(3, #out.consumers)
      local alice, bob, third = out.consumers[1], out.consumers[2], out.consumers[3]
      assert.same({ "alice", "crm-1", { "gold" } }, { alice.username, alice.custom_id, alice.tags })
      assert.matches("^%x+%-%x+%-5%x+%-[89ab]%x+%-%x+$", alice.id)
      assert.equal(36, #alice.id)
      assert.equal("0b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b", bob.id)
      assert.is_nil(third.username)
      -- The same username gives the same id on every load; another gives another.
      assert.equal(alice.id, ok(HEAD .. "consumers: [{ username: alice }]\n").consumers[1].id)
      assert.equal(alice.id, config.consumer_id("alice"))
      assert.not_equal(alice.id, config.consumer_id(nil, "alice"))
      assert.not_equal(alice.id, third.id)
      assert.equal("t.yaml:3: consumers[0]: at least one of these fields must be non-empty: "
        .. "'username', 'custom_id'\n", bad(HEAD .. "consumers:\n- tags: [x]\n"))
    end)

    it("refuses duplicate usernames, custom ids and ids, naming both places", function()
      local err = bad(HEAD .. [[
consumers:
- username: alice
  custom_id: c1
- username: alice
- username: Alice
  custom_id: c1
- id: 0b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b
  username: x
- id: 0b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b
  username: y
- id: not-a-uuid
  username: z
]])
      assert.equal(table.concat({
        't.yaml:5: consumers[1].username: duplicate consumer username "alice" (also '
          .. "consumers[0] at line 3)",
        't.yaml:7: consumers[2].custom_id: duplicate consumer custom_id "c1" (also '
          .. "consumers[0] at line 3)",
        't.yaml:10: consumers[4].id: duplicate consumer id "0b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b" '
          .. "(also consumers[3] at line 8)",
        't.yaml:12: consumers[5].id: expected a UUID, got "not-a-uuid"',
        "",
      }, "\n"), err)
    end)

    it("collects credentials, nested or naming their consumer", function()
      local out = ok(HEAD .. [[
consumers:
- username: alice
  keyauth_credentials:
  - key: k1
  acls:
  - group: admins
  jwt_secrets: []
keyauth_credentials:
- key: k2
  consumer: alice
- key: k3
  consumer: { id: ]] .. config.consumer_id("alice") .. [[ }
basicauth_credentials:
- username: a
  password: p
  consumer: { username: alice }
]])
      local alice = out.consumers[1]
      assert.same({ "k1", "k2", "k3" }, { alice.keyauth_credentials[1].key,
        alice.keyauth_credentials[2].key, alice.keyauth_credentials[3].key })
      assert.equal("admins", alice.acls[1].group)
      assert.same({ id = alice.id }, alice.acls[1].consumer)
      -- basic-auth's daos.lua hashes a plain password at load.
      assert.equal("a", alice.basicauth_credentials[1].username)
      assert.not_equal("p", alice.basicauth_credentials[1].password)
      assert.same({}, alice.hmacauth_credentials)
      assert.same({}, alice.oauth2_credentials)

      local err = bad(HEAD .. [[
consumers:
- username: alice
  acls: [admins]
  mtls_auth_credentials: [{ subject_name: x }]
  groups: [{ name: gold }]
hmacauth_credentials:
- username: u
oauth2_credentials:
- name: app
  consumer: nobody
]])
      assert.equal(table.concat({
        't.yaml:4: consumers[0].acls[0]: expected a mapping, got string "admins"',
        "t.yaml:5: consumers[0].mtls_auth_credentials: mtls-auth credentials are not supported "
          .. "yet (TLS comes in a later release)",
        "t.yaml:6: consumers[0].groups: consumer groups are not supported yet",
        "t.yaml:8: hmacauth_credentials[0]: a top-level credential needs 'consumer: USERNAME' "
          .. "(or nest it under its consumer)",
        't.yaml:11: oauth2_credentials[0].consumer: no consumer with username or id "nobody"',
        "",
      }, "\n"), err)
    end)

    it("scopes plugins to consumers: nested, top-level, and next to a route or service", function()
      local out = ok(HEAD .. [[
services:
- name: s1
  host: a
  plugins:
  - name: request-termination
    consumer: bob
    config: { status_code: 401 }
  routes:
  - name: r1
    paths: [/]
    plugins:
    - name: request-termination
      consumer: { username: alice }
      config: { status_code: 402 }
consumers:
- username: alice
  plugins:
  - name: request-termination
    config: { status_code: 403 }
  - name: pre-function
    route: r1
    service: s1
- username: bob
plugins:
- name: request-termination
  consumer: ]] .. config.consumer_id("bob") .. [[

  route: r1
  config: { status_code: 404 }
- name: post-function
  consumer: alice
]])
      local by = {}
      for _, p in ipairs(out.plugins) do
        by[p.name .. ":" .. tostring(p.route) .. ":" .. tostring(p.service) .. ":"
          .. tostring(p.consumer)] = p
      end
      assert.equal(401, by["request-termination:nil:1:2"].config.status_code)
      assert.equal(402, by["request-termination:1:nil:1"].config.status_code)
      assert.equal(403, by["request-termination:nil:nil:1"].config.status_code)
      assert.equal(404, by["request-termination:1:nil:2"].config.status_code)
      assert.truthy(by["pre-function:1:1:1"])
      assert.truthy(by["post-function:nil:nil:1"])
    end)

    it("picks the most specific instance per route and consumer, as Kong does", function()
      -- One request-termination instance per scope, told apart by status code:
      -- 401 global, 402 service, 403 route, 404 consumer, 405 route+service,
      -- 406 service+consumer, 407 route+consumer, 408 route+service+consumer.
      local cfg = ok(HEAD .. [[
services:
- name: s1
  host: a
  plugins: [{ name: request-termination, config: { status_code: 402 } }]
  routes:
  - { name: r-route, paths: [/route] }
  - { name: r-both, paths: [/both] }
  - { name: r-plain, paths: [/plain] }
- name: s2
  host: b
  routes:
  - { name: r-other, paths: [/other] }
consumers:
- username: alice
  plugins: [{ name: request-termination, config: { status_code: 404 } }]
- username: bob
- username: carol
- username: dave
plugins:
- { name: request-termination, config: { status_code: 401 } }
- { name: request-termination, route: r-route, config: { status_code: 403 } }
- { name: request-termination, route: r-both, service: s1, config: { status_code: 405 } }
- { name: request-termination, service: s1, consumer: carol, config: { status_code: 406 } }
- { name: request-termination, route: r-route, consumer: bob, config: { status_code: 407 } }
- name: request-termination
  route: r-both
  service: s1
  consumer: dave
  config: { status_code: 408 }
]])
      local runner = require("sluice.runner")
      runner.init(cfg)
      local route_of = {}
      for i, r in ipairs(cfg.routes) do
        route_of[r.name] = i
      end
      local function status(route, username)
        local id = username and config.consumer_id(username)
        return runner.configs_for(route_of[route], id)["request-termination"].status_code
      end
      local want = {
        --         none alice bob  carol dave
        ["r-route"] = { 403, 404, 407, 406, 403 },
        ["r-both"] = { 405, 405, 405, 406, 408 },
        ["r-plain"] = { 402, 404, 402, 406, 402 },
        ["r-other"] = { 401, 404, 401, 401, 401 },
      }
      for route, codes in pairs(want) do
        local got = { status(route, nil) }
        for _, who in ipairs({ "alice", "bob", "carol", "dave" }) do
          got[#got + 1] = status(route, who)
        end
        assert.same(codes, got, route)
      end
      -- An id no consumer has, or a consumer without instances: the defaults.
      assert.equal(403, status("r-route", "nobody"))
    end)

    it("names the consumer it cannot find, and refuses the same scope twice", function()
      local err = bad(HEAD .. [[
consumers:
- username: alice
  plugins:
  - name: request-termination
    consumer: alice
  - name: post-function
    route: nowhere
plugins:
- name: request-termination
  consumer: nobody
- name: post-function
  consumer: { name: alice }
- name: pre-function
  consumer: alice
- name: pre-function
  consumer: { username: alice }
]])
      assert.equal(table.concat({
        "t.yaml:6: consumers[0].plugins[0].consumer: a plugin nested under a consumer belongs to "
          .. "it: remove this field",
        't.yaml:8: consumers[0].plugins[1].route: no route named "nowhere"',
        't.yaml:11: plugins[0].consumer: no consumer with username or id "nobody"',
        "t.yaml:13: plugins[1].consumer: expected a username or an id, or a mapping with "
          .. "'username' or 'id'",
        "t.yaml:16: plugins[3].name: plugin \"pre-function\" is configured twice for the same "
          .. "scope (also plugins[2] at line 14)",
        "",
      }, "\n"), err)
    end)
  end)

  describe("the document", function()
    it("needs a supported _format_version", function()
      assert.equal("t.yaml:1: _format_version: required field missing\n", bad("services: []\n"))
      assert.equal('t.yaml:1: _format_version: expected one of: 1.1, 2.1, 3.0, got "4.0"\n',
        bad('_format_version: "4.0"\n'))
      assert.equal("t.yaml:1: _format_version: expected a string, got number 3 (quote it: "
        .. '_format_version: "3.0")\n', bad("_format_version: 3.0\n"))
    end)

    it("refuses unknown keys, with a hint when one is close", function()
      assert.equal("t.yaml:2: service: unknown field 'service' (did you mean 'services'?)\n",
        bad(HEAD .. "service: []\n"))
    end)

    it("refuses unknown plugins, consumer groups and certificates at any level", function()
      ok(HEAD .. "plugins: []\nconsumer_groups: []\ncertificates: []\n")
      local err = bad(HEAD .. [[
plugins:
- name: no-such-plugin
consumer_groups:
- name: gold
certificates:
- cert: x
services:
- host: a
  plugins: [{ name: cors-unknown }]
  routes:
  - paths: [/]
    plugins: [{ name: key-auth-unknown }]
]])
      assert.matches("t.yaml:3: plugins%[0%]%.name: plugin 'no%-such%-plugin' not found", err)
      assert.matches("t.yaml:4: consumer_groups: consumer groups are not supported yet", err)
      assert.matches("t.yaml:6: certificates: certificates are not supported yet", err)
      assert.matches("t.yaml:10: services%[0%]%.plugins%[0%]%.name: plugin 'cors%-unknown' "
        .. "not found", err)
      assert.matches("t.yaml:13: services%[0%]%.routes%[0%]%.plugins%[0%]%.name: plugin "
        .. "'key%-auth%-unknown' not found", err)
    end)

    it("checks a plugin's config against its schema, with the path of the field", function()
      local err = bad(HEAD .. [[
services:
- host: a
  routes:
  - paths: [/]
    plugins:
    - name: request-termination
      config:
        status_code: "teapot"
        colour: blue
]])
      assert.matches("t.yaml:9: services%[0%]%.routes%[0%]%.plugins%[0%]%.config%.status_code: "
        .. "expected an integer", err)
      assert.matches("t.yaml:10: services%[0%]%.routes%[0%]%.plugins%[0%]%.config%.colour: "
        .. "unknown field 'colour'", err)
    end)

    it("resolves plugin scopes: global, service, route, and top-level references", function()
      local out = ok(HEAD .. [[
services:
- name: s1
  host: a
  plugins: [{ name: request-termination, config: { status_code: 401 } }]
  routes:
  - name: r1
    paths: [/]
    plugins: [{ name: request-termination, config: { status_code: 402 } }]
plugins:
- name: request-termination
  config: { status_code: 403 }
- name: pre-function
  route: r1
  enabled: false
- name: post-function
  service: s1
  priority: 7
]])
      local by = {}
      for _, p in ipairs(out.plugins) do
        by[p.name .. ":" .. tostring(p.route) .. ":" .. tostring(p.service)] = p
      end
      assert.equal(402, by["request-termination:1:nil"].config.status_code)
      assert.equal(401, by["request-termination:nil:1"].config.status_code)
      assert.equal(403, by["request-termination:nil:nil"].config.status_code)
      assert.is_nil(by["pre-function:1:nil"])
      assert.equal(7, by["post-function:nil:1"].priority)
    end)

    it("refuses an empty file and a top level that is not a mapping", function()
      assert.equal("t.yaml: the file is empty: it needs at least _format_version: \"3.0\"\n",
        bad(""))
      assert.equal("t.yaml:1: expected a mapping at the top level, got a list\n", bad("- a\n"))
    end)

    it("reports every error, one per line, in file order", function()
      local out, err, errors = config.load(FIXTURES .. "/bad.yaml")
      assert.is_nil(out)
      local file = FIXTURES .. "/bad.yaml"
      assert.equal(table.concat({
        file .. ':5: services[0].retries: expected an integer, got string "lots"',
        file .. ":11: services[0].routes[1].paths[0]: expected a string starting with '/' or "
          .. "'~', got \"api\"",
        file .. ':13: services[1].name: duplicate service name "api" (also services[0] at '
          .. "line 3)",
        file .. ":15: services[1].timeout: unknown field 'timeout'",
        file .. ':18: routes[0].service: no service named "missing"',
        file .. ":21: plugins[0].name: plugin 'no-such-plugin' not found (looked in "
          .. PLUGINS_DIR .. ")",
        "",
      }, "\n"), err)
      assert.equal(6, #errors)
      assert.equal(11, errors[2].line)
      assert.equal("services[0].routes[1].paths[0]", errors[2].path)
    end)

    it("validates plain tables, without lines", function()
      local out = config.validate({ _format_version = "3.0",
                                    services = { { name = "s", url = "http://a:81" } } })
      assert.equal(81, out.services[1].port)
      local _, err = config.validate({ _format_version = "3.0", services = { { port = 1 } } },
        nil, "inline")
      assert.equal("inline: services[0].host: a service needs a 'url' or a 'host'\n", err)
    end)

    it("loads a real Kong export", function()
      local c, err = config.load(FIXTURES .. "/kong.yml")
      assert(c, err)
      assert.equal(2, #c.services) -- "legacy" is disabled
      assert.same({ "catalog-read", "catalog-write", "checkout-route", "checkout-health" },
        { c.routes[1].name, c.routes[2].name, c.routes[3].name, c.routes[4].name })
      assert.equal(1, c.services[1].upstream)
      assert.equal(3, #c.upstreams[1].targets)
      assert.same({ "x-shop-admin", "true" }, { c.routes[2].headers[1].name,
                                                c.routes[2].headers[1].values[1] })
    end)

    it("passes the default config", function()
      local root = FIXTURES:match("^(.-)/?spec/config/fixtures$") or ""
      local c, err = config.load((root ~= "" and root .. "/" or "") .. "conf/sluice.yaml")
      assert(c, err)
      assert.equal("127.0.0.1", c.services[1].host)
      assert.equal(8080, c.services[1].port)
    end)
  end)
end)
