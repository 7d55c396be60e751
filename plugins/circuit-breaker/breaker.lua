-- breaker.lua: the circuit breaker's state machine, kept in a shared dict so every worker agrees.
--
-- A breaker is named by its key: the service's name, or "ROUTE@SERVICE" for
-- an instance attached to a route. Its entries in the dict:
--
--   s:KEY          1 open, 2 half-open; absent = closed (no expiry)
--   o:KEY          when it last opened, ms since the epoch
--   p:KEY          the half-open probe's lease: add()ed, so one worker wins
--   w:KEY          "BUCKET_MS N": the window's shape, for get()
--   r:KEY:BUCKET   requests seen in a bucket (incr, expires after a window)
--   f:KEY:BUCKET   failures among them
--
-- The closed state costs one get in access and one incr in log (two on a
-- failure, and a sum over the window's buckets then).
local sluice = sluice

local floor = math.floor
local tonumber = tonumber
local str_format = string.format
local str_match = string.match

local DICT = "circuit-breaker"
local OPEN, HALF_OPEN = 1, 2
local STATE_NAMES = { [OPEN] = "open", [HALF_OPEN] = "half_open" }

local _M = {
  DICT = DICT,
  -- check's verdicts
  PASS = 1, PROBE = 2, REJECT = 3,
}

-- Per worker: the dict's key names of each breaker, made once:
-- key -> { s =, o =, p =, w =, r =, f =, bucket = the current bucket's number,
-- rb =, fb = its r: and f: names }.
local names = {}

local function names_of(key)
  local n = names[key]
  if not n then
    n = { s = "s:" .. key, o = "o:" .. key, p = "p:" .. key, w = "w:" .. key,
          r = "r:" .. key .. ":", f = "f:" .. key .. ":" }
    names[key] = n
  end
  return n
end

local function dict()
  local d = sluice.shared[DICT]
  if not d then
    error("the shared dict '" .. DICT .. "' is missing: it is created when a config "
      .. "uses the circuit-breaker plugin", 2)
  end
  return d
end

local function bucket_ms(conf)
  return floor(conf.window / conf.window_buckets)
end

-- Requests and failures over the last n buckets up to bucket b.
local function window_counts(d, n, b, buckets)
  local requests, failures = 0, 0
  for i = b - buckets + 1, b do
    requests = requests + (d:get(n.r .. i) or 0)
    failures = failures + (d:get(n.f .. i) or 0)
  end
  return requests, failures
end

-- What to do with a request at time now (ms): PASS (closed), PROBE (the one
-- request a half-open breaker lets through; the caller must report it) or
-- REJECT (open), with the ms until a probe may go (0: one is in flight).
function _M.check(key, conf, now, label)
  local d = dict()
  local n = names_of(key)
  local st = d:get(n.s)
  if st == nil then
    return _M.PASS
  end
  if st == OPEN then
    local opened = d:get(n.o)
    if not opened then
      return _M.REJECT, conf.reset_timeout
    end
    if now < opened + conf.reset_timeout then
      return _M.REJECT, opened + conf.reset_timeout - now
    end
  end
  -- Open for reset_timeout already, or half-open: one probe at a time,
  -- whichever worker adds the lease first. A lease outlives a probe that
  -- never reports (its worker died) by the probe's longest possible time.
  local lease = (conf.timeout > 0 and conf.timeout or conf.reset_timeout) / 1000 + 1
  if not d:add(n.p, true, lease) then
    return _M.REJECT, 0
  end
  -- A probe that failed since we read the state re-opened it: respect that.
  st = d:get(n.s)
  if st == OPEN then
    local opened = d:get(n.o)
    if not opened or now < opened + conf.reset_timeout then
      d:delete(n.p)
      return _M.REJECT, opened and opened + conf.reset_timeout - now or conf.reset_timeout
    end
    d:set(n.s, HALF_OPEN)
    sluice.log.warn(label, ": open -> half_open after ", conf.reset_timeout,
      " ms: letting one probe request through")
  elseif st == nil then
    d:delete(n.p)
    return _M.PASS
  end
  return _M.PROBE
end

local function open(d, n, now, label, why)
  d:set(n.o, now)
  d:set(n.s, OPEN)
  d:delete(n.p)
  sluice.log.warn(label, ": ", why)
end

-- Reports how a request that check let through ended, at time now (ms).
-- failed: whether it counts as a failure; probe: check returned PROBE;
-- outcome: what happened, for the log ("status 502").
function _M.report(key, conf, now, failed, probe, label, outcome)
  local d = dict()
  local n = names_of(key)
  local ms = bucket_ms(conf)
  local b = floor(now / ms)
  if probe then
    if failed then
      open(d, n, now, label, "half_open -> open: the probe failed (" .. outcome
        .. "); next probe in " .. conf.reset_timeout .. " ms")
    else
      d:delete(n.s)
      d:delete(n.o)
      d:delete(n.p)
      for i = b - conf.window_buckets, b do
        d:delete(n.r .. i)
        d:delete(n.f .. i)
      end
      sluice.log.warn(label, ": half_open -> closed: the probe succeeded (", outcome, ")")
    end
    return
  end
  -- The bucket's key names are made once per bucket per worker, so that a
  -- request makes no string. The window's shape, for get(), is rewritten
  -- then and on each failure: neither eviction nor a flush loses it for long.
  if n.bucket ~= b or failed then
    n.bucket, n.rb, n.fb = b, n.r .. b, n.f .. b
    d:set(n.w, ms .. " " .. conf.window_buckets)
  end
  local ttl = (conf.window + ms) / 1000
  d:incr(n.rb, 1, 0, ttl)
  if not failed then
    return
  end
  d:incr(n.fb, 1, 0, ttl)
  if d:get(n.s) ~= nil then
    return
  end
  local requests, failures = window_counts(d, n, b, conf.window_buckets)
  local pct = failures * 100 / requests
  if requests >= conf.volume_threshold and pct >= conf.error_threshold_percentage
      and d:add(n.s, OPEN) then
    open(d, n, now, label, str_format("closed -> open: %d failures in %d requests over "
      .. "the last %d ms (%.0f%% >= %s%%), last %s; next probe in %d ms", failures,
      requests, conf.window, pct, conf.error_threshold_percentage, outcome,
      conf.reset_timeout))
  end
end

-- A half-open probe that ended without a verdict (a plugin after this one
-- answered): give the lease back for the next request.
function _M.release(key)
  dict():delete(names_of(key).p)
end

-- The state of breaker key: { state = "closed" | "open" | "half_open",
-- failures =, requests = (in the current window), opened_at = ms | nil },
-- or nil when no request went through it yet.
function _M.get(key)
  local d = sluice.shared[DICT]
  if not d then
    return nil
  end
  local n = names_of(key)
  local st = d:get(n.s)
  local shape = d:get(n.w)
  if st == nil and shape == nil then
    return nil
  end
  local requests, failures = 0, 0
  local ms, buckets = str_match(shape or "", "^(%d+) (%d+)$")
  if ms then
    ms, buckets = tonumber(ms), tonumber(buckets)
    requests, failures = window_counts(d, n, floor(sluice.now() * 1000 / ms), buckets)
  end
  return { state = STATE_NAMES[st] or "closed", failures = failures, requests = requests,
           opened_at = st and d:get(n.o) or nil }
end

return _M
