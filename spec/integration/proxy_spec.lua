-- Proxying: routing, what reaches the upstream (path, Host, X-Forwarded-*,
-- hop-by-hop headers), bodies both ways, chunked framing.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format
local rep = string.rep

-- Kong's path joining (path_handling v0, the default), row by row:
-- { service path, route path, strip_path, request path, upstream path or nil for 404 }.
local PATH_CASES = {
  { nil,  "/r",  true,  "/r",    "/" },
  { nil,  "/r",  true,  "/r/",   "/" },
  { nil,  "/r",  true,  "/r/x",  "/x" },
  { nil,  "/r",  true,  "/rx",   "/x" },
  { nil,  "/r",  true,  "/r/x/", "/x/" },
  { nil,  "/r",  false, "/r",    "/r" },
  { nil,  "/r",  false, "/r/",   "/r/" },
  { nil,  "/r",  false, "/r/x",  "/r/x" },
  { nil,  "/r",  false, "/rx",   "/rx" },
  { nil,  "/r",  false, "/r/x/", "/r/x/" },
  { nil,  "/r/", true,  "/r",    nil },
  { nil,  "/r/", true,  "/r/",   "/" },
  { nil,  "/r/", true,  "/r/x",  "/x" },
  { nil,  "/r/", true,  "/rx",   nil },
  { nil,  "/r/", true,  "/r/x/", "/x/" },
  { nil,  "/r/", false, "/r",    nil },
  { nil,  "/r/", false, "/r/",   "/r/" },
  { nil,  "/r/", false, "/r/x",  "/r/x" },
  { nil,  "/r/", false, "/rx",   nil },
  { nil,  "/r/", false, "/r/x/", "/r/x/" },
  { "/",  "/r",  true,  "/r",    "/" },
  { "/",  "/r",  true,  "/r/",   "/" },
  { "/",  "/r",  true,  "/r/x",  "/x" },
  { "/",  "/r",  true,  "/rx",   "/x" },
  { "/",  "/r",  true,  "/r/x/", "/x/" },
  { "/",  "/r",  false, "/r",    "/r" },
  { "/",  "/r",  false, "/r/",   "/r/" },
  { "/",  "/r",  false, "/r/x",  "/r/x" },
  { "/",  "/r",  false, "/rx",   "/rx" },
  { "/",  "/r",  false, "/r/x/", "/r/x/" },
  { "/",  "/r/", true,  "/r",    nil },
  { "/",  "/r/", true,  "/r/",   "/" },
  { "/",  "/r/", true,  "/r/x",  "/x" },
  { "/",  "/r/", true,  "/rx",   nil },
  { "/",  "/r/", true,  "/r/x/", "/x/" },
  { "/",  "/r/", false, "/r",    nil },
  { "/",  "/r/", false, "/r/",   "/r/" },
  { "/",  "/r/", false, "/r/x",  "/r/x" },
  { "/",  "/r/", false, "/rx",   nil },
  { "/",  "/r/", false, "/r/x/", "/r/x/" },
  { "/s", "/r",  true,  "/r",    "/s" },
  { "/s", "/r",  true,  "/r/",   "/s/" },
  { "/s", "/r",  true,  "/r/x",  "/s/x" },
  { "/s", "/r",  true,  "/rx",   "/s/x" },
  { "/s", "/r",  true,  "/r/x/", "/s/x/" },
  { "/s", "/r",  false, "/r",    "/s/r" },
  { "/s", "/r",  false, "/r/",   "/s/r/" },
  { "/s", "/r",  false, "/r/x",  "/s/r/x" },
  { "/s", "/r",  false, "/rx",   "/s/rx" },
  { "/s", "/r",  false, "/r/x/", "/s/r/x/" },
  { "/s", "/r/", true,  "/r",    nil },
  { "/s", "/r/", true,  "/r/",   "/s/" },
  { "/s", "/r/", true,  "/r/x",  "/s/x" },
  { "/s", "/r/", true,  "/rx",   nil },
  { "/s", "/r/", true,  "/r/x/", "/s/x/" },
  { "/s", "/r/", false, "/r",    nil },
  { "/s", "/r/", false, "/r/",   "/s/r/" },
  { "/s", "/r/", false, "/r/x",  "/s/r/x" },
  { "/s", "/r/", false, "/rx",   nil },
  { "/s", "/r/", false, "/r/x/", "/s/r/x/" },
  { "/s/", "/r",  true,  "/r",    "/s" },
  { "/s/", "/r",  true,  "/r/",   "/s/" },
  { "/s/", "/r",  true,  "/r/x",  "/s/x" },
  { "/s/", "/r",  true,  "/rx",   "/s/x" },
  { "/s/", "/r",  true,  "/r/x/", "/s/x/" },
  { "/s/", "/r",  false, "/r",    "/s/r" },
  { "/s/", "/r",  false, "/r/",   "/s/r/" },
  { "/s/", "/r",  false, "/r/x",  "/s/r/x" },
  { "/s/", "/r",  false, "/rx",   "/s/rx" },
  { "/s/", "/r",  false, "/r/x/", "/s/r/x/" },
  { "/s/", "/r/", true,  "/r",    nil },
  { "/s/", "/r/", true,  "/r/",   "/s/" },
  { "/s/", "/r/", true,  "/r/x",  "/s/x" },
  { "/s/", "/r/", true,  "/rx",   nil },
  { "/s/", "/r/", true,  "/r/x/", "/s/x/" },
  { "/s/", "/r/", false, "/r",    nil },
  { "/s/", "/r/", false, "/r/",   "/s/r/" },
  { "/s/", "/r/", false, "/r/x",  "/s/r/x" },
  { "/s/", "/r/", false, "/rx",   nil },
  { "/s/", "/r/", false, "/r/x/", "/s/r/x/" },
}

local SERVICE_PATHS = { false, "/", "/s", "/s/" }
local ROUTE_PATHS = { "/r", "/r/" }

-- The host a path-table route answers on.
local function path_host(service_path, route_path, strip)
  local si, ri
  for i, p in ipairs(SERVICE_PATHS) do
    if p == (service_path or false) then
      si = i
    end
  end
  for i, p in ipairs(ROUTE_PATHS) do
    if p == route_path then
      ri = i
    end
  end
  return fmt("p%d-%d-%s.test", si, ri, strip and "strip" or "keep")
end

local LOCATIONS = [[
    location = /md5 {
      content_by_lua_block {
        ngx.req.read_body()
        local body = ngx.req.get_body_data()
        if not body then
          local f = ngx.req.get_body_file()
          if f then
            local h = io.open(f, "rb"); body = h:read("*a"); h:close()
          end
        end
        body = body or ""
        ngx.say(ngx.md5(body), " ", #body, " ", ngx.var.http_transfer_encoding or "-")
      }
    }
    location = /chunked {
      content_by_lua_block {
        for i = 1, 3 do
          ngx.print("part" .. i .. "-")
          ngx.flush(true)
          ngx.sleep(0.02)
        end
      }
    }
    location = /chunked-big {
      content_by_lua_block {
        local block = string.rep("0123456789abcdef", 65536)
        for _ = 1, 4 do
          ngx.print(block)
          ngx.flush(true)
        end
      }
    }
    location = /hop-response {
      content_by_lua_block {
        local sock = ngx.req.socket(true)
        sock:send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
          .. "Connection: keep-alive, X-Resp-Hop\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=9\r\n"
          .. "Proxy-Connection: keep-alive\r\nTrailer: X-Trailer\r\nUpgrade: h2c\r\n"
          .. "X-Resp-Keep: yes\r\n\r\nok")
      }
    }
    location = /deny {
      return 403 "denied\n";
    }
    location = /http10 {
      content_by_lua_block {
        local sock = ngx.req.socket(true)
        sock:send("HTTP/1.0 200 OK\r\nX-Old: 1\r\n\r\n" .. string.rep("q", 100000))
      }
    }
    location = /file {
      alias FILE;
    }
]]

local function config(up)
  local lines = { '_format_version: "3.0"', "services:" }
  local function add(text)
    lines[#lines + 1] = text
  end
  local url = fmt("http://127.0.0.1:%d", up.port)
  add(fmt([[
  - name: echo
    url: %s
    routes:
      - name: main
        hosts: ["main.test"]
  - name: echo-preserve
    url: %s
    routes:
      - name: preserve
        hosts: ["preserve.test"]
        preserve_host: true
  - name: regex
    url: %s/s
    routes:
      - name: regex-strip
        hosts: ["regex.test"]
        paths: ['~/users/(?<id>\d+)$', '~/items/\d+']
      - name: regex-keep
        hosts: ["regex-keep.test"]
        paths: ['~/users/(?<id>\d+)$']
        strip_path: false]], url, url, url))
  -- Router priority: each service's path tells which route matched.
  local prio = {
    { "exact", 'hosts: ["api.prio.test"]' },
    { "wild", 'hosts: ["*.prio.test"]' },
    { "short", 'hosts: ["paths.test"]', 'paths: ["/p"]' },
    { "long", 'hosts: ["paths.test"]', 'paths: ["/p/long"]' },
    { "prefix", 'hosts: ["rx.test"]', 'paths: ["/v"]' },
    { "regex", 'hosts: ["rx.test"]', [[paths: ['~/v/\d+$'] ]] },
    { "rxlow", 'hosts: ["rxp.test"]', [[paths: ['~/n/\d+'] ]], "regex_priority: 0" },
    { "rxhigh", 'hosts: ["rxp.test"]', [[paths: ['~/n/.+'] ]], "regex_priority: 5" },
    { "post", 'hosts: ["m.test"]', 'paths: ["/m"]', "methods: [POST]" },
    { "any", 'hosts: ["m.test"]', 'paths: ["/m"]' },
    { "hdr", 'hosts: ["h.test"]', 'paths: ["/h"]', 'headers: { x-version: ["2"] }' },
    { "nohdr", 'hosts: ["h.test"]', 'paths: ["/h"]' },
  }
  for _, p in ipairs(prio) do
    add(fmt("  - name: prio-%s\n    url: %s/%s\n    routes:\n      - name: prio-%s", p[1], url,
      p[1], p[1]))
    for i = 2, #p do
      add("        " .. p[i])
    end
  end
  for _, sp in ipairs(SERVICE_PATHS) do
    for _, rp in ipairs(ROUTE_PATHS) do
      for _, strip in ipairs({ true, false }) do
        local host = path_host(sp, rp, strip)
        add(fmt("  - name: svc-%s\n    url: %s%s\n    routes:\n      - name: route-%s\n"
          .. '        hosts: ["%s"]\n        paths: ["%s"]\n        strip_path: %s',
          host:gsub("%.", "-"), url, sp or "", host:gsub("%.", "-"), host, rp, tostring(strip)))
      end
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

local function echo_of(res)
  local echo = helpers.json(res.body)
  assert.is_table(echo, res.body)
  echo.h = helpers.lower_headers(echo.headers)
  return echo
end

describe("proxy:", function()
  local upstream, s, file, file_md5

  setup(function()
    local dir = helpers.tmpdir()
    file = dir .. "/random.bin"
    helpers.run(fmt("head -c 3000000 /dev/urandom > %s", file))
    file_md5 = helpers.run("md5sum " .. file):match("^(%x+)")
    upstream = helpers.start_upstream({ locations = LOCATIONS:gsub("FILE", file) })
    s = helpers.start_sluice(config(upstream))
  end)

  teardown(function()
    helpers.stop_all()
    os.execute("rm -rf " .. file:match("^(.*)/"))
  end)

  -- One request on a fresh connection; `host` goes in the Host header.
  local function request(method, host, target, extra, body)
    local raw = fmt("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s", method, target,
      host, extra or "")
    if body then
      raw = raw .. fmt("Content-Length: %d\r\n", #body)
    end
    local res, err = helpers.request(s.port, raw .. "\r\n" .. (body or ""))
    assert.is_truthy(res, err)
    return res
  end

  describe("routing", function()
    it("answers 404 with Kong's JSON message when no route matches", function()
      local res = request("GET", "nowhere.test", "/anything")
      assert.equals(404, res.status)
      assert.matches("^application/json", res.headers["content-type"])
      assert.same({ message = "no Route matched with those values" }, helpers.json(res.body))
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", res.headers["date"])
      assert.is_false(helpers.upstream_saw(upstream, "/anything"))
    end)

    it("keeps the client connection open after a 404", function()
      local c = helpers.connect(s.port)
      assert(c:send("GET /nope HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"))
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(404, res.status)
      assert(c:send("GET /yes HTTP/1.1\r\nHost: main.test\r\n\r\n"))
      res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(200, res.status)
      assert.equals("/yes", echo_of(res).uri)
      c:close()
    end)

    it("proxies a matched request and returns the upstream's response", function()
      local status, headers, body = helpers.curl(fmt(
        "-H 'Host: main.test' -H 'X-Custom: 1' http://127.0.0.1:%d/hello?a=1", s.port))
      assert.equals(200, status)
      assert.equals("application/json", headers["content-type"])
      local echo = helpers.json(body)
      assert.equals("GET", echo.method)
      assert.equals("/hello?a=1", echo.uri)
      assert.equals("1", helpers.lower_headers(echo.headers)["x-custom"])
    end)
  end)

  describe("router priority", function()
    local cases = {
      { "an exact host beats a wildcard", "GET", "api.prio.test", "/", {}, "/exact" },
      { "a wildcard host matches others", "GET", "www.prio.test", "/", {}, "/wild" },
      { "the longer prefix wins", "GET", "paths.test", "/p/long/x", {}, "/long/x" },
      { "a shorter prefix takes the rest", "GET", "paths.test", "/p/other", {}, "/short/other" },
      { "a regex beats a prefix", "GET", "rx.test", "/v/12", {}, "/regex" },
      { "the prefix takes what the regex does not match", "GET", "rx.test", "/v/ab", {},
        "/prefix/ab" },
      { "the higher regex_priority wins", "GET", "rxp.test", "/n/12", {}, "/rxhigh" },
      { "a route with methods wins for its method", "POST", "m.test", "/m", {}, "/post" },
      { "other methods go to the route without methods", "GET", "m.test", "/m", {}, "/any" },
      { "a route with headers wins when they match", "GET", "h.test", "/h",
        { "X-Version: 2" }, "/hdr" },
      { "a header value that does not match falls through", "GET", "h.test", "/h",
        { "X-Version: 3" }, "/nohdr" },
      { "no header falls through", "GET", "h.test", "/h", {}, "/nohdr" },
    }
    for _, case in ipairs(cases) do
      local name, method, host, path, headers, expected = unpack(case)
      it(name, function()
        local extra = #headers > 0 and table.concat(headers, "\r\n") .. "\r\n" or ""
        local res = request(method, host, path, extra, method == "POST" and "x" or nil)
        assert.equals(200, res.status)
        assert.equals(expected, echo_of(res).uri)
      end)
    end
  end)

  describe("strip_path", function()
    it("joins service and request paths exactly as Kong does", function()
      local c = helpers.connect(s.port)
      local failures = {}
      for _, case in ipairs(PATH_CASES) do
        local sp, rp, strip, req, expected = case[1], case[2], case[3], case[4], case[5]
        for _, query in ipairs({ "", "?q=1&b=two%20words" }) do
          assert(c:send(fmt("GET %s%s HTTP/1.1\r\nHost: %s\r\n\r\n", req, query,
            path_host(sp, rp, strip))))
          local res, err = c:read_response()
          assert.is_truthy(res, err)
          local got
          if res.status == 404 then
            got = nil
          elseif res.status == 200 then
            got = echo_of(res).uri
          else
            got = "status " .. res.status
          end
          local want = expected and expected .. query
          if got ~= want then
            failures[#failures + 1] = fmt("service %s, route %s, strip %s, request %s: "
              .. "expected %s, got %s", tostring(sp), rp, tostring(strip), req .. query,
              tostring(want), tostring(got))
          end
        end
      end
      c:close()
      assert.equals("", table.concat(failures, "\n"))
    end)

    it("a regex route strips the whole match", function()
      local res = request("GET", "regex.test", "/users/42")
      assert.equals("/s", echo_of(res).uri)
      res = request("GET", "regex.test", "/users/42?x=1")
      assert.equals("/s?x=1", echo_of(res).uri)
      res = request("GET", "regex.test", "/items/7/detail")
      assert.equals("/s/detail", echo_of(res).uri)
      res = request("GET", "regex.test", "/users/abc")
      assert.equals(404, res.status)
    end)

    it("a regex route with strip_path off keeps the path", function()
      local res = request("GET", "regex-keep.test", "/users/42")
      assert.equals("/s/users/42", echo_of(res).uri)
    end)
  end)

  describe("Host", function()
    it("is the service's host and port without preserve_host", function()
      local res = request("GET", "main.test:8080", "/host")
      assert.equals(fmt("127.0.0.1:%d", upstream.port), echo_of(res).h["host"])
    end)

    it("is the client's Host with preserve_host", function()
      local res = request("GET", "preserve.test:1234", "/host")
      assert.equals("preserve.test:1234", echo_of(res).h["host"])
    end)
  end)

  describe("X-Forwarded-*", function()
    it("are set from the connection", function()
      local res = request("GET", "main.test:8080", "/xf/path?secret=1")
      local h = echo_of(res).h
      assert.equals("127.0.0.1", h["x-real-ip"])
      assert.equals("127.0.0.1", h["x-forwarded-for"])
      assert.equals("http", h["x-forwarded-proto"])
      assert.equals("main.test", h["x-forwarded-host"])
      assert.equals(tostring(s.port), h["x-forwarded-port"])
      assert.equals("/xf/path", h["x-forwarded-path"])
    end)

    it("X-Forwarded-For gets the client appended", function()
      local res = request("GET", "main.test", "/xff", "X-Forwarded-For: 10.1.2.3, 10.4.5.6\r\n")
      assert.equals("10.1.2.3, 10.4.5.6, 127.0.0.1", echo_of(res).h["x-forwarded-for"])
    end)

    it("X-Forwarded-For on several lines is joined in order", function()
      local res = request("GET", "main.test", "/xff2", "X-Forwarded-For: 10.1.1.1\r\n"
        .. "X-Other: 1\r\nX-Forwarded-For: 10.2.2.2\r\n")
      assert.equals("10.1.1.1, 10.2.2.2, 127.0.0.1", echo_of(res).h["x-forwarded-for"])
    end)

    it("from an untrusted client are overwritten", function()
      local res = request("GET", "main.test", "/untrusted", "X-Forwarded-Proto: https\r\n"
        .. "X-Forwarded-Host: spoofed.test\r\nX-Forwarded-Port: 9999\r\nX-Real-IP: 10.9.9.9\r\n")
      local h = echo_of(res).h
      assert.equals("http", h["x-forwarded-proto"])
      assert.equals("main.test", h["x-forwarded-host"])
      assert.equals(tostring(s.port), h["x-forwarded-port"])
      assert.equals("127.0.0.1", h["x-real-ip"])
    end)
  end)

  describe("hop-by-hop headers", function()
    it("are removed from the request", function()
      local res = request("GET", "main.test", "/hop", "Connection: keep-alive, X-Hop-Custom\r\n"
        .. "X-Hop-Custom: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-Trailer\r\n"
        .. "Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-End-To-End: kept\r\n")
      local h = echo_of(res).h
      assert.equals("kept", h["x-end-to-end"])
      for _, name in ipairs({ "x-hop-custom", "keep-alive", "te", "trailer", "proxy-connection",
        "upgrade" }) do
        assert.is_nil(h[name], name .. " reached the upstream")
      end
      -- Whatever Connection the upstream sees is sluice's own.
      assert.not_matches("x%-hop%-custom", (h["connection"] or ""):lower())
    end)

    it("are removed from the response", function()
      local res = request("GET", "main.test", "/hop-response")
      assert.equals(200, res.status)
      assert.equals("ok", res.body)
      assert.equals("yes", res.headers["x-resp-keep"])
      for _, name in ipairs({ "x-resp-hop", "keep-alive", "proxy-connection", "trailer",
        "upgrade" }) do
        assert.is_nil(res.headers[name], name .. " reached the client")
      end
      assert.not_matches("x%-resp%-hop", (res.headers["connection"] or ""):lower())
    end)
  end)

  describe("bodies", function()
    it("a request body with Content-Length reaches the upstream intact", function()
      local body = rep("0123456789", 20000)
      local res = request("POST", "main.test", "/md5", nil, body)
      assert.equals(200, res.status)
      local tmp = file .. ".body"
      helpers.write_file(tmp, body)
      local md5 = helpers.run("md5sum " .. tmp):match("^(%x+)")
      os.remove(tmp)
      assert.equals(fmt("%s %d -\n", md5, #body), res.body)
    end)

    it("a chunked request body reaches the upstream intact", function()
      local status, _, body = helpers.curl(fmt("-H 'Host: main.test' "
        .. "-H 'Transfer-Encoding: chunked' --data-binary @%s http://127.0.0.1:%d/md5",
        file, s.port))
      assert.equals(200, status)
      assert.equals(fmt("%s 3000000 chunked\n", file_md5), body)
    end)

    it("a chunked body with chunk extensions and trailers reaches the upstream", function()
      local res = helpers.request(s.port, "POST /chunk-ext HTTP/1.1\r\nHost: main.test\r\n"
        .. "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .. "3;name=value\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
      assert.is_truthy(res)
      assert.equals(200, res.status)
      assert.equals("abc0123456789", echo_of(res).body)
    end)

    it("an empty POST reaches the upstream with Content-Length: 0", function()
      local res = request("POST", "main.test", "/empty", nil, "")
      local echo = echo_of(res)
      assert.equals("POST", echo.method)
      assert.equals("0", echo.h["content-length"])
    end)

    it("an upstream answering before reading a large upload reaches the client", function()
      local c = helpers.connect(s.port)
      assert(c:send("POST /deny HTTP/1.1\r\nHost: main.test\r\nContent-Length: 4000000\r\n\r\n"))
      local chunk = rep("z", 65536)
      c:settimeout(0.5)
      for _ = 1, 61 do
        if not c:send(chunk) then
          break
        end
      end
      c:settimeout(3)
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(403, res.status)
      assert.equals("denied\n", res.body)
      c:close()
    end)

    it("a close-delimited upstream response reaches the client whole, then closes", function()
      local c = helpers.connect(s.port)
      assert(c:send("GET /http10 HTTP/1.1\r\nHost: main.test\r\n\r\n"))
      c:settimeout(3)
      local t0 = socket.gettime()
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(200, res.status)
      assert.equals("1", res.headers["x-old"])
      assert.equals("close", res.headers["connection"])
      assert.equals(rep("q", 100000), res.body)
      -- The body ended with the connection, not with a read timeout.
      assert.is_true(socket.gettime() - t0 < 2)
      c:close()
    end)

    it("a response body reaches the client intact", function()
      local out = helpers.run(fmt("curl -sS -H 'Host: main.test' http://127.0.0.1:%d/file "
        .. "| md5sum", s.port))
      assert.equals(file_md5, out:match("^(%x+)"))
    end)
  end)

  describe("chunked responses", function()
    it("reach an HTTP/1.1 client chunked", function()
      local c = helpers.connect(s.port)
      assert(c:send("GET /chunked HTTP/1.1\r\nHost: main.test\r\n\r\n"))
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(200, res.status)
      assert.equals("chunked", res.headers["transfer-encoding"])
      assert.is_nil(res.headers["content-length"])
      assert.equals("part1-part2-part3-", res.body)
      -- And the connection goes on.
      assert(c:send("GET /next HTTP/1.1\r\nHost: main.test\r\n\r\n"))
      res = c:read_response()
      assert.equals("/next", echo_of(res).uri)
      c:close()
    end)

    it("reach an HTTP/1.0 client as a plain body ended by close", function()
      local c = helpers.connect(s.port)
      assert(c:send("GET /chunked HTTP/1.0\r\nHost: main.test\r\n\r\n"))
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(200, res.status)
      assert.is_nil(res.headers["transfer-encoding"])
      assert.equals("part1-part2-part3-", res.body)
      assert.is_true((c:closed(1)))
      c:close()
    end)

    it("a large chunked response reaches an HTTP/1.0 client whole", function()
      local res = helpers.request(s.port,
        "GET /chunked-big HTTP/1.0\r\nHost: main.test\r\n\r\n")
      assert.is_truthy(res)
      assert.equals(4 * 1024 * 1024, #res.body)
      assert.equals(rep("0123456789abcdef", 4 * 65536), res.body)
    end)

    it("a large chunked response reaches an HTTP/1.1 client whole", function()
      local res = helpers.request(s.port, "GET /chunked-big HTTP/1.1\r\nHost: main.test\r\n\r\n")
      assert.is_truthy(res)
      assert.equals("chunked", res.headers["transfer-encoding"])
      assert.equals(4 * 1024 * 1024, #res.body)
      assert.equals(rep("0123456789abcdef", 4 * 65536), res.body)
    end)
  end)
end)

describe("proxy: trusted_ips", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: all
        paths: ["/"]
]], upstream.port), { server = { trusted_ips = { "127.0.0.1" } } })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("keeps X-Forwarded-Proto, -Host and -Port from a trusted client", function()
    local res = helpers.request(s.port, "GET /trusted HTTP/1.1\r\nHost: gw.test\r\n"
      .. "X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.test\r\n"
      .. "X-Forwarded-Port: 443\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: close\r\n\r\n")
    local h = helpers.lower_headers(helpers.json(res.body).headers)
    assert.equals("https", h["x-forwarded-proto"])
    assert.equals("public.test", h["x-forwarded-host"])
    assert.equals("443", h["x-forwarded-port"])
    assert.equals("10.1.2.3, 127.0.0.1", h["x-forwarded-for"])
  end)

  it("still sets them when a trusted client sends none", function()
    local res = helpers.request(s.port, "GET /trusted HTTP/1.1\r\nHost: gw.test:81\r\n"
      .. "Connection: close\r\n\r\n")
    local h = helpers.lower_headers(helpers.json(res.body).headers)
    assert.equals("http", h["x-forwarded-proto"])
    assert.equals("gw.test", h["x-forwarded-host"])
    assert.equals(tostring(s.port), h["x-forwarded-port"])
  end)
end)
