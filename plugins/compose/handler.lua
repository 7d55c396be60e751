-- compose: answers one request with the merged JSON of several backend calls, made at once.
local template = require("sluice.template")
local shape = require("sluice.plugins.compose.shape")
local tracing = require("sluice.tracing")

local sluice = sluice

local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local unpack = unpack
local math_floor = math.floor
local os_date = os.date
local str_format = string.format
local str_match = string.match

local VARS = { backends = true }

local Compose = {
  PRIORITY = 750, -- after authentication, rate limiting and request-transformer (801)
  VERSION = "1.0.0",
}

-- Per config, compiled once per worker: conf -> { { conf = backend, base =
-- URL without a trailing "/" | nil, service_error = why the service cannot
-- be called | nil, path =, query =, body = (templates), headers = { { name,
-- template } }, shape = (shape.compile), span_name = its tracing span's }, ... }.
local compiled = setmetatable({}, { __mode = "k" })

-- The base URL of a backend: its url, or its service's.
local function base_url(b)
  if b.url then
    return (b.url:gsub("/$", ""))
  end
  local s = sluice.db.services and sluice.db.services:select_by_name(b.service)
  if not s then
    return nil, "no service named '" .. b.service .. "'"
  end
  if s.protocol ~= "http" then
    return nil, "service '" .. b.service .. "' is " .. tostring(s.protocol)
      .. " (only http services can be composed yet)"
  end
  if sluice.upstream.get_health(s.host) then
    return nil, "service '" .. b.service .. "' is load-balanced (upstream '" .. s.host
      .. "'); give the backend a url"
  end
  local host = str_match(s.host, ":") and ("[" .. s.host .. "]") or s.host
  return ("http://" .. host .. ":" .. s.port .. (s.path or "")):gsub("/$", "")
end

local function compile(conf)
  local c = compiled[conf]
  if c then
    return c
  end
  c = {}
  for i, b in ipairs(conf.backends) do
    local base, err = base_url(b)
    if not base then
      sluice.log.err("compose: backend '", b.name, "': ", err)
    end
    local headers = {}
    for name, v in pairs(b.headers) do
      headers[#headers + 1] = { name, assert(template.compile(v, VARS)) }
    end
    c[i] = { conf = b, base = base, service_error = err, headers = headers,
             span_name = "compose " .. b.name,
             path = b.path and assert(template.compile(b.path, VARS)),
             query = b.query and assert(template.compile(b.query, VARS)),
             body = b.body and assert(template.compile(b.body, VARS)),
             shape = shape.compile(b) }
  end
  compiled[conf] = c
  return c
end

function Compose.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    compile(conf)
  end
end

-- The call a backend makes for this request: sluice.http.request's opts, or
-- nil, err. st is the request's render state (st.vars.backends holds the
-- earlier answers in sequential mode).
local function prepare(cb, st)
  if not cb.base then
    return nil, cb.service_error
  end
  local b = cb.conf
  local url = cb.base
  if cb.path then
    local path = template.render(cb.path, st)
    url = url .. (path:sub(1, 1) == "/" and path or ("/" .. path))
  end
  if cb.query then
    local q = template.render(cb.query, st)
    if q ~= "" then
      url = url .. "?" .. q
    end
  end
  local headers = {}
  for _, name in ipairs(b.forward_headers) do
    local v = sluice.request.get_header(name)
    if v then
      headers[name] = v
    end
  end
  for _, h in ipairs(cb.headers) do
    headers[h[1]] = template.render(h[2], st)
  end
  local body
  if cb.body then
    body = template.render(cb.body, st)
    if not headers["Content-Type"] and not headers["content-type"] then
      headers["Content-Type"] = "application/json"
    end
  end
  return { method = b.method, url = url, headers = headers, body = body,
           timeout = b.timeout / 1000 }
end

-- Calls one backend: { status = "fulfilled" | "rejected" | "timeout",
-- http_status =, latency_ms =, error =, value = the decoded answer }.
local function fetch(opts, err, span_name)
  local r = { status = "rejected" }
  if not opts then
    r.error = err
    return r
  end
  local t0 = sluice.now()
  -- A child span of the request's trace when opentelemetry is on (nil when off).
  local span = tracing.start_span(span_name, opts)
  local res, herr = sluice.http.request(opts)
  tracing.finish_span(span, res and res.status, herr)
  r.latency_ms = math_floor((sluice.now() - t0) * 1000 + 0.5)
  if not res then
    r.status = herr == "timeout" and "timeout" or "rejected"
    r.error = herr
    return r
  end
  r.http_status = res.status
  if res.status < 200 or res.status > 299 then
    r.error = "answered " .. res.status
    return r
  end
  if res.body ~= "" then
    local v, derr = sluice.json.decode(res.body)
    if v == nil then
      r.error = "the answer is not JSON: " .. tostring(derr)
      return r
    end
    r.value = v
  end
  r.status = "fulfilled"
  return r
end

local function run(cb, st)
  local opts, err = prepare(cb, st)
  return fetch(opts, err, cb.span_name)
end

-- An ISO 8601 UTC time with milliseconds.
local function iso_time(t)
  local s = math_floor(t)
  return os_date("!%Y-%m-%dT%H:%M:%S", s) .. str_format(".%03dZ", math_floor((t - s) * 1000))
end

function Compose.access(_, conf)
  local c = compile(conf)
  local st = { vars = { backends = {} } }
  local results = {}
  if conf.sequential then
    for i, cb in ipairs(c) do
      local r = run(cb, st)
      results[i] = r
      st.vars.backends[cb.conf.name] = { status = r.http_status, body = r.value }
      if r.status ~= "fulfilled" and cb.conf.required then
        break
      end
    end
  else
    -- The calls are prepared here (templates read the request), then made at once.
    local threads = {}
    for i, cb in ipairs(c) do
      local opts, err = prepare(cb, st)
      threads[i] = sluice.thread.spawn(fetch, opts, err, cb.span_name)
    end
    for i, w in ipairs(sluice.thread.wait_all(unpack(threads))) do
      results[i] = w[1] and w[2] or { status = "rejected", error = w[2] }
    end
  end

  local out, meta = {}, {}
  local partial, any, failed = false, false, nil
  for i, cb in ipairs(c) do
    local b, r = cb.conf, results[i]
    if not r then
      r = { status = "skipped", error = "not called: an earlier required backend failed" }
    end
    meta[b.name] = { status = r.status, http_status = r.http_status, latency_ms = r.latency_ms,
                     error = r.error }
    if r.status == "fulfilled" then
      any = true
      shape.merge(out, b.name, b.group, shape.apply(cb.shape, r.value))
    else
      partial = true
      if b.required and not failed then
        failed = b.name
      end
      shape.merge(out, b.name, b.group, b.default)
    end
  end
  if failed or not any then
    local why = failed and ("backend '" .. failed .. "' failed") or "every backend failed"
    return sluice.response.exit(502, { message = "composition failed: " .. why,
                                       backends = meta }, { ["X-Sluice-Completed"] = "false" })
  end
  if conf.meta then
    out._meta = { composed_at = iso_time(sluice.now()), partial = partial, backends = meta }
  end
  return sluice.response.exit(conf.status, out,
    { ["X-Sluice-Completed"] = partial and "false" or "true" })
end

return Compose
