-- http-log in-process: what a request's entry holds, what never appears, batching and retries,
-- sent to a real collector (nginx) from the plugin's timer.
local t = require("sluice.test")
local collector = require("spec.plugins.http-log.collector")
local cjson = require("cjson.safe")

local function bodies(reqs)
  local out = {}
  for _, r in ipairs(reqs) do
    out[#out + 1] = r.body
  end
  return out
end

describe("plugin: http-log (in-process)", function()
  local c

  setup(function()
    c = collector.start()
  end)

  teardown(function()
    t.stop()
  end)

  it("POSTs one JSON object per request in Kong's serializer shape", function()
    local p = t.plugin("http-log", { http_endpoint = c.url .. "/c/one",
                                     headers = { ["X-Token"] = "t0k" } })
    local res = p:run({ method = "POST", path = "/orders/7", query = "page=2",
                        headers = { ["X-Trace"] = "abc" }, body = "hello" })
    assert.res_status(200, res)
    local reqs = c:wait("/c/one", function(r) return #r >= 1 end)
    assert.equal(1, #reqs)
    local r = reqs[1]
    assert.equal("POST", r.method)
    assert.equal("application/json", r.headers["content-type"])
    assert.equal("t0k", r.headers["x-token"])
    local e = assert(cjson.decode(r.body))
    assert.equal("POST", e.request.method)
    assert.equal("/orders/7", e.request.uri)
    assert.equal("http://localhost:8000/orders/7", e.request.url)
    assert.same({ page = "REDACTED" }, e.request.querystring)
    assert.equal("abc", e.request.headers["x-trace"])
    assert.is_true(e.request.size > 5)
    assert.equal(200, e.response.status)
    assert.equal("/orders/7", e.upstream_uri)
    assert.equal(200, e.upstream_status)
    assert.equal("service", e.source)
    assert.equal("t-plugin", e.route.name)
    assert.equal("t-plugin", e.service.name)
    assert.equal("127.0.0.1", e.client_ip)
    assert.equal(1, #e.tries)
    assert.equal("127.0.0.1", e.tries[1].ip)
    assert.equal(8080, e.tries[1].port)
    for _, k in ipairs({ "request", "proxy", "kong", "receive" }) do
      assert.is_number(e.latencies[k])
    end
    assert.is_true(math.abs(e.started_at - sluice.now() * 1000) < 60000)
  end)

  it("never sends Authorization, Cookie, API keys or redacted fields", function()
    local p = t.plugin("http-log", { http_endpoint = c.url .. "/c/secret",
                                     redact = { "x-tenant", "consumer.custom_id" },
                                     query_values = true })
    p:run({ path = "/a", query = "apikey=k-sekrit-1&access_token=tok-sekrit-2&page=3",
            headers = { Authorization = "Bearer sekrit-3", Cookie = "s=sekrit-4",
                        apikey = "k-sekrit-5", ["X-Tenant"] = "sekrit-6",
                        ["X-My-Key"] = "k-sekrit-7" },
            consumer = { id = "c1", username = "alice", custom_id = "sekrit-8" },
            credential = { id = "cred1", key = "k-sekrit-7" } })
    local reqs = c:wait("/c/secret", function(r) return #r >= 1 end)
    local body = reqs[1].body
    assert.not_matches("sekrit", body)
    local e = assert(cjson.decode(body))
    assert.equal("3", e.request.querystring.page) -- query_values keeps the others
    assert.equal("REDACTED", e.request.querystring.apikey)
    assert.equal("REDACTED", e.request.headers["x-my-key"]) -- the credential's key
    assert.equal("REDACTED", e.consumer.custom_id)
    assert.equal("alice", e.consumer.username)
    assert.same({ id = "cred1", consumer_id = "c1" }, e.authenticated_entity)
  end)

  it("adds custom_fields_by_lua, sandboxed, and lets redact win over them", function()
    local p = t.plugin("http-log", {
      http_endpoint = c.url .. "/c/custom",
      custom_fields_by_lua = {
        tenant = "return sluice.request.get_header('x-tenant')",
        ["request.shard"] = "return 7",
        latencies = "return nil",
        leak = "return sluice.request.get_header('x-secret')",
        escape = "return os.execute ~= nil or io ~= nil or require ~= nil",
      },
      redact = { "leak" .. ".x", "x-secret" },
    })
    p:run({ path = "/", headers = { ["X-Tenant"] = "acme", ["X-Secret"] = "zz" } })
    local reqs = c:wait("/c/custom", function(r) return #r >= 1 end)
    local e = assert(cjson.decode(reqs[1].body))
    assert.equal("acme", e.tenant)
    assert.equal(7, e.request.shard)
    assert.is_nil(e.latencies)
    assert.is_false(e.escape)
    assert.equal("zz", e.leak) -- a custom field is the user's explicit choice
    assert.equal("REDACTED", e.request.headers["x-secret"])
  end)

  it("batches into a JSON array of max_batch_size entries", function()
    local p = t.plugin("http-log", { http_endpoint = c.url .. "/c/batch",
                                     queue = { max_batch_size = 3, max_coalescing_delay = 5 } })
    for i = 1, 3 do
      p:run({ path = "/b" .. i })
    end
    local reqs = c:wait("/c/batch", function(r) return #r >= 1 end, 3)
    assert.equal(1, #reqs, "a full batch goes at once, before max_coalescing_delay")
    local arr = assert(cjson.decode(reqs[1].body))
    assert.equal(3, #arr)
    assert.same({ "/b1", "/b2", "/b3" }, { arr[1].request.uri, arr[2].request.uri,
                                            arr[3].request.uri })
  end)

  it("sends a partial batch after max_coalescing_delay", function()
    local p = t.plugin("http-log", { http_endpoint = c.url .. "/c/partial",
                                     queue = { max_batch_size = 10, max_coalescing_delay = 0.3 } })
    local t0 = sluice.now()
    p:run({ path = "/p1" })
    p:run({ path = "/p2" })
    local reqs = c:wait("/c/partial", function(r) return #r >= 1 end)
    assert.is_true(sluice.now() - t0 >= 0.25)
    assert.equal(2, #assert(cjson.decode(reqs[1].body)))
  end)

  it("retries a failing batch with backoff until the endpoint takes it", function()
    local p = t.plugin("http-log", { http_endpoint = c.url .. "/c/fail2/retry",
                                     queue = { initial_retry_delay = 0.05 } })
    p:run({ path = "/r" })
    local reqs = c:wait("/c/fail2/retry", function(r) return #r >= 3 end)
    assert.same({ 500, 500, 200 }, { reqs[1].status, reqs[2].status, reqs[3].status })
    assert.same({ reqs[1].body, reqs[1].body }, { reqs[2].body, reqs[3].body })
  end)

  it("bounds the queue: drops the oldest entries and counts them", function()
    local p = t.plugin("http-log", { http_endpoint = c.url .. "/c/slow/bounded",
                                     queue = { max_entries = 2, max_retry_time = -1 } })
    local logs = {}
    for i = 1, 6 do
      local res = p:run({ path = "/q" .. i })
      for _, l in ipairs(res.logs) do
        logs[#logs + 1] = l
      end
    end
    assert.matches("http-log: queue full (max_entries 2): dropped", table.concat(logs, "\n"),
      1, true)
    c:wait("/c/slow/bounded", function(r) return #r >= 2 end, 8)
    sluice.sleep(1.2) -- one more slow answer, were anything else queued
    local reqs = c:requests("/c/slow/bounded")
    local uris = {}
    for _, b in ipairs(bodies(reqs)) do
      uris[#uris + 1] = assert(cjson.decode(b)).request.uri
    end
    -- At most the first (if a send took it before the others came) and the
    -- two newest: the oldest queued entries were dropped.
    local got = table.concat(uris, ",")
    assert.is_true(got == "/q5,/q6" or got == "/q1,/q5,/q6", got)
  end)

  it("never makes the request wait for the endpoint", function()
    local p = t.plugin("http-log", { http_endpoint = c.url .. "/c/slow/fast" })
    local t0 = sluice.now()
    for i = 1, 3 do
      assert.res_status(200, p:run({ path = "/f" .. i }))
    end
    assert.is_true(sluice.now() - t0 < 0.5, "requests waited for the collector")
    -- The entries still arrive; none is left queued (its retries would
    -- outlive this file and keep the event loop of later specs busy).
    c:wait("/c/slow/fast", function(r) return #r >= 3 end, 8)
  end)
end)
