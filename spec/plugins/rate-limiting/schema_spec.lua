-- rate-limiting's config: Kong's fields and defaults, its checks, the flat redis_* fields,
-- and what sluice refuses (cluster, TLS to Redis, delayed syncing) with a reason.
local config = require("sluice.config")
local t = require("sluice.test")

local HEAD = '_format_version: "3.0"\n'

local function load(plugin_yaml, server_yaml)
  return config.load_string(HEAD .. (server_yaml or "") .. [[
services:
  - name: orders
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
    plugins:
      - name: rate-limiting
]] .. (plugin_yaml or ""), "t.yaml")
end

local function conf_of(plugin_yaml)
  local out, err = load(plugin_yaml)
  assert(out, err)
  return out.plugins[1].config
end

local PATH = "t.yaml:%d+: services%[0%]%.plugins%[0%]%."

describe("plugin: rate-limiting (schema)", function()
  it("fills Kong's defaults", function()
    local c = conf_of([[
        config: { minute: 5 }
]])
    assert.same({
      minute = 5, limit_by = "consumer", policy = "local", window_type = "fixed",
      fault_tolerant = true, hide_client_headers = false, error_code = 429,
      error_message = "API rate limit exceeded", sync_rate = -1,
      redis = { port = 6379, timeout = 2000, database = 0, ssl = false, ssl_verify = false },
    }, c)
  end)

  it("needs at least one limit", function()
    local out, err = load([[
        config: { limit_by: ip }
]])
    assert.is_nil(out)
    assert.matches(PATH .. "config: at least one limit is needed: second, minute, hour, day, "
      .. "month or year", err)
  end)

  it("refuses a longer window with a lower limit, as Kong does, at the longer window", function()
    local _, err = load([[
        config: { second: 10, minute: 20, hour: 15 }
]])
    assert.matches(PATH .. "config%.hour: The limit for hour%(15%.0%) cannot be lower than the "
      .. "limit for minute%(20%.0%)", err)
    -- Equal limits are fine.
    assert.equal(20, conf_of([[
        config: { minute: 20, hour: 20 }
]]).hour)
  end)

  it("refuses limits that are not positive numbers", function()
    local _, err = load([[
        config: { minute: 0, hour: "many" }
]])
    assert.matches("config.minute: value must be greater than 0", err, 1, true)
    assert.matches('config.hour: expected a number, got string "many"', err, 1, true)
  end)

  it("refuses the cluster policy naming redis and local instead", function()
    local _, err = load([[
        config: { minute: 5, policy: cluster }
]])
    assert.matches(PATH .. "config%.policy: the 'cluster' policy keeps counters in Kong's "
      .. "database, which sluice does not have: use 'redis' %(exact across every node sharing "
      .. "one Redis%) or 'local'", err)
    local _, err2 = load([[
        config: { minute: 5, policy: memcached }
]])
    assert.matches("config.policy: expected one of: local, redis, got 'memcached'", err2, 1, true)
  end)

  it("needs header_name with limit_by: header and path with limit_by: path", function()
    local _, err = load([[
        config: { minute: 5, limit_by: header }
]])
    assert.matches(PATH .. "config%.header_name: required with limit_by: header", err)
    local _, err2 = load([[
        config: { minute: 5, limit_by: path }
]])
    assert.matches(PATH .. "config%.path: required with limit_by: path", err2)
    local _, err3 = load([[
        config: { minute: 5, limit_by: path, path: "orders" }
]])
    assert.matches(PATH .. "config%.path:", err3)
    local _, err4 = load([[
        config: { minute: 5, limit_by: header, header_name: "x key" }
]])
    assert.matches(PATH .. "config%.header_name:", err4)
    local _, err5 = load([[
        config: { minute: 5, limit_by: user }
]])
    assert.matches(PATH .. "config%.limit_by:", err5)
  end)

  it("needs redis.host with policy: redis", function()
    local _, err = load([[
        config: { minute: 5, policy: redis }
]])
    assert.matches(PATH .. "config%.redis%.host: required with policy: redis", err)
  end)

  it("takes the redis record", function()
    local c = conf_of([[
        config:
          minute: 5
          policy: redis
          redis: { host: 10.0.0.7, port: 6380, username: rl, password: s3cret, database: 2,
                   timeout: 500 }
]])
    assert.same({ host = "10.0.0.7", port = 6380, username = "rl", password = "s3cret",
                  database = 2, timeout = 500, ssl = false, ssl_verify = false }, c.redis)
  end)

  it("takes Kong's older flat redis_* fields into the redis record", function()
    local c = conf_of([[
        config:
          minute: 5
          policy: redis
          redis_host: 10.0.0.7
          redis_port: 6380
          redis_password: s3cret
          redis_username: rl
          redis_database: 3
          redis_timeout: 700
          redis_ssl: false
          redis_ssl_verify: false
          redis_server_name: redis.internal
]])
    assert.same({ host = "10.0.0.7", port = 6380, username = "rl", password = "s3cret",
                  database = 3, timeout = 700, ssl = false, ssl_verify = false,
                  server_name = "redis.internal" }, c.redis)
    assert.is_nil(c.redis_host)
  end)

  it("reports a bad flat field under its own name, and refuses mixing both forms", function()
    local _, err = load([[
        config: { minute: 5, policy: redis, redis_host: h, redis_port: 70000 }
]])
    assert.matches(PATH .. "config%.redis_port: value should be between 1 and 65535", err)
    local _, err2 = load([[
        config: { minute: 5, policy: redis, redis_host: h, redis: { port: 6380 } }
]])
    assert.matches(PATH .. "config%.redis_host: cannot be combined with 'redis': give one or "
      .. "the other", err2)
  end)

  it("refuses TLS to Redis with what to do instead", function()
    local _, err = load([[
        config: { minute: 5, policy: redis, redis: { host: h, ssl: true } }
]])
    assert.matches(PATH .. "config%.redis%.ssl: Redis over TLS is not supported yet "
      .. "%(sluice%.redis has no TLS%): set ssl to false", err)
    local _, err2 = load([[
        config: { minute: 5, policy: redis, redis_host: h, redis_ssl: true }
]])
    assert.matches(PATH .. "config%.redis_ssl: Redis over TLS is not supported yet", err2)
  end)

  it("accepts Kong's sync_rate -1 only", function()
    assert.equal(-1, conf_of([[
        config: { minute: 5, sync_rate: -1 }
]]).sync_rate)
    local _, err = load([[
        config: { minute: 5, policy: redis, redis: { host: h }, sync_rate: 0.5 }
]])
    assert.matches(PATH .. "config%.sync_rate: sluice counts every request at once, exactly",
      err)
  end)

  it("takes window_type fixed or sliding, and a custom error_code and message", function()
    local c = conf_of([[
        config: { hour: 5, window_type: sliding, error_code: 503, error_message: Slow down }
]])
    assert.equal("sliding", c.window_type)
    assert.equal(503, c.error_code)
    assert.equal("Slow down", c.error_message)
    local _, err = load([[
        config: { hour: 5, window_type: leaky, error_code: 42 }
]])
    assert.matches("config.window_type:", err, 1, true)
    assert.matches("config.error_code: value should be between 100 and 599", err, 1, true)
  end)

  it("refuses unknown fields with their path", function()
    local _, err = load([[
        config: { minute: 5, limit: 3 }
]])
    assert.matches(PATH .. "config%.limit: unknown field 'limit'", err)
  end)

  it("brings its shared dict, 12m, unless the user sizes it", function()
    local out = assert(load([[
        config: { minute: 5 }
]]))
    assert.same({ name = "rate-limiting", size = 12 * 1024 * 1024 }, {
      name = out.server.shared_dicts[1].name, size = out.server.shared_dicts[1].size })
    out = assert(load([[
        config: { minute: 5 }
]], "server:\n  shared_dicts: { rate-limiting: 1m }\n"))
    assert.equal(1024 * 1024, out.server.shared_dicts[1].size)
  end)

  it("loads the example of its docs page", function()
    local here = debug.getinfo(1, "S").source:match("^@(.-)spec/plugins/rate%-limiting/")
    local f = assert(io.open((here or "") .. "docs/plugins/rate-limiting.md"))
    local doc = f:read("*a")
    f:close()
    local example = assert(doc:match("```yaml\n(.-)```"))
    local out = assert(config.load_string(example, "example.yaml"))
    local c = out.plugins[1].config
    assert.same({ 60, 1000, "consumer", "redis", "10.0.0.9", 6379 },
      { c.minute, c.hour, c.limit_by, c.policy, c.redis.host, c.redis.port })
  end)

  it("is what t.plugin checks too", function()
    assert.has_error(function()
      t.plugin("rate-limiting", { minute = 5, policy = "cluster" })
    end)
    assert.equal("local", t.plugin("rate-limiting", { minute = 5 }).config.policy)
  end)
end)
