-- runner.lua: the plugin chain: built per route at config load, run phase by phase.
--
-- C calls run_phase(phase, chain_set, request_number) in the request's
-- coroutine; a plugin that waits for I/O yields and C resumes it. When a
-- plugin answers the request (sluice.response.exit), run_phase returns
-- status, body, headers and the chain stops there. Running a chain makes no
-- table: the request's context is made only when a plugin needs one.

local ffi = require("ffi")
local consumers = require("sluice.consumers")
local pdk = require("sluice.pdk")

local ipairs = ipairs
local pairs = pairs
local type = type
local xpcall = xpcall
local tostring = tostring
local loadstring = loadstring
local tbl_concat = table.concat
local tbl_sort = table.sort
local traceback = debug.traceback

local REWRITE, ACCESS, HEADER_FILTER, BODY_FILTER, LOG = 2, 3, 4, 5, 6
local PHASES = { [REWRITE] = "rewrite", [ACCESS] = "access", [HEADER_FILTER] = "header_filter",
                 [BODY_FILTER] = "body_filter", [LOG] = "log" }
-- The phases a route's chain has, in running order.
local ROUTE_PHASES = { ACCESS, HEADER_FILTER, BODY_FILTER, LOG }
local ERROR_BODY = '{"message":"An unexpected error occurred"}\n'
local ERROR_HEADERS = { ["Content-Type"] = "application/json; charset=utf-8" }

local contexts = pdk.contexts
local state = pdk.state
local C = ffi.C

-- A phase compiles into one trace from run_phase down through every plugin
-- of the chain and the PDK calls they make (see make_runner). Such a trace
-- holds many more constants (header names, messages, config values) than
-- LuaJIT's defaults allow (maxirconst 500: "trace too long"), so the limits
-- are raised, as OpenResty raises maxrecord; a chain that still does not fit
-- runs as smaller traces.
jit.opt.start("maxirconst=1000", "maxrecord=8000", "maxsnap=1000")

local _M = {}

-- Per chain set (a route's sl_route_t.chain), built by init (the gateway's
-- routes: sets 1..n) and add (more configs, in `sluice test`): routes[set] = {
--   default = SELECTION,      -- the plugins that run when no consumer changes them
--   overrides = { [consumer id] = { [name] = inst } } | nil,   -- what a consumer changes
--   rewrite = { entry, ... } | nil,   -- an added config's own global rewrite chain
-- }, where SELECTION = { sel = { [name] = inst }, chains = { [phase] = { entry, ... } }
-- (running order), mask = bit (1 << phase) per non-empty chain, memo = { [consumer id or
-- ""] = { [name of the authenticating plugin or ""] = SELECTION } } }.
-- An inst is { name =, config =, priority =, plugin = { handler =, ... }, route =,
-- service =, consumer = }.
local routes = {}
local rewrite_chain = {}
-- Every plugin in use: name -> { handler =, configs = { conf, ... } }.
local in_use = {}
-- Consumer ids that have an instance of their own on some route: id -> true.
local consumer_scoped = {}

-- Where an instance is attached, as sluice.plugin.get_scope returns it:
-- "global", or "route", "service", "consumer" joined by "+" in that order.
local function scope_of(inst)
  local parts = {}
  if inst.route then
    parts[#parts + 1] = "route"
  end
  if inst.service then
    parts[#parts + 1] = "service"
  end
  if inst.consumer then
    parts[#parts + 1] = "consumer"
  end
  return #parts > 0 and table.concat(parts, "+") or "global"
end

-- A chain entry for a plugin instance in a phase, or nil when it has nothing
-- to do there. A handler may say per config which phases it uses
-- (handler.uses_phase(conf, name)), so an idle phase costs nothing.
local function entry(inst, phase)
  local h = inst.plugin.handler
  local fn = h[PHASES[phase]]
  if type(fn) ~= "function" then
    return nil
  end
  if type(h.uses_phase) == "function" and not h.uses_phase(inst.config, PHASES[phase]) then
    return nil
  end
  return { name = inst.name, handler = h, fn = fn, conf = inst.config,
           priority = inst.priority, consumer = inst.consumer, scope = scope_of(inst) }
end

-- Running order: higher priority first, then by name. Works on entries and
-- instances alike.
local function by_priority(a, b)
  if a.priority ~= b.priority then
    return a.priority > b.priority
  end
  return a.name < b.name
end

-- Kong's precedence, most specific first: route+service+consumer (8) >
-- route+consumer > service+consumer > route+service > consumer > route >
-- service > global (1). nil when the instance does not apply to the route.
local function rank(inst, route_index, service_index)
  local r, s = inst.route, inst.service
  if (r and r ~= route_index) or (s and s ~= service_index) then
    return nil
  end
  if inst.consumer then
    return (r and s) and 8 or r and 7 or s and 6 or 4
  end
  return (r and s) and 5 or r and 3 or s and 2 or 1
end

local function selection(sel)
  local chains, mask = {}, 0
  for _, phase in ipairs(ROUTE_PHASES) do
    local list = {}
    for _, inst in pairs(sel) do
      local e = entry(inst, phase)
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
  return { sel = sel, chains = chains, mask = mask, memo = {} }
end

-- Builds a route's default selection and its consumer overrides.
local function build_route(instances, route_index, service_index)
  local best, best_rank = {}, {}
  local by_consumer = {} -- consumer id -> { name -> { inst, rank } }
  for _, inst in ipairs(instances) do
    local r = rank(inst, route_index, service_index)
    if r and not inst.consumer then
      if (best_rank[inst.name] or 0) < r then
        best[inst.name], best_rank[inst.name] = inst, r
      end
    elseif r then
      local t = by_consumer[inst.consumer]
      if not t then
        t = {}
        by_consumer[inst.consumer] = t
      end
      if not t[inst.name] or t[inst.name].rank < r then
        t[inst.name] = { inst = inst, rank = r }
      end
    end
  end
  local overrides
  for id, t in pairs(by_consumer) do
    for name, x in pairs(t) do
      -- A consumer's instance replaces the default only when more specific:
      -- route+service (5) beats a consumer-only instance (4).
      if x.rank > (best_rank[name] or 0) then
        overrides = overrides or {}
        overrides[id] = overrides[id] or {}
        overrides[id][name] = x.inst
        consumer_scoped[id] = true
      end
    end
  end
  return { default = selection(best), overrides = overrides }
end

-- The selection after the plugin running instance k (nil: before the chain)
-- authenticated consumer_id (nil: none) while cur was in force. Plugins whose
-- turn (their place in the running order) came before k keep what cur chose;
-- the later ones are chosen for the consumer, as Kong does. Memoized: every
-- combination comes from the config, so the cache is bounded, and a request
-- that authenticates allocates nothing once its combination was seen.
local function resolve(route, cur, consumer_id, k)
  local ov = route.overrides and consumer_id and route.overrides[consumer_id]
  if not ov and cur == route.default then
    return cur
  end
  local mkey, kkey = ov and consumer_id or "", k and k.name or ""
  local memo = cur.memo[mkey]
  if memo and memo[kkey] then
    return memo[kkey]
  end
  local default = route.default.sel
  local sel = {}
  for name, inst in pairs(cur.sel) do
    if k and not by_priority(k, default[name] or inst) then
      sel[name] = inst
    end
  end
  for name, inst in pairs(default) do
    if not k or by_priority(k, inst) then
      sel[name] = ov and ov[name] or inst
    end
  end
  for name, inst in pairs(ov or {}) do
    if not default[name] and (not k or by_priority(k, inst)) then
      sel[name] = inst
    end
  end
  local res = selection(sel)
  if not memo then
    memo = {}
    cur.memo[mkey] = memo
  end
  memo[kkey] = res
  return res
end

-- Makes the request's plugins those for its consumer, from instance k on, and
-- tells C which later phases now have plugins to run.
local function switch(ctx, route, k)
  local consumer = ctx.consumer
  local id = type(consumer) == "table" and consumer.id or nil
  local res = resolve(route, ctx.selection or route.default, type(id) == "string" and id or nil, k)
  ctx.selection = res
  C.sl_ffi_req_set_phases(C.sl_ffi_current.r, res.mask)
  return res
end

-- sluice.client.authenticate calls this after recording the consumer.
pdk.on_authenticate = function(ctx, phase)
  local consumer = ctx.consumer
  local id = type(consumer) == "table" and consumer.id or nil
  if phase == REWRITE then
    -- No route yet: access decides, for whichever route matches.
    ctx.consumer_pending = id ~= nil and consumer_scoped[id] or nil
    if ctx.consumer_pending then
      C.sl_ffi_req_set_phases(C.sl_ffi_current.r,
        2 ^ ACCESS + 2 ^ HEADER_FILTER + 2 ^ BODY_FILTER + 2 ^ LOG)
    end
  else
    local route = state.route
    if route and (route.overrides or ctx.selection) then
      ctx.rechain = true
    end
  end
end

-- Kong's shapes of a route and of its service, for sluice.router.
local function route_entity(c, service)
  local paths = {}
  for i, p in ipairs(c.paths or {}) do
    paths[i] = p.regex and ("~" .. p.value) or p.value
  end
  local headers
  for _, h in ipairs(c.headers or {}) do
    headers = headers or {}
    headers[h.name] = h.values
  end
  return { id = c.id, name = c.name, protocols = c.protocols, methods = c.methods,
           hosts = c.hosts, paths = paths, headers = headers, strip_path = c.strip_path,
           preserve_host = c.preserve_host, regex_priority = c.regex_priority,
           path_handling = c.path_handling,
           https_redirect_status_code = c.https_redirect_status_code, tags = c.tags,
           service = service and { id = service.id } or nil }
end

local function service_entity(s)
  return s and { id = s.id, name = s.name, protocol = s.protocol, host = s.host, port = s.port,
                 path = s.path, retries = s.retries, connect_timeout = s.connect_timeout,
                 write_timeout = s.write_timeout, read_timeout = s.read_timeout, tags = s.tags,
                 enabled = true }
end

-- Builds the chains of a normalized config (config.lua's output): returns
-- its routes (as in `routes`), the rewrite chain of its global plugins, the
-- plugins in use and { routes = { mask, ... }, rewrite = bool }: per route,
-- bit (1 << phase) for each phase that has plugins to run (0: never enters
-- Lua). Consumer-scoped instances are recorded in consumer_scoped.
local function build(cfg)
  local plugins = require("sluice.plugins")
  local built, rewrite, used = {}, {}, {}
  local instances = {}
  for i, c in ipairs(cfg.plugins or {}) do
    local p = assert(plugins.load(c.name))
    local inst = { name = c.name, config = c.config, plugin = p, route = c.route,
                   service = c.service,
                   consumer = c.consumer and cfg.consumers[c.consumer].id or nil,
                   priority = c.priority or p.handler.PRIORITY }
    instances[i] = inst
    local u = used[c.name]
    if not u then
      u = { handler = p.handler, configs = {} }
      used[c.name] = u
    end
    u.configs[#u.configs + 1] = c.config
    if not inst.route and not inst.service and not inst.consumer then
      local e = entry(inst, REWRITE)
      if e then
        rewrite[#rewrite + 1] = e
      end
    end
  end
  tbl_sort(rewrite, by_priority)

  local info = { routes = {}, rewrite = #rewrite > 0 }
  for i, route in ipairs(cfg.routes or {}) do
    built[i] = build_route(instances, i, route.service)
    local service = cfg.services and cfg.services[route.service]
    built[i].entity = route_entity(route, service)
    built[i].service_entity = service_entity(service)
    -- Consumer overrides do not count: without a plugin in the route's
    -- chain (or a global one) nothing can authenticate, so such a route
    -- still never enters Lua.
    info.routes[i] = built[i].default.mask
  end
  return built, rewrite, used, info
end

-- Builds every chain of the gateway's config: its routes are chain sets
-- 1..n, its global rewrite chain is set 0. Returns build's info.
function _M.init(cfg)
  consumer_scoped = {}
  local services = {}
  for i, s in ipairs(cfg.services or {}) do
    services[i] = service_entity(s)
  end
  consumers.init(cfg.consumers, cfg.credentials, services)
  pdk.set_upstreams(cfg.upstreams)
  local built, rewrite, used, info = build(cfg)
  routes, rewrite_chain, in_use = built, rewrite, used
  return info
end

-- Adds the chains of another config after the ones there are (`sluice test`
-- runs several small configs in one VM: see lua/sluice/test/plugin.lua).
-- Each of its routes carries that config's rewrite chain with it. Returns
-- build's info with first = the chain set of its first route, and the
-- plugins it uses (name -> { handler =, configs = }).
function _M.add(cfg)
  local built, rewrite, used, info = build(cfg)
  info.first = #routes + 1
  for i, route in ipairs(built) do
    route.rewrite = rewrite
    routes[info.first + i - 1] = route
  end
  return info, used
end

local function describe_chains(chains)
  local out = {}
  for _, phase in ipairs(ROUTE_PHASES) do
    for _, e in ipairs(chains[phase]) do
      -- "(consumer)" marks a consumer's own instance.
      out[#out + 1] = PHASES[phase] .. ":" .. e.name .. (e.consumer and "(consumer)" or "")
    end
  end
  return out
end

-- The running order of a route's plugins, for `sluice check --routes`.
function _M.describe(route_index)
  local route = routes[route_index]
  return route and describe_chains(route.default.chains) or {}
end

-- The config of each plugin that runs on a route for a consumer id (nil:
-- none) that authenticated before access: { [name] = conf }. For specs of
-- the precedence rules.
function _M.configs_for(route_index, consumer_id)
  local route = routes[route_index]
  local out = {}
  for name, inst in pairs(resolve(route, route.default, consumer_id, nil).sel) do
    out[name] = inst.config
  end
  return out
end

-- The running order for each consumer whose own instances change the
-- route's plugins (as if it authenticated before access), for `sluice check
-- --routes`; none on a route where no plugin runs, which nothing can
-- authenticate on: { { consumer = "alice", chain = { "access:x", ... } }, ... },
-- by username (else id).
function _M.describe_consumers(route_index)
  local route = routes[route_index]
  local out = {}
  if not route or (route.default.mask == 0 and #rewrite_chain == 0) then
    return out -- nothing there can authenticate
  end
  for id in pairs(route.overrides or {}) do
    local c = consumers.by_id(id)
    out[#out + 1] = { consumer = c and (c.username or c.custom_id) or id,
                      chain = describe_chains(resolve(route, route.default, id, nil).chains) }
  end
  tbl_sort(out, function(a, b) return a.consumer < b.consumer end)
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

local run_chain

-- What follows plugin i of chain in rewrite and access, when it answered the
-- request (the chain stops) or authenticated a consumer with plugins of its
-- own (the rest of the chain is the consumer's): the generic path, for the
-- generated runners below too.
local function after(chain, i, n, phase, seq)
  local ctx = contexts[seq]
  if ctx then
    if ctx.exit_status then
      return
    end
    if ctx.rechain then
      -- This plugin authenticated: the plugins after it are the consumer's.
      local e = chain[i]
      ctx.rechain = nil
      chain = switch(ctx, state.route, e).chains[ACCESS]
      ctx.running = chain
      n = #chain
      i = 0
      while i < n and not by_priority(e, chain[i + 1]) do
        i = i + 1
      end
    end
  end
  if i < n then
    return run_chain(chain, i + 1, n, phase, seq)
  end
end

-- Runs chain[i..n] in order, calling each plugin directly (one xpcall per
-- phase, not one per plugin); returns early when a plugin answered the
-- request. A tail call, not a loop: a loop that runs once per request is
-- one LuaJIT cannot trace.
run_chain = function(chain, i, n, phase, seq)
  local e = chain[i]
  state.plugin, state.index, state.entry = e.name, i, e
  e.fn(e.handler, e.conf)
  if phase <= ACCESS then
    return after(chain, i, n, phase, seq)
  end
  if i < n then
    return run_chain(chain, i + 1, n, phase, seq)
  end
end

-- Chains this long and shorter get a runner of their own (below); longer
-- ones run through run_chain.
local MAX_GENERATED = 16

-- A function(seq) that runs chain (of phase) as run_chain does, generated
-- for this chain alone: each plugin is called from a call site of its own,
-- so LuaJIT compiles the whole chain into one trace from the runner's entry,
-- with every plugin and the PDK functions it calls inlined and specialized
-- to that site. Through run_chain, all plugins share one call site (the
-- trace then exits at every plugin but the first), and a PDK function that
-- plugins call with different argument types gets a trace of its own whose
-- side exits cannot return into the runner ("NYI: return to lower frame"):
-- the interpreter ran them. Made once per chain (chains live as long as
-- their config).
local function make_runner(chain, phase)
  local n = #chain
  if n > MAX_GENERATED then
    return function(seq)
      return run_chain(chain, 1, n, phase, seq)
    end
  end
  local src = { "local chain, state, contexts, after = ...\n" }
  for i = 1, n do
    src[#src + 1] = "local e" .. i .. " = chain[" .. i .. "]\n"
  end
  src[#src + 1] = "return function(seq)\n"
  for i = 1, n do
    local e = "e" .. i
    src[#src + 1] = "  state.plugin, state.index, state.entry = " .. e .. ".name, " .. i .. ", "
      .. e .. "\n  " .. e .. ".fn(" .. e .. ".handler, " .. e .. ".conf)\n"
    if phase <= ACCESS then
      -- Not a tail call: after's return then lands in this runner's frame,
      -- which a trace can follow (a tail call would return straight into the
      -- xpcall: "NYI: return to lower frame").
      src[#src + 1] = "  local x" .. i .. " = contexts[seq]\n  if x" .. i .. " and (x" .. i
        .. ".exit_status or x" .. i .. ".rechain) then after(chain, " .. i .. ", " .. n
        .. ", " .. phase .. ", seq) return end\n"
    end
  end
  src[#src + 1] = "end\n"
  local chunk = assert(loadstring(tbl_concat(src), "=runner(" .. PHASES[phase] .. ")"))
  return chunk(chain, state, contexts, after)
end

-- The runner of chain, made on first use.
local function runner_of(chain, phase)
  local run = chain.run
  if not run then
    run = make_runner(chain, phase)
    chain.run = run
  end
  return run
end

-- A plugin raised: log it (state.index is the one: a plugin that waited got
-- it back). Before the response a failure answers 500; in log the rest of
-- the chain still runs. Returns what run_phase returns.
local function failed(chain, phase, seq, err)
  -- After an authentication, access runs the consumer's chain.
  local ctx = phase == ACCESS and contexts[seq]
  chain = ctx and ctx.running or chain
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

function _M.run_phase(phase, set, seq)
  local chain
  if phase == REWRITE then
    local route = set ~= 0 and routes[set]
    chain = route and route.rewrite or rewrite_chain
    state.route = nil
  else
    local route = routes[set]
    if not route then
      return
    end
    state.route = route
    local ctx = contexts[seq]
    if ctx and ctx.consumer_pending and phase == ACCESS then
      -- Authenticated in rewrite: the whole chain is the consumer's.
      ctx.consumer_pending = nil
      switch(ctx, route, nil)
    end
    chain = (ctx and ctx.selection or route.default).chains[phase]
  end
  local n = #chain
  if n == 0 then
    return
  end
  if phase == BODY_FILTER then
    return _M.run_body_filter(chain, seq)
  end
  local ok, err = xpcall(chain.run or runner_of(chain, phase), traceback, seq)
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

-- One body_filter call: each plugin sees the piece as the ones before it
-- left it; C gets the result once, after the last. A failure ends the
-- response (C answers 500 or closes the connection), so the chain stops.
function _M.run_body_filter(chain, seq)
  pdk.body_filter_begin()
  local ok, err = xpcall(chain.run or runner_of(chain, BODY_FILTER), traceback, seq)
  if not ok then
    pdk.body_filter_begin()
    return failed(chain, BODY_FILTER, seq, err)
  end
  state.plugin = nil
  pdk.body_filter_end()
end

-- The requests' contexts (pdk.contexts): when a request that made one ends,
-- C drops it from this table itself (core/lua.c task_release), which costs a
-- table store instead of a call into Lua per request.
_M.contexts = contexts

return _M
