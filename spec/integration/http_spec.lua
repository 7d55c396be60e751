-- Downstream HTTP/1.1: keep-alive, pipelining, HTTP/1.0, Expect: 100-continue, HEAD, 204, 304.
local helpers = require("spec.helpers")

local fmt = string.format

local LOCATIONS = [[
    location = /fixed { return 200 "fixed body\n"; }
    location = /204 { return 204; }
    location = /304 { return 304; }
    location = /304-with-length {
      content_by_lua_block {
        local sock = ngx.req.socket(true)
        sock:send("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"v1\"\r\n\r\n")
      }
    }
    location = /big-first {
      content_by_lua_block {
        local block = string.rep("0123456789abcdef", 65536)
        for _ = 1, 4 do
          ngx.print(block)
          ngx.flush(true)
        end
      }
    }
    location = /slow-first {
      content_by_lua_block {
        ngx.sleep(0.3)
        ngx.say("slow first")
      }
    }
]]

local function get(path, extra)
  return fmt("GET %s HTTP/1.1\r\nHost: gw.test\r\n%s\r\n", path, extra or "")
end

-- Sends `raw` on c and reads the response, failing the test on an error.
local function exchange(c, raw, head)
  assert(c:send(raw))
  local res, err = c:read_response(head)
  assert.is_truthy(res, err)
  return res
end

local function uri_of(res)
  local body = helpers.json(res.body)
  return body and body.uri
end

describe("http: downstream HTTP/1.1", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream({ locations = LOCATIONS })
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: all
        paths: ["/"]
]], upstream.port))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  describe("keep-alive", function()
    it("serves several requests on one connection", function()
      local c = helpers.connect(s.port)
      for i = 1, 5 do
        local res = exchange(c, get("/ka/" .. i))
        assert.equals(200, res.status)
        assert.equals("/ka/" .. i, uri_of(res))
        assert.not_equals("close", (res.headers["connection"] or ""):lower())
      end
      c:close()
    end)

    it("closes after a response to `Connection: close`", function()
      local c = helpers.connect(s.port)
      local res = exchange(c, get("/bye", "Connection: close\r\n"))
      assert.equals(200, res.status)
      assert.equals("/bye", uri_of(res))
      assert.equals("close", res.headers["connection"])
      assert.is_true((c:closed(2)))
      c:close()
    end)
  end)

  describe("pipelining", function()
    it("answers requests sent in one write in order", function()
      local c = helpers.connect(s.port)
      assert(c:send(get("/p1") .. get("/p2") .. get("/p3")))
      for i = 1, 3 do
        local res, err = c:read_response()
        assert.is_truthy(res, err)
        assert.equals(200, res.status)
        assert.equals("/p" .. i, uri_of(res))
      end
      c:close()
    end)

    it("keeps request bodies apart from the requests that follow them", function()
      local c = helpers.connect(s.port)
      assert(c:send(get("/q1")
        .. "POST /q2 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 11\r\n\r\nGET /q9 abc"
        .. get("/q3")))
      local expect = { { "/q1" }, { "/q2", "GET /q9 abc" }, { "/q3" } }
      for _, e in ipairs(expect) do
        local res, err = c:read_response()
        assert.is_truthy(res, err)
        assert.equals(200, res.status)
        local echo = helpers.json(res.body)
        assert.equals(e[1], echo.uri)
        if e[2] then
          assert.equals(e[2], echo.body)
        end
      end
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "/q9"))
    end)
  end)

  describe("pipelining at volume", function()
    it("answers 600 requests sent in one write, in order", function()
      local c = helpers.connect(s.port)
      local reqs = {}
      for i = 1, 600 do
        reqs[i] = get("/many/" .. i)
      end
      assert(c:send(table.concat(reqs)))
      for i = 1, 600 do
        local res, err = c:read_response()
        assert.is_truthy(res, "response " .. i .. ": " .. tostring(err))
        assert.equals("/many/" .. i, uri_of(res))
      end
      c:close()
    end)

    it("answers a request pipelined behind a 4 MiB response", function()
      local c = helpers.connect(s.port)
      assert(c:send(get("/big-first") .. get("/behind-big")))
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(4 * 1024 * 1024, #res.body)
      res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals("/behind-big", uri_of(res))
      c:close()
    end)
  end)

  describe("pipelining and Connection: close", function()
    it("does not serve requests pipelined after one with Connection: close", function()
      local c = helpers.connect(s.port)
      assert(c:send(get("/last", "Connection: close\r\n") .. get("/after-last")))
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals("/last", uri_of(res))
      assert.is_true((c:closed(2)))
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "/after-last"))
    end)
  end)

  describe("pipelining behind a slow response", function()
    it("keeps responses in request order when the first one is slow", function()
      local c = helpers.connect(s.port)
      assert(c:send(get("/slow-first") .. get("/fast-second")))
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals("slow first\n", res.body)
      res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals("/fast-second", uri_of(res))
      c:close()
    end)
  end)

  describe("connection handling", function()
    it("a client that half-closes after its request still gets the response", function()
      local c = helpers.connect(s.port)
      assert(c:send(get("/half-closed")))
      c.sock:shutdown("send")
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(200, res.status)
      assert.equals("/half-closed", uri_of(res))
      c:close()
    end)
  end)

  describe("HTTP/1.0", function()
    it("closes the connection after the response without keep-alive", function()
      local c = helpers.connect(s.port)
      local res = exchange(c, "GET /old HTTP/1.0\r\n\r\n")
      assert.equals(200, res.status)
      assert.equals("/old", uri_of(res))
      assert.not_equals("keep-alive", (res.headers["connection"] or ""):lower())
      assert.is_true((c:closed(2)))
      c:close()
    end)

    it("keeps the connection open with `Connection: keep-alive`", function()
      local c = helpers.connect(s.port)
      local req = "GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
      for _ = 1, 3 do
        local res = exchange(c, req)
        assert.equals(200, res.status)
        assert.equals("fixed body\n", res.body)
        assert.equals("keep-alive", (res.headers["connection"] or ""):lower())
      end
      c:close()
    end)
  end)

  describe("Expect: 100-continue", function()
    it("sends 100 Continue before the body, then the final response", function()
      local c = helpers.connect(s.port)
      assert(c:send("POST /expect HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n"
        .. "Expect: 100-continue\r\n\r\n"))
      c:settimeout(3)
      local line, err = c:receive_line()
      assert.equals("HTTP/1.1 100 Continue", line, err)
      assert.equals("", c:receive_line())
      assert(c:send("hello"))
      local res, rerr = c:read_response()
      assert.is_truthy(res, rerr)
      assert.equals(200, res.status)
      local echo = helpers.json(res.body)
      assert.equals("/expect", echo.uri)
      assert.equals("hello", echo.body)
      -- The connection is still usable.
      res = exchange(c, get("/after-expect"))
      assert.equals("/after-expect", uri_of(res))
      c:close()
    end)
  end)

  describe("bodiless responses", function()
    it("HEAD gets the headers and no body; the next request works", function()
      local c = helpers.connect(s.port)
      local res = exchange(c, "HEAD /head HTTP/1.1\r\nHost: gw.test\r\n\r\n", true)
      assert.equals(200, res.status)
      assert.matches("application/json", res.headers["content-type"], 1, true)
      res = exchange(c, get("/after-head"))
      assert.equals(200, res.status)
      assert.equals("/after-head", uri_of(res))
      c:close()
    end)

    it("HEAD of a response with Content-Length has no body; the next request works", function()
      local c = helpers.connect(s.port)
      local res = exchange(c, "HEAD /fixed HTTP/1.1\r\nHost: gw.test\r\n\r\n", true)
      assert.equals(200, res.status)
      assert.equals("11", res.headers["content-length"])
      res = exchange(c, get("/after-head-fixed"))
      assert.equals(200, res.status)
      assert.equals("/after-head-fixed", uri_of(res))
      c:close()
    end)

    it("a 304 carrying Content-Length has no body; the next request works", function()
      local c = helpers.connect(s.port)
      local res = exchange(c, get("/304-with-length"))
      assert.equals(304, res.status)
      assert.equals('"v1"', res.headers["etag"])
      res = exchange(c, get("/after-304-with-length"))
      assert.equals(200, res.status)
      assert.equals("/after-304-with-length", uri_of(res))
      c:close()
    end)

    for _, code in ipairs({ 204, 304 }) do
      it(code .. " from the upstream has no body and keep-alive goes on", function()
        local c = helpers.connect(s.port)
        local res = exchange(c, get("/" .. code))
        assert.equals(code, res.status)
        assert.is_nil(res.headers["transfer-encoding"])
        res = exchange(c, get("/after-" .. code))
        assert.equals(200, res.status)
        assert.equals("/after-" .. code, uri_of(res))
        c:close()
      end)
    end

    it("sends no stray bytes after a 204 (nothing arrives before the next request)", function()
      local c = helpers.connect(s.port)
      exchange(c, get("/204"))
      c:settimeout(0.3)
      local data, err, partial = c.sock:receive(1)
      assert.is_nil(data)
      assert.equals("timeout", err)
      assert.equals("", partial)
      c:close()
    end)
  end)
end)
