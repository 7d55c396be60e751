-- rate-limiting in-process (t.plugin): Kong's headers and 429, every limit_by and its
-- fallback, sliding windows, and the redis policy against a real redis-server.
local t = require("sluice.test")
local cjson = require("cjson")

local DICT = "rate-limiting"

local function dict()
  return sluice.shared[DICT]
end

-- Waits, when a window of len seconds ends within margin seconds, until the
-- next one has begun, so that a spec's requests all fall in one window.
local function inside_window(len, margin)
  local left = len - sluice.now() % len
  if left < margin then
    sluice.sleep(left + 0.05)
  end
end

local function run(p, req)
  return p:run(req or { path = "/a" })
end

local function statuses(p, n, req)
  local out = {}
  for i = 1, n do
    out[i] = run(p, req).status
  end
  return out
end

-- The key a fixed or sliding counter of the global test instance has for
-- identifier (kind tag included, "i:127.0.0.1") in the window of period that
-- starts at start.
local function key(identifier, period, start)
  return "rl|global|" .. identifier .. "|" .. period .. "|" .. string.format("%d", start)
end

local function day_start(now)
  return math.floor(now / 86400) * 86400
end

-- For a sliding day window whose previous day weighs w now: a count for the
-- previous day and a limit that leave room for exactly 3 more requests,
-- with the weighted count's fraction away from a whole number (so that the
-- milliseconds the spec takes cannot change the answer).
local function three_left(w)
  local prev = 1
  while (prev * w) % 1 < 0.2 or (prev * w) % 1 > 0.8 do
    prev = prev + 1
  end
  return prev, math.floor(prev * w) + 4
end

describe("plugin: rate-limiting (access)", function()
  before_each(function()
    if dict() then
      dict():flush_all()
    end
  end)

  describe("headers and the 429", function()
    it("counts down Kong's headers, then refuses with 429 and Retry-After", function()
      inside_window(3600, 3)
      local p = t.plugin("rate-limiting", { hour = 3, limit_by = "ip" })
      for i = 1, 3 do
        local res = run(p)
        assert.res_status(200, res)
        assert.is_table(res.upstream)
        assert.equal("3", res.headers["x-ratelimit-limit-hour"])
        assert.equal(tostring(3 - i), res.headers["x-ratelimit-remaining-hour"])
        assert.equal("3", res.headers["ratelimit-limit"])
        assert.equal(tostring(3 - i), res.headers["ratelimit-remaining"])
        local reset = tonumber(res.headers["ratelimit-reset"])
        assert.is_true(reset >= 1 and reset <= 3600, tostring(reset))
        assert.is_nil(res.headers["retry-after"])
      end
      local res = run(p)
      assert.equal(429, res.status)
      assert.is_nil(res.upstream)
      assert.same({ message = "API rate limit exceeded" }, cjson.decode(res.body))
      assert.matches("application/json", res.headers["content-type"])
      assert.equal("0", res.headers["x-ratelimit-remaining-hour"])
      assert.equal("0", res.headers["ratelimit-remaining"])
      -- Retry-After: when the hour ends, as RateLimit-Reset says.
      local left = 3600 - math.floor(sluice.now()) % 3600
      local retry = tonumber(res.headers["retry-after"])
      assert.is_true(math.abs(retry - left) <= 1, retry .. " vs " .. left)
      assert.equal(res.headers["ratelimit-reset"], res.headers["retry-after"])
      -- A refused request is not counted: the counter holds the 3 accepted.
      local start = math.floor(sluice.now() / 3600) * 3600
      assert.equal(3, dict():get(key("i:127.0.0.1", "hour", start)))
    end)

    it("sends a pair per window, and RateLimit-* for the most restrictive", function()
      inside_window(60, 3)
      local p = t.plugin("rate-limiting", { second = 2, minute = 2, hour = 5, day = 1000,
                                            month = 10000, year = 100000, limit_by = "ip" })
      local res = run(p)
      assert.res_status(200, res)
      for name, limit in pairs({ minute = 2, hour = 5, day = 1000, month = 10000,
                                 year = 100000 }) do
        assert.equal(tostring(limit), res.headers["x-ratelimit-limit-" .. name], name)
        assert.equal(tostring(limit - 1), res.headers["x-ratelimit-remaining-" .. name], name)
      end
      assert.equal("2", res.headers["x-ratelimit-limit-second"])
      assert.is_string(res.headers["x-ratelimit-remaining-second"])
      -- The second and the minute have the fewest left (1): the minute, longer, is named.
      assert.equal("2", res.headers["ratelimit-limit"])
      assert.equal("1", res.headers["ratelimit-remaining"])
      local reset = tonumber(res.headers["ratelimit-reset"])
      assert.is_true(reset > 1 and reset <= 60, tostring(reset))
      sluice.sleep(1 - sluice.now() % 1 + 0.01) -- a new second, the same minute
      assert.equal(200, run(p).status)
      -- Now the minute has 0 left and the hour 3: the minute refuses, and the
      -- hour's count does not move.
      res = run(p)
      assert.equal(429, res.status)
      assert.equal("0", res.headers["x-ratelimit-remaining-minute"])
      assert.equal("3", res.headers["x-ratelimit-remaining-hour"])
      assert.equal("998", res.headers["x-ratelimit-remaining-day"])
      assert.equal("2", res.headers["ratelimit-limit"])
    end)

    it("among windows with as few left, names the longest, as Kong does", function()
      inside_window(3600, 3)
      local p = t.plugin("rate-limiting", { hour = 1, day = 1, limit_by = "ip" })
      local res = run(p)
      assert.equal("1", res.headers["ratelimit-limit"])
      assert.equal("0", res.headers["ratelimit-remaining"])
      local day_left = 86400 - math.floor(sluice.now()) % 86400
      assert.is_true(math.abs(tonumber(res.headers["ratelimit-reset"]) - day_left) <= 1)
      -- Refused by the hour and the day: Retry-After waits for both.
      res = run(p)
      assert.equal(429, res.status)
      assert.is_true(math.abs(tonumber(res.headers["retry-after"]) - day_left) <= 1)
    end)

    it("hides every header with hide_client_headers, 429 included", function()
      inside_window(3600, 3)
      local p = t.plugin("rate-limiting", { hour = 1, limit_by = "ip",
                                            hide_client_headers = true })
      local res = run(p)
      assert.equal(200, res.status)
      res = run(p)
      assert.equal(429, res.status)
      for name in pairs(res.headers) do
        assert.is_nil(name:find("ratelimit", 1, true), name)
      end
      assert.is_nil(res.headers["retry-after"])
    end)

    it("answers with error_code and error_message", function()
      inside_window(3600, 3)
      local p = t.plugin("rate-limiting", { hour = 1, limit_by = "ip", error_code = 503,
                                            error_message = "Slow down" })
      run(p)
      local res = run(p)
      assert.equal(503, res.status)
      assert.same({ message = "Slow down" }, cjson.decode(res.body))
    end)
  end)

  describe("limit_by", function()
    before_each(function()
      inside_window(3600, 3)
    end)

    it("consumer: per consumer id, else the credential's, else the client IP", function()
      local p = t.plugin("rate-limiting", { hour = 1 })
      local alice = { consumer = { id = "a1", username = "alice" }, path = "/a" }
      local bob = { consumer = { id = "b2", username = "bob" }, path = "/a" }
      assert.same({ 200, 429 }, statuses(p, 2, alice))
      assert.same({ 200, 429 }, statuses(p, 2, bob))
      -- Only a credential: counted by its id (a consumer's namespace).
      local cred = { credential = { id = "k9" }, path = "/a" }
      assert.same({ 200, 429 }, statuses(p, 2, cred))
      -- Not authenticated: by IP, one counter per address.
      assert.same({ 200, 429 }, statuses(p, 2, { path = "/a", client_ip = "10.0.0.1" }))
      assert.same({ 200 }, statuses(p, 1, { path = "/a", client_ip = "10.0.0.2" }))
    end)

    it("credential: per credential id, else the client IP", function()
      local p = t.plugin("rate-limiting", { hour = 1, limit_by = "credential" })
      local c1 = { consumer = { id = "a1" }, credential = { id = "k1" }, path = "/a" }
      local c2 = { consumer = { id = "a1" }, credential = { id = "k2" }, path = "/a" }
      assert.same({ 200, 429 }, statuses(p, 2, c1))
      -- The same consumer with another key has its own count.
      assert.same({ 200, 429 }, statuses(p, 2, c2))
      -- A consumer without a credential is counted by IP.
      assert.same({ 200, 429 }, statuses(p, 2, { consumer = { id = "a1" }, path = "/a" }))
      assert.same({ 200 }, statuses(p, 1, { path = "/a", client_ip = "10.0.0.3" }))
    end)

    it("ip: per client address, the forwarded one from a trusted proxy", function()
      local p = t.plugin("rate-limiting", { hour = 1, limit_by = "ip" },
        { trusted_ips = { "10.9.0.0/16" } })
      assert.same({ 200, 429 }, statuses(p, 2, { path = "/a", client_ip = "10.0.0.1" }))
      assert.same({ 200, 429 }, statuses(p, 2, { path = "/a", client_ip = "10.0.0.2" }))
      -- Behind the trusted proxy: X-Forwarded-For's client, not the proxy.
      local via = function(ip)
        return { path = "/a", client_ip = "10.9.0.1", headers = { ["X-Forwarded-For"] = ip } }
      end
      assert.same({ 200, 429 }, statuses(p, 2, via("192.0.2.1")))
      assert.same({ 200 }, statuses(p, 1, via("192.0.2.2")))
      -- A consumer does not change the count.
      assert.same({ 429 }, statuses(p, 1, { path = "/a", client_ip = "10.0.0.1",
                                            consumer = { id = "a1" } }))
    end)

    it("service: every client of the service together", function()
      local p = t.plugin("rate-limiting", { hour = 2, limit_by = "service" })
      assert.equal(200, run(p, { path = "/a", client_ip = "10.0.0.1" }).status)
      assert.equal(200, run(p, { path = "/b", client_ip = "10.0.0.2" }).status)
      assert.equal(429, run(p, { path = "/c", client_ip = "10.0.0.3",
                                 consumer = { id = "a1" } }).status)
      -- One counter, the service's.
      local keys = dict():get_keys(0)
      assert.equal(1, #keys)
      assert.matches("|s:", keys[1], 1, true)
    end)

    it("header: per value of header_name, else the client IP", function()
      local p = t.plugin("rate-limiting", { hour = 1, limit_by = "header",
                                            header_name = "X-Tenant" })
      local tenant = function(v, ip)
        return { path = "/a", client_ip = ip or "10.0.0.1", headers = { ["x-tenant"] = v } }
      end
      assert.same({ 200, 429 }, statuses(p, 2, tenant("acme")))
      -- The same tenant from another address shares the count.
      assert.same({ 429 }, statuses(p, 1, tenant("acme", "10.0.0.2")))
      assert.same({ 200 }, statuses(p, 1, tenant("globex")))
      -- No header: by IP.
      assert.same({ 200, 429 }, statuses(p, 2, { path = "/a", client_ip = "10.0.0.5" }))
      assert.same({ 200 }, statuses(p, 1, { path = "/a", client_ip = "10.0.0.6" }))
    end)

    it("keys long values by their SHA-256, so counters stay small", function()
      local p = t.plugin("rate-limiting", { hour = 1, limit_by = "header",
                                            header_name = "X-Token" })
      local long = string.rep("a", 200)
      local other = string.rep("a", 199) .. "b"
      local function req(v)
        return { path = "/a", headers = { ["X-Token"] = v } }
      end
      assert.same({ 200, 429 }, statuses(p, 2, req(long)))
      assert.same({ 200, 429 }, statuses(p, 2, req(other)))
      local keys = dict():get_keys(0)
      assert.equal(2, #keys)
      local sha = sluice.crypto.hex(sluice.crypto.sha256(long))
      local found = false
      for _, k in ipairs(keys) do
        assert.is_true(#k < 120, k)
        found = found or k:find("|H:" .. sha .. "|hour|", 1, true) ~= nil
      end
      assert.is_true(found, table.concat(keys, " "))
    end)

    it("path: the requests to that path together, others per client IP", function()
      local p = t.plugin("rate-limiting", { hour = 2, limit_by = "path", path = "/login" })
      assert.equal(200, run(p, { path = "/login", client_ip = "10.0.0.1" }).status)
      assert.equal(200, run(p, { path = "/login", client_ip = "10.0.0.2" }).status)
      assert.equal(429, run(p, { path = "/login", client_ip = "10.0.0.3" }).status)
      -- Another path: per IP, 2 each.
      assert.same({ 200, 200, 429 }, statuses(p, 3, { path = "/home", client_ip = "10.0.0.1" }))
      assert.same({ 200 }, statuses(p, 1, { path = "/home", client_ip = "10.0.0.2" }))
    end)
  end)

  describe("sliding windows", function()
    -- The day window, away from its last minute (where the previous day's
    -- weight is nearly 0 and moves fast).
    local function setup_day()
      inside_window(86400, 60)
      return day_start(sluice.now())
    end

    it("count the previous window weighted by how much of it still overlaps", function()
      local start = setup_day()
      local now = sluice.now()
      local w = (start + 86400 - now) / 86400
      local prev, limit = three_left(w)
      local room = 3
      dict():set(key("i:127.0.0.1", "day", start - 86400), prev)
      local p = t.plugin("rate-limiting", { day = limit, limit_by = "ip",
                                            window_type = "sliding" })
      for i = 1, room do
        local res = run(p)
        assert.res_status(200, res)
        assert.equal(tostring(room - i), res.headers["x-ratelimit-remaining-day"])
      end
      local res = run(p)
      assert.equal(429, res.status)
      -- Retry-After: when the previous day's weight has shrunk so that one
      -- more fits: prev * (end - t) / 86400 + room + 1 <= limit.
      local t_wait = (start + 86400 - sluice.now()) - (limit - room - 1) * 86400 / prev
      local retry = tonumber(res.headers["retry-after"])
      assert.is_true(math.abs(retry - math.ceil(t_wait)) <= 1, retry .. " vs " .. t_wait)
      -- RateLimit-Reset: when the current day ends.
      local left = start + 86400 - math.floor(sluice.now())
      assert.is_true(math.abs(tonumber(res.headers["ratelimit-reset"]) - left) <= 1)
      -- The previous day counts for the sliding window only: a fixed one
      -- ignores it.
      local f = t.plugin("rate-limiting", { day = 10, limit_by = "header",
                                            header_name = "x-a", window_type = "fixed" })
      dict():set(key("h:x", "day", start - 86400), 1000)
      assert.equal("9", run(f, { path = "/a", headers = { ["x-a"] = "x" } })
        .headers["x-ratelimit-remaining-day"])
    end)

    it("wait into the next window when the current one alone is full", function()
      local start = setup_day()
      local p = t.plugin("rate-limiting", { day = 2, limit_by = "ip", window_type = "sliding" })
      assert.same({ 200, 200 }, statuses(p, 2))
      local res = run(p)
      assert.equal(429, res.status)
      -- The day ends; then today's 2 count as the previous day until its
      -- weight is 1/2: 12 h into tomorrow.
      local expect = start + 86400 - sluice.now() + 43200
      assert.is_true(math.abs(tonumber(res.headers["retry-after"]) - expect) <= 1)
      assert.equal(2, dict():get(key("i:127.0.0.1", "day", start)))
      -- The counter lives on through tomorrow, for tomorrow's sliding window.
      assert.is_true(dict():ttl(key("i:127.0.0.1", "day", start)) > 86400)
    end)
  end)

  describe("policy: redis", function()
    local redis

    setup(function()
      redis = t.redis()
    end)

    teardown(function()
      t.stop()
    end)

    local function red()
      return assert(sluice.redis.connect({ host = redis.host, port = redis.port }))
    end

    before_each(function()
      local r = red()
      assert(r:flushall())
      r:set_keepalive()
    end)

    local function conf(extra)
      local c = { hour = 3, limit_by = "ip", policy = "redis",
                  redis = { host = redis.host, port = redis.port } }
      for k, v in pairs(extra or {}) do
        c[k] = v
      end
      return c
    end

    it("counts in Redis, with Kong's headers, and a TTL on each counter", function()
      inside_window(3600, 3)
      local p = t.plugin("rate-limiting", conf())
      for i = 1, 3 do
        local res = run(p)
        assert.res_status(200, res)
        assert.equal(tostring(3 - i), res.headers["x-ratelimit-remaining-hour"])
      end
      local res = run(p)
      assert.equal(429, res.status)
      assert.same({ message = "API rate limit exceeded" }, cjson.decode(res.body))
      assert.equal("0", res.headers["x-ratelimit-remaining-hour"])
      assert.is_string(res.headers["retry-after"])
      local r = red()
      local k = key("i:127.0.0.1", "hour", math.floor(sluice.now() / 3600) * 3600)
      -- The refused request did not count.
      assert.equal("3", r:get(k))
      local ttl = r:pttl(k)
      assert.is_true(ttl > 0 and ttl <= 3601000, tostring(ttl))
      r:set_keepalive()
    end)

    it("loads its script again when Redis lost it (NOSCRIPT)", function()
      inside_window(3600, 3)
      local p = t.plugin("rate-limiting", conf())
      assert.equal(200, run(p).status)
      local r = red()
      assert.equal("OK", r:script("FLUSH"))
      assert.equal(200, run(p).status)
      local sha = require("sluice.plugins.rate-limiting.policies.redis").SHA
      assert.same({ 1 }, r:script("EXISTS", sha))
      local k = key("i:127.0.0.1", "hour", math.floor(sluice.now() / 3600) * 3600)
      assert.equal("2", r:get(k))
      r:set_keepalive()
    end)

    it("weights the previous window in Redis too (sliding)", function()
      inside_window(86400, 60)
      local start = day_start(sluice.now())
      local w = (start + 86400 - sluice.now()) / 86400
      local prev, limit = three_left(w)
      local room = 3
      local r = red()
      r:set(key("i:127.0.0.1", "day", start - 86400), prev)
      local c = conf({ day = limit, window_type = "sliding" })
      c.hour = nil
      local p = t.plugin("rate-limiting", c)
      local got = statuses(p, room + 2)
      local expect = {}
      for i = 1, room + 2 do
        expect[i] = i <= room and 200 or 429
      end
      assert.same(expect, got)
      assert.equal(tostring(room), r:get(key("i:127.0.0.1", "day", start)))
      r:set_keepalive()
    end)

    it("proxies uncounted while Redis is down, logging once (fault_tolerant)", function()
      local port = t.helpers.free_port()
      local p = t.plugin("rate-limiting", conf({ redis = { host = "127.0.0.1", port = port } }))
      local logged = {}
      for i = 1, 5 do
        local res = run(p)
        assert.res_status(200, res)
        assert.is_table(res.upstream)
        assert.is_nil(res.headers["x-ratelimit-limit-hour"])
        logged[i] = table.concat(res.logs, "\n")
      end
      assert.matches("could not connect to redis at 127.0.0.1:" .. port
        .. ": connection refused; requests are proxied uncounted", logged[1], 1, true)
      for i = 2, 5 do
        assert.equal("", logged[i])
      end
    end)

    it("waits for a Redis that does not answer once per second, not per request", function()
      -- A listener that never accepts: connections open, commands time out.
      local srv = assert(t.socket.bind("127.0.0.1", 0))
      local _, port = srv:getsockname()
      port = tonumber(port)
      local p = t.plugin("rate-limiting", conf({ redis = { host = "127.0.0.1", port = port,
                                                           timeout = 500 } }))
      local t0 = sluice.now()
      local res = run(p)
      local t1 = sluice.now()
      assert.res_status(200, res)
      assert.is_true(t1 - t0 >= 0.45, tostring(t1 - t0))
      assert.matches("could not count in redis at 127.0.0.1:" .. port .. ": timeout",
        table.concat(res.logs, "\n"), 1, true)
      -- Within the next second: not asked, no wait.
      res = run(p)
      assert.res_status(200, res)
      assert.is_true(sluice.now() - t1 < 0.3, tostring(sluice.now() - t1))
      -- A second later it is asked again.
      sluice.sleep(1 - (sluice.now() - t1) + 0.05)
      local t2 = sluice.now()
      assert.res_status(200, run(p))
      assert.is_true(sluice.now() - t2 >= 0.45, tostring(sluice.now() - t2))
      srv:close()
    end)

    it("answers 500 while Redis is down without fault_tolerant", function()
      local port = t.helpers.free_port()
      local p = t.plugin("rate-limiting", conf({ fault_tolerant = false,
                                                 redis = { host = "127.0.0.1", port = port } }))
      local res = run(p)
      assert.equal(500, res.status)
      assert.is_nil(res.upstream)
      assert.same({ message = "An unexpected error occurred" }, cjson.decode(res.body))
      assert.matches("requests are refused with 500", table.concat(res.logs, "\n"), 1, true)
    end)

  end)

  describe("policy: redis, with an ACL user", function()
    local redis
    local LIMITER = { username = "limiter", password = "s3cret" }

    setup(function()
      redis = t.redis()
      -- Only the user limiter may run commands: the default user is off.
      local r = assert(sluice.redis.connect({ host = redis.host, port = redis.port }))
      assert.equal("OK", r:acl("SETUSER", "limiter", "on", ">s3cret", "~*", "+@all"))
      assert.equal("OK", r:acl("SETUSER", "default", "off"))
      -- Not pooled: the next connection must authenticate.
      r:close()
    end)

    teardown(function()
      t.stop()
    end)

    local function conf(auth)
      return { hour = 3, limit_by = "ip", policy = "redis", fault_tolerant = false,
               redis = { host = redis.host, port = redis.port, username = auth.username,
                         password = auth.password } }
    end

    it("answers 500 when Redis refuses the credentials", function()
      local p = t.plugin("rate-limiting", conf({ username = "limiter", password = "wrong" }))
      local res = run(p)
      assert.equal(500, res.status)
      assert.matches("redis AUTH failed", table.concat(res.logs, "\n"), 1, true)
    end)

    it("authenticates with AUTH username password", function()
      inside_window(3600, 3)
      local res = run(t.plugin("rate-limiting", conf(LIMITER)))
      assert.res_status(200, res)
      assert.equal("2", res.headers["x-ratelimit-remaining-hour"])
      local r = assert(sluice.redis.connect({ host = redis.host, port = redis.port,
                                              username = "limiter", password = "s3cret" }))
      local k = key("i:127.0.0.1", "hour", math.floor(sluice.now() / 3600) * 3600)
      assert.equal("1", r:get(k))
      r:set_keepalive()
    end)
  end)
end)
