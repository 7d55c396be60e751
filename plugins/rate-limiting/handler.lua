-- rate-limiting: Kong's limits per window, exact under concurrency, per node or in Redis.
local crypto = require("sluice.crypto")
local windows = require("sluice.plugins.rate-limiting.windows")
local local_policy = require("sluice.plugins.rate-limiting.policies.local")
local redis_policy = require("sluice.plugins.rate-limiting.policies.redis")
local tbl_new = require("table.new")

local sluice = sluice

local ipairs = ipairs
local math_ceil = math.ceil
local math_floor = math.floor
local setmetatable = setmetatable
local str_sub = string.sub
local str_find = string.find
local str_upper = string.upper
local tbl_concat = table.concat
local tostring = tostring

local PERIODS = windows.PERIODS
local retry_after = windows.retry_after
-- A worker logs a failing counter store at most once per this many seconds.
local ERROR_LOG_INTERVAL = 10
local SCRATCH = { "start", "stop", "prev_start", "weight", "ttl", "count", "before", "keys" }
-- Longer identifiers (a header's value, say) are keyed by their SHA-256, so
-- that a counter's size stays bounded whatever a client sends; the kind
-- tag's upper case says so ("H:" is a hashed "h:").
local MAX_IDENTIFIER = 64
local HASHED = { ["c:"] = "C:", ["k:"] = "K:", ["i:"] = "I:", ["s:"] = "S:", ["h:"] = "H:",
                 ["p:"] = "P:" }

local RateLimiting = {
  PRIORITY = 910, -- Kong's: after authentication (key-auth 1250), before the circuit-breaker (905)
  VERSION = "1.0.0",
  -- Kong's kong_rate_limiting_counters is 12m too; server.shared_dicts may resize it.
  SHARED_DICTS = { [local_policy.DICT] = 12 * 1024 * 1024 },
}

-- Who a request is counted for: a tag naming the kind (so that a consumer
-- id never meets an IP address) and the value. Kong's fallbacks: the
-- client's IP when there is nothing to count by.
local function by_ip()
  return "i:", sluice.client.get_forwarded_ip()
end

local IDENTIFY = {
  consumer = function()
    local c = sluice.client.get_consumer()
    local id = c and c.id
    if not id then
      c = sluice.client.get_credential()
      id = c and c.id
    end
    if id then
      return "c:", tostring(id)
    end
    return by_ip()
  end,
  credential = function()
    local c = sluice.client.get_credential()
    local id = c and c.id
    if id then
      return "k:", tostring(id)
    end
    return by_ip()
  end,
  ip = by_ip,
  service = function()
    local s = sluice.router.get_service()
    local id = s and s.id
    if id then
      return "s:", tostring(id)
    end
    return by_ip()
  end,
  header = function(conf)
    local v = sluice.request.get_header(conf.header_name)
    if v then
      return "h:", v
    end
    return by_ip()
  end,
  path = function(conf)
    local p = conf.path
    if sluice.request.get_path() == p then
      return "p:", p
    end
    return by_ip()
  end,
}

-- Per worker, per config: what its requests need, made once (configure, or
-- the first request): { n, [i] = { period, limit, limit_s, tag,
-- header_limit, header_remaining } for each configured window (second
-- first), sliding, identify, counter (the policy's count), where (for
-- errors), and the per-request arrays windows.frame and the policies fill
-- (SCRATCH) }.
local plans = setmetatable({}, { __mode = "k" })
-- Per worker, per config: the key prefix of its counters, which names the
-- instance as Kong's keys do (the route and service it is attached to), and
-- the consumer of a consumer's instance.
local prefixes = setmetatable({}, { __mode = "k" })
-- Per worker: where -> { at = when an error was last logged, missed = errors since }.
local failures = {}

local function plan_of(conf)
  local plan = { n = 0, sliding = conf.window_type == "sliding",
                 identify = IDENTIFY[conf.limit_by] }
  for p, name in ipairs(PERIODS) do
    local limit = conf[name]
    if limit then
      local title = str_upper(str_sub(name, 1, 1)) .. str_sub(name, 2)
      plan.n = plan.n + 1
      plan[plan.n] = { period = p, limit = limit, limit_s = tostring(limit),
                       tag = "|" .. name .. "|",
                       header_limit = "X-RateLimit-Limit-" .. title,
                       header_remaining = "X-RateLimit-Remaining-" .. title }
    end
  end
  for _, f in ipairs(SCRATCH) do
    plan[f] = tbl_new(plan.n, 0)
  end
  if conf.policy == "redis" then
    redis_policy.prepare(plan, conf)
    plan.counter = redis_policy.count
  else
    plan.where = "shared dict '" .. local_policy.DICT .. "'"
    plan.counter = local_policy.count
  end
  plans[conf] = plan
  return plan
end

local function prefix_of(conf)
  local scope = sluice.plugin.get_scope() or "global"
  local parts = { "rl|", scope }
  if str_find(scope, "route", 1, true) then
    parts[#parts + 1] = ":" .. tostring(sluice.router.get_route().id)
  end
  if str_find(scope, "service", 1, true) then
    parts[#parts + 1] = ":" .. tostring(sluice.router.get_service().id)
  end
  if str_find(scope, "consumer", 1, true) then
    -- An instance of one consumer only runs for that consumer.
    local c = sluice.client.get_consumer()
    parts[#parts + 1] = ":" .. tostring(c and c.id)
  end
  parts[#parts + 1] = "|"
  local prefix = tbl_concat(parts)
  prefixes[conf] = prefix
  return prefix
end

-- Logs a counting failure at most once per ERROR_LOG_INTERVAL per worker
-- and store, with how many were not logged since.
local function log_failure(plan, err, now, fault_tolerant)
  local f = failures[plan.where]
  if not f then
    f = { at = -ERROR_LOG_INTERVAL, missed = 0 }
    failures[plan.where] = f
  end
  if now - f.at < ERROR_LOG_INTERVAL then
    f.missed = f.missed + 1
    return
  end
  local missed = f.missed
  f.at, f.missed = now, 0
  sluice.log.err(err, fault_tolerant and "; requests are proxied uncounted" or
    "; requests are refused with 500", missed > 0 and (" (" .. missed
    .. " more failures since the last report)") or "")
end

-- Sets Kong's headers for a counted request: each window's limit and
-- remaining, and the most restrictive window's (the fewest remaining; the
-- longest of those) as RateLimit-*. refused is the index of the window that
-- refused the request, or 0. Returns the seconds to put in Retry-After.
local function publish(plan, refused)
  local set_header = sluice.response.set_header
  local count, before, weight = plan.count, plan.before, plan.weight
  local best, best_remaining, best_remaining_s, best_len
  local now = plan.now
  local retry = 0
  for i = 1, plan.n do
    local w = plan[i]
    local remaining = 0
    if i ~= refused then
      remaining = math_floor(w.limit - count[i] - before[i] * weight[i])
      if remaining < 0 then
        remaining = 0
      end
    end
    local remaining_s = tostring(remaining)
    set_header(w.header_limit, w.limit_s)
    set_header(w.header_remaining, remaining_s)
    local len = plan.stop[i] - plan.start[i]
    if not best or remaining < best_remaining
        or (remaining == best_remaining and len > best_len) then
      best, best_remaining, best_remaining_s, best_len = i, remaining, remaining_s, len
    end
    if refused > 0 and count[i] + before[i] * weight[i] + 1 > w.limit then
      local r = retry_after(plan, i)
      if r > retry then
        retry = r
      end
    end
  end
  local reset = plan.stop[best] - math_floor(now)
  set_header("RateLimit-Limit", plan[best].limit_s)
  set_header("RateLimit-Remaining", best_remaining_s)
  set_header("RateLimit-Reset", reset > 1 and reset or 1)
  return retry
end

function RateLimiting.configure(_, configs)
  for _, conf in ipairs(configs) do
    if not plans[conf] then
      plan_of(conf)
    end
  end
end

function RateLimiting.access(_, conf)
  local plan = plans[conf] or plan_of(conf)
  local kind, id = plan.identify(conf)
  if #id > MAX_IDENTIFIER then
    kind, id = HASHED[kind], crypto.hex(crypto.sha256(id))
  end
  local base = (prefixes[conf] or prefix_of(conf)) .. kind .. id
  local now = sluice.now()
  local refused, err = plan.counter(plan, base, now)
  if not refused then
    log_failure(plan, err, now, conf.fault_tolerant)
    if conf.fault_tolerant then
      return
    end
    return sluice.response.error(500)
  end
  if conf.hide_client_headers then
    if refused > 0 then
      return sluice.response.error(conf.error_code, conf.error_message)
    end
    return
  end
  local retry = publish(plan, refused)
  if refused > 0 then
    retry = math_ceil(retry)
    sluice.response.set_header("Retry-After", retry > 1 and retry or 1)
    return sluice.response.error(conf.error_code, conf.error_message)
  end
end

return RateLimiting
