-- cors through the real binary, with a real (recording) upstream: preflights
-- answered by sluice never reach it, except with preflight_continue.
local t = require("sluice.test")
local helpers = t.helpers

local APP = "https://app.example.com"

local function route(name, path, conf, extra)
  local r = { name = name, paths = { path }, strip_path = false,
              plugins = { { name = "cors", config = conf } } }
  for _, p in ipairs(extra or {}) do
    r.plugins[#r.plugins + 1] = p
  end
  return r
end

-- Through curl: a preflight's answer has an empty body, which curl reads
-- however the connection ends.
local function preflight(proxy, path, origin, headers)
  local args = { "-X OPTIONS", "-H 'Origin: " .. origin .. "'",
                 "-H 'Access-Control-Request-Method: PUT'" }
  for k, v in pairs(headers or {}) do
    args[#args + 1] = "-H '" .. k .. ": " .. v .. "'"
  end
  args[#args + 1] = "'" .. proxy.url .. path .. "'"
  local status, h, body = helpers.curl(table.concat(args, " "))
  return { status = status, headers = h, body = body }
end

-- The requests the upstream got for path, as "METHOD path".
local function seen(upstream, path)
  local out = {}
  for _, r in ipairs(upstream:requests()) do
    if r.uri:sub(1, #path) == path then
      out[#out + 1] = r.method .. " " .. r.uri
    end
  end
  return out
end

describe("plugin: cors (proxy)", function()
  local upstream, proxy, dead_port

  setup(function()
    upstream = t.mock_upstream({ routes = {
      ["/vary"] = { status = 200, body = "ok", headers = { Vary = "Accept-Encoding" } },
      ["/vary-origin"] = { status = 200, body = "ok", headers = { Vary = "origin" } },
      ["/own"] = { status = 204, headers = { ["Access-Control-Allow-Origin"] = "*",
                                             ["Access-Control-Allow-Methods"] = "PUT" } },
    } })
    dead_port = helpers.free_port()
    proxy = t.start({ services = {
      { name = "api", url = upstream.url, routes = {
          route("items", "/items", { origins = { APP }, methods = { "GET", "PUT" },
                                     headers = { "X-Id" }, max_age = 600, credentials = true,
                                     exposed_headers = { "X-Total" } }),
          route("vary", "/vary", { origins = { APP } }),
          route("own", "/own", { origins = { APP }, preflight_continue = true }),
          route("closed", "/closed", { origins = { APP } }, {
            { name = "request-termination", config = { status_code = 403, message = "no" } } }),
      } },
      { name = "down", url = "http://127.0.0.1:" .. dead_port, routes = {
          route("down", "/down", { origins = { APP } }),
      } },
    } })
  end)

  teardown(function()
    t.stop()
  end)

  it("answers a preflight with 200 and never sends it upstream", function()
    local res = preflight(proxy, "/items/1", APP, { ["Access-Control-Request-Headers"] = "x-id" })
    assert.res_status(200, res)
    assert.equal(APP, res.headers["access-control-allow-origin"])
    assert.equal("GET,PUT", res.headers["access-control-allow-methods"])
    assert.equal("X-Id", res.headers["access-control-allow-headers"])
    assert.equal("600", res.headers["access-control-max-age"])
    assert.equal("true", res.headers["access-control-allow-credentials"])
    assert.equal("Origin", res.headers.vary)
    assert.equal("0", res.headers["content-length"])
    -- A refused origin's preflight is answered here too.
    res = preflight(proxy, "/items/2", "https://evil.example.com")
    assert.res_status(200, res)
    assert.is_nil(res.headers["access-control-allow-origin"])
    -- Then the actual request goes up, and only it.
    res = assert(proxy:put("/items/1", { headers = { Origin = APP, ["X-Id"] = "7" }, body = "{}" }))
    assert.res_status(200, res)
    assert.equal(APP, res.headers["access-control-allow-origin"])
    assert.equal("X-Total", res.headers["access-control-expose-headers"])
    assert.same({ "PUT /items/1" }, seen(upstream, "/items"))
    assert.equal(APP, upstream:last_request().headers.origin)
  end)

  it("sends preflights upstream with preflight_continue, and its answer back untouched", function()
    local res = preflight(proxy, "/own", APP)
    assert.res_status(204, res)
    assert.equal("*", res.headers["access-control-allow-origin"])
    assert.equal("PUT", res.headers["access-control-allow-methods"])
    assert.is_nil(res.headers.vary)
    assert.same({ "OPTIONS /own" }, seen(upstream, "/own"))
    assert.equal("PUT", upstream:last_request().headers["access-control-request-method"])
  end)

  it("adds Origin to the upstream's Vary, once", function()
    local res = assert(proxy:get("/vary", { headers = { Origin = APP } }))
    assert.res_status(200, res)
    assert.equal(APP, res.headers["access-control-allow-origin"])
    -- helpers join repeated header lines with ", ".
    assert.equal("Accept-Encoding, Origin", res.headers.vary)
    res = assert(proxy:get("/vary-origin", { headers = { Origin = "https://evil.example.com" } }))
    assert.equal("origin", res.headers.vary)
    assert.is_nil(res.headers["access-control-allow-origin"])
  end)

  it("adds its headers to another plugin's answer and to sluice's 502", function()
    local res = assert(proxy:get("/closed", { headers = { Origin = APP } }))
    assert.res_status(403, res)
    assert.equal(APP, res.headers["access-control-allow-origin"])
    assert.equal("Origin", res.headers.vary)
    res = assert(proxy:get("/down", { headers = { Origin = APP } }))
    assert.res_status(502, res)
    assert.equal(APP, res.headers["access-control-allow-origin"])
    -- A preflight there is still answered: the dead upstream is never asked.
    assert.res_status(200, preflight(proxy, "/down", APP))
  end)

  it("refuses a bad regex at start, naming the field", function()
    local s = helpers.start_sluice([[
_format_version: "3.0"
services:
  - name: api
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: cors
            config:
              origins: ["https://app.example.com", "https://(app|www\\.example\\.com"]
]], { wait = false })
    assert.equal(1, helpers.exit_code(s, 10))
    assert.matches("sluice.yaml:11: services[0].routes[0].plugins[0].config.origins[1]: "
      .. "'https://(app|www\\.example\\.com' is not a valid regex: missing closing "
      .. "parenthesis at offset 30", helpers.read_file(s.log), 1, true)
  end)
end)
