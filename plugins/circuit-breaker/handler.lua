-- circuit-breaker: stops sending requests to a failing service, answers for it, and probes it back.
local breaker = require("sluice.plugins.circuit-breaker.breaker")

local sluice = sluice

local math_ceil = math.ceil
local math_min = math.min
local setmetatable = setmetatable
local str_find = string.find
local str_sub = string.sub
local tbl_concat = table.concat
local tonumber = tonumber

local PROBE, REJECT = breaker.PROBE, breaker.REJECT
local ROUTE_SCOPES = { route = true, ["route+service"] = true, ["route+consumer"] = true,
                       ["route+service+consumer"] = true }
local OPEN_BODY_ERROR = "Service temporarily unavailable"
local CACHE_PREFIX = "c:"

local CircuitBreaker = {
  PRIORITY = 905, -- after authentication (1250) and rate limiting (910), before transformations
  VERSION = "1.0.0",
  -- Created at config load when no server.shared_dicts entry names it.
  SHARED_DICTS = { [breaker.DICT] = 8 * 1024 * 1024 },
}

-- Per worker, made once per route or service (the tables sluice.router
-- returns are the same for every request of a route):
-- service or route table -> { key =, label =, name = the service's name }.
local by_service = setmetatable({}, { __mode = "k" })
local by_route = setmetatable({}, { __mode = "k" })
-- Per worker: breaker key -> true while this worker runs that breaker's probe.
local probing = {}
-- Per config: the static fallback's headers, with X-Sluice-Fallback.
local static_headers = setmetatable({}, { __mode = "k" })

-- A service without a name has an id: the config's, or one derived from
-- its place in the file.
local function service_name(s)
  return s.name or s.id
end

-- The breaker this request goes through: the service's, or the route's for
-- an instance attached to the route. nil outside a service (cannot happen
-- after routing).
local function breaker_of()
  local service = sluice.router.get_service()
  if not service then
    return nil
  end
  if ROUTE_SCOPES[sluice.plugin.get_scope()] then
    local route = sluice.router.get_route()
    local b = by_route[route]
    if not b then
      local name = service_name(service)
      local rname = route.name or route.id or "?"
      b = { key = rname .. "@" .. name, name = name,
            label = "route '" .. rname .. "' of service '" .. name .. "'" }
      by_route[route] = b
    end
    return b
  end
  local b = by_service[service]
  if not b then
    local name = service_name(service)
    b = { key = name, name = name, label = "service '" .. name .. "'" }
    by_service[service] = b
  end
  return b
end

local function cache_key(b, fallback)
  local parts = { CACHE_PREFIX, b.key }
  for _, part in ipairs(fallback.cache_key) do
    local v
    if part == "method" then
      v = sluice.request.get_method()
    elseif part == "host" then
      v = sluice.request.get_host()
    elseif part == "path" then
      v = sluice.request.get_path()
    elseif part == "query" then
      v = sluice.request.get_raw_query()
    else
      v = sluice.request.get_header(str_sub(part, 8)) or ""
    end
    parts[#parts + 1] = "\n" .. v
  end
  return tbl_concat(parts)
end

-- The answer while the breaker is open; wait_ms: until the next probe may go.
local function reject(conf, b, wait_ms)
  local fallback = conf.fallback
  if fallback then
    if fallback.cached then
      local value, status = sluice.shared[breaker.DICT]:get(cache_key(b, fallback))
      if value then
        local nl = str_find(value, "\n", 1, true)
        return sluice.response.exit(status, str_sub(value, nl + 1), {
          ["Content-Type"] = nl > 1 and str_sub(value, 1, nl - 1) or nil,
          ["X-Sluice-Fallback"] = "cached",
        })
      end
    end
    if fallback.body ~= nil then
      local headers = static_headers[conf]
      if not headers then
        headers = { ["X-Sluice-Fallback"] = "static" }
        for k, v in pairs(fallback.headers) do
          headers[k] = v
        end
        static_headers[conf] = headers
      end
      return sluice.response.exit(fallback.status, fallback.body, headers)
    end
  end
  -- Retry-After in whole seconds, at least 1: when a probe may have closed it.
  local retry = math_ceil(wait_ms / 1000)
  return sluice.response.exit(503, { error = OPEN_BODY_ERROR, service = b.name },
    { ["Retry-After"] = retry > 0 and retry or 1 })
end

function CircuitBreaker.uses_phase(conf, phase)
  if phase == "header_filter" or phase == "body_filter" then
    return conf.fallback ~= nil and conf.fallback.cached
  end
  return true
end

function CircuitBreaker.access(_, conf)
  local b = breaker_of()
  if not b then
    return
  end
  local verdict, wait_ms = breaker.check(b.key, conf, sluice.now() * 1000, b.label)
  if verdict == REJECT then
    return reject(conf, b, wait_ms)
  end
  if verdict == PROBE then
    probing[b.key] = true
    sluice.ctx.plugin.probe = true
  end
  local t = conf.timeout
  if t > 0 then
    local s = sluice.router.get_service()
    sluice.service.set_timeouts(math_min(s.connect_timeout, t), s.write_timeout,
      math_min(s.read_timeout, t))
  end
end

-- A 2xx GET response from the service, small enough, is kept for the
-- cached fallback: header_filter decides, body_filter collects the pieces
-- as they stream by (the client gets them unchanged, with no delay).
function CircuitBreaker.header_filter(_, conf)
  local status = sluice.response.get_status()
  if status < 200 or status > 299 or sluice.response.get_source() ~= "service"
      or sluice.request.get_method() ~= "GET" then
    return
  end
  local fallback = conf.fallback
  local length = tonumber(sluice.response.get_header("Content-Length"))
  if length and length > fallback.max_body_size then
    return
  end
  local b = breaker_of()
  if b then
    sluice.ctx.plugin.cache = { key = cache_key(b, fallback), status = status, size = 0,
                                ctype = sluice.response.get_header("Content-Type") or "" }
  end
end

function CircuitBreaker.body_filter(_, conf)
  local pctx = sluice.ctx.plugin
  local c = pctx.cache
  if not c then
    return
  end
  local chunk, eof = sluice.response.get_chunk()
  c.size = c.size + #chunk
  if c.size > conf.fallback.max_body_size then
    pctx.cache = nil
    return
  end
  c[#c + 1] = chunk
  if eof then
    pctx.cache = nil
    -- safe_set: a cached body never evicts a breaker's state.
    sluice.shared[breaker.DICT]:safe_set(c.key, c.ctype .. "\n" .. tbl_concat(c),
      conf.fallback.cache_ttl / 1000, c.status)
  end
end

function CircuitBreaker.log(_, conf)
  local b = breaker_of()
  if not b then
    return
  end
  local probe = false
  if probing[b.key] and sluice.ctx.plugin.probe then
    probing[b.key] = nil
    probe = true
  end
  local source = sluice.response.get_source()
  local status = sluice.response.get_status()
  -- Another plugin's answer, or sluice's 500 for a plugin error: the
  -- service was not asked, or was not at fault.
  if source == "exit" or (source == "error" and status == 500) then
    if probe then
      breaker.release(b.key)
    end
    return
  end
  local failed = status >= 500
  local outcome = (source == "service" and "the service answered " or "sluice answered ")
    .. status
  breaker.report(b.key, conf, sluice.now() * 1000, failed, probe, b.label, outcome)
end

return CircuitBreaker
