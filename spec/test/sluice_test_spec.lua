-- sluice.test: the helpers plugin authors use, used the way they would use them.
local t = require("sluice.test")

describe("sluice.test", function()
  local upstream, proxy

  setup(function()
    upstream = t.mock_upstream({ routes = {
      ["/teapot"] = { status = 418, body = { tea = true }, headers = { ["X-Pot"] = "brown" } },
    } })
    proxy = t.start({
      services = { {
        name = "s", url = upstream.url,
        routes = {
          { name = "all", paths = { "/" } },
          { name = "stop", paths = { "/stop" },
            plugins = { { name = "request-termination",
                          config = { status_code = 403, message = "go away" } } } },
        },
      } },
    })
  end)

  teardown(function()
    t.stop()
  end)

  it("starts a real sluice and a recording mock upstream", function()
    local res = assert(proxy:get("/hello", { headers = { ["X-Trace"] = "t1" },
                                             query = { a = 1 } }))
    local body = assert.res_status(200, res)
    assert.is_string(body)
    local echoed = res:json()
    assert.equal("/hello?a=1", echoed.uri)
    local seen = upstream:last_request()
    assert.equal("GET", seen.method)
    assert.equal("/hello?a=1", seen.uri)
    assert.equal("t1", seen.headers["x-trace"])
  end)

  it("answers as the mock upstream was told, JSON bodies included", function()
    local res = assert(proxy:post("/teapot", { body = { cup = 1 } }))
    assert.res_status(418, res)
    assert.same({ tea = true }, res:json())
    assert.equal("brown", assert.response(res).has.header("x-pot"))
    assert.equal('{"cup":1}', upstream:last_request().body)
  end)

  it("shows what plugins answered", function()
    local res = assert(proxy:get("/stop"))
    assert.res_status(403, res)
    assert.same({ message = "go away" }, res:json())
  end)

  it("starts a real redis-server", function()
    local r = t.redis()
    local sock = t.socket.tcp()
    assert(sock:connect(r.host, r.port))
    sock:send("PING\r\n")
    assert.equal("+PONG", sock:receive("*l"))
    sock:close()
  end)
end)
