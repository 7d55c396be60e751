-- policies/local.lua: rate-limiting's counters in a shared dict every worker of the node sees.
--
-- Each window's counter is incremented first (atomically, across workers),
-- then checked: a request is accepted when every window's count, its own
-- included, stays within the limit. A refused request takes its increments
-- back. So the counters hold the accepted requests plus, for an instant, the
-- refused ones still in flight: accepted requests never exceed a limit,
-- whatever the concurrency, and a request that comes exactly while another
-- is being refused may be refused with one unit of room left (only when
-- requests are already being refused).
local windows = require("sluice.plugins.rate-limiting.windows")

local sluice = sluice

local frame = windows.frame

local DICT = "rate-limiting"

local _M = { DICT = DICT }

-- The dict, looked up once per worker (sluice.shared returns the same table).
local dict

-- Takes back the increments of windows 1 .. n. A counter that expired in
-- between (its window ended) has nothing to take back.
local function undo(keys, n)
  for i = 1, n do
    dict:incr(keys[i], -1)
  end
end

-- Counts one request of the client whose key prefix is base at time now
-- (seconds). Fills plan.count and plan.before (see windows.frame for the
-- rest). Returns 0 when accepted, the index of the first window that refused
-- it, or nil, err when the dict failed (nothing counted then). Never yields.
function _M.count(plan, base, now)
  if not dict then
    dict = sluice.shared[DICT]
    if not dict then
      return nil, "shared dict '" .. DICT .. "' is missing"
    end
  end
  frame(plan, now)
  local keys, count, before = plan.keys, plan.count, plan.before
  local starts, prevs, weights, ttls = plan.start, plan.prev_start, plan.weight, plan.ttl
  local sliding = plan.sliding
  local n = plan.n
  for i = 1, n do
    local w = plan[i]
    local key = base .. w.tag .. starts[i]
    keys[i] = key
    local prev = 0
    if sliding then
      prev = dict:get(base .. w.tag .. prevs[i]) or 0
    end
    before[i] = prev
    local c, err = dict:incr(key, 1, 0, ttls[i])
    if not c then
      undo(keys, i - 1)
      return nil, "could not count in shared dict '" .. DICT .. "': " .. err
    end
    count[i] = c
    if c + prev * weights[i] > w.limit then
      -- Refused: nothing of it stays counted; the later windows are read
      -- for the headers only.
      undo(keys, i)
      for j = 1, i do
        count[j] = count[j] - 1
      end
      for j = i + 1, n do
        local wj = plan[j]
        count[j] = dict:get(base .. wj.tag .. starts[j]) or 0
        before[j] = sliding and dict:get(base .. wj.tag .. prevs[j]) or 0
      end
      return i
    end
  end
  return 0
end

return _M
