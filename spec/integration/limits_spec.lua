-- Limits and client timeouts: 414, 431, 413, 408 and idle keep-alive connections.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format
local rep = string.rep

local SERVER = {
  max_request_line = 256,
  max_header_size = "1k",
  max_headers = 10,
  max_body_size = 1024,
  client_header_timeout = "500ms",
  client_body_timeout = 500,
  keepalive_timeout = "300ms",
}

-- Reads the response on c and checks it is sluice's JSON error `status`,
-- followed by the connection closing.
local function assert_error(c, status, what)
  local res, err = c:read_response()
  assert.is_truthy(res, err)
  assert.equals(status, res.status, what)
  assert.matches("^application/json", res.headers["content-type"])
  local body = helpers.json(res.body)
  assert.is_table(body, res.body)
  assert.is_string(body.message)
  assert.is_true((c:closed(2)), "the connection stayed open after " .. status)
  return res
end

describe("limits:", function()
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
]], upstream.port), { server = SERVER })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function send(raw)
    local c = helpers.connect(s.port)
    assert(c:send(raw))
    return c
  end

  describe("request line", function()
    it("within max_request_line is served", function()
      local path = "/" .. rep("a", 200)
      local res = helpers.request(s.port, fmt("GET %s HTTP/1.1\r\nHost: gw.test\r\n\r\n", path))
      assert.equals(200, res.status)
      assert.equals(path, helpers.json(res.body).uri)
    end)

    it("longer than max_request_line gets 414", function()
      local c = send(fmt("GET /%s HTTP/1.1\r\nHost: gw.test\r\n\r\n", rep("b", 300)))
      assert_error(c, 414)
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "bbbbbbbb"))
    end)

    it("longer than max_request_line gets 414 even before the line ends", function()
      local c = send("GET /" .. rep("c", 400))
      assert_error(c, 414)
      c:close()
    end)
  end)

  describe("headers", function()
    it("a head over max_header_size gets 431", function()
      local headers = {}
      for i = 1, 8 do
        headers[i] = fmt("X-Big-%d: %s\r\n", i, rep("v", 200))
      end
      local c = send("GET /big-head HTTP/1.1\r\nHost: gw.test\r\n" .. table.concat(headers)
        .. "\r\n")
      assert_error(c, 431)
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "/big-head"))
    end)

    it("one header line bigger than max_header_size gets 431", function()
      local c = send("GET /big-line HTTP/1.1\r\nHost: gw.test\r\nX-Big: " .. rep("v", 2000)
        .. "\r\n\r\n")
      assert_error(c, 431)
      c:close()
    end)

    it("more header lines than max_headers get 431", function()
      local headers = {}
      for i = 1, 11 do
        headers[i] = fmt("X-H%d: %d\r\n", i, i)
      end
      local c = send("GET /many HTTP/1.1\r\nHost: gw.test\r\n" .. table.concat(headers) .. "\r\n")
      assert_error(c, 431)
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "/many"))
    end)

    it("max_headers header lines are served", function()
      local headers = {}
      for i = 1, 9 do
        headers[i] = fmt("X-H%d: %d\r\n", i, i)
      end
      local res = helpers.request(s.port, "GET /nine HTTP/1.1\r\nHost: gw.test\r\n"
        .. table.concat(headers) .. "\r\n")
      assert.equals(200, res.status)
      assert.equals("9", helpers.lower_headers(helpers.json(res.body).headers)["x-h9"])
    end)
  end)

  describe("body", function()
    it("up to max_body_size is served", function()
      local body = rep("x", 1024)
      local res = helpers.request(s.port, "POST /fits HTTP/1.1\r\nHost: gw.test\r\n"
        .. "Content-Length: 1024\r\n\r\n" .. body)
      assert.equals(200, res.status)
      assert.equals(body, helpers.json(res.body).body)
    end)

    it("a Content-Length over max_body_size gets 413 without waiting for the body", function()
      local c = send("POST /too-big HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1025\r\n\r\n")
      assert_error(c, 413)
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "/too-big"))
    end)

    it("Expect: 100-continue with a Content-Length over the limit gets 413, not 100", function()
      local c = send("POST /too-big-expect HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5000\r\n"
        .. "Expect: 100-continue\r\n\r\n")
      c:settimeout(3)
      local line = c:receive_line()
      assert.matches("^HTTP/1%.1 413 ", line)
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "/too-big-expect"))
    end)

    it("a chunked body growing over max_body_size gets 413", function()
      local c = send("POST /too-big-chunked HTTP/1.1\r\nHost: gw.test\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n" .. "200\r\n" .. rep("y", 512) .. "\r\n")
      socket.sleep(0.05)
      assert(c:send("200\r\n" .. rep("y", 512) .. "\r\n" .. "10\r\n" .. rep("y", 16) .. "\r\n"
        .. "0\r\n\r\n"))
      assert_error(c, 413)
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "/too-big-chunked HTTP/1.1 200"))
    end)
  end)

  describe("client timeouts", function()
    it("a head not finished within client_header_timeout gets 408", function()
      local t0 = socket.gettime()
      local c = send("GET /slow-head HTTP/1.1\r\nHost: gw.test\r\n")
      c:settimeout(5)
      assert_error(c, 408)
      local elapsed = socket.gettime() - t0
      assert.is_true(elapsed >= 0.4, fmt("408 after %.2fs, before the timeout", elapsed))
      assert.is_true(elapsed < 3, fmt("408 after %.2fs", elapsed))
      c:close()
      assert.is_false(helpers.upstream_saw(upstream, "/slow-head"))
    end)

    it("a body stalled for client_body_timeout gets 408", function()
      local t0 = socket.gettime()
      local c = send("POST /slow-body HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 10\r\n\r\nabc")
      c:settimeout(5)
      assert_error(c, 408)
      local elapsed = socket.gettime() - t0
      assert.is_true(elapsed >= 0.4, fmt("408 after %.2fs, before the timeout", elapsed))
      assert.is_true(elapsed < 3, fmt("408 after %.2fs", elapsed))
      c:close()
    end)

    it("an idle keep-alive connection is closed after keepalive_timeout", function()
      local c = helpers.connect(s.port)
      assert(c:send("GET /idle HTTP/1.1\r\nHost: gw.test\r\n\r\n"))
      local res = c:read_response()
      assert.equals(200, res.status)
      local t0 = socket.gettime()
      assert.is_true((c:closed(3)), "the idle connection was not closed")
      local elapsed = socket.gettime() - t0
      assert.is_true(elapsed >= 0.2, fmt("closed after %.2fs, before the timeout", elapsed))
      assert.is_true(elapsed < 2, fmt("closed after %.2fs", elapsed))
      c:close()
    end)

    it("a connection that keeps sending requests is not closed by keepalive_timeout", function()
      local c = helpers.connect(s.port)
      for i = 1, 4 do
        assert(c:send(fmt("GET /busy-%d HTTP/1.1\r\nHost: gw.test\r\n\r\n", i)))
        local res, err = c:read_response()
        assert.is_truthy(res, err)
        assert.equals(200, res.status)
        socket.sleep(0.15)
      end
      c:close()
    end)
  end)
end)
