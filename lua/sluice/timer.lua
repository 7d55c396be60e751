-- timer.lua: sluice.timer.at and sluice.timer.every: functions run later in the worker.
--
-- The functions run outside any request, on the worker's main Lua state; they
-- cannot wait for I/O yet (no sluice.sleep inside a timer). An error is
-- logged with its traceback and a repeating timer keeps running.

local ffi = require("ffi")
local base = require("sluice.ffi")

local C = ffi.C
local errp = base.err
local error = error
local type = type
local select = select
local unpack = unpack
local xpcall = xpcall
local traceback = debug.traceback
local ffi_string = ffi.string

local _M = {}

-- Pending timers: id -> { fn =, args = { n =, ... } }.
local pending = {}
local next_id = 0

local function start(fname, delay, interval, fn, ...)
  if type(delay) ~= "number" or delay < 0 then
    error("bad argument #1 to '" .. fname .. "' (non-negative number expected, got "
      .. type(delay) .. ")", 3)
  end
  if type(fn) ~= "function" then
    error("bad argument #2 to '" .. fname .. "' (function expected, got " .. type(fn) .. ")", 3)
  end
  next_id = next_id + 1
  local id = next_id
  if C.sl_ffi_timer_start(delay, interval, id, errp) ~= 0 then
    return nil, ffi_string(errp[0])
  end
  pending[id] = { fn = fn, args = { n = select("#", ...), ... } }
  return id
end

-- Runs fn(...) once, delay seconds from now. Returns a handle, or nil, err.
function _M.at(delay, fn, ...)
  return start("at", delay, 0, fn, ...)
end

-- Runs fn(...) every interval seconds. Returns a handle for cancel.
function _M.every(interval, fn, ...)
  if type(interval) ~= "number" or interval <= 0 then
    error("bad argument #1 to 'every' (positive number expected, got " .. type(interval)
      .. ")", 2)
  end
  return start("every", interval, interval, fn, ...)
end

-- Stops a timer. Returns true, or nil, "not found".
function _M.cancel(handle)
  if pending[handle] == nil then
    return nil, "not found"
  end
  pending[handle] = nil
  C.sl_ffi_timer_cancel(handle)
  return true
end

-- Called by C when timer id fires.
function _M.run(id, repeating)
  local t = pending[id]
  if not t then
    return
  end
  if not repeating then
    pending[id] = nil
  end
  local ok, err = xpcall(t.fn, traceback, unpack(t.args, 1, t.args.n))
  if not ok then
    require("sluice.pdk").write_log(0, "timer function failed: ", err)
  end
end

return _M
