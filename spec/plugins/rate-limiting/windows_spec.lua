-- rate-limiting's windows: the UTC calendar alignment of every period, checked against os.date.
require("sluice.plugins") -- finds plugins/NAME/MODULE.lua for require("sluice.plugins.NAME.MODULE")
local windows = require("sluice.plugins.rate-limiting.windows")

local bounds = windows.bounds
local W = windows

-- The UTC date of a timestamp, as "YYYY-MM-DD hh:mm:ss".
local function utc(ts)
  return os.date("!%Y-%m-%d %H:%M:%S", ts)
end

describe("plugin: rate-limiting (windows)", function()
  it("counts days like the calendar, leap years included", function()
    assert.equal(0, W.days_from_civil(1970, 1, 1))
    assert.equal(59, W.days_from_civil(1970, 3, 1))
    -- 2000 is a leap year, 1900 and 2100 are not.
    assert.equal(W.days_from_civil(2000, 3, 1) - 1, W.days_from_civil(2000, 2, 29))
    assert.equal(28, W.days_from_civil(2100, 3, 1) - W.days_from_civil(2100, 2, 1))
    for _, ts in ipairs({ 0, 951782400, 1709164800, 4107542399, 1767225599 }) do
      local y, m = W.civil_from_days(math.floor(ts / 86400))
      assert.equal(os.date("!%Y-%m", ts), string.format("%04d-%02d", y, m))
    end
  end)

  it("aligns second, minute, hour and day windows on UTC", function()
    local now = 1765152123.75 -- 2025-12-08 00:02:03.75 UTC
    local s, e, p = bounds(W.SECOND, now)
    assert.same({ 1765152123, 1765152124, 1765152122 }, { s, e, p })
    s, e, p = bounds(W.MINUTE, now)
    assert.same({ "2025-12-08 00:02:00", "2025-12-08 00:03:00", "2025-12-08 00:01:00" },
      { utc(s), utc(e), utc(p) })
    s, e, p = bounds(W.HOUR, now)
    assert.same({ "2025-12-08 00:00:00", "2025-12-08 01:00:00", "2025-12-07 23:00:00" },
      { utc(s), utc(e), utc(p) })
    s, e, p = bounds(W.DAY, now)
    assert.same({ "2025-12-08 00:00:00", "2025-12-09 00:00:00", "2025-12-07 00:00:00" },
      { utc(s), utc(e), utc(p) })
  end)

  it("follows calendar months and years, across year ends and February", function()
    local cases = {
      -- now, month start, month end, previous month start
      { "2025-12-31 23:59:59", "2025-12-01", "2026-01-01", "2025-11-01" },
      { "2026-01-01 00:00:00", "2026-01-01", "2026-02-01", "2025-12-01" },
      { "2024-02-29 12:00:00", "2024-02-01", "2024-03-01", "2024-01-01" },
      { "2025-03-15 08:00:00", "2025-03-01", "2025-04-01", "2025-02-01" },
    }
    for _, c in ipairs(cases) do
      local y, mo, d, h, mi, se = c[1]:match("(%d+)-(%d+)-(%d+) (%d+):(%d+):(%d+)")
      local ts = W.days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
        + h * 3600 + mi * 60 + se
      assert.equal(c[1], utc(ts))
      local s, e, p = bounds(W.MONTH, ts)
      assert.same({ c[2], c[3], c[4] }, { utc(s):sub(1, 10), utc(e):sub(1, 10),
                                          utc(p):sub(1, 10) }, c[1])
      s, e, p = bounds(W.YEAR, ts)
      assert.same({ y .. "-01-01", (y + 1) .. "-01-01", (y - 1) .. "-01-01" },
        { utc(s):sub(1, 10), utc(e):sub(1, 10), utc(p):sub(1, 10) })
    end
  end)

  it("weights the previous window by how much of it the sliding window still covers", function()
    local plan = { n = 1, sliding = true, { period = W.MINUTE, limit = 10 },
                   start = {}, stop = {}, prev_start = {}, weight = {}, ttl = {},
                   count = {}, before = {} }
    -- 15 s into the minute: the last 60 s still cover 45 s of the previous one.
    W.frame(plan, 1765152135)
    assert.equal(0.75, plan.weight[1])
    -- The counter must live until the next window has used it as its previous one.
    assert.equal(45 + 60 + 1, plan.ttl[1])
    -- 8 before (weight 0.75: 6) + 3 now = 9: one more fits now.
    plan.count[1], plan.before[1] = 3, 8
    assert.equal(0, W.retry_after(plan, 1))
    -- 4 now: 6 + 4 + 1 > 10, until 8 * w + 5 <= 10, w = 5/8: 7.5 s from now.
    plan.count[1] = 4
    assert.near(7.5, W.retry_after(plan, 1), 1e-9)
    -- This window alone is full (10): 45 s to its end, then until 10 * w + 1 <= 10,
    -- w = 0.9: 6 s into the next window.
    plan.count[1], plan.before[1] = 10, 0
    assert.near(51, W.retry_after(plan, 1), 1e-9)
    -- Fixed windows: nothing before counts, and a full window waits for its end.
    plan.sliding = false
    W.frame(plan, 1765152135)
    assert.equal(0, plan.weight[1])
    assert.equal(46, plan.ttl[1])
    assert.equal(45, W.retry_after(plan, 1))
  end)
end)
