-- runner.lua: the plugin chain: built per route at config load, run phase by phase.
--
-- C calls run_phase(phase, route_index, request_number) in the request's
-- coroutine; a plugin that waits for I/O yields and C resumes it. When a
-- plugin answers the request (sluice.response.exit), run_phase returns
-- status, body, headers and the chain stops there. Running a chain makes no
-- table: the request's context is made only when a plugin needs one.

local pdk = require("sluice.pdk")

local ipairs = ipairs
local pairs = pairs
local type = type
local xpcall = xpcall
local tostring = tostring
local tbl_sort = table.sort
local traceback = debug.traceback

local REWRITE, ACCESS, HEADER_FILTER, LOG = 2, 3, 4, 5
local PHASES = { [REWRITE] = "rewrite", [ACCESS] = "access", [HEADER_FILTER] = "header_filter",
                 [LOG] = "log" }
local ERROR_BODY = '{"message":"An unexpected error occurred"}\n'
local ERROR_HEADERS = { ["Content-Type"] = "application/json; charset=utf-8" }

local contexts = pdk.contexts
local state = pdk.state

local _M = {}

-- Chains, built by init: route_chains[i][phase] = { { name =, handler =, fn =,
-- conf =, priority = }, ... } in running order; rewrite_chain for global plugins.
local route_chains = {}
local rewrite_chain = {}
-- Every plugin in use: name -> { handler =, configs = { conf, ... } }.
local in_use = {}

-- A chain entry for a plugin instance in a phase, or nil when it has nothing
-- to do there. A handler may say per config which phases it uses
-- (handler.uses_phase(conf, name)), so an idle phase costs nothing.
local function entry(inst, plugin, phase)
  local h = plugin.handler
  local fn = h[PHASES[phase]]
  if type(fn) ~= "function" then
    return nil
  end
  if type(h.uses_phase) == "function" and not h.uses_phase(inst.config, PHASES[phase]) then
    return nil
  end
  return { name = inst.name, handler = plugin.handler, fn = fn, conf = inst.config,
           priority = inst.priority or plugin.handler.PRIORITY }
end

local function by_priority(a, b)
  if a.priority ~= b.priority then
    return a.priority > b.priority
  end
  return a.name < b.name
end

-- The instance that applies to a route for each plugin name: route+service
-- beats route, which beats service, which beats global.
local function pick(instances, route_index, service_index)
  local best, rank = {}, {}
  for _, inst in ipairs(instances) do
    local r
    if inst.route and inst.service then
      r = (inst.route == route_index and inst.service == service_index) and 4 or nil
    elseif inst.route then
      r = inst.route == route_index and 3 or nil
    elseif inst.service then
      r = inst.service == service_index and 2 or nil
    else
      r = 1
    end
    if r and (rank[inst.name] or 0) < r then
      best[inst.name], rank[inst.name] = inst, r
    end
  end
  return best
end

-- Builds every chain from the normalized config (config.lua's output).
-- Returns { routes = { mask, ... }, rewrite = bool }: per route, bit
-- (1 << phase) for each phase that has plugins to run (0: never enters Lua).
function _M.init(cfg)
  local plugins = require("sluice.plugins")
  route_chains, rewrite_chain, in_use = {}, {}, {}
  local instances = cfg.plugins or {}
  for _, inst in ipairs(instances) do
    local p = assert(plugins.load(inst.name))
    local u = in_use[inst.name]
    if not u then
      u = { handler = p.handler, configs = {} }
      in_use[inst.name] = u
    end
    u.configs[#u.configs + 1] = inst.config
    if not inst.route and not inst.service then
      local e = entry(inst, p, REWRITE)
      if e then
        rewrite_chain[#rewrite_chain + 1] = e
      end
    end
  end
  tbl_sort(rewrite_chain, by_priority)

  local info = { routes = {}, rewrite = #rewrite_chain > 0 }
  for i, route in ipairs(cfg.routes or {}) do
    local chosen = pick(instances, i, route.service)
    local chains, mask = {}, 0
    for _, phase in ipairs({ ACCESS, HEADER_FILTER, LOG }) do
      local list = {}
      for _, inst in pairs(chosen) do
        local e = entry(inst, assert(plugins.load(inst.name)), phase)
        if e then
          list[#list + 1] = e
        end
      end
      tbl_sort(list, by_priority)
      chains[phase] = list
      if #list > 0 then
        mask = mask + 2 ^ phase
      end
    end
    route_chains[i] = chains
    info.routes[i] = mask
  end
  return info
end

-- The running order of a route's plugins, for `sluice check --routes`.
function _M.describe(route_index)
  local out = {}
  local chains = route_chains[route_index]
  if chains then
    for _, phase in ipairs({ ACCESS, HEADER_FILTER, LOG }) do
      for _, e in ipairs(chains[phase]) do
        out[#out + 1] = PHASES[phase] .. ":" .. e.name
      end
    end
  end
  return out
end

local function log_error(name, phase, err)
  pdk.write_log(0, "plugin '", name, "' failed in ", PHASES[phase] or tostring(phase), ": ",
    tostring(err))
end

-- Runs each plugin's init_worker, then configure with all of its configs.
function _M.init_worker()
  for name, u in pairs(in_use) do
    local h = u.handler
    if type(h.init_worker) == "function" then
      local ok, err = xpcall(h.init_worker, traceback, h)
      if not ok then
        log_error(name, "init_worker", err)
      end
    end
    if type(h.configure) == "function" then
      local ok, err = xpcall(h.configure, traceback, h, u.configs)
      if not ok then
        log_error(name, "configure", err)
      end
    end
  end
end

-- Runs chain[i..n] in order, calling each plugin directly (one xpcall per
-- phase, not one per plugin); returns early when a plugin answered the
-- request. A tail call, not a loop: most chains hold one or two plugins,
-- and a loop that runs once per request is one LuaJIT cannot trace.
local function run_chain(chain, i, n, phase, seq)
  local e = chain[i]
  state.plugin, state.index = e.name, i
  e.fn(e.handler, e.conf)
  if i < n then
    if phase <= ACCESS then
      local ctx = contexts[seq]
      if ctx and ctx.exit_status then
        return
      end
    end
    return run_chain(chain, i + 1, n, phase, seq)
  end
end

-- A plugin raised: log it (state.index is the one: a plugin that waited got
-- it back). Before the response a failure answers 500; in log the rest of
-- the chain still runs. Returns what run_phase returns.
local function failed(chain, phase, seq, err)
  while true do
    log_error(chain[state.index].name, phase, err)
    if phase ~= LOG then
      state.plugin = nil
      return 500, ERROR_BODY, ERROR_HEADERS
    end
    local n = #chain
    if state.index >= n then
      state.plugin = nil
      return
    end
    local ok
    ok, err = xpcall(run_chain, traceback, chain, state.index + 1, n, phase, seq)
    if ok then
      state.plugin = nil
      return
    end
  end
end

function _M.run_phase(phase, route_index, seq)
  local chain
  if phase == REWRITE then
    chain = rewrite_chain
  else
    local chains = route_chains[route_index]
    chain = chains and chains[phase]
  end
  local n = chain and #chain or 0
  if n == 0 then
    return
  end
  local ok, err = xpcall(run_chain, traceback, chain, 1, n, phase, seq)
  if not ok then
    return failed(chain, phase, seq, err)
  end
  state.plugin = nil
  if phase <= ACCESS then
    local ctx = contexts[seq]
    if ctx then
      if not ctx.exit_status then
        pdk.finish_threads(ctx)
      end
      if ctx.exit_status then
        -- The request is answered: threads still waiting are abandoned.
        ctx.threads, ctx.waiters = nil, nil
        return ctx.exit_status, ctx.exit_body, ctx.exit_headers
      end
    end
  end
end

-- The request is over: forget its context.
function _M.finish(seq)
  contexts[seq] = nil
end

return _M
