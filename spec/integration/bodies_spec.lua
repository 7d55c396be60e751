-- Bodies in Lua through the real binary: request bodies read and replaced in
-- access, the body_filter phase on streamed, buffered and exit responses, and
-- the framing clients get. Plugins are inline pre-/post-function code, so each
-- route's behaviour reads next to its config.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format
local rep = string.rep

local MB = 1024 * 1024

-- Upstream locations: bodies of known shapes.
local LOCATIONS = [[
    location = /big {
      content_by_lua_block {
        ngx.header["Content-Type"] = "text/plain"
        ngx.header["Content-Length"] = 1048576
        ngx.print(string.rep("abcdefghijklmnop", 65536))
      }
    }
    location = /big-chunked {
      content_by_lua_block {
        ngx.header["Content-Type"] = "text/plain"
        for _ = 1, 16 do
          ngx.print(string.rep("qrstuvwxyz012345", 4096))
          ngx.flush(true)
        end
      }
    }
    location = /medium {
      content_by_lua_block {
        ngx.print(string.rep("0123456789", 10000))
      }
    }
    location = /huge {
      alias HUGEFILE;
    }
    location = /nocontent {
      return 204;
    }
    location = /json {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"name":"sluice","n":1}')
      }
    }
]]

local function config(up)
  return fmt([=[
_format_version: "3.0"
server:
  listen: ["127.0.0.1:{PORT}"]
  workers: 1
  pid_file: "{DIR}/sluice.pid"
  access_log: "{DIR}/access.log"
  error_log: "{DIR}/error.log"
  log_level: notice
  client_body_buffer_size: 64k
  response_body_buffer_size: 256k
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: read
        paths: ["/read"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local body, err = sluice.request.get_raw_body()
                  sluice.service.request.set_header("X-Body-Len", body and #body or "nil")
                  sluice.service.request.set_header("X-Body-Err", err or "none")
                  if body and sluice.request.get_header("x-want-tail") then
                    sluice.service.request.set_header("X-Body-Tail", body:sub(-8))
                  end
      - name: decode
        paths: ["/decode"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local args, err, mime = sluice.request.get_body()
                  return sluice.response.exit(200, { args = args or sluice.json.null,
                    err = err or sluice.json.null, mime = mime or sluice.json.null })
      - name: set-raw
        paths: ["/set-raw"]
        plugins:
          - name: pre-function
            config:
              access:
                - sluice.service.request.set_raw_body("replaced body")
      - name: read-then-set
        paths: ["/read-then-set"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local body = assert(sluice.request.get_raw_body())
                  sluice.service.request.set_raw_body(body:upper())
                  sluice.service.request.set_header("X-Reread", sluice.request.get_raw_body())
      - name: set-body
        paths: ["/set-body"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local mime = sluice.request.get_header("x-mime")
                  local ok, err = sluice.service.request.set_body({ a = "1", b = "x y" }, mime)
                  if not ok then
                    return sluice.response.exit(415, { err = err })
                  end
      - name: upper
        paths: ["/big", "/big-chunked", "/nocontent"]
        strip_path: false
        plugins:
          - name: post-function
            config:
              body_filter:
                - |
                  local chunk, eof = sluice.response.get_chunk()
                  sluice.response.set_chunk(chunk:upper())
                  if eof then
                    sluice.log.notice("upper: last call, ", #chunk, " bytes, method ",
                      sluice.request.get_method())
                  end
      - name: passthrough
        paths: ["/huge"]
        strip_path: false
        plugins:
          - name: post-function
            config:
              body_filter:
                - |
                  local state = sluice.ctx.plugin
                  state.seen = (state.seen or 0) + #sluice.response.get_chunk()
      - name: replace
        paths: ["/replace"]
        plugins:
          - name: post-function
            config:
              access: ["sluice.service.request.set_path('/medium')"]
              body_filter:
                - |
                  local body = sluice.response.get_raw_body()
                  if body then
                    sluice.response.set_raw_body("whole body: " .. #body .. " bytes")
                  end
      - name: too-big-to-buffer
        paths: ["/too-big"]
        plugins:
          - name: post-function
            config:
              access: ["sluice.service.request.set_path('/big')"]
              body_filter:
                - |
                  local body, err = sluice.response.get_raw_body()
                  if err and not sluice.ctx.plugin.logged then
                    sluice.ctx.plugin.logged = true
                    sluice.log.notice("too-big: ", err)
                  end
      - name: pieces
        paths: ["/pieces"]
        plugins:
          - name: post-function
            config:
              access: ["sluice.service.request.set_path('/big-chunked')"]
              body_filter:
                - |
                  local state = sluice.ctx.plugin
                  local chunk, eof = sluice.response.get_chunk()
                  state.calls = (state.calls or 0) + 1
                  state.bytes = (state.bytes or 0) + #chunk
                  if state.eof_seen then
                    error("a call after the last one")
                  end
                  state.eof_seen = eof
                  if eof then
                    sluice.response.set_chunk(chunk .. string.format("|calls=%%d bytes=%%d",
                      state.calls, state.bytes))
                  end
      - name: buffered
        paths: ["/buffered"]
        plugins:
          - name: pre-function
            config:
              access:
                - sluice.service.request.enable_buffering()
                - sluice.service.request.set_path("/json")
              header_filter:
                - |
                  local t = assert(sluice.service.response.get_body())
                  t.rewritten = true
                  sluice.response.set_raw_body(sluice.json.encode(t))
          - name: post-function
            config:
              body_filter:
                - |
                  local chunk, eof = sluice.response.get_chunk()
                  local n = (sluice.ctx.plugin.n or 0) + 1
                  sluice.ctx.plugin.n = n
                  sluice.response.set_chunk(chunk .. "\n")
                  sluice.log.notice("buffered: call ", n, " eof ", tostring(eof), " upstream ",
                    sluice.service.response.get_raw_body())
      - name: buffered-too-big
        paths: ["/buffered-too-big"]
        plugins:
          - name: pre-function
            config:
              access:
                - sluice.service.request.enable_buffering()
                - sluice.service.request.set_path("/big")
              header_filter:
                - |
                  local body, err = sluice.service.response.get_raw_body()
                  sluice.response.set_header("X-Buffered", body and #body or err)
      - name: exit
        paths: ["/exit"]
        plugins:
          - name: pre-function
            config:
              access: ["return sluice.response.exit(200, 'made by a plugin')"]
              body_filter:
                - |
                  local chunk, eof = sluice.response.get_chunk()
                  sluice.response.set_chunk(chunk:upper() .. (eof and "!" or ""))
      - name: boom-later
        paths: ["/boom-later"]
        plugins:
          - name: post-function
            config:
              access: ["sluice.service.request.set_path('/big')"]
              body_filter:
                - |
                  local n = (sluice.ctx.plugin.n or 0) + 1
                  sluice.ctx.plugin.n = n
                  if n == 3 then
                    error("boom in the third piece")
                  end
      - name: boom-first
        paths: ["/boom-first"]
        plugins:
          - name: post-function
            config:
              body_filter: ["error('boom at once')"]
]=], up.port)
end

describe("bodies:", function()
  local up, s, dir

  setup(function()
    dir = helpers.tmpdir()
    helpers.run(fmt("truncate -s 64M %s/huge.bin", dir))
    up = helpers.start_upstream({ locations = LOCATIONS:gsub("HUGEFILE", dir .. "/huge.bin") })
    s = helpers.start_sluice(config(up))
  end)

  teardown(function()
    helpers.stop_all()
    os.execute("rm -rf " .. dir)
  end)

  local function error_log()
    return helpers.read_file(s.dir .. "/error.log") or ""
  end

  local function wait_log(text)
    return helpers.wait_for(function()
      return error_log():find(text, 1, true) ~= nil
    end, 3)
  end

  -- Compares long strings without printing them whole on failure.
  local function same_bytes(expected, actual)
    assert.equals(#expected, #(actual or ""), "lengths differ")
    assert.is_true(expected == actual, "same length, different bytes")
  end

  local function echo_of(res)
    local echo = helpers.json(res.body)
    assert.is_table(echo, res.body)
    echo.h = helpers.lower_headers(echo.headers)
    return echo
  end

  -- A follow-up request on conn must be answered: the previous one left the
  -- connection in a clean state.
  local function assert_reusable(conn)
    conn:send("GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
    local res, err = conn:read_response()
    assert.is_table(res, err)
    assert.equals(200, res.status)
    assert.equals("GET", echo_of(res).method)
  end

  -- Sends a chunked body in pieces, pausing between them.
  local function send_chunked(conn, pieces, pause)
    for _, piece in ipairs(pieces) do
      conn:send(fmt("%x\r\n%s\r\n", #piece, piece))
      socket.sleep(pause or 0)
    end
    conn:send("0\r\n\r\n")
  end

  describe("request bodies:", function()
    it("get_raw_body returns a 300 KB Content-Length body whole", function()
      -- Above the 64k client_body_buffer_size of this config: raised per test
      -- below; here the body fits the limit of a second instance.
      local s2 = helpers.start_sluice((config(up):gsub("client_body_buffer_size: 64k",
        "client_body_buffer_size: 1m")))
      local body = rep("0123456789", 30000)
      local conn = helpers.connect(s2.port)
      conn:send(fmt("POST /read HTTP/1.1\r\nHost: x\r\nX-Want-Tail: 1\r\n"
        .. "Content-Length: %d\r\n\r\n", #body))
      -- In pieces: the plugin waits for all of them.
      for i = 1, #body, 100000 do
        conn:send(body:sub(i, i + 99999))
        socket.sleep(0.05)
      end
      local res = assert(conn:read_response())
      assert.equals(200, res.status)
      local echo = echo_of(res)
      assert.equals("300000", echo.h["x-body-len"])
      assert.equals("none", echo.h["x-body-err"])
      assert.equals("23456789", echo.h["x-body-tail"])
      assert.equals("300000", echo.h["content-length"])
      same_bytes(body, echo.body)
      assert_reusable(conn)
      conn:close()
    end)

    it("get_raw_body decodes a chunked body sent in pieces, sent on with a Content-Length",
      function()
        local conn = helpers.connect(s.port)
        conn:send("POST /read HTTP/1.1\r\nHost: x\r\nX-Want-Tail: 1\r\n"
          .. "Transfer-Encoding: chunked\r\n\r\n")
        local pieces = { "first piece;", rep("m", 20000), ";last piece" }
        send_chunked(conn, pieces, 0.1)
        local res = assert(conn:read_response())
        assert.equals(200, res.status)
        local echo = echo_of(res)
        local whole = table.concat(pieces)
        assert.equals(tostring(#whole), echo.h["x-body-len"])
        same_bytes(whole, echo.body)
        assert.equals(tostring(#whole), echo.h["content-length"])
        assert.is_nil(echo.h["transfer-encoding"])
        assert.equals("t piece", echo.h["x-body-tail"]:sub(-7))
        assert_reusable(conn)
        conn:close()
      end)

    it("a body over client_body_buffer_size gives nil and an error and still goes upstream whole",
      function()
        local body = rep("abcdefgh", 200 * 1024 / 8)
        local conn = helpers.connect(s.port)
        conn:send(fmt("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", #body,
          body))
        local res = assert(conn:read_response())
        assert.equals(200, res.status)
        local echo = echo_of(res)
        assert.equals("nil", echo.h["x-body-len"])
        assert.equals("request body did not fit into client body buffer, consider raising "
          .. "'client_body_buffer_size'", echo.h["x-body-err"])
        same_bytes(body, echo.body)
        assert_reusable(conn)

        -- Chunked: found too large while reading; what was read goes first.
        conn:send("POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        local pieces = {}
        for i = 1, 20 do
          pieces[i] = rep(string.char(64 + i), 10000)
        end
        send_chunked(conn, pieces, 0.005)
        res = assert(conn:read_response())
        echo = echo_of(res)
        assert.equals("nil", echo.h["x-body-len"])
        assert.equals("chunked", echo.h["transfer-encoding"])
        same_bytes(table.concat(pieces), echo.body)
        assert_reusable(conn)
        conn:close()
      end)

    it("answers Expect: 100-continue before waiting for the body", function()
      local conn = helpers.connect(s.port)
      conn:send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        .. "Expect: 100-continue\r\n\r\n")
      assert.equals("HTTP/1.1 100 Continue", conn:receive_line())
      assert.equals("", conn:receive_line())
      conn:send("hello")
      local echo = echo_of(assert(conn:read_response()))
      assert.equals("5", echo.h["x-body-len"])
      assert.equals("hello", echo.body)
      conn:close()
    end)

    it("client_body_timeout applies while a plugin waits for the body", function()
      local s2 = helpers.start_sluice((config(up):gsub("log_level: notice",
        "log_level: notice\n  client_body_timeout: 500ms")))
      local conn = helpers.connect(s2.port)
      conn:send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
      local started = socket.gettime()
      local res = assert(conn:read_response())
      assert.equals(408, res.status)
      assert.is_true(socket.gettime() - started < 3)
      assert.is_true(conn:closed())
      conn:close()
    end)

    it("a pipelined request after a body a plugin read is answered in turn", function()
      local conn = helpers.connect(s.port)
      conn:send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"
        .. "POST /set-raw HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond"
        .. "GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
      local echo = echo_of(assert(conn:read_response()))
      assert.equals("first", echo.body)
      echo = echo_of(assert(conn:read_response()))
      assert.equals("replaced body", echo.body)
      echo = echo_of(assert(conn:read_response()))
      assert.equals("GET", echo.method)
      assert.equals("0", echo.h["x-body-len"])
      conn:close()
    end)

    it("a body over max_body_size is still a 413 while a plugin reads it", function()
      local s2 = helpers.start_sluice((config(up):gsub("log_level: notice",
        "log_level: notice\n  max_body_size: 1k")))
      local conn = helpers.connect(s2.port)
      conn:send("POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
      send_chunked(conn, { rep("x", 800), rep("y", 800) }, 0.05)
      local res = assert(conn:read_response())
      assert.equals(413, res.status)
      conn:close()
    end)

    it("get_body decodes JSON, form and multipart bodies", function()
      local status, _, body = helpers.curl(fmt(
        "-H 'Content-Type: application/json' --data-binary '{\"a\":[1,2]}' "
        .. "http://127.0.0.1:%d/decode", s.port))
      assert.equals(200, status)
      local out = helpers.json(body)
      assert.same({ a = { 1, 2 } }, out.args)
      assert.equals("application/json", out.mime)

      status, _, body = helpers.curl(fmt(
        "--data-binary 'a=1&b=x+y&b=z' http://127.0.0.1:%d/decode", s.port))
      assert.equals(200, status)
      out = helpers.json(body)
      assert.same({ a = "1", b = { "x y", "z" } }, out.args)

      status, _, body = helpers.curl(fmt(
        "-F name=sluice -F 'file=@%s;filename=x.txt' http://127.0.0.1:%d/decode",
        s.file, s.port))
      assert.equals(200, status)
      out = helpers.json(body)
      assert.equals("multipart/form-data", out.mime)
      assert.equals("sluice", out.args.name)
      assert.equals(helpers.read_file(s.file), out.args.file)

      _, _, body = helpers.curl(fmt(
        "-H 'Content-Type: application/json' --data-binary '{nope' http://127.0.0.1:%d/decode",
        s.port))
      out = helpers.json(body)
      assert.matches("^invalid JSON body", out.err)
    end)

    it("set_raw_body replaces the body; the client's own is drained for keep-alive", function()
      local conn = helpers.connect(s.port)
      conn:send("POST /set-raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
      send_chunked(conn, { rep("a", 30000), rep("b", 30000), rep("c", 30000) }, 0.05)
      local res = assert(conn:read_response())
      local echo = echo_of(res)
      assert.equals("replaced body", echo.body)
      assert.equals("13", echo.h["content-length"])
      assert.is_nil(echo.h["transfer-encoding"])
      assert_reusable(conn)

      -- A request without a body gets one.
      conn:send("GET /set-raw HTTP/1.1\r\nHost: x\r\n\r\n")
      echo = echo_of(assert(conn:read_response()))
      assert.equals("replaced body", echo.body)
      assert.equals("13", echo.h["content-length"])
      assert_reusable(conn)
      conn:close()
    end)

    it("get_raw_body after set_raw_body sees the replacement", function()
      local conn = helpers.connect(s.port)
      conn:send("POST /read-then-set HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
      local echo = echo_of(assert(conn:read_response()))
      assert.equals("HELLO", echo.body)
      assert.equals("HELLO", echo.h["x-reread"])
      assert_reusable(conn)
      conn:close()
    end)

    it("set_body encodes by the Content-Type or the mimetype given", function()
      local _, _, body = helpers.curl(fmt("-H 'Content-Type: application/json' -d '{}' "
        .. "http://127.0.0.1:%d/set-body", s.port))
      local echo = helpers.json(body)
      assert.same({ a = "1", b = "x y" }, helpers.json(echo.body))

      _, _, body = helpers.curl(fmt("-d 'z=1' http://127.0.0.1:%d/set-body", s.port))
      echo = helpers.json(body)
      assert.equals("a=1&b=x%20y", echo.body)
      assert.equals("11", helpers.lower_headers(echo.headers)["content-length"])

      _, _, body = helpers.curl(fmt("-H 'X-Mime: multipart/form-data' http://127.0.0.1:%d/set-body",
        s.port))
      echo = helpers.json(body)
      local h = helpers.lower_headers(echo.headers)
      local boundary = h["content-type"]:match("^multipart/form%-data; boundary=(.+)$")
      assert.is_string(boundary)
      assert.matches("name=\"b\"\r\n\r\nx y\r\n", echo.body, 1, true)
      assert.equals("--" .. boundary .. "--\r\n", echo.body:sub(-#boundary - 6))

      local status
      status, _, body = helpers.curl(fmt("-H 'Content-Type: text/plain' -d 'x' "
        .. "http://127.0.0.1:%d/set-body", s.port))
      assert.equals(415, status)
      assert.equals("unsupported content type 'text/plain'", helpers.json(body).err)
    end)
  end)

  describe("body_filter:", function()
    it("streams a 1 MB body through a chunk-by-chunk filter, re-framed as chunked", function()
      local conn = helpers.connect(s.port)
      conn:send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(conn:read_response())
      assert.equals(200, res.status)
      assert.equals("chunked", res.headers["transfer-encoding"])
      assert.is_nil(res.headers["content-length"])
      assert.equals(MB, #res.body)
      same_bytes(rep("ABCDEFGHIJKLMNOP", 65536), res.body)
      assert_reusable(conn)

      -- A chunked upstream body is decoded before the filter sees it.
      conn:send("GET /big-chunked HTTP/1.1\r\nHost: x\r\n\r\n")
      res = assert(conn:read_response())
      same_bytes(rep("QRSTUVWXYZ012345", 65536), res.body)
      assert_reusable(conn)
      conn:close()
    end)

    it("keeps backpressure: a client that does not read stops upstream reads", function()
      local worker = helpers.children(s.pid)[1]
      local base = helpers.rss_kb(worker)
      local conn = helpers.connect(s.port)
      conn:send("GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
      socket.sleep(1)
      local grown = helpers.rss_kb(worker) - base
      assert.is_true(grown < 16 * 1024, fmt("the worker grew by %d KiB", grown))
      conn:settimeout(20)
      local res = assert(conn:read_response())
      assert.equals(64 * MB, #res.body)
      conn:close()
    end)

    it("sends an HTTP/1.0 client a close-delimited body", function()
      local conn = helpers.connect(s.port)
      conn:send("GET /big HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
      local res = assert(conn:read_response())
      assert.equals(200, res.status)
      assert.is_nil(res.headers["transfer-encoding"])
      assert.is_nil(res.headers["content-length"])
      assert.equals("close", res.headers["connection"])
      same_bytes(rep("ABCDEFGHIJKLMNOP", 65536), res.body)
      conn:close()
    end)

    it("get_raw_body buffers until the last call; set_raw_body replaces the whole body",
      function()
        local res = assert(helpers.request(s.port, "GET /replace HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert.equals(200, res.status)
        assert.equals("whole body: 100000 bytes", res.body)
      end)

    it("get_raw_body past response_body_buffer_size returns nil, err and the body streams",
      function()
        local res = assert(helpers.request(s.port, "GET /too-big HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert.equals(200, res.status)
        same_bytes(rep("abcdefghijklmnop", 65536), res.body)
        assert.truthy(wait_log("too-big: response body did not fit into response body buffer, "
          .. "consider raising 'response_body_buffer_size'"))
      end)

    it("runs once per piece and a last time with eof", function()
      local res = assert(helpers.request(s.port, "GET /pieces HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert.equals(200, res.status)
      local body, calls, bytes = res.body:match("^(.*)|calls=(%d+) bytes=(%d+)$")
      same_bytes(rep("qrstuvwxyz012345", 65536), body)
      assert.equals(MB, tonumber(bytes))
      assert.is_true(tonumber(calls) >= 2, "one call for a 1 MB body")
    end)

    it("a HEAD response has only the last call, with an empty piece", function()
      local conn = helpers.connect(s.port)
      conn:send("HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(conn:read_response(true))
      assert.equals(200, res.status)
      assert.equals("1048576", res.headers["content-length"])
      assert.truthy(wait_log("upper: last call, 0 bytes, method HEAD"))
      assert_reusable(conn)
      conn:close()
    end)

    it("a 204 keeps its head as the upstream sent it", function()
      local conn = helpers.connect(s.port)
      conn:send("GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(conn:read_response())
      assert.equals(204, res.status)
      assert.is_nil(res.headers["transfer-encoding"])
      assert.equals("", res.body)
      assert_reusable(conn)
      conn:close()
    end)

    it("sees responses made by sluice.response.exit, which keep a Content-Length", function()
      local res = assert(helpers.request(s.port, "GET /exit HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert.equals(200, res.status)
      assert.equals("MADE BY A PLUGIN!", res.body)
      assert.equals("17", res.headers["content-length"])
    end)

    it("an error mid-body cuts the connection, is logged, and the worker lives", function()
      local worker = helpers.children(s.pid)[1]
      local conn = helpers.connect(s.port)
      conn:send("GET /boom-later HTTP/1.1\r\nHost: x\r\n\r\n")
      -- The head and the first pieces went out; then the connection ends
      -- without the last chunk.
      local res, err = conn:read_response()
      assert.is_nil(res)
      -- (cut inside a chunk, or between two)
      assert.is_truthy(err:find("closed", 1, true) or err:find("size line: nil", 1, true), err)
      conn:close()
      assert.truthy(wait_log("plugin 'post-function' failed in body_filter: "))
      assert.matches("boom in the third piece", error_log())
      assert.matches("stack traceback", error_log())
      assert.same({ worker }, helpers.children(s.pid))
      res = assert(helpers.request(s.port, "GET /read HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert.equals(200, res.status)
    end)

    it("an error in the first call, before anything went out, is a 500", function()
      local res = assert(helpers.request(s.port, "GET /boom-first HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert.equals(500, res.status)
      assert.equals('{"message":"An unexpected error occurred"}\n', res.body)
    end)
  end)

  describe("enable_buffering:", function()
    it("header_filter reads the upstream body and rewrites it with a Content-Length", function()
      local conn = helpers.connect(s.port)
      conn:send("GET /buffered HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(conn:read_response())
      assert.equals(200, res.status)
      assert.is_nil(res.headers["transfer-encoding"])
      assert.equals(tostring(#res.body), res.headers["content-length"])
      assert.same({ name = "sluice", n = 1, rewritten = true }, helpers.json(res.body))
      -- body_filter ran once, on the replaced body, and added its newline.
      assert.equals("\n", res.body:sub(-1))
      assert.truthy(wait_log('buffered: call 1 eof true upstream {"name":"sluice","n":1}'))
      assert.is_nil(error_log():find("buffered: call 2", 1, true))
      assert_reusable(conn)
      conn:close()
    end)

    it("a body over response_body_buffer_size streams and get_raw_body says why", function()
      local res = assert(helpers.request(s.port,
        "GET /buffered-too-big HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert.equals(200, res.status)
      assert.equals("response body did not fit into response body buffer, consider raising "
        .. "'response_body_buffer_size'", res.headers["x-buffered"])
      assert.equals("chunked", res.headers["transfer-encoding"])
      same_bytes(rep("abcdefghijklmnop", 65536), res.body)
    end)
  end)

  it("sluice check --routes lists body_filter chains", function()
    local out = helpers.run(fmt("%s check --routes -c %s", helpers.bin, s.file))
    assert.matches("upper  body_filter:post%-function", out)
    assert.matches("exit  access:pre%-function %-> body_filter:pre%-function", out)
  end)
end)
