-- circuit-breaker in-process (t.plugin): counting, opening, the answers while
-- open and the cached fallback, with the upstream's answer described per request.
local t = require("sluice.test")
local cjson = require("cjson")

local FAIL = { status = 500, body = "boom" }

local function conf(extra)
  local c = { volume_threshold = 4, error_threshold_percentage = 50, window = 10000,
              reset_timeout = 60000, timeout = 0 }
  for k, v in pairs(extra or {}) do
    c[k] = v
  end
  return c
end

local function run(p, path, upstream)
  return p:run({ path = path or "/a", upstream = upstream })
end

describe("plugin: circuit-breaker (access)", function()
  before_each(function()
    -- One dict per process: every spec starts with no breaker state.
    if sluice.shared["circuit-breaker"] then
      sluice.shared["circuit-breaker"]:flush_all()
    end
  end)

  it("lets everything through while the failures stay under the percentage", function()
    local p = t.plugin("circuit-breaker", conf())
    for _ = 1, 6 do
      assert.equal(200, run(p).status)
    end
    for _ = 1, 5 do
      assert.equal(500, run(p, "/a", FAIL).status)
    end
    -- 5 failures in 11: 45% < 50%.
    local res = run(p)
    assert.equal(200, res.status)
    assert.is_table(res.upstream)
    local b = sluice.upstream.get_breaker("t-plugin")
    assert.equal("closed", b.state)
    assert.equal(12, b.requests)
    assert.equal(5, b.failures)
  end)

  it("never opens below volume_threshold, whatever the failures", function()
    local p = t.plugin("circuit-breaker", conf({ volume_threshold = 5 }))
    for _ = 1, 4 do
      assert.equal(500, run(p, "/a", FAIL).status)
    end
    assert.equal("closed", sluice.upstream.get_breaker("t-plugin").state)
    local res = run(p, "/a", FAIL)
    assert.equal(500, res.status)
    assert.equal("open", sluice.upstream.get_breaker("t-plugin").state)
    assert.matches("closed %-> open: 5 failures in 5 requests", table.concat(res.logs, "\n"))
  end)

  it("answers 503 JSON naming the service while open, without the upstream", function()
    local p = t.plugin("circuit-breaker", conf(), { service = { name = "orders" } })
    for _ = 1, 4 do
      run(p, "/a", FAIL)
    end
    local res = run(p)
    assert.equal(503, res.status)
    assert.is_nil(res.upstream)
    assert.same({ error = "Service temporarily unavailable", service = "orders" },
      cjson.decode(res.body))
    -- reset_timeout is 60 s.
    local retry = tonumber(res.headers["retry-after"])
    assert.is_true(retry > 55 and retry <= 60, tostring(retry))
    assert.is_nil(sluice.upstream.get_breaker("t-plugin"))
    assert.equal("open", sluice.upstream.get_breaker("orders").state)
  end)

  it("serves a static fallback with its status, body and headers", function()
    local p = t.plugin("circuit-breaker", conf({ fallback = {
      status = 200, body = { items = {} }, headers = { ["Cache-Control"] = "no-store" } } }))
    for _ = 1, 4 do
      run(p, "/a", FAIL)
    end
    local res = run(p)
    assert.equal(200, res.status)
    assert.equal('{"items":{}}', res.body)
    assert.equal("static", res.headers["x-sluice-fallback"])
    assert.equal("no-store", res.headers["cache-control"])
    assert.matches("application/json", res.headers["content-type"])
    assert.is_nil(res.upstream)
  end)

  it("serves the last good response per cache key, else the static body or the 503", function()
    local p = t.plugin("circuit-breaker", conf({ fallback = { cached = true } }))
    local ok = run(p, "/a?page=2", { status = 200, headers = { ["Content-Type"] = "text/csv" },
                                     body = "id,name\n1,ada\n" })
    assert.equal(200, ok.status)
    for _ = 1, 4 do
      run(p, "/b", FAIL)
    end
    local res = p:run({ path = "/a", query = "page=2" })
    assert.equal(200, res.status)
    assert.equal("id,name\n1,ada\n", res.body)
    assert.equal("cached", res.headers["x-sluice-fallback"])
    assert.equal("text/csv", res.headers["content-type"])
    assert.is_nil(res.upstream)
    -- Another query is another key: nothing cached for it.
    res = p:run({ path = "/a", query = "page=3" })
    assert.equal(503, res.status)
    assert.is_nil(res.headers["x-sluice-fallback"])
  end)

  it("does not cache failures, non-GET requests or bodies over max_body_size", function()
    local p = t.plugin("circuit-breaker", conf({ fallback = { cached = true, max_body_size = 8,
                                                              body = "static" } }))
    run(p, "/big", { status = 200, body = "123456789" })
    p:run({ method = "POST", path = "/post", upstream = { status = 200, body = "posted" } })
    run(p, "/small", { status = 200, body = "12345678" })
    for _ = 1, 3 do
      run(p, "/small", FAIL)
    end
    assert.equal("open", sluice.upstream.get_breaker("t-plugin").state)
    assert.equal("12345678", run(p, "/small").body)
    local res = run(p, "/big")
    assert.equal("static", res.body)
    assert.equal("static", res.headers["x-sluice-fallback"])
    res = p:run({ method = "POST", path = "/post" })
    assert.equal("static", res.body)
  end)

  it("get_breaker names its bad arguments", function()
    assert.has_error(function() sluice.upstream.get_breaker() end,
      "bad argument #1 to 'get_breaker' (non-empty string expected, got nil)")
    assert.has_error(function() sluice.upstream.get_breaker("orders", 7) end,
      "bad argument #2 to 'get_breaker' (string expected, got number)")
  end)
end)
