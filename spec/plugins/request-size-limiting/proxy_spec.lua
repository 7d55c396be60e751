-- request-size-limiting through the real binary: Content-Length refused before the
-- body is read, chunked uploads cut as they stream (raw sockets and curl), and what
-- the client gets when the upstream had already started answering.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format
local rep = string.rep

-- One route per behaviour; /early answers before reading the body.
local function gateway(up)
  return helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: uploads
    url: http://127.0.0.1:%d
    routes:
      - name: small
        paths: ["/small"]
        strip_path: false
        plugins:
          - name: request-size-limiting
            config: { allowed_payload_size: 1, size_unit: kilobytes }
      - name: strict
        paths: ["/strict"]
        strip_path: false
        plugins:
          - name: request-size-limiting
            config: { allowed_payload_size: 1, size_unit: kilobytes, require_content_length: true }
      - name: early
        paths: ["/early"]
        strip_path: false
        plugins:
          - name: request-size-limiting
            config: { allowed_payload_size: 2, size_unit: kilobytes }
      - name: big
        paths: ["/big"]
        strip_path: false
        plugins:
          - name: request-size-limiting
            config: { allowed_payload_size: 1 }
]], up.port), { server = { log_level = "info" } })
end

-- The upstream: echoes what it got (spec/helpers); /early answers 200 at once
-- and reads nothing of the body.
local function upstream()
  return helpers.start_upstream({ locations = [[
    location /early {
      return 200 "early\n";
    }
    location /early/slow {
      content_by_lua_block {
        ngx.say("start")
        ngx.flush(true)
        ngx.sleep(4)
        ngx.say("end")
      }
    }
]] })
end

local function chunk(data)
  return fmt("%x\r\n%s\r\n", #data, data)
end

local function assert_413(res, err)
  assert.is_table(res, err)
  assert.equal(413, res.status)
  assert.equal('{"message":"Request size limit exceeded"}', (res.body:gsub("%s+$", "")))
end

describe("plugin: request-size-limiting (proxy)", function()
  local up, s

  setup(function()
    up = upstream()
    s = gateway(up)
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("proxies a Content-Length body within the limit", function()
    local body = rep("a", 1024)
    local res = helpers.request(s.port, "POST /small/fits HTTP/1.1\r\nHost: gw\r\n"
      .. "Content-Length: 1024\r\n\r\n" .. body)
    assert.equal(200, res.status)
    assert.equal(body, helpers.json(res.body).body)
  end)

  it("refuses a Content-Length over the limit before reading the body", function()
    -- Only the head is sent: the answer must not wait for the body.
    local c = helpers.connect(s.port)
    assert(c:send("POST /small/too-big HTTP/1.1\r\nHost: gw\r\nContent-Length: 1025\r\n\r\n"))
    c:settimeout(3)
    assert_413(c:read_response())
    assert.is_true((c:closed(2)), "the connection stayed open after 413")
    c:close()
    assert.is_false(helpers.upstream_saw(up, "/small/too-big"))
  end)

  it("answers 417, not 100 Continue, to a client that waits before sending", function()
    local c = helpers.connect(s.port)
    assert(c:send("POST /small/expect HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\n"
      .. "Expect: 100-continue\r\n\r\n"))
    c:settimeout(3)
    local line = c:receive_line()
    assert.matches("^HTTP/1%.1 417 ", line)
    c:close()
    assert.is_false(helpers.upstream_saw(up, "/small/expect"))
  end)

  it("proxies a chunked body within the limit, counted as it streams", function()
    local c = helpers.connect(s.port)
    assert(c:send("POST /small/chunked-ok HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
      .. "Connection: close\r\n\r\n" .. chunk(rep("x", 600))))
    socket.sleep(0.05)
    assert(c:send(chunk(rep("y", 424)) .. "0\r\n\r\n"))
    local res = assert(c:read_response())
    c:close()
    assert.equal(200, res.status)
    assert.equal(rep("x", 600) .. rep("y", 424), helpers.json(res.body).body)
  end)

  it("cuts a chunked body at the limit with 413, after its head went upstream", function()
    local c = helpers.connect(s.port)
    assert(c:send("POST /small/chunked-big HTTP/1.1\r\nHost: gw\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n" .. chunk(rep("x", 1000))))
    -- Let the head and the first chunk reach the upstream, then pass the limit.
    socket.sleep(0.2)
    assert(c:send(chunk(rep("y", 25))))
    c:settimeout(3)
    assert_413(c:read_response())
    assert.is_true((c:closed(2)), "the connection stayed open after 413")
    c:close()
    -- The upstream never got a whole request: its connection was closed mid-body.
    assert.is_true(helpers.wait_for(function()
      return helpers.upstream_saw(up, "/small/chunked-big") or nil
    end, 5) ~= nil, "the upstream did not log the cut request")
    assert.is_false(helpers.upstream_saw(up, "POST /small/chunked-big HTTP/1.1 200"))
  end)

  it("cuts a chunked body that passes the limit in its first piece", function()
    local c = helpers.connect(s.port)
    assert(c:send("POST /small/one-piece HTTP/1.1\r\nHost: gw\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n" .. chunk(rep("z", 1025)) .. "0\r\n\r\n"))
    c:settimeout(3)
    assert_413(c:read_response())
    c:close()
    assert.is_false(helpers.upstream_saw(up, "POST /small/one-piece HTTP/1.1 200"))
  end)

  it("cuts a chunked curl upload of 3 MB against a 1 MB limit", function()
    local dir = helpers.tmpdir()
    local file = dir .. "/upload.bin"
    helpers.write_file(file, rep("0123456789abcdef", 3 * 65536))
    local status, _, body = helpers.curl(fmt("-H 'Transfer-Encoding: chunked' "
      .. "--data-binary @%s 'http://127.0.0.1:%d/big/curl'", file, s.port))
    assert.equal(413, status)
    assert.equal('{"message":"Request size limit exceeded"}', (body:gsub("%s+$", "")))
    assert.is_false(helpers.upstream_saw(up, "POST /big/curl HTTP/1.1 200"))
    -- and one within the limit goes through whole
    helpers.write_file(file, rep("0123456789abcdef", 65536))
    local st2, _, body2 = helpers.curl(fmt("-H 'Transfer-Encoding: chunked' "
      .. "--data-binary @%s 'http://127.0.0.1:%d/big/curl-ok'", file, s.port))
    assert.equal(200, st2)
    assert.equal(1048576, #helpers.json(body2).body)
  end)

  it("keeps a whole early answer of the upstream and closes the connection after it",
    function()
      local c = helpers.connect(s.port)
      assert(c:send("POST /early/x HTTP/1.1\r\nHost: gw\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n" .. chunk(rep("a", 1024))))
      c:settimeout(3)
      local res = assert(c:read_response())
      assert.equal(200, res.status)
      assert.equal("early\n", res.body)
      for _ = 1, 80 do
        if not c:send(chunk(rep("b", 1024))) then
          break
        end
      end
      assert.is_true((c:closed(3)), "the connection stayed open")
      c:close()
    end)

  it("cuts the connection when the limit passes while the upstream's answer streams",
    function()
      local c = helpers.connect(s.port)
      local t0 = socket.gettime()
      assert(c:send("POST /early/slow HTTP/1.1\r\nHost: gw\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n" .. chunk(rep("a", 1024))))
      c:settimeout(3)
      assert.matches("^HTTP/1%.1 200 ", c:receive_line())
      -- The head and the first piece are out; the rest comes in 4 s. Pass 2k now.
      assert(c:send(chunk(rep("b", 4096))))
      -- Read to the close: the rest of the head and "start", never "end".
      c:settimeout(3)
      local rest, err = c.sock:receive("*a")
      c:close()
      assert.is_string(rest, err)
      assert.is_true(socket.gettime() - t0 < 3.5, "the connection was not cut")
      assert.matches("start", rest, 1, true)
      assert.is_nil(rest:find("end", 1, true))
      assert.truthy(helpers.wait_for(function()
        local log = helpers.read_file(s.log) or ""
        return log:find("the request body passed its limit after the response started", 1,
          true)
      end, 5), "no log line for the cut connection")
    end)

  it("requires a Content-Length or a chunked body with require_content_length", function()
    local res = helpers.request(s.port, "GET /strict/none HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert.equal(411, res.status)
    assert.equal('{"message":"A valid Content-Length header is required"}',
      (res.body:gsub("%s+$", "")))
    res = helpers.request(s.port, "POST /strict/cl HTTP/1.1\r\nHost: gw\r\n"
      .. "Content-Length: 3\r\n\r\nabc")
    assert.equal(200, res.status)
    res = helpers.request(s.port, "POST /strict/chunked HTTP/1.1\r\nHost: gw\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n" .. chunk("abc") .. "0\r\n\r\n")
    assert.equal(200, res.status)
    assert.equal("abc", helpers.json(res.body).body)
    assert.is_false(helpers.upstream_saw(up, "/strict/none"))
  end)

  it("logs the 413 in the access log", function()
    helpers.request(s.port, "POST /small/logged HTTP/1.1\r\nHost: gw\r\n"
      .. "Content-Length: 2000\r\n\r\n")
    local line = helpers.wait_for(function()
      for l in (helpers.read_file(s.access_log) or ""):gmatch("[^\n]+") do
        if l:find('"/small/logged"', 1, true) then
          return l
        end
      end
    end, 5)
    assert.is_string(line)
    assert.equal(413, helpers.json(line).status)
  end)
end)
