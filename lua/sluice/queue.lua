-- queue.lua: a bounded per-worker queue of log entries, sent in batches from a timer
-- with retries and exponential backoff (Kong's kong.tools.queue, for log plugins).
--
--   local queue = require("sluice.queue")
--   local q = queue.new({ name = "http-log", handler = send }, conf.queue)
--   q:add(json_line)          -- in the log phase: O(1), never waits, never fails
--
-- `handler(entries, n)` runs in a timer run (phase timer, where it may wait
-- for I/O): `entries` is a list of `n` strings, oldest first; it returns true,
-- or nil and an error, and is then called again with the same batch after
-- initial_retry_delay, doubled each time up to max_retry_delay, until
-- max_retry_time has passed since the first call (a negative max_retry_time
-- means no retries): then the batch is dropped with an error-log line.
--
-- Batches: a run sends as soon as max_batch_size entries wait, else once the
-- oldest entry has waited max_coalescing_delay seconds. One run at a time per
-- queue; entries added while it sends wait for its next batch. When the worker
-- stops, the pending timer runs at once and everything left is sent without
-- waiting (and without retries).
--
-- Bounds: at most max_entries entries and (when set) max_bytes bytes wait;
-- past them the oldest entries are dropped (Kong drops the oldest too) and
-- counted, and the count goes to the error log at most once per
-- report_interval seconds (default 10): `http-log: queue full (max_entries
-- 10000): dropped 37 entries in the last 10s`.

local sluice = sluice

local math_floor = math.floor
local math_min = math.min
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local tostring = tostring

local DEFAULTS = {
  max_batch_size = 1,
  max_coalescing_delay = 1,
  max_entries = 10000,
  max_bytes = nil,
  max_retry_time = 60,
  initial_retry_delay = 0.01,
  max_retry_delay = 60,
}
local REPORT_INTERVAL = 10

local _M = {}

local Queue = {}
Queue.__index = Queue

-- A queue. opts: name (for log lines), handler (see above), report_interval;
-- limits: a table with the fields of DEFAULTS (a config's `queue` record).
function _M.new(opts, limits)
  local l = {}
  for k, v in pairs(DEFAULTS) do
    l[k] = v
  end
  for k, v in pairs(limits or {}) do
    if DEFAULTS[k] ~= nil or k == "max_bytes" then
      l[k] = v
    end
  end
  return setmetatable({
    name = opts.name,
    handler = opts.handler,
    limits = l,
    report_interval = opts.report_interval or REPORT_INTERVAL,
    -- entries[first .. last] wait, oldest first; times[i] is when entries[i] came.
    entries = {},
    times = {},
    first = 1,
    last = 0,
    bytes = 0,
    dropped = 0,      -- since the last report
    reported_at = 0,
    timer = nil,      -- the pending timer's handle
    timer_at = nil,   -- when it fires
    running = false,  -- a run is sending
  }, Queue)
end

function Queue:count()
  return self.last - self.first + 1
end

-- Logs the drops counted since the last report, when report_interval passed.
function Queue:report(now, force)
  if self.dropped > 0 and (force or now - self.reported_at >= self.report_interval) then
    local l = self.limits
    local why = l.max_bytes and ("max_entries " .. l.max_entries .. ", max_bytes " .. l.max_bytes)
      or ("max_entries " .. l.max_entries)
    local since = self.reported_at > 0 and now - self.reported_at or nil
    sluice.log.warn(self.name, ": queue full (", why, "): dropped ", self.dropped, " entries",
      since and (" in the last " .. math_floor(since + 0.5) .. "s") or "")
    self.dropped = 0
    self.reported_at = now
  end
end

local function drop_oldest(q)
  local i = q.first
  q.bytes = q.bytes - #q.entries[i]
  q.entries[i] = nil
  q.times[i] = nil
  q.first = i + 1
  q.dropped = q.dropped + 1
end

-- Arms the timer to fire `delay` seconds from now, unless one fires sooner.
local function arm(q, now, delay)
  if q.timer and q.timer_at <= now + delay then
    return
  end
  if q.timer then
    sluice.timer.cancel(q.timer)
  end
  local h, err = sluice.timer.at(delay, q.run, q)
  if not h then
    -- At exit, a delay is refused: send now.
    h, err = sluice.timer.at(0, q.run, q)
    delay = 0
  end
  if not h then
    sluice.log.err(q.name, ": cannot schedule sending the queue: ", err)
    return
  end
  q.timer, q.timer_at = h, now + delay
end

-- Adds one entry (a string). Never waits; drops the oldest entries when full.
function Queue:add(entry)
  local l = self.limits
  local now = sluice.now()
  local size = #entry
  if l.max_bytes and size > l.max_bytes then
    self.dropped = self.dropped + 1
    self:report(now)
    return
  end
  while self:count() >= l.max_entries or (l.max_bytes and self.bytes + size > l.max_bytes) do
    drop_oldest(self)
  end
  local i = self.last + 1
  self.entries[i] = entry
  self.times[i] = now
  self.last = i
  self.bytes = self.bytes + size
  if self.dropped > 0 then
    self:report(now)
  end
  if self.running then
    return -- the run picks it up
  end
  if self:count() >= l.max_batch_size then
    arm(self, now, 0)
  else
    arm(self, now, math_min(l.max_coalescing_delay, self.times[self.first] + l.max_coalescing_delay
      - now))
  end
end

-- Takes up to n entries off the front: a list and its length.
local function take(q, n)
  local batch = {}
  local k = 0
  while k < n and q.first <= q.last do
    local i = q.first
    k = k + 1
    batch[k] = q.entries[i]
    q.bytes = q.bytes - #q.entries[i]
    q.entries[i] = nil
    q.times[i] = nil
    q.first = i + 1
  end
  return batch, k
end

-- Calls the handler on one batch until it succeeds or max_retry_time passed.
local function send(q, batch, n)
  local l = q.limits
  local started = sluice.now()
  local delay = l.initial_retry_delay
  local tries = 0
  while true do
    tries = tries + 1
    local ok, res, err = pcall(q.handler, batch, n)
    if ok and res then
      return true
    end
    err = ok and err or res
    local exiting = sluice.worker.exiting()
    if l.max_retry_time < 0 or exiting or sluice.now() - started + delay > l.max_retry_time then
      sluice.log.err(q.name, ": dropping a batch of ", n, " entries after ", tries,
        tries == 1 and " try: " or " tries: ", tostring(err))
      return false
    end
    if tries == 1 then
      sluice.log.warn(q.name, ": could not send a batch of ", n, " entries (", tostring(err),
        "); retrying with backoff for up to ", l.max_retry_time, "s")
    end
    sluice.sleep(delay)
    delay = math_min(delay * 2, l.max_retry_delay)
  end
end

-- A timer run: sends batches while full ones wait (or everything, at exit),
-- then arms the timer for the next partial batch.
function Queue.run(q)
  q.timer, q.timer_at = nil, nil
  if q.running then
    return
  end
  q.running = true
  local l = q.limits
  local ok, err = pcall(function()
    while q:count() > 0 do
      local now = sluice.now()
      if q:count() < l.max_batch_size and not sluice.worker.exiting()
          and q.times[q.first] + l.max_coalescing_delay > now then
        break
      end
      send(q, take(q, l.max_batch_size))
      q:report(sluice.now())
    end
  end)
  q.running = false
  if not ok then
    sluice.log.err(q.name, ": queue run failed: ", tostring(err))
  end
  local now = sluice.now()
  q:report(now, sluice.worker.exiting())
  if q:count() > 0 then
    local wait = q:count() >= l.max_batch_size and 0
      or q.times[q.first] + l.max_coalescing_delay - now
    arm(q, now, wait > 0 and wait or 0)
  end
end

-- For handlers that send a batch over HTTP: makes the request (opts as for
-- sluice.http.request) and returns true for a 2xx answer, else nil and
-- "<what> to URL failed: reason" or "<what> to URL answered STATUS".
function _M.post(opts, what)
  local res, err = sluice.http.request(opts)
  if not res then
    return nil, what .. " to " .. opts.url .. " failed: " .. tostring(err)
  end
  if res.status < 200 or res.status > 299 then
    return nil, what .. " to " .. opts.url .. " answered " .. res.status
  end
  return true
end

_M.DEFAULTS = DEFAULTS

-- The schema of a `queue` record, Kong 3.x's fields and defaults; `defaults`
-- overrides some (opentelemetry's max_batch_size is 200).
function _M.schema(defaults)
  defaults = defaults or {}
  local function d(k)
    if defaults[k] ~= nil then
      return defaults[k]
    end
    return DEFAULTS[k]
  end
  return {
    type = "record",
    default = {},
    description = "How entries are batched and retried (Kong's queue): per worker and "
      .. "plugin instance.",
    fields = {
      { max_batch_size = { type = "integer", default = d("max_batch_size"),
                           between = { 1, 1000000 },
                           description = "The most entries sent in one request." } },
      { max_coalescing_delay = { type = "number", default = d("max_coalescing_delay"),
                                 between = { 0, 3600 },
                                 description = "Seconds the oldest entry may wait for a "
                                   .. "batch to fill before it is sent anyway." } },
      { max_entries = { type = "integer", default = d("max_entries"), between = { 1, 1000000 },
                        description = "The most entries that may wait; past it the oldest "
                          .. "are dropped (and counted in the error log)." } },
      { max_bytes = { type = "integer", gt = 0,
                      description = "The most bytes of entries that may wait; past it the "
                        .. "oldest are dropped. Unset: no byte limit." } },
      { max_retry_time = { type = "number", default = d("max_retry_time"),
                           description = "Seconds a failing batch is retried before it is "
                             .. "dropped; negative: no retries." } },
      { initial_retry_delay = { type = "number", default = d("initial_retry_delay"),
                                between = { 0.001, 1000000 },
                                description = "Seconds before the first retry; each next "
                                  .. "waits twice as long." } },
      { max_retry_delay = { type = "number", default = d("max_retry_delay"),
                            between = { 0.001, 1000000 },
                            description = "The longest wait between two retries." } },
      { concurrency_limit = { type = "integer", default = 1, one_of = { -1, 1 },
                              description = "Kong's: how many batches are sent at once. "
                                .. "Here one run at a time per queue; -1 acts as 1." } },
      { name = { type = "string",
                 description = "Kong's shared queue name; accepted and ignored (each "
                   .. "instance has its own queue per worker)." } },
    },
  }
end

return _M
