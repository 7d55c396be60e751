-- proxy-cache in-process: what is stored, what is served, and the headers
-- that say which, through t.plugin's real request path.
local t = require("sluice.test")

local JSON = { ["Content-Type"] = "application/json" }

describe("plugin: proxy-cache (access)", function()
  local p
  before_each(function()
    p = t.plugin("proxy-cache", { vary_headers = { "X-Tenant" } })
    sluice.shared.proxy_cache:flush_all()
  end)

  local function get(path, headers, upstream)
    return p:run({ path = path, headers = headers,
                   upstream = upstream or { status = 200, headers = JSON, body = '{"n":1}' } })
  end

  it("stores a miss and serves the next request from the cache", function()
    local res = get("/items")
    assert.res_status(200, res)
    assert.equal("Miss", res.headers["x-cache-status"])
    assert.is_table(res.upstream)
    local key = res.headers["x-cache-key"]
    assert.matches("^%x+$", key)
    assert.equal(32, #key)

    local hit = get("/items", nil, { status = 500, body = "must not be asked" })
    assert.equal('{"n":1}', assert.res_status(200, hit))
    assert.equal("Hit", hit.headers["x-cache-status"])
    assert.equal(key, hit.headers["x-cache-key"])
    assert.equal("application/json", hit.headers["content-type"])
    assert.equal("0", hit.headers["age"])
    assert.is_nil(hit.upstream)
  end)

  it("keys on the query (in any order) and on vary_headers", function()
    get("/q?a=1&b=2")
    assert.equal("Hit", get("/q?b=2&a=1").headers["x-cache-status"])
    assert.equal("Miss", get("/q?a=1&b=3").headers["x-cache-status"])
    assert.equal("Miss", get("/q?a=1&b=2", { ["X-Tenant"] = "t1" }).headers["x-cache-status"])
    assert.equal("Hit", get("/q?a=1&b=2", { ["X-Tenant"] = "t1" }).headers["x-cache-status"])
    assert.equal("Hit", get("/q?a=1&b=2").headers["x-cache-status"])
  end)

  it("bypasses statuses, content types and methods it does not cache", function()
    local res = get("/e", nil, { status = 500, headers = JSON, body = "{}" })
    assert.equal("Bypass", res.headers["x-cache-status"])
    assert.equal("Miss", get("/e").headers["x-cache-status"])
    res = get("/html", nil, { status = 200, headers = { ["Content-Type"] = "text/html" },
                              body = "<p>" })
    assert.equal("Bypass", res.headers["x-cache-status"])
    assert.equal("Miss", get("/html").headers["x-cache-status"]) -- nothing was stored
    res = p:run({ method = "POST", path = "/items", body = "x" })
    assert.equal("Bypass", res.headers["x-cache-status"])
  end)

  it("never stores no-store, private or Set-Cookie responses", function()
    for i, h in ipairs({ { ["Cache-Control"] = "no-store" }, { ["Cache-Control"] = "private" },
                         { ["Set-Cookie"] = "s=1" } }) do
      h["Content-Type"] = "application/json"
      local path = "/private/" .. i
      assert.equal("Bypass", get(path, nil, { status = 200, headers = h, body = "{}" })
        .headers["x-cache-status"])
      assert.equal("Miss", get(path).headers["x-cache-status"])
    end
  end)

  it("lets requests with Authorization bypass the cache", function()
    get("/me")
    local res = get("/me", { Authorization = "Bearer x" })
    assert.equal("Bypass", res.headers["x-cache-status"])
    assert.is_table(res.upstream)
  end)

  it("answers HEAD from the GET's entry", function()
    get("/h")
    local res = p:run({ method = "HEAD", path = "/h",
                        upstream = { status = 500, body = "" } })
    assert.equal(200, res.status)
    assert.equal("Hit", res.headers["x-cache-status"])
    assert.equal("7", res.headers["content-length"])
  end)
end)

describe("plugin: proxy-cache (cache_control)", function()
  local p
  before_each(function()
    p = t.plugin("proxy-cache", { cache_control = true, cache_ttl = 300, storage_ttl = 600 })
    sluice.shared.proxy_cache:flush_all()
  end)

  local function get(path, headers, upstream_headers)
    local h = { ["Content-Type"] = "application/json" }
    for k, v in pairs(upstream_headers or {}) do
      h[k] = v
    end
    return p:run({ path = path, headers = headers,
                   upstream = { status = 200, headers = h, body = "{}" } })
  end

  it("does not store no-cache or max-age=0 responses", function()
    assert.equal("Bypass", get("/a", nil, { ["Cache-Control"] = "no-cache" })
      .headers["x-cache-status"])
    assert.equal("Bypass", get("/b", nil, { ["Cache-Control"] = "max-age=0" })
      .headers["x-cache-status"])
    assert.equal("Bypass", get("/c", nil, { Expires = "Thu, 01 Jan 1970 00:00:00 GMT" })
      .headers["x-cache-status"])
  end)

  it("refreshes when the request says no-cache, and bypasses on no-store", function()
    get("/r", nil, { ["Cache-Control"] = "max-age=60" })
    assert.equal("Hit", get("/r").headers["x-cache-status"])
    local res = get("/r", { ["Cache-Control"] = "no-cache" })
    assert.equal("Refresh", res.headers["x-cache-status"])
    assert.is_table(res.upstream)
    assert.equal("Bypass", get("/r", { ["Cache-Control"] = "no-store" })
      .headers["x-cache-status"])
  end)

  it("answers only-if-cached with 504 when it is not", function()
    local res = get("/nothing", { ["Cache-Control"] = "only-if-cached" })
    assert.res_status(504, res)
    assert.is_nil(res.upstream)
  end)

  it("stores with the response's max-age; an entry kept past it is fetched again", function()
    get("/s", nil, { ["Cache-Control"] = "public, max-age=1" })
    assert.equal("Hit", get("/s").headers["x-cache-status"])
    sluice.sleep(1.1)
    assert.equal("Refresh", get("/s").headers["x-cache-status"])
  end)
end)

describe("plugin: proxy-cache (purge)", function()
  it("deletes the entry a PURGE names, by its URL or its key", function()
    local p = t.plugin("proxy-cache", { purge_method = "PURGE" })
    sluice.shared.proxy_cache:flush_all()
    local up = { status = 200, headers = JSON, body = "{}" }
    local key = p:run({ path = "/p", upstream = up }).headers["x-cache-key"]
    local res = p:run({ method = "PURGE", path = "/p" })
    assert.res_status(200, res)
    assert.equal(key, res:json().key)
    assert.res_status(404, p:run({ method = "PURGE", path = "/p" }))
    assert.equal("Miss", p:run({ path = "/p", upstream = up }).headers["x-cache-status"])
    res = p:run({ method = "PURGE", path = "/", headers = { ["X-Cache-Key"] = key } })
    assert.res_status(200, res)
    assert.equal("Miss", p:run({ path = "/p", upstream = up }).headers["x-cache-status"])
  end)
end)
