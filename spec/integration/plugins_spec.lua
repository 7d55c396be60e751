-- Plugins through the real binary: the bundled plugins, the PDK as a plugin sees
-- it, chains (order, scopes, exits), errors, plugin_paths and the config check.
--
-- Test plugins live in spec/fixtures/plugins (spec-*), each small enough to read
-- next to the test that uses it, with key-check, the example of docs/plugins.md;
-- spec/fixtures/plugins-override holds a user's request-termination.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

-- The repository root, from this file's path, made absolute for plugin_paths.
local ROOT = debug.getinfo(1, "S").source:match("^@(.*)spec/integration/[^/]+$") or ""
ROOT = helpers.run("cd '" .. (ROOT ~= "" and ROOT or ".") .. "' && pwd"):gsub("%s+$", "")
local FIXTURES = ROOT .. "/spec/fixtures/plugins"
local OVERRIDES = ROOT .. "/spec/fixtures/plugins-override"

local JSON_TYPE = "application/json; charset=utf-8"

-- The server block every config here uses: one worker, logs in {DIR}.
local function server_block(plugin_paths)
  return fmt([[
server:
  listen: ["127.0.0.1:{PORT}"]
  workers: 1
  pid_file: "{DIR}/sluice.pid"
  access_log: "{DIR}/access.log"
  error_log: "{DIR}/error.log"
  plugin_paths: ["%s"]
]], plugin_paths)
end

local function error_log(s)
  return helpers.read_file(s.dir .. "/error.log") or ""
end

-- Waits until the error log holds `text` (log lines are written as they
-- happen, but the log phase runs after the client has its response).
local function wait_log(s, text)
  return helpers.wait_for(function()
    return error_log(s):find(text, 1, true) ~= nil
  end, 3)
end

-- The echo upstream's view of a request (see helpers.start_upstream).
local function echo_of(body)
  local echo = helpers.json(body)
  assert.is_table(echo, body)
  echo.h = helpers.lower_headers(echo.headers)
  return echo
end

-- An upstream location that answers with headers a header_filter can work on.
local LOCATIONS = [[
    location /resp-headers {
      content_by_lua_block {
        ngx.status = 201
        ngx.header["Content-Type"] = "text/plain"
        ngx.header["X-Up-Keep"] = "keep"
        ngx.header["X-Up-Drop"] = "drop"
        ngx.header["X-Up-Replace"] = "old"
        ngx.say("from upstream")
      }
    }
]]

-- The main config: one route per behaviour, all on the echo upstream.
local function main_config(up)
  return fmt([=[
_format_version: "3.0"
%s
plugins:
  - name: spec-scope
    config: { tag: global }
  - name: spec-scope
    route: scope-top
    config: { tag: top-level-route }
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: plain
        paths: ["/plain"]
      - name: getters
        paths: ["/getters"]
        plugins:
          - name: spec-echo
            config:
              headers: ["x-spec-header", "X-SPEC-HEADER", "x_spec_header", "X-Missing"]
              query_arg: b
      - name: captures
        paths: ['~/items/(?<id>\d+)/(\w+)$']
        plugins:
          - name: spec-echo
      - name: rt-message
        paths: ["/rt/message"]
        plugins:
          - name: request-termination
            config: { status_code: 403, message: "go away" }
      - name: rt-default
        paths: ["/rt/default"]
        plugins:
          - name: request-termination
      - name: rt-body
        paths: ["/rt/body"]
        plugins:
          - name: request-termination
            config: { status_code: 200, body: "<h1>hi</h1>", content_type: "text/html" }
      - name: rt-echo
        paths: ["/rt/echo"]
        plugins:
          - name: request-termination
            config: { status_code: 200, echo: true }
      - name: rt-trigger
        paths: ["/rt/trigger"]
        plugins:
          - name: request-termination
            config: { status_code: 401, trigger: x-stop }
      - name: exit-table
        paths: ["/exit/table"]
        plugins:
          - name: spec-exit
            config:
              status: 201
              json: { created: true, items: [1, 2] }
              headers: { X-Custom: custom-value }
              before: { X-Before: set-before-exit }
      - name: exit-string
        paths: ["/exit/string"]
        plugins:
          - name: spec-exit
            config:
              status: 202
              text: "plain words"
              headers: { Content-Type: text/plain, X-Custom: custom-value }
      - name: exit-empty
        paths: ["/exit/empty"]
        plugins:
          - name: spec-exit
            config: { status: 204 }
      - name: exit-error
        paths: ["/exit/error"]
        plugins:
          - name: spec-exit
            config: { status: 429, error: true, message: "slow down" }
      - name: exit-crlf
        paths: ["/exit/crlf"]
        plugins:
          - name: spec-exit
            config: { status: 200, text: "x", headers: { X-A: "v\r\nX-Injected: yes" } }
      - name: exit-bad-name
        paths: ["/exit/bad-name"]
        plugins:
          - name: spec-exit
            config: { status: 200, text: "x", headers: { "Bad Name": "v" } }
      - name: exit-content-length
        paths: ["/exit/content-length"]
        plugins:
          - name: spec-exit
            config: { status: 200, text: "hello", headers: { Content-Length: "2" } }
      - name: exit-stops
        paths: ["/exit/stops"]
        plugins:
          - name: spec-order-low
          - name: spec-exit
            config: { status: 200, text: "stopped" }
          - name: spec-order-high
      - name: edit
        paths: ["/edit"]
        plugins:
          - name: pre-function
            config:
              access:
                - 'sluice.service.request.set_header("X-Set", "set")'
                - 'sluice.service.request.add_header("X-Add", "one")'
                - 'sluice.service.request.add_header("X-Add", "two")'
                - 'sluice.service.request.clear_header("X-Drop")'
                - 'sluice.service.request.set_headers({ ["X-Multi"] = { "m1", "m2" },
                     ["X-Single"] = "s" })'
                - 'sluice.service.request.set_header("Host", "changed.test")'
                - 'sluice.service.request.set_method("PUT")'
                - 'sluice.service.request.set_path("/rewritten/path")'
                - 'sluice.service.request.set_raw_query("a=1&b=2")'
      - name: edit-query
        paths: ["/edit-query"]
        plugins:
          - name: pre-function
            config:
              access:
                - 'sluice.service.request.set_query({ b = "x y", a = { "1", "2" }, flag = true,
                     off = false })'
      - name: ctx
        paths: ["/ctx"]
        plugins:
          - name: spec-ctx-reader
          - name: spec-ctx-writer
      - name: order
        paths: ["/order/default"]
        plugins:
          - name: spec-order-low
          - name: spec-order-high
          - name: spec-order-mid
      - name: order-override
        paths: ["/order/override"]
        plugins:
          - name: spec-order-low
            priority: 1000
          - name: spec-order-high
          - name: spec-order-mid
      - name: order-disabled
        paths: ["/order/disabled"]
        plugins:
          - name: spec-order-low
          - name: spec-order-high
          - name: spec-order-mid
            enabled: false
      - name: scope-top
        paths: ["/scope/top"]
      - name: sleep
        paths: ["/sleep"]
        plugins:
          - name: spec-sleep
            config: { seconds: 0.3 }
      - name: boom-access
        paths: ["/boom/access"]
        plugins:
          - name: spec-boom
            config: { phase: access }
      - name: boom-header-filter
        paths: ["/boom/header-filter"]
        plugins:
          - name: spec-boom
            config: { phase: header_filter }
      - name: boom-log
        paths: ["/boom/log"]
        plugins:
          - name: spec-boom
            config: { phase: log }
          - name: spec-logger
      - name: boom-after-sleep
        paths: ["/boom/after-sleep"]
        plugins:
          - name: spec-order-high
          - name: post-function
            config:
              access:
                - |
                  sluice.sleep(0.3)
                  sluice.log.notice("woke up after the sleep")
                  error("failed after the sleep")
      - name: misuse-header-filter
        paths: ["/misuse/header-filter"]
        plugins:
          - name: pre-function
            config:
              header_filter: ['sluice.response.exit(200, "too late")']
      - name: misuse-log
        paths: ["/misuse/log"]
        plugins:
          - name: pre-function
            config:
              log: ['sluice.response.exit(200, "far too late")']
          - name: post-function
            config:
              log: ['sluice.service.request.set_header("X-Far-Too-Late", "1")']
      - name: misuse-response-crlf
        paths: ["/misuse/response-crlf"]
        plugins:
          - name: spec-misuse
            config: { call: response_crlf }
      - name: misuse-service-crlf
        paths: ["/misuse/service-crlf"]
        plugins:
          - name: spec-misuse
            config: { call: service_crlf }
      - name: misuse-exit-status
        paths: ["/misuse/exit-status"]
        plugins:
          - name: spec-misuse
            config: { call: exit_status }
      - name: hf-on-exit
        paths: ["/hf-on-exit"]
        plugins:
          - name: spec-ctx-writer
          - name: spec-exit
            config: { status: 200, text: "exited" }
      - name: logged
        paths: ["/logged"]
        plugins:
          - name: spec-logger
      - name: logged-exit
        paths: ["/logged-exit"]
        plugins:
          - name: spec-logger
          - name: spec-exit
            config: { status: 418, text: "teapot" }
      - name: log-service-status
        paths: ["/log-service-status"]
        plugins:
          - name: spec-exit
            config: { status: 418, text: "teapot" }
          - name: post-function
            config:
              log: ['sluice.log.notice("service status after exit: ",
                      tostring(sluice.service.response.get_status()))']
  - name: scoped
    url: http://127.0.0.1:%d
    plugins:
      - name: spec-scope
        config: { tag: service }
    routes:
      - name: scope-route
        paths: ["/scope/route"]
        plugins:
          - name: spec-scope
            config: { tag: route }
      - name: scope-service
        paths: ["/scope/service"]
      - name: scope-disabled
        paths: ["/scope/disabled"]
        plugins:
          - name: spec-scope
            enabled: false
            config: { tag: disabled-route }
  - name: resp
    url: http://127.0.0.1:%d/resp-headers
    routes:
      - name: resp-edit
        paths: ["/resp/edit"]
        plugins:
          - name: pre-function
            config:
              header_filter:
                - 'sluice.response.set_header("X-Up-Replace", "new")'
                - 'sluice.response.clear_header("X-Up-Drop")'
                - 'sluice.response.add_header("X-Up-Keep", "added")'
                - 'sluice.response.set_header("X-Seen-Status", sluice.response.get_status())'
                - 'sluice.response.set_header("X-Seen-Keep",
                     sluice.response.get_header("x-up-keep"))'
                - 'sluice.response.set_header("X-Seen-Service-Status",
                     sluice.service.response.get_status())'
                - 'sluice.response.set_header("X-Seen-Type",
                     sluice.response.get_headers()["content-type"])'
      - name: resp-status
        paths: ["/resp/status"]
        plugins:
          - name: pre-function
            config:
              header_filter:
                - 'sluice.response.set_status(202)'
                - 'sluice.response.set_header("X-Service-Status",
                     sluice.service.response.get_status())'
]=], server_block(FIXTURES), up.port, up.port, up.port)
end

describe("plugins: the default config", function()
  local s

  setup(function()
    -- conf/sluice.yaml as shipped; start_sluice adds listen, pid file and logs.
    local text = assert(helpers.read_file(ROOT .. "/conf/sluice.yaml"))
    assert.is_nil(text:find("\nserver:"), "conf/sluice.yaml now has a server block")
    s = helpers.start_sluice(text)
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("answers /hello from Lua with nothing else running", function()
    local status, headers, body = helpers.curl(fmt("http://127.0.0.1:%d/hello", s.port))
    assert.equals(200, status)
    assert.equals(JSON_TYPE, headers["content-type"])
    assert.same({ message = "hello from sluice" }, helpers.json(body))
    assert.matches("^sluice %d+%.%d+%.%d+$", headers["x-served-by"])
  end)

  it("proxies every other path to 127.0.0.1:8080 (502 while nothing listens there)", function()
    local status = helpers.curl(fmt("http://127.0.0.1:%d/elsewhere", s.port))
    assert.is_true(status == 502 or status == 200, "status " .. tostring(status))
  end)
end)

describe("plugins:", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream({ locations = LOCATIONS })
    s = helpers.start_sluice(main_config(upstream))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  -- curl against sluice: `args` go before the URL.
  local function curl(path, args)
    return helpers.curl(fmt("%s 'http://127.0.0.1:%d%s'", args or "", s.port, path))
  end

  describe("request-termination", function()
    it("answers with status_code and message as JSON", function()
      local status, headers, body = curl("/rt/message?probe=rt-message")
      assert.equals(403, status)
      assert.equals(JSON_TYPE, headers["content-type"])
      assert.same({ message = "go away" }, helpers.json(body))
      assert.is_false(helpers.upstream_saw(upstream, "probe=rt-message"))
    end)

    it("defaults to 503 Service unavailable", function()
      local status, _, body = curl("/rt/default")
      assert.equals(503, status)
      assert.same({ message = "Service unavailable" }, helpers.json(body))
    end)

    it("sends a raw body with its content_type", function()
      local status, headers, body = curl("/rt/body")
      assert.equals(200, status)
      assert.equals("text/html", headers["content-type"])
      assert.equals("11", headers["content-length"])
      assert.equals("<h1>hi</h1>", body)
    end)

    it("echo answers with the request as JSON", function()
      local status, _, body = curl("/rt/echo/x?a=1&b=2", "-H 'X-Echo-Me: yes'")
      assert.equals(200, status)
      local echo = helpers.json(body)
      assert.equals("request-termination echo", echo.message)
      assert.equals("GET", echo.request.method)
      assert.equals("/rt/echo/x", echo.request.path)
      assert.same({ a = "1", b = "2" }, echo.request.query)
      assert.equals("yes", echo.request.headers["x-echo-me"])
      assert.equals("127.0.0.1", echo.request.host)
    end)

    it("with a trigger, lets requests without the header or argument through", function()
      local status, _, body = curl("/rt/trigger")
      assert.equals(200, status)
      assert.equals("/", echo_of(body).uri)
    end)

    it("with a trigger, terminates when the header is present", function()
      local status, _, body = curl("/rt/trigger", "-H 'X-Stop: 1'")
      assert.equals(401, status)
      assert.same({ message = "Unauthorized" }, helpers.json(body))
    end)

    it("with a trigger, terminates when the query argument is present", function()
      assert.equals(401, (curl("/rt/trigger?x-stop=1")))
      assert.equals(401, (curl("/rt/trigger?x-stop")))
      assert.equals(200, (curl("/rt/trigger?x-go=1")))
    end)
  end)

  describe("sluice.response.exit", function()
    it("sends a table body as JSON with its status and headers", function()
      local status, headers, body = curl("/exit/table")
      assert.equals(201, status)
      assert.equals(JSON_TYPE, headers["content-type"])
      assert.same({ created = true, items = { 1, 2 } }, helpers.json(body))
      assert.equals("custom-value", headers["x-custom"])
      assert.equals(tostring(#body), headers["content-length"])
    end)

    it("keeps response headers set before the exit", function()
      local _, headers = curl("/exit/table")
      assert.equals("set-before-exit", headers["x-before"])
    end)

    it("sends a string body as it is, with the headers given", function()
      local status, headers, body = curl("/exit/string")
      assert.equals(202, status)
      assert.equals("text/plain", headers["content-type"])
      assert.equals("custom-value", headers["x-custom"])
      assert.equals("plain words", body)
    end)

    it("sends no body when none is given", function()
      local status, _, body = curl("/exit/empty")
      assert.equals(204, status)
      assert.equals("", body)
    end)

    it("sluice.response.error sends Kong's {message} body", function()
      local status, headers, body = curl("/exit/error")
      assert.equals(429, status)
      assert.equals(JSON_TYPE, headers["content-type"])
      assert.same({ message = "slow down" }, helpers.json(body))
    end)

    it("stops the chain: plugins after the exiting one do not run", function()
      local status, headers, body = curl("/exit/stops?probe=exit-stops")
      assert.equals(200, status)
      assert.equals("stopped", body)
      -- spec-order-high (300) ran before spec-exit (150); spec-order-low (100) did not.
      assert.equals("high", headers["x-order"])
      assert.is_false(helpers.upstream_saw(upstream, "probe=exit-stops"))
    end)

    it("refuses a header value with CR or LF: no header injection", function()
      local status, headers = curl("/exit/crlf")
      assert.is_nil(headers["x-injected"])
      assert.equals(500, status)
    end)

    it("refuses an invalid header name", function()
      local status, headers = curl("/exit/bad-name")
      assert.is_nil(headers["bad name"])
      assert.equals(500, status)
    end)

    it("sends one Content-Length, the body's, whatever the headers say", function()
      local c = helpers.connect(s.port)
      assert(c:send("GET /exit/content-length HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
      local data, _, partial = c.sock:receive("*a")
      c:close()
      local head = (data or partial):lower():match("^(.-)\r\n\r\n")
      local lengths = {}
      for v in head:gmatch("\ncontent%-length: *([^\r]*)") do
        lengths[#lengths + 1] = v
      end
      assert.same({ "5" }, lengths)
    end)

    it("still runs header_filter on the response, as Kong does", function()
      local status, headers, body = curl("/hf-on-exit")
      assert.equals(200, status)
      assert.equals("exited", body)
      -- spec-exit (priority 150) ended access before spec-ctx-writer (60) ran,
      -- but the writer's header_filter still ran on the exit's response.
      assert.equals("nil", headers["x-writer-later"])
    end)

    it("leaves the connection usable for the next request", function()
      local c = helpers.connect(s.port)
      for _ = 1, 3 do
        assert(c:send("GET /exit/table HTTP/1.1\r\nHost: t\r\n\r\n"))
        local res, err = c:read_response()
        assert.is_truthy(res, err)
        assert.equals(201, res.status)
        assert.same({ created = true, items = { 1, 2 } }, helpers.json(res.body))
      end
      c:close()
    end)
  end)

  describe("sluice.service.request", function()
    it("set_header, add_header, clear_header and set_headers change what the upstream sees",
      function()
        local status, _, body = curl("/edit/x?q=1", "-H 'X-Drop: gone' -H 'X-Set: original' "
          .. "-H 'X-Multi: client'")
        assert.equals(200, status)
        local h = echo_of(body).h
        assert.equals("set", h["x-set"])
        assert.same({ "one", "two" }, h["x-add"])
        assert.is_nil(h["x-drop"])
        assert.same({ "m1", "m2" }, h["x-multi"])
        assert.equals("s", h["x-single"])
        assert.equals("changed.test", h["host"])
      end)

    it("set_method, set_path and set_raw_query change the request line", function()
      local _, _, body = curl("/edit/x?q=1")
      local echo = echo_of(body)
      assert.equals("PUT", echo.method)
      assert.equals("/rewritten/path?a=1&b=2", echo.uri)
    end)

    it("set_query encodes a table, sorted by name", function()
      local _, _, body = curl("/edit-query?old=1")
      assert.equals("/?a=1&a=2&b=x%20y&flag", echo_of(body).uri)
    end)
  end)

  describe("header_filter", function()
    it("sets, clears and adds headers of the proxied response", function()
      local status, headers, body = curl("/resp/edit")
      assert.equals(201, status)
      assert.equals("from upstream\n", body)
      assert.equals("new", headers["x-up-replace"])
      assert.is_nil(headers["x-up-drop"])
      assert.equals("keep, added", headers["x-up-keep"])
    end)

    it("reads the upstream's status and headers", function()
      local _, headers = curl("/resp/edit")
      assert.equals("201", headers["x-seen-status"])
      assert.equals("201", headers["x-seen-service-status"])
      assert.equals("keep", headers["x-seen-keep"])
      assert.equals("text/plain", headers["x-seen-type"])
    end)

    it("set_status changes the status the client gets, not the body", function()
      local status, headers, body = curl("/resp/status")
      assert.equals(202, status)
      assert.equals("from upstream\n", body)
      assert.equals("keep", headers["x-up-keep"])
    end)

    it("set_status sends the new status's own reason phrase", function()
      local res, err = helpers.request(s.port,
        "GET /resp/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
      assert.is_truthy(res, err)
      assert.equals("HTTP/1.1 202 Accepted", res.status_line)
    end)

    it("service.response.get_status still returns the upstream's status after set_status",
      function()
        local _, headers = curl("/resp/status")
        assert.equals("201", headers["x-service-status"])
      end)
  end)

  describe("sluice.request getters", function()
    local function getters(path, args)
      local status, _, body = curl(path, args)
      assert.equals(200, status, body)
      return assert(helpers.json(body), body)
    end

    it("method, host, port, paths and query", function()
      local g = getters("/getters/a%7eb/../c%2fd?a=1&b=2&b=3&flag&sp=x+y%21",
        "--path-as-is -X DELETE -H 'Host: Getters.TEST:9999'")
      assert.equals("DELETE", g.method)
      assert.equals("http", g.scheme)
      assert.equals("getters.test", g.host)
      assert.equals(s.port, g.port)
      assert.equals("/getters/a%7eb/../c%2fd", g.raw_path)
      assert.equals("/getters/c%2Fd", g.path)
      assert.equals("a=1&b=2&b=3&flag&sp=x+y%21", g.raw_query)
      assert.equals("/getters/a%7eb/../c%2fd?a=1&b=2&b=3&flag&sp=x+y%21", g.path_with_query)
      assert.same({ a = "1", b = { "2", "3" }, flag = true, sp = "x y!" }, g.query)
      assert.equals("2", g.query_arg)
    end)

    it("an HTTP/1.0 request without Host has an empty host", function()
      local res, err = helpers.request(s.port, "GET /getters HTTP/1.0\r\n\r\n")
      assert.is_truthy(res, err)
      assert.equals(200, res.status, res.body)
      assert.equals("", helpers.json(res.body).host)
    end)

    it("an absent query is an empty string and an empty table", function()
      local g = getters("/getters")
      assert.equals("", g.raw_query)
      assert.same({}, g.query)
      assert.equals("/getters", g.path_with_query)
      assert.is_nil(g.query_arg)
    end)

    it("get_header ignores case and reads underscores as dashes", function()
      local g = getters("/getters", "-H 'X-Spec-Header: hv' -H 'X-Multi: 1' -H 'X-Multi: 2'")
      assert.equals("hv", g.header["x-spec-header"])
      assert.equals("hv", g.header["X-SPEC-HEADER"])
      assert.equals("hv", g.header["x_spec_header"])
      assert.is_nil(g.header["X-Missing"])
    end)

    it("get_headers has lower-case names and lists repeated headers", function()
      local g = getters("/getters", "-H 'X-Spec-Header: hv' -H 'X-Multi: 1' -H 'X-Multi: 2'")
      assert.equals("hv", g.all_headers["x-spec-header"])
      assert.same({ "1", "2" }, g.all_headers["x-multi"])
      assert.equals(fmt("127.0.0.1:%d", s.port), g.all_headers["host"])
    end)

    -- A request whose head and body arrive in one packet, so the body is all
    -- there when access runs.
    local function post(content_type, body)
      local res, err = helpers.request(s.port, fmt("POST /getters HTTP/1.1\r\nHost: t\r\n"
        .. "Content-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
        content_type, #body, body))
      assert.is_truthy(res, err)
      assert.equals(200, res.status, res.body)
      return assert(helpers.json(res.body), res.body)
    end

    it("get_raw_body returns the body", function()
      local g = post("application/json", '{"k":[1,2],"s":"v"}')
      assert.equals("POST", g.method)
      assert.equals('{"k":[1,2],"s":"v"}', g.raw_body)
    end)

    it("get_body decodes a JSON body", function()
      local g = post("application/json", '{"k":[1,2],"s":"v"}')
      assert.same({ k = { 1, 2 }, s = "v" }, g.body)
    end)

    it("get_body decodes a form body", function()
      local g = post("application/x-www-form-urlencoded", "a=1&b=2&b=3&c&d=x+y%26")
      assert.same({ a = "1", b = { "2", "3" }, c = true, d = "x y&" }, g.body)
    end)

    it("get_body returns nil and an error for invalid JSON or an unknown type", function()
      local g = post("application/json", "{nope")
      assert.is_nil(g.body)
      assert.matches("^invalid JSON body", g.body_err)
      g = post("text/plain", "words")
      assert.is_nil(g.body)
      assert.equals("unsupported content type 'text/plain'", g.body_err)
      assert.equals("words", g.raw_body)
    end)

    it("get_raw_body is empty and get_body an error without a body", function()
      local g = getters("/getters")
      assert.equals("", g.raw_body)
      assert.is_nil(g.body)
      assert.equals("unsupported content type ''", g.body_err)
    end)

    it("get_uri_captures returns a regex route's captures", function()
      local g = getters("/items/42/edit")
      assert.same({ unnamed = { "42", "edit" }, named = { id = "42" } }, g.captures)
      g = getters("/getters")
      assert.same({ unnamed = {}, named = {} }, g.captures)
    end)

    it("client.get_ip, client.get_port and get_start_time", function()
      local before = socket.gettime() * 1000
      local g = getters("/getters")
      assert.equals("127.0.0.1", g.client_ip)
      assert.is_true(g.client_port > 0 and g.client_port < 65536)
      assert.is_true(g.start_time >= before - 1000 and g.start_time <= socket.gettime() * 1000,
        "start_time " .. tostring(g.start_time))
    end)
  end)

  describe("sluice.ctx", function()
    it("shared is seen by every plugin of a request, in every phase", function()
      local status, headers = curl("/ctx")
      assert.equals(200, status)
      assert.equals("from-writer", headers["x-shared"])
      assert.equals("from-writer", headers["x-shared-later"])
    end)

    it("plugin is each plugin's own and lasts across its phases", function()
      local _, headers = curl("/ctx")
      assert.equals("nil", headers["x-reader-sees"])
      assert.equals("writer-secret", headers["x-writer-later"])
    end)

    it("starts empty for every request on a connection", function()
      local c = helpers.connect(s.port)
      for i = 1, 4 do
        assert(c:send("GET /ctx HTTP/1.1\r\nHost: t\r\n\r\n"))
        local res, err = c:read_response()
        assert.is_truthy(res, err)
        assert.equals(200, res.status)
        assert.equals("no", res.headers["x-leak"], "request " .. i)
        assert.equals("from-writer", res.headers["x-shared"])
      end
      c:close()
    end)
  end)

  describe("sluice.sleep", function()
    it("does not block the worker: 5 requests sleeping 0.3 s end together", function()
      local out = {}
      local cmd = {}
      for i = 1, 5 do
        out[i] = fmt("%s/sleep.%d", s.dir, i)
        cmd[i] = fmt("curl -s -o /dev/null -w '%%{http_code}' --max-time 10 "
          .. "http://127.0.0.1:%d/sleep >%s &", s.port, out[i])
      end
      local t0 = socket.gettime()
      helpers.run(table.concat(cmd, " ") .. " wait")
      local elapsed = socket.gettime() - t0
      for i = 1, 5 do
        assert.equals("200", helpers.read_file(out[i]))
      end
      assert.is_true(elapsed >= 0.3, fmt("took %.3f s", elapsed))
      assert.is_true(elapsed < 1.0, fmt("took %.3f s: the sleeps ran one after another", elapsed))
    end)

    it("resumes the request that slept", function()
      local status, _, body = curl("/sleep")
      assert.equals(200, status)
      assert.same({ slept = 0.3, worker = 0 }, helpers.json(body))
    end)
  end)

  describe("order", function()
    it("runs higher PRIORITY first", function()
      local status, headers = curl("/order/default")
      assert.equals(200, status)
      assert.equals("high, mid, low", headers["x-order"])
    end)

    it("an instance's priority overrides the handler's PRIORITY", function()
      local _, headers = curl("/order/override")
      assert.equals("low, high, mid", headers["x-order"])
    end)

    it("an instance with enabled: false does not run", function()
      local _, headers = curl("/order/disabled")
      assert.equals("high, low", headers["x-order"])
    end)
  end)

  describe("scopes", function()
    it("a global instance runs on routes with no other instance of the plugin", function()
      local _, headers = curl("/plain")
      assert.equals("global", headers["x-scope"])
    end)

    it("a service instance beats the global one", function()
      local _, headers = curl("/scope/service")
      assert.equals("service", headers["x-scope"])
    end)

    it("a route instance beats the service and global ones", function()
      local _, headers = curl("/scope/route")
      assert.equals("route", headers["x-scope"])
    end)

    it("a disabled route instance leaves the service one in charge", function()
      local _, headers = curl("/scope/disabled")
      assert.equals("service", headers["x-scope"])
    end)

    it("a top-level instance naming a route is a route instance", function()
      local _, headers = curl("/scope/top")
      assert.equals("top-level-route", headers["x-scope"])
    end)
  end)

  describe("a plugin that throws", function()
    it("in access: the client gets a 500 JSON error, the log the plugin, phase and traceback",
      function()
        local workers = helpers.children(s.pid)
        assert.equals(1, #workers)
        local status, headers, body = curl("/boom/access?probe=boom-access")
        assert.equals(500, status)
        assert.equals(JSON_TYPE, headers["content-type"])
        assert.same({ message = "An unexpected error occurred" }, helpers.json(body))
        assert.is_false(helpers.upstream_saw(upstream, "probe=boom-access"))

        assert.is_truthy(wait_log(s, "spec-boom exploded in access"))
        local log = error_log(s)
        local line = log:match("[^\n]*plugin 'spec%-boom' failed in access[^\n]*")
        assert.is_truthy(line, log)
        assert.matches(fmt("%%[error%%] %d#0:", workers[1]), line)
        assert.matches("spec%-boom/handler%.lua:%d+: spec%-boom exploded in access", line)
        local trace = log:match("failed in access: [^\n]*spec%-boom exploded in access"
            .. "\nstack traceback:\n(.-)\n%d%d%d%d/")
          or log:match("failed in access: [^\n]*spec%-boom exploded in access"
            .. "\nstack traceback:\n(.*)$")
        assert.is_truthy(trace, log)
        assert.matches("spec%-boom/handler%.lua:%d+: in function", trace)

        -- The worker lives on.
        status = curl("/plain")
        assert.equals(200, status)
        assert.same(workers, helpers.children(s.pid))
      end)

    it("in header_filter: the client gets a 500 and the error is logged", function()
      local status, _, body = curl("/boom/header-filter")
      assert.equals(500, status)
      assert.same({ message = "An unexpected error occurred" }, helpers.json(body))
      assert.is_truthy(wait_log(s, "plugin 'spec-boom' failed in header_filter"))
      assert.equals(200, (curl("/plain")))
    end)

    it("in log: the response is already out; the error is logged; later plugins run",
      function()
        local status, _, body = curl("/boom/log")
        assert.equals(200, status)
        assert.equals("/", echo_of(body).uri)
        assert.is_truthy(wait_log(s, "plugin 'spec-boom' failed in log"))
        -- spec-logger (PRIORITY 1) runs after spec-boom (20) in the same phase.
        assert.is_truthy(wait_log(s, "spec-logger: GET /boom/log answered 200"))
        assert.equals(200, (curl("/plain")))
      end)

    it("after waiting: the log names it, not a plugin other requests ran meanwhile",
      function()
        -- While post-function (second in its chain) sleeps, another request's
        -- first plugin fails; the late failure must still name post-function,
        -- and its log line must carry its own name.
        local out = s.dir .. "/after-sleep.status"
        helpers.run(fmt("curl -s -o /dev/null -w '%%{http_code}' --max-time 10 "
          .. "http://127.0.0.1:%d/boom/after-sleep >%s & sleep 0.1; "
          .. "curl -s -o /dev/null http://127.0.0.1:%d/boom/access; wait", s.port, out, s.port))
        assert.equals("500", helpers.read_file(out))
        assert.is_truthy(wait_log(s, "failed after the sleep"))
        local log = error_log(s)
        assert.matches("%[post%-function%] woke up after the sleep", log)
        assert.matches("plugin 'post%-function' failed in access: [^\n]*failed after the sleep",
          log)
        assert.is_nil(log:match("plugin 'spec%-order%-high' failed"))
      end)
  end)

  describe("phase misuse", function()
    it("sluice.response.exit in header_filter is an error, logged, not a crash", function()
      local workers = helpers.children(s.pid)
      local status = curl("/misuse/header-filter")
      assert.equals(500, status)
      assert.is_truthy(wait_log(s,
        "sluice.response.exit is not allowed in phase header_filter"))
      assert.equals(200, (curl("/plain")))
      assert.same(workers, helpers.children(s.pid))
    end)

    it("sluice.response.exit and service.request.set_header in log are logged errors", function()
      local workers = helpers.children(s.pid)
      local status, _, body = curl("/misuse/log")
      assert.equals(200, status)
      assert.equals("/", echo_of(body).uri)
      assert.is_truthy(wait_log(s, "sluice.response.exit is not allowed in phase log"))
      assert.is_truthy(wait_log(s,
        "sluice.service.request.set_header is not allowed in phase log"))
      assert.equals(200, (curl("/plain")))
      assert.same(workers, helpers.children(s.pid))
    end)
  end)

  describe("bad arguments", function()
    -- The line of spec-misuse's handler.lua that makes the call named `call`.
    local function line_of(call)
      local n = 0
      for line in io.lines(FIXTURES .. "/spec-misuse/handler.lua") do
        n = n + 1
        if line:find("-- call:" .. call, 1, true) then
          return n
        end
      end
      error("no call " .. call)
    end

    local function logged_error(path, message)
      local status, _, body = curl(path)
      assert.equals(500, status)
      assert.same({ message = "An unexpected error occurred" }, helpers.json(body))
      assert.is_truthy(wait_log(s, message), error_log(s))
      return error_log(s):match("[^\n]*" .. message:gsub("%p", "%%%0") .. "[^\n]*")
    end

    it("a response header value with CR LF is refused: 500 and a logged error", function()
      logged_error("/misuse/response-crlf", "header values cannot hold CR, LF or NUL")
    end)

    it("an upstream header value with CR LF never reaches the upstream", function()
      logged_error("/misuse/service-crlf?probe=service-crlf",
        "header values cannot hold CR, LF or NUL")
      assert.is_false(helpers.upstream_saw(upstream, "probe=service-crlf"))
    end)

    it("the error names the plugin's line that made the bad call (exit)", function()
      local line = logged_error("/misuse/exit-status",
        "bad argument #1 to 'exit' (status code (100-999) expected, got string)")
      assert.matches(fmt("spec%%-misuse/handler%%.lua:%d: bad argument #1 to 'exit'",
        line_of("exit_status")), line)
    end)

    it("the error names the plugin's line that made the bad call (set_header)", function()
      local line = error_log(s):match("[^\n]*plugin 'spec%-misuse' failed in access[^\n]*"
        .. "header values cannot hold[^\n]*")
      if not line then
        line = logged_error("/misuse/response-crlf", "header values cannot hold CR, LF or NUL")
      end
      assert.matches(fmt("spec%%-misuse/handler%%.lua:%d: bad argument #2 to 'set_header'",
        line_of("response_crlf")), line)
    end)
  end)

  describe("log phase", function()
    it("runs after the response, with its status", function()
      assert.equals(200, (curl("/logged/a")))
      assert.is_truthy(wait_log(s, "[spec-logger] spec-logger: GET /logged/a answered 200"),
        error_log(s))
      assert.matches("%[notice%] %d+#0: %[spec%-logger%] spec%-logger: GET /logged/a",
        error_log(s))
    end)

    it("runs for a request a plugin answered", function()
      assert.equals(418, (curl("/logged-exit", "-X POST -d x")))
      assert.is_truthy(wait_log(s, "spec-logger: POST /logged-exit answered 418"), error_log(s))
    end)

    it("service.response.get_status is nil when no upstream answered", function()
      assert.equals(418, (curl("/log-service-status")))
      assert.is_truthy(wait_log(s, "service status after exit: "), error_log(s))
      assert.equals("nil", error_log(s):match("service status after exit: (%w+)"))
    end)
  end)
end)

-- The complete example of docs/plugins.md, doing what that page says it does.
describe("plugins: key-check, the example in docs/plugins.md", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
%s
services:
  - name: orders
    url: http://127.0.0.1:%d
    routes:
      - name: orders
        paths: ["/orders"]
        plugins:
          - name: key-check
            config:
              keys:
                k-7f3a9c21e4: alice
                k-0b5d8e6f12: bob
]], server_block(FIXTURES), upstream.port))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("refuses a request without a valid key, and logs it", function()
    for _, args in ipairs({ "", "-H 'X-Api-Key: wrong-key-123'" }) do
      local status, headers, body = helpers.curl(fmt("%s 'http://127.0.0.1:%d/orders/7?p=no'",
        args, s.port))
      assert.equals(401, status)
      assert.equals(JSON_TYPE, headers["content-type"])
      assert.same({ message = "No valid API key in X-Api-Key" }, helpers.json(body))
    end
    assert.is_false(helpers.upstream_saw(upstream, "p=no"))
    assert.is_truthy(wait_log(s, "[key-check] refused GET /orders/7 from 127.0.0.1"),
      error_log(s))
  end)

  it("lets a valid key through, naming its owner upstream and to the client", function()
    local status, headers, body = helpers.curl(fmt(
      "-H 'X-Api-Key: k-0b5d8e6f12' http://127.0.0.1:%d/orders/7", s.port))
    assert.equals(200, status)
    assert.equals("bob", headers["x-key-owner"])
    local echo = echo_of(body)
    assert.equals("/7", echo.uri)
    assert.equals("bob", echo.h["x-key-owner"])
    assert.is_nil(echo.h["x-api-key"])
  end)

  it("refuses a config with a short key, naming it", function()
    local file = s.dir .. "/short.yaml"
    helpers.write_file(file, fmt([[
_format_version: "3.0"
server:
  plugin_paths: ["%s"]
services:
  - name: orders
    url: http://127.0.0.1:9
    plugins:
      - name: key-check
        config:
          keys: { short: carol }
]], FIXTURES))
    local out, rc = helpers.run(fmt("%s check -c %s 2>&1", helpers.bin, file))
    assert.equals(1, rc)
    assert.matches("short%.yaml:10: services%[0%]%.plugins%[0%]%.config%.keys%.short: "
      .. "length must be at least 8", out)
  end)
end)

describe("plugins: rewrite (global instances)", function()
  local s

  setup(function()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
%s
plugins:
  - name: pre-function
    config:
      rewrite:
        - 'sluice.response.set_header("X-Rewrite", sluice.request.get_path())'
        - 'if sluice.request.get_header("X-Deny") then
             return sluice.response.exit(403, { denied = true })
           end'
services:
  - name: none
    url: http://127.0.0.1:9
    routes:
      - name: routed
        paths: ["/routed"]
        plugins:
          - name: spec-exit
            config: { status: 200, text: "routed" }
]], server_block(FIXTURES)))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("runs before the router: it can answer a path no route matches", function()
    local status, _, body = helpers.curl(fmt("-H 'X-Deny: 1' http://127.0.0.1:%d/unrouted",
      s.port))
    assert.equals(403, status)
    assert.same({ denied = true }, helpers.json(body))
    assert.equals(404, (helpers.curl(fmt("http://127.0.0.1:%d/unrouted", s.port))))
  end)

  it("response headers it sets reach the client", function()
    local status, headers, body = helpers.curl(fmt("http://127.0.0.1:%d/routed/x", s.port))
    assert.equals(200, status)
    assert.equals("routed", body)
    assert.equals("/routed/x", headers["x-rewrite"])
  end)
end)

describe("plugins: sluice.node with two workers", function()
  local s

  setup(function()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
%s
services:
  - name: none
    url: http://127.0.0.1:9
    routes:
      - name: node
        paths: ["/node"]
        plugins:
          - name: pre-function
            config:
              access:
                - 'local id, count = sluice.node.get_worker_id()
                   return sluice.response.exit(200, { worker = id, count = count,
                     node = sluice.node.get_id() })'
]], server_block(FIXTURES):gsub("workers: 1", "workers: 2")))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  -- Answers by worker number, from fresh connections until both workers answered.
  local function by_worker()
    local seen = {}
    for _ = 1, 60 do
      local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d/node", s.port))
      assert.equals(200, status)
      local n = helpers.json(body)
      seen[n.worker] = n
      if seen[0] and seen[1] then
        break
      end
    end
    assert.is_table(seen[0], "worker 0 never answered")
    assert.is_table(seen[1], "worker 1 never answered")
    return seen
  end

  it("get_worker_id returns this worker's number and the number of workers", function()
    local seen = by_worker()
    assert.equals(2, seen[0].count)
    assert.equals(2, seen[1].count)
  end)

  it("get_id is the same in every worker", function()
    local seen = by_worker()
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", seen[0].node)
    assert.equals(seen[0].node, seen[1].node)
  end)
end)

describe("plugins: server.plugin_paths", function()
  local s

  setup(function()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
%s
services:
  - name: none
    url: http://127.0.0.1:9
    routes:
      - name: mine
        paths: ["/mine"]
        plugins:
          - name: request-termination
            config: { message: hi }
      - name: bundled
        paths: ["/bundled"]
        plugins:
          - name: post-function
            config:
              access: ['return sluice.response.exit(200, { bundled = true })']
]], server_block(OVERRIDES)))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("a plugin named like a bundled one replaces it", function()
    local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d/mine", s.port))
    assert.equals(418, status)
    assert.same({ overridden = true, said = "hi" }, helpers.json(body))
  end)

  it("plugins not found there still come from the bundled folder", function()
    local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d/bundled", s.port))
    assert.equals(200, status)
    assert.same({ bundled = true }, helpers.json(body))
  end)
end)

describe("plugins: sluice check and start", function()
  local dir

  setup(function()
    dir = helpers.tmpdir()
  end)

  teardown(function()
    os.execute("rm -rf " .. dir)
  end)

  -- `sluice start` on a config whose routes carry `plugins`; returns rc, output.
  local function start(plugins_yaml)
    local file = dir .. "/bad.yaml"
    helpers.write_file(file, fmt([[
_format_version: "3.0"
server:
  listen: ["127.0.0.1:%d"]
  workers: 1
  pid_file: "%s/sluice.pid"
  plugin_paths: ["%s"]
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/r"]
        plugins:
%s]], helpers.free_port(), dir, FIXTURES, plugins_yaml))
    local out, rc = helpers.run(fmt("timeout 10 %s start -c %s 2>&1", helpers.bin, file))
    return rc, out, file
  end

  it("`sluice check --routes` prints each route's chain in running order", function()
    local file = dir .. "/good.yaml"
    helpers.write_file(file, fmt([[
_format_version: "3.0"
server:
  plugin_paths: ["%s"]
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: ordered
        paths: ["/o"]
        plugins:
          - name: spec-order-low
          - name: spec-order-high
          - name: spec-ctx-writer
      - name: bare
        paths: ["/b"]
]], FIXTURES))
    local out, rc = helpers.run(fmt("timeout 10 %s check -c %s --routes 2>&1", helpers.bin, file))
    assert.equals(0, rc, out)
    -- PRIORITY: spec-order-high 300, spec-order-low 100, spec-ctx-writer 60.
    assert.matches("\n  ordered  access:spec%-order%-high %-> access:spec%-order%-low %-> "
      .. "access:spec%-ctx%-writer %-> header_filter:spec%-ctx%-writer\n", out)
    assert.matches("\n  bare  %(no plugins: never enters Lua%)\n", out)
  end)

  it("refuse a plugin config that fails its schema, with file:line:path", function()
    local rc, out, file = start([[
          - name: spec-exit
            config:
              status: "abc"
]])
    assert.equals(1, rc)
    assert.matches(file:gsub("%p", "%%%0") .. ":16: services%[0%]%.routes%[0%]%.plugins%[0%]"
      .. "%.config%.status: expected an integer", out)
  end)

  it("refuse a plugin config with an unknown field", function()
    local rc, out, file = start([[
          - name: spec-sleep
            config:
              seconds: 1
              colour: red
]])
    assert.equals(1, rc)
    assert.matches(file:gsub("%p", "%%%0") .. ":17: services%[0%]%.routes%[0%]%.plugins%[0%]"
      .. "%.config%.colour: unknown field 'colour'", out)
  end)

  it("run the schema's own checks (request-termination: message or body)", function()
    local rc, out = start([[
          - name: request-termination
            config: { message: a, body: b }
]])
    assert.equals(1, rc)
    assert.matches("services%[0%]%.routes%[0%]%.plugins%[0%]%.config%.body: "
      .. "set either 'message' or 'body', not both", out)
  end)

  it("refuse a plugin that is in no folder", function()
    local rc, out = start([[
          - name: no-such-plugin
]])
    assert.equals(1, rc)
    assert.matches("services%[0%]%.routes%[0%]%.plugins%[0%]%.name: "
      .. "plugin 'no%-such%-plugin' not found", out)
  end)
end)
