-- The upstream keep-alive pool: reuse, max requests per connection, no pool,
-- and upstreams that close idle connections.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

local function config(upstream)
  return fmt([[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: all
        paths: ["/"]
]], upstream.port)
end

-- The upstream connection serial numbers of n sequential requests, each from
-- a new client connection.
local function upstream_connections(s, n, path)
  local seen = {}
  for i = 1, n do
    local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d%s%d", s.port,
      path or "/pool/", i))
    assert.equals(200, status)
    seen[i] = helpers.json(body).connection
    assert.is_number(seen[i])
  end
  return seen
end

describe("pool: upstream keep-alive", function()
  teardown(function()
    helpers.stop_all()
  end)

  it("sequential requests reuse one upstream connection", function()
    local upstream = helpers.start_upstream()
    local s = helpers.start_sluice(config(upstream))
    local conns = upstream_connections(s, 6)
    for i = 2, 6 do
      assert.equals(conns[1], conns[i], "request " .. i .. " used another upstream connection")
    end
  end)

  it("requests pipelined on one client connection reuse one upstream connection", function()
    local upstream = helpers.start_upstream()
    local s = helpers.start_sluice(config(upstream))
    local c = helpers.connect(s.port)
    local raw = ""
    for i = 1, 4 do
      raw = raw .. fmt("GET /pipe/%d HTTP/1.1\r\nHost: gw.test\r\n\r\n", i)
    end
    assert(c:send(raw))
    local first
    for i = 1, 4 do
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      local echo = helpers.json(res.body)
      assert.equals("/pipe/" .. i, echo.uri)
      first = first or echo.connection
      assert.equals(first, echo.connection)
    end
    c:close()
  end)

  it("opens a new upstream connection after upstream_keepalive_max_requests", function()
    local upstream = helpers.start_upstream()
    local s = helpers.start_sluice(config(upstream),
      { server = { upstream_keepalive_max_requests = 3 } })
    local conns = upstream_connections(s, 7)
    assert.equals(conns[1], conns[2])
    assert.equals(conns[1], conns[3])
    assert.not_equals(conns[3], conns[4])
    assert.equals(conns[4], conns[5])
    assert.equals(conns[4], conns[6])
    assert.not_equals(conns[6], conns[7])
  end)

  it("opens a new upstream connection for each request with upstream_keepalive_pool_size 0",
    function()
      local upstream = helpers.start_upstream()
      local s = helpers.start_sluice(config(upstream),
        { server = { upstream_keepalive_pool_size = 0 } })
      local conns = upstream_connections(s, 5)
      local distinct = {}
      for _, n in ipairs(conns) do
        assert.is_nil(distinct[n], "upstream connection " .. n .. " was reused")
        distinct[n] = true
      end
    end)

  it("drops pooled connections after upstream_keepalive_idle_timeout", function()
    local upstream = helpers.start_upstream()
    local s = helpers.start_sluice(config(upstream),
      { server = { upstream_keepalive_idle_timeout = "300ms" } })
    local before = upstream_connections(s, 2)
    assert.equals(before[1], before[2])
    socket.sleep(0.7)
    local after = upstream_connections(s, 1)
    assert.not_equals(before[2], after[1])
  end)
end)

describe("pool: an upstream that answers Connection: close", function()
  teardown(function()
    helpers.stop_all()
  end)

  it("is not reused, and the client connection goes on", function()
    local upstream = helpers.start_upstream({ locations = [[
    location = /close-each {
      keepalive_requests 1;
      return 200 "$connection\n";
    }
]] })
    local s = helpers.start_sluice(config(upstream))
    local c = helpers.connect(s.port)
    local seen = {}
    for i = 1, 3 do
      assert(c:send("GET /close-each HTTP/1.1\r\nHost: gw.test\r\n\r\n"))
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(200, res.status, "request " .. i)
      assert.is_nil(seen[res.body], "an upstream connection was reused after Connection: close")
      seen[res.body] = true
    end
    c:close()
  end)
end)

describe("pool: an upstream that closes idle connections", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream({ keepalive_timeout = "500ms" })
    s = helpers.start_sluice(config(upstream))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("a GET after the upstream closed the pooled connection still succeeds", function()
    local before = upstream_connections(s, 1, "/idle-get-before/")
    socket.sleep(1.2)
    local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d/idle-get", s.port))
    assert.equals(200, status)
    local echo = helpers.json(body)
    assert.equals("/idle-get", echo.uri)
    assert.not_equals(before[1], echo.connection)
  end)

  it("a POST with a body after the upstream closed the pooled connection still succeeds",
    function()
      upstream_connections(s, 1, "/idle-post-before/")
      socket.sleep(1.2)
      local status, _, body = helpers.curl(fmt("-d 'payload=1234' http://127.0.0.1:%d/idle-post",
        s.port))
      assert.equals(200, status)
      local echo = helpers.json(body)
      assert.equals("POST", echo.method)
      assert.equals("payload=1234", echo.body)
      -- Sent once: the upstream saw one POST.
      local posts = 0
      for _, line in ipairs(helpers.upstream_requests(upstream)) do
        if line:find("POST /idle-post ", 1, true) then
          posts = posts + 1
        end
      end
      assert.equals(1, posts)
    end)

  it("a request on a client connection kept open across the upstream close succeeds",
    function()
      local c = helpers.connect(s.port)
      assert(c:send("GET /kept-1 HTTP/1.1\r\nHost: gw.test\r\n\r\n"))
      local res = c:read_response()
      assert.equals(200, res.status)
      socket.sleep(1.2)
      assert(c:send("POST /kept-2 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc"))
      res = c:read_response()
      assert.is_truthy(res)
      assert.equals(200, res.status)
      assert.equals("abc", helpers.json(res.body).body)
      c:close()
    end)
end)
