-- windows.lua: rate-limiting's periods: where each window starts and ends (UTC, as Kong's).
--
-- Fixed windows are aligned on the UTC calendar as Kong's are: a minute
-- window starts at :00, a day at 00:00 UTC, a month on its first day, a year
-- on January 1st. A sliding window is the same grid: the window a request
-- falls in, plus the one before it weighted by how much of it still overlaps
-- the last `length` seconds (see frame).

local math_floor = math.floor

local PERIODS = { "second", "minute", "hour", "day", "month", "year" }
local SECOND, MINUTE, HOUR, DAY, MONTH, YEAR = 1, 2, 3, 4, 5, 6
-- Lengths in seconds of the periods that have one; months and years follow
-- the calendar.
local LENGTH = { 1, 60, 3600, 86400 }
-- The longest a period can be: how long a counter must outlive its window
-- to serve as the previous window of a sliding one.
local LONGEST = { 1, 60, 3600, 86400, 31 * 86400, 366 * 86400 }

local _M = {
  PERIODS = PERIODS,
  SECOND = SECOND, MINUTE = MINUTE, HOUR = HOUR, DAY = DAY, MONTH = MONTH, YEAR = YEAR,
  LONGEST = LONGEST,
}

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
-- days_from_civil), without os.time's local time zone.
local function days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = math_floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math_floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math_floor(yoe / 4) - math_floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
_M.days_from_civil = days_from_civil

-- The year and month of a day number (days since 1970-01-01).
local function civil_from_days(z)
  z = z + 719468
  local era = math_floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math_floor((doe - math_floor(doe / 1460) + math_floor(doe / 36524)
    - math_floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math_floor(yoe / 4) - math_floor(yoe / 100))
  local mp = math_floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then
    y = y + 1
  end
  return y, m
end
_M.civil_from_days = civil_from_days

-- Per worker, the calendar windows around the last time asked about,
-- recomputed once a month or a year: start, stop (exclusive) and the start of
-- the window before, in seconds since the epoch.
local month_start, month_stop, month_prev = 0, 0, 0
local year_start, year_stop, year_prev = 0, 0, 0

local function refresh_month(now)
  local y, m = civil_from_days(math_floor(now / 86400))
  month_start = days_from_civil(y, m, 1) * 86400
  if m == 12 then
    month_stop = days_from_civil(y + 1, 1, 1) * 86400
  else
    month_stop = days_from_civil(y, m + 1, 1) * 86400
  end
  if m == 1 then
    month_prev = days_from_civil(y - 1, 12, 1) * 86400
  else
    month_prev = days_from_civil(y, m - 1, 1) * 86400
  end
end

local function refresh_year(now)
  local y = civil_from_days(math_floor(now / 86400))
  year_start = days_from_civil(y, 1, 1) * 86400
  year_stop = days_from_civil(y + 1, 1, 1) * 86400
  year_prev = days_from_civil(y - 1, 1, 1) * 86400
end

-- The window of period p (SECOND .. YEAR) that holds now (seconds, may be
-- fractional): its start, its end (exclusive) and the start of the window
-- before it. Allocates nothing.
local function bounds(p, now)
  local len = LENGTH[p]
  if len then
    local start = math_floor(now / len) * len
    return start, start + len, start - len
  end
  if p == MONTH then
    if now >= month_stop or now < month_start then
      refresh_month(now)
    end
    return month_start, month_stop, month_prev
  end
  if now >= year_stop or now < year_start then
    refresh_year(now)
  end
  return year_start, year_stop, year_prev
end
_M.bounds = bounds

-- Fills plan's per-request arrays for the time now: for each window i,
-- start[i], stop[i], prev_start[i], weight[i] (how much the previous
-- window counts: the share of it the sliding window still covers, 0 for
-- fixed windows) and ttl[i] (seconds a counter created now must live);
-- plan.now = now.
-- The arrays are the plan's own, so the caller reads them before it yields.
function _M.frame(plan, now)
  local starts, stops, prevs = plan.start, plan.stop, plan.prev_start
  local weights, ttls = plan.weight, plan.ttl
  local sliding = plan.sliding
  plan.now = now
  for i = 1, plan.n do
    local p = plan[i].period
    local start, stop, prev = bounds(p, now)
    starts[i], stops[i], prevs[i] = start, stop, prev
    if sliding then
      weights[i] = (stop - now) / (stop - start)
      ttls[i] = stop - now + LONGEST[p] + 1
    else
      weights[i] = 0
      ttls[i] = stop - now + 1
    end
  end
end

-- Seconds from plan.now until window i of plan (framed, with its counts in
-- plan.count[i] and plan.before[i]) accepts one more request.
-- Fixed: when the window ends. Sliding: when the previous window's weight
-- has shrunk enough, or, when this window alone is full, when enough of it
-- has slid out of the next one.
function _M.retry_after(plan, i)
  local cur, prev, limit = plan.count[i], plan.before[i], plan[i].limit
  local now_left = plan.stop[i] - plan.now
  if not plan.sliding then
    return now_left
  end
  local len = plan.stop[i] - plan.start[i]
  if cur + 1 <= limit then
    -- prev * (stop - t) / len + cur + 1 <= limit, solved for t.
    if prev <= 0 then
      return 0
    end
    local t = now_left - (limit - cur - 1) * len / prev
    return t > 0 and t or 0
  end
  -- In the next window this one is the previous: cur * w + 1 <= limit,
  -- with w = 1 - elapsed / len (taking the next window as long as this one).
  local t = len * (1 - (limit - 1) / cur)
  return now_left + (t > 0 and t or 0)
end

return _M
