-- rate-limiting through the real binary: exact counting under 500 concurrent requests
-- (local policy over 2 workers; redis policy over two sluice nodes sharing one
-- real redis-server), Kong's headers on real responses, and Redis going away.
local t = require("sluice.test")
local helpers = t.helpers
local cjson = require("cjson")

local fmt = string.format

-- Waits, when the window of len seconds ends within margin seconds, until
-- the next has begun, so that no window boundary falls inside a spec (the
-- concurrency specs count in an hour window).
local function inside_window(len, margin)
  local left = len - os.time() % len
  if left < margin then
    helpers.sleep(left + 1)
  end
end

-- Sends the requests of urls (a list) with curl, up to 100 at once on as
-- many connections; returns how many got each status ({ [200] = n, ... }).
local function blast(urls)
  local dir = helpers.tmpdir()
  local lines = {}
  for i, url in ipairs(urls) do
    lines[i] = fmt('url = "%s"\noutput = "/dev/null"', url)
  end
  helpers.write_file(dir .. "/urls", table.concat(lines, "\n") .. "\n")
  local out, rc = helpers.run(fmt("curl --parallel --parallel-immediate --parallel-max 100 "
    .. "-sS --max-time 30 -w '%%{http_code}\\n' -K %s/urls 2>%s/stderr", dir, dir))
  local stderr = helpers.read_file(dir .. "/stderr") or ""
  os.execute("rm -rf " .. dir)
  assert(rc == 0, "curl failed (" .. tostring(rc) .. "): " .. stderr)
  local counts, total = {}, 0
  for code in out:gmatch("(%d%d%d)\n") do
    code = tonumber(code)
    counts[code] = (counts[code] or 0) + 1
    total = total + 1
  end
  assert.equal(#urls, total, "statuses: " .. out:sub(1, 300))
  return counts
end

-- The route: rate-limiting with conf, and a pre-function that logs, per
-- request, the worker that served it and the status the client got.
local function gateway(upstream, conf, server)
  return t.start({
    services = { {
      name = "api", url = upstream.url,
      routes = { { name = "api", paths = { "/" } } },
      plugins = {
        { name = "rate-limiting", config = conf },
        { name = "pre-function", config = { log = {
          "sluice.log.notice('served by worker ', sluice.worker.id(), ': ', "
            .. "sluice.response.get_status())" } } },
      },
    } },
  }, server)
end

-- { [worker] = { [status] = n } } from a gateway's error log.
local function served(proxy)
  local out = {}
  for worker, status in proxy:error_log():gmatch("served by worker (%d+): (%d+)") do
    worker, status = tonumber(worker), tonumber(status)
    out[worker] = out[worker] or {}
    out[worker][status] = (out[worker][status] or 0) + 1
  end
  return out
end

local function urls(ports, n, path)
  local list = {}
  for i = 1, n do
    list[i] = fmt("http://127.0.0.1:%d%s", ports[(i - 1) % #ports + 1], path)
  end
  return list
end

describe("plugin: rate-limiting (proxy)", function()
  local upstream

  before_each(function()
    upstream = t.mock_upstream()
  end)

  after_each(function()
    t.stop()
  end)

  it("sends Kong's headers on proxied answers and the 429", function()
    inside_window(60, 5)
    local proxy = gateway(upstream, { minute = 2, hour = 10, limit_by = "ip" })
    local res = assert(proxy:get("/orders"))
    assert.res_status(200, res)
    assert.equal("/orders", res:json().uri)
    assert.equal("2", res.headers["x-ratelimit-limit-minute"])
    assert.equal("10", res.headers["x-ratelimit-limit-hour"])
    assert.equal("9", res.headers["x-ratelimit-remaining-hour"])
    assert.equal("2", res.headers["ratelimit-limit"])
    res = assert(proxy:get("/orders"))
    assert.equal("0", res.headers["x-ratelimit-remaining-minute"])
    res = assert(proxy:get("/orders"))
    assert.equal(429, res.status)
    assert.same({ message = "API rate limit exceeded" }, res:json())
    local retry = tonumber(res.headers["retry-after"])
    assert.is_true(retry >= 1 and retry <= 60, tostring(retry))
    assert.equal("0", res.headers["x-ratelimit-remaining-minute"])
    assert.equal("8", res.headers["x-ratelimit-remaining-hour"])
    assert.equal(2, #upstream:requests())
  end)

  it("counts per consumer after key-auth, per instance: route, service, consumer", function()
    inside_window(3600, 10)
    local proxy = t.start({
      consumers = {
        { username = "alice", keyauth_credentials = { { key = "k-alice" } },
          plugins = { { name = "rate-limiting", config = { hour = 1 } } } },
        { username = "bob", keyauth_credentials = { { key = "k-bob" } } },
        -- carol and dave each have an instance of their own, by IP.
        { username = "carol", keyauth_credentials = { { key = "k-carol" } },
          plugins = { { name = "rate-limiting", config = { hour = 1, limit_by = "ip" } } } },
        { username = "dave", keyauth_credentials = { { key = "k-dave" } },
          plugins = { { name = "rate-limiting", config = { hour = 1, limit_by = "ip" } } } },
      },
      services = { {
        name = "api", url = upstream.url,
        plugins = { { name = "key-auth" }, { name = "rate-limiting", config = { hour = 2 } } },
        routes = {
          { name = "a", paths = { "/a" } },
          { name = "b", paths = { "/b" } },
          { name = "c", paths = { "/c" },
            plugins = { { name = "rate-limiting", config = { hour = 3 } } } },
        },
      } },
    })
    local function get(path, key)
      local res = assert(proxy:get(path, { headers = { apikey = key } }))
      return res.status, res.headers["x-ratelimit-limit-hour"]
    end
    -- Authentication runs first: no key, no count.
    assert.equal(401, (proxy:get("/a")).status)
    -- bob: the service's instance counts routes a and b together (2)...
    assert.same({ 200, "2" }, { get("/a", "k-bob") })
    assert.same({ 200, "2" }, { get("/b", "k-bob") })
    assert.same({ 429, "2" }, { get("/a", "k-bob") })
    -- ...and route c's own instance has its own count (3).
    assert.same({ 200, "3" }, { get("/c", "k-bob") })
    -- alice: her own instance (1 an hour) wherever she goes, c included.
    assert.same({ 200, "1" }, { get("/a", "k-alice") })
    assert.same({ 429, "1" }, { get("/b", "k-alice") })
    assert.same({ 429, "1" }, { get("/c", "k-alice") })
    -- carol and dave come from the same IP, each with an instance of their
    -- own counting by IP: one count each, not one for both.
    assert.same({ 200, "1" }, { get("/a", "k-carol") })
    assert.same({ 200, "1" }, { get("/a", "k-dave") })
    assert.same({ 429, "1" }, { get("/a", "k-dave") })
    assert.equal(6, #upstream:requests())
  end)

  it("accepts exactly the limit of 500 concurrent requests, over 2 workers (local)",
    function()
      inside_window(3600, 60)
      local proxy = gateway(upstream, { hour = 100, limit_by = "ip" }, { workers = 2 })
      local counts = blast(urls({ proxy.port }, 500, "/burst"))
      assert.same({ [200] = 100, [429] = 400 }, counts)
      assert.equal(100, #upstream:requests())
      -- Both workers served, and counted together.
      local by_worker = helpers.wait_for(function()
        local s = served(proxy)
        local n = 0
        for _, statuses in pairs(s) do
          for _, c in pairs(statuses) do
            n = n + c
          end
        end
        return n == 500 and s
      end, 10)
      assert.is_table(by_worker)
      assert.is_table(by_worker[0], "worker 0 served nothing")
      assert.is_table(by_worker[1], "worker 1 served nothing")
      assert.equal(100, (by_worker[0][200] or 0) + (by_worker[1][200] or 0))
    end)

  it("accepts exactly the limit across two sluice nodes sharing one Redis", function()
    inside_window(3600, 60)
    local redis = t.redis()
    local conf = { hour = 100, limit_by = "ip", policy = "redis", fault_tolerant = false,
                   redis = { host = redis.host, port = redis.port } }
    local a = gateway(upstream, conf, { workers = 2 })
    local b = gateway(upstream, conf, { workers = 2 })
    local counts = blast(urls({ a.port, b.port }, 500, "/burst"))
    assert.same({ [200] = 100, [429] = 400 }, counts)
    assert.equal(100, #upstream:requests())
    -- Both nodes accepted some; together exactly 100.
    local function accepted(proxy)
      local n = 0
      for _, statuses in pairs(served(proxy)) do
        n = n + (statuses[200] or 0)
      end
      return n
    end
    helpers.wait_for(function()
      return accepted(a) + accepted(b) == 100
    end, 10)
    assert.is_true(accepted(a) > 0 and accepted(b) > 0, accepted(a) .. " + " .. accepted(b))
    assert.equal(100, accepted(a) + accepted(b))
    -- What reached Redis: one counter, at 100, expiring with the hour.
    local r = assert(sluice.redis.connect({ host = redis.host, port = redis.port }))
    local keys = r:keys("rl|*")
    assert.equal(1, #keys)
    assert.matches("|i:127.0.0.1|hour|", keys[1], 1, true)
    assert.equal("100", r:get(keys[1]))
    local ttl = r:pttl(keys[1])
    assert.is_true(ttl > 0 and ttl <= 3601000, tostring(ttl))
    r:set_keepalive()
  end)

  it("proxies uncounted while Redis is down, logging once per interval (fault_tolerant)",
    function()
      local proxy = gateway(upstream, { hour = 3, limit_by = "ip", policy = "redis",
        redis = { host = "127.0.0.1", port = helpers.free_port() } })
      for _ = 1, 6 do
        local res = assert(proxy:get("/down"))
        assert.res_status(200, res)
        assert.is_nil(res.headers["x-ratelimit-limit-hour"])
      end
      assert.equal(6, #upstream:requests())
      local log = proxy:error_log()
      local _, lines = log:gsub("could not connect to redis", "")
      assert.equal(1, lines, log)
      assert.matches("%[rate%-limiting%] could not connect to redis at 127%.0%.0%.1:%d+: "
        .. "connection refused; requests are proxied uncounted", log)
    end)

  it("answers 500 while Redis is down without fault_tolerant", function()
    local proxy = gateway(upstream, { hour = 3, limit_by = "ip", policy = "redis",
      fault_tolerant = false, redis = { host = "127.0.0.1", port = helpers.free_port() } })
    local res = assert(proxy:get("/down"))
    assert.equal(500, res.status)
    assert.same({ message = "An unexpected error occurred" }, cjson.decode(res.body))
    assert.equal(0, #upstream:requests())
  end)
end)
