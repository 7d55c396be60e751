-- sluice.http through the real binary: calls to another service from a plugin.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

describe("sluice.http", function()
  local s, upstream, other, short

  setup(function()
    upstream = helpers.start_upstream()
    short = helpers.start_upstream({ keepalive_timeout = "1s" })
    other = helpers.start_upstream({ locations = [[
    location = /slow { content_by_lua_block { ngx.sleep(0.2) ngx.say("slow") } }
    location = /chunked { content_by_lua_block { ngx.print("a") ngx.flush(true) ngx.print("b") } }
    location = /status { return 418 "teapot"; }
]] })
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:%d
    routes:
      - name: call
        paths: ["/call"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local path = sluice.request.get_query_arg("path") or "/echo"
                    local res, err = sluice.http.request({
                      method = sluice.request.get_query_arg("method") or "POST",
                      url = "http://127.0.0.1:%d" .. path,
                      headers = { ["X-Call"] = "yes" },
                      body = "payload",
                      timeout = tonumber(sluice.request.get_query_arg("timeout")) or 2,
                    })
                    if not res then
                      return sluice.response.exit(502, { err = err })
                    end
                    return sluice.response.exit(200, { status = res.status, body = res.body,
                      ctype = res.headers["content-type"] })
                  end
      - name: fanout
        paths: ["/fanout"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local ts = {}
                    for i = 1, 4 do
                      ts[i] = sluice.thread.spawn(function()
                        return sluice.http.request({ url = "http://127.0.0.1:%d/slow" }).body
                      end)
                    end
                    local out = {}
                    for i, r in ipairs(sluice.thread.wait_all(unpack(ts))) do out[i] = r[2] end
                    return sluice.response.exit(200, { bodies = out })
                  end
      - name: reuse
        paths: ["/reuse"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local url = "http://127.0.0.1:%d/echo"
                    local a = sluice.json.decode(sluice.http.request({ url = url }).body)
                    local b = sluice.json.decode(sluice.http.request({ url = url }).body)
                    return sluice.response.exit(200, { a = a.connection, b = b.connection })
                  end
      - name: short
        paths: ["/short"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local res, err = sluice.http.request({ url = "http://127.0.0.1:%d/echo" })
                    return sluice.response.exit(200, { status = res and res.status, err = err })
                  end
      - name: bad
        paths: ["/bad"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local _, e1 = sluice.http.request({ url = "https://127.0.0.1/" })
                    local _, e2 = sluice.http.request({ url = "http://example.invalid/" })
                    local _, e3 = sluice.http.request({ url = "http://127.0.0.1:9/" })
                    return sluice.response.exit(200, { e1 = e1, e2 = e2, e3 = e3 })
                  end
]], upstream.port, other.port, other.port, upstream.port, short.port), { workers = 1,
      -- Names fail here without a query leaving the machine: nothing answers
      -- DNS on port 9 of 127.0.0.1.
      server = { dns_resolver = { "127.0.0.1:9" } } })
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function get(path)
    local status, _, body = helpers.curl(fmt("'http://127.0.0.1:%d%s'", s.port, path))
    return status, helpers.json(body)
  end

  it("sends method, headers and body, and returns status, headers and body", function()
    local status, body = get("/call")
    assert.equal(200, status)
    assert.equal(200, body.status)
    assert.equal("application/json", body.ctype)
    local seen = helpers.json(body.body)
    assert.equal("POST", seen.method)
    assert.equal("payload", seen.body)
    assert.equal("yes", helpers.lower_headers(seen.headers)["x-call"])
  end)

  it("reads chunked bodies and other statuses", function()
    local _, body = get("/call?path=/chunked&method=GET")
    assert.equal("ab", body.body)
    _, body = get("/call?path=/status&method=GET")
    assert.equal(418, body.status)
    assert.equal("teapot", body.body)
  end)

  it("times out", function()
    local status, body = get("/call?path=/slow&method=GET&timeout=0.05")
    assert.equal(502, status)
    assert.equal("timeout", body.err)
  end)

  it("runs calls in parallel from threads", function()
    local t0 = socket.gettime()
    local status, body = get("/fanout")
    assert.equal(200, status)
    assert.same({ "slow\n", "slow\n", "slow\n", "slow\n" }, body.bodies)
    assert.is_true(socket.gettime() - t0 < 0.6)
  end)

  it("reuses its connections", function()
    local status, body = get("/reuse")
    assert.equal(200, status)
    assert.is_not_nil(body.a)
    assert.equal(body.a, body.b)
  end)

  it("notices a pooled connection the server closed", function()
    assert.equal(200, get("/short"))
    socket.sleep(1.5)
    local status, body = get("/short")
    assert.equal(200, status)
    assert.equal(200, body.status, body.err)
  end)

  it("says what it cannot do", function()
    local _, body = get("/bad")
    assert.matches("https is not supported yet", body.e1)
    assert.matches("could not resolve 'example.invalid'", body.e2)
    assert.equal("connection refused", body.e3)
  end)
end)
