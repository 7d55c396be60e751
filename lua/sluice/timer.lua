-- timer.lua: sluice.timer.at and sluice.timer.every: functions run later, outside any request.
--
-- Each run of a timer's function is a task of its own (core/lua.c): it runs
-- in its own coroutine, so it may wait for I/O like a plugin's access
-- handler does (sluice.sleep, sluice.http.request, sluice.redis,
-- sluice.thread), and the worker serves requests meanwhile. An error is
-- logged with its traceback; a repeating timer keeps running. A repeating
-- timer whose previous run still waits skips that tick (no runs pile up
-- behind a slow one): it runs again at the first tick after the run ended.
--
-- When the worker stops gracefully, every pending timer runs once at once
-- (sluice.worker.exiting() is true in it, like OpenResty's `premature`) and
-- the worker waits for the runs still waiting, up to server.shutdown_timeout.
-- In `sluice test` timers run while a spec waits in a sluice call
-- (sluice.sleep, sluice.http.request, t.plugin():run, ...).

local ffi = require("ffi")
local base = require("sluice.ffi")

local C = ffi.C
local errp = base.err
local error = error
local type = type
local select = select
local tostring = tostring
local unpack = unpack
local xpcall = xpcall
local traceback = debug.traceback
local ffi_string = ffi.string

local _M = {}

-- Pending timers: id -> { fn =, args = { n =, ... }, thread = a sluice.thread
-- of a spec's own code, whose results the run stores }.
local pending = {}
local next_id = 0

local function pack(...)
  return { n = select("#", ...), ... }
end

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
  pending[id] = { fn = fn, args = pack(...) }
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

-- Stops a timer: it does not run again; a run in progress finishes. Returns
-- true, or nil, "not found".
function _M.cancel(handle)
  if pending[handle] == nil then
    return nil, "not found"
  end
  pending[handle] = nil
  C.sl_ffi_timer_cancel(handle)
  return true
end

-- Runs fn(...) as a task of its own right now (a sluice.thread spawned by a
-- spec's own code, in `sluice test`); t gets done = true and results = { n =,
-- ok, ... } when it ends.
function _M.spawn(t, fn, ...)
  next_id = next_id + 1
  pending[next_id] = { fn = fn, args = pack(...), thread = t }
  require("sluice.loop").spawn(next_id)
end

-- Called by C in the run's own coroutine when timer id fires.
function _M.run(id, repeating)
  local t = pending[id]
  if not t then
    return
  end
  if not repeating then
    pending[id] = nil
  end
  local pdk = require("sluice.pdk")
  local ctx = pdk.get_ctx()
  local th = t.thread
  if th then
    th.results = pack(xpcall(t.fn, traceback, unpack(t.args, 1, t.args.n)))
    th.done = true
    if not th.results[1] then
      pdk.write_log(0, "thread failed: ", tostring(th.results[2]))
    end
  else
    local ok, err = xpcall(t.fn, traceback, unpack(t.args, 1, t.args.n))
    if not ok then
      pdk.write_log(0, "timer function failed: ", err)
    end
  end
  -- The run is over when the threads it spawned are.
  pdk.finish_threads(ctx)
end

return _M
