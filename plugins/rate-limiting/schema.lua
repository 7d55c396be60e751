-- rate-limiting: Kong's limits per window, what a client is, and where the counters live.
local windows = require("sluice.plugins.rate-limiting.windows")

local fmt = string.format
local type = type

local PERIODS = windows.PERIODS
local HEADER_NAME = require("sluice.schema").HEADER_NAME
local TLS_REFUSED = "Redis over TLS is not supported yet (sluice.redis has no TLS): "
  .. "set ssl to false, and reach a TLS-only Redis through a local TLS tunnel (stunnel, "
  .. "spiped)"

local function check_policy(v)
  if v == "local" or v == "redis" then
    return true
  end
  if v == "cluster" then
    return nil, "the 'cluster' policy keeps counters in Kong's database, which sluice does "
      .. "not have: use 'redis' (exact across every node sharing one Redis) or 'local' "
      .. "(exact per node, no extra component)"
  end
  return nil, "expected one of: local, redis, got '" .. v .. "'"
end

local function check_ssl(v)
  if v then
    return nil, TLS_REFUSED
  end
  return true
end

local function check_sync_rate(v)
  if v == -1 then
    return true
  end
  return nil, "sluice counts every request at once, exactly (Kong's sync_rate -1); "
    .. "delayed syncing is not supported: remove sync_rate or set it to -1"
end

-- Kong's flat redis_* fields, before the redis record: each fills one of
-- its fields. The checks are the record's, so a bad value is reported under
-- the name the user wrote.
local function shorthand(field, def, description)
  def.description = description .. " (Kong's older flat form of redis." .. field .. ")"
  def.func = function(value)
    return { redis = { [field] = value } }
  end
  return def
end

local function check_periods(c)
  local seen = false
  for i, lower in ipairs(PERIODS) do
    local v1 = c[lower]
    if v1 then
      seen = true
      for j = i + 1, #PERIODS do
        local upper = PERIODS[j]
        local v2 = c[upper]
        if v2 and v2 < v1 then
          return nil, fmt("The limit for %s(%.1f) cannot be lower than the limit for %s(%.1f)",
            upper, v2, lower, v1), upper
        end
      end
    end
  end
  return seen
end

local function limit_field(period)
  return { type = "number", gt = 0,
           description = "The number of HTTP requests that can be made per " .. period .. "." }
end

return {
  name = "rate-limiting",
  fields = {
    { config = {
        type = "record",
        fields = {
          { second = limit_field("second") },
          { minute = limit_field("minute") },
          { hour = limit_field("hour") },
          { day = limit_field("day") },
          { month = limit_field("month") },
          { year = limit_field("year") },
          { limit_by = {
              type = "string", default = "consumer",
              one_of = { "consumer", "credential", "ip", "service", "header", "path" },
              description = "What the limits are counted per: the consumer (else its "
                .. "credential, else the client IP), the credential (else the IP), the "
                .. "client IP, the service, a request header's value (else the IP), or "
                .. "`path` (requests to exactly that path together, others per IP)." } },
          { header_name = { type = "string", match = HEADER_NAME,
                            description = "The request header whose value is counted, "
                              .. "with limit_by: header." } },
          { path = { type = "string", starts_with = "/", match = "^/[^%s%?#]*$",
                     description = "The path whose requests are counted together, with "
                       .. "limit_by: path." } },
          { policy = { type = "string", default = "local", custom = check_policy,
                       description = "Where counters live: `local` (a shared dict every "
                         .. "worker of the node sees) or `redis` (one Redis shared by "
                         .. "every node)." } },
          { window_type = { type = "string", default = "fixed", one_of = { "fixed", "sliding" },
                            description = "`fixed`: windows aligned on the UTC calendar, "
                              .. "counts start at 0 in each; `sliding`: the previous "
                              .. "window also counts, weighted by how much of it the "
                              .. "last window-length still covers." } },
          { fault_tolerant = { type = "boolean", default = true,
                               description = "When the counters cannot be reached: proxy "
                                 .. "the request uncounted (true) or answer 500 (false)." } },
          { hide_client_headers = { type = "boolean", default = false,
                                    description = "Send no X-RateLimit-*, RateLimit-* and "
                                      .. "Retry-After headers." } },
          { error_code = { type = "integer", default = 429, between = { 100, 599 },
                           description = "The status of a refused request." } },
          { error_message = { type = "string", default = "API rate limit exceeded",
                              description = "The message of a refused request's body, "
                                .. "{\"message\": ...}." } },
          { sync_rate = { type = "number", default = -1, custom = check_sync_rate,
                          description = "Kong's counter syncing delay; only -1 (every "
                            .. "request counted at once) is supported." } },
          { redis = {
              type = "record", default = {},
              description = "The Redis of policy: redis.",
              fields = {
                { host = { type = "string", len_min = 1,
                           description = "Its address or host name; required with "
                             .. "policy: redis." } },
                { port = { type = "integer", default = 6379, between = { 1, 65535 },
                           description = "Its port." } },
                { timeout = { type = "integer", default = 2000, between = { 1, 2147483646 },
                              description = "Milliseconds for connecting and for each "
                                .. "command." } },
                { username = { type = "string", len_min = 1,
                               description = "The Redis 6 ACL user, sent with the "
                                 .. "password." } },
                { password = { type = "string",
                               description = "Sent with AUTH on each new connection." } },
                { database = { type = "integer", default = 0, between = { 0, 2147483647 },
                               description = "The database to SELECT on each new "
                                 .. "connection." } },
                { ssl = { type = "boolean", default = false, custom = check_ssl,
                          description = "TLS to Redis: not supported yet, must be false." } },
                { ssl_verify = { type = "boolean", default = false,
                                 description = "Kong's TLS certificate check; no effect "
                                   .. "without ssl." } },
                { server_name = { type = "string",
                                  description = "Kong's TLS SNI name; no effect without "
                                    .. "ssl." } },
              },
            } },
        },
        shorthand_fields = {
          { redis_host = shorthand("host", { type = "string", len_min = 1 }, "Redis host") },
          { redis_port = shorthand("port", { type = "integer", between = { 1, 65535 } },
              "Redis port") },
          { redis_password = shorthand("password", { type = "string" }, "Redis password") },
          { redis_username = shorthand("username", { type = "string", len_min = 1 },
              "Redis ACL user") },
          { redis_ssl = shorthand("ssl", { type = "boolean", custom = check_ssl },
              "Redis TLS") },
          { redis_ssl_verify = shorthand("ssl_verify", { type = "boolean" },
              "Redis TLS certificate check") },
          { redis_server_name = shorthand("server_name", { type = "string" },
              "Redis TLS SNI name") },
          { redis_timeout = shorthand("timeout", { type = "integer",
              between = { 1, 2147483646 } }, "Redis timeout in milliseconds") },
          { redis_database = shorthand("database", { type = "integer",
              between = { 0, 2147483647 } }, "Redis database") },
        },
        check = function(c)
          local ok, err, at = check_periods(c)
          if not ok then
            return nil, err or "at least one limit is needed: second, minute, hour, day, "
              .. "month or year", at
          end
          if c.limit_by == "header" and not c.header_name then
            return nil, "required with limit_by: header", "header_name"
          end
          if c.limit_by == "path" and not c.path then
            return nil, "required with limit_by: path", "path"
          end
          if c.policy == "redis" and type(c.redis.host) ~= "string" then
            return nil, "required with policy: redis", { "redis", "host" }
          end
          return true
        end,
      } },
  },
}
