-- policies/redis.lua: counters in one Redis shared by every node, one atomic script per request.
--
-- A request runs SCRIPT once (EVALSHA, then EVAL when Redis does not know
-- it yet): Redis runs a script atomically, so reading every window's
-- counter, deciding, and incrementing them all happens with no other
-- client's command in between. Nodes sharing one Redis therefore never
-- accept more than a limit together, and a refused request counts nowhere.
local crypto = require("sluice.crypto")
local windows = require("sluice.plugins.rate-limiting.windows")

local sluice = sluice

local frame = windows.frame
local math_ceil = math.ceil
local str_find = string.find
local unpack = unpack

-- KEYS[2i-1]: window i's counter; KEYS[2i]: the window before it (read
-- only when ARGV[3i], its weight, is above 0: sliding windows).
-- ARGV[1]: the number of windows n; for window i, ARGV[3i-1] its limit,
-- ARGV[3i] the previous window's weight, ARGV[3i+1] the counter's TTL (ms).
-- Returns { refused, count1, before1, ..., countn, beforen }: refused is 0
-- when the request was accepted and counted (the counts include it), else
-- the first window that refused it (nothing was counted; the counts are
-- the current ones).
local SCRIPT = [[
local n = tonumber(ARGV[1])
local out = { 0 }
local refused = 0
for i = 1, n do
  local count = tonumber(redis.call("GET", KEYS[2 * i - 1]) or "0")
  local before = 0
  local weight = tonumber(ARGV[3 * i])
  if weight > 0 then
    before = tonumber(redis.call("GET", KEYS[2 * i]) or "0")
  end
  out[2 * i] = count
  out[2 * i + 1] = before
  if refused == 0 and count + before * weight + 1 > tonumber(ARGV[3 * i - 1]) then
    refused = i
  end
end
if refused == 0 then
  for i = 1, n do
    local count = redis.call("INCR", KEYS[2 * i - 1])
    if count == 1 then
      redis.call("PEXPIRE", KEYS[2 * i - 1], ARGV[3 * i + 1])
    end
    out[2 * i] = count
  end
end
out[1] = refused
return out
]]
local SHA = crypto.hex(crypto.sha1(SCRIPT))

-- After a Redis timed out, a worker's requests do not wait for it again
-- for this many seconds: a Redis that stops answering costs one timeout per
-- second, not one per request.
local HOLD_OFF = 1

local _M = { SCRIPT = SCRIPT, SHA = SHA, HOLD_OFF = HOLD_OFF }

-- Per worker: plan.where -> until when its Redis is not asked (after a timeout).
local held_off = {}

-- Returns nil and the error, holding the Redis off after a timeout.
local function failed(plan, what, err)
  if err == "timeout" then
    held_off[plan.where] = sluice.now() + HOLD_OFF
  end
  return nil, what .. plan.where .. ": " .. tostring(err)
end

-- Builds plan's Redis parts, once per config: the connect options and the
-- EVALSHA arguments whose constant parts (the script's SHA, the limits)
-- are filled in here.
function _M.prepare(plan, conf)
  local r = conf.redis
  plan.redis = { host = r.host, port = r.port, password = r.password, username = r.username,
                 database = r.database, timeout = r.timeout / 1000 }
  plan.where = "redis at " .. r.host .. ":" .. r.port
  local n = plan.n
  local argv = 2 + 2 * n -- args[argv + k] is ARGV[k]
  local args = {}
  args[1] = SHA
  args[2] = 2 * n
  args[argv + 1] = n
  for i = 1, n do
    args[argv + 3 * i - 1] = plan[i].limit
  end
  plan.args, plan.argv, plan.nargs = args, argv, argv + 1 + 3 * n
end

-- Fills plan.args with the keys, weights and TTLs of this request.
local function fill(plan, base)
  local args, argv = plan.args, plan.argv
  local starts, prevs, weights, ttls = plan.start, plan.prev_start, plan.weight, plan.ttl
  local sliding = plan.sliding
  for i = 1, plan.n do
    local tag = plan[i].tag
    local key = base .. tag .. starts[i]
    args[2 + 2 * i - 1] = key
    args[2 + 2 * i] = sliding and (base .. tag .. prevs[i]) or key
    args[argv + 3 * i] = weights[i]
    args[argv + 3 * i + 1] = math_ceil(ttls[i] * 1000)
  end
end

-- As policies/local.lua's count: 0 when accepted, the refusing window, or
-- nil, err when Redis could not be asked (nothing counted then). Yields
-- while Redis answers.
function _M.count(plan, base, now)
  local until_ = held_off[plan.where]
  if until_ and now < until_ then
    return nil, plan.where .. " timed out less than " .. HOLD_OFF .. " s ago: not asked"
  end
  local red, err = sluice.redis.connect(plan.redis)
  if not red then
    if str_find(err, "could not connect", 1, true) == 1 then
      return nil, err -- it names the address
    end
    return failed(plan, "could not connect to ", err)
  end
  -- plan.args is shared by this config's requests: filled and unpacked
  -- before each call, never read after a wait.
  frame(plan, now)
  fill(plan, base)
  local res
  res, err = red:evalsha(unpack(plan.args, 1, plan.nargs))
  if not res and err and str_find(err, "NOSCRIPT", 1, true) == 1 then
    frame(plan, now)
    fill(plan, base)
    res, err = red:eval(SCRIPT, unpack(plan.args, 2, plan.nargs))
  end
  if type(res) ~= "table" or type(res[1]) ~= "number" then
    red:close()
    return failed(plan, "could not count in ", res and "unexpected reply to the script" or err)
  end
  red:set_keepalive()
  -- Other requests may have framed the plan while this one waited.
  frame(plan, now)
  local count, before = plan.count, plan.before
  for i = 1, plan.n do
    count[i] = res[2 * i]
    before[i] = res[2 * i + 1]
  end
  return res[1]
end

return _M
