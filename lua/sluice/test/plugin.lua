-- plugin.lua: t.plugin(name, conf):run{...}: a plugin's phases in-process, no sockets.
--
--   local t = require("sluice.test")
--   local p = t.plugin("request-termination", { status_code = 403 })
--   local res = p:run({ method = "GET", path = "/x", headers = { ["X-Key"] = "k" } })
--   assert.equal(403, res.status)
--   assert.is_nil(res.upstream)              -- it never reached the upstream
--
-- The config is checked with the plugin's real schema (errors as at config
-- load); the request is a real sl_request_t made from a raw HTTP head by the
-- real parser, routed by the real router, run through the real runner
-- (rewrite, access, header_filter, log) by core/inproc.c. What would go
-- upstream is rendered by proxy.c and parsed back. Plugins may wait for I/O
-- (sluice.sleep, sluice.http, sluice.redis): :run blocks the spec in the
-- event loop until the request is done.

local config = require("sluice.config")
local schema = require("sluice.schema")
local plugins = require("sluice.plugins")
local runner = require("sluice.runner")
local pdk = require("sluice.pdk")
local inproc = require("sluice.inproc")
local consumers = require("sluice.consumers")
local cjson = require("cjson.safe")
local ffi = require("ffi")

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local error = error
local pcall = pcall
local xpcall = xpcall
local traceback = debug.traceback
local setmetatable = setmetatable
local fmt = string.format
local concat = table.concat
local tbl_sort = table.sort
local str_gsub = string.gsub
local str_lower = string.lower

-- Reason phrases for the upstream response a spec describes.
local REASONS = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [301] = "Moved Permanently", [302] = "Found", [304] = "Not Modified",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [409] = "Conflict", [429] = "Too Many Requests", [500] = "Internal Server Error",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local _M = {}

-- The metatable of responses (sluice.test's: res:json()), set by sluice.test.
local response_mt = {}

function _M.set_response_mt(mt)
  response_mt = mt
end

-- Context numbers of in-process requests (the test VM runs no worker, so
-- they cannot meet a proxied request's).
local seq = 0
-- The t.plugin whose opts.consumers sluice.db and the consumer lookups
-- answer from (one set at a time: :run switches to its own).
local consumers_of

local Plugin = {}
Plugin.__index = Plugin

local function arg_error(n, fname, expected, v)
  error(fmt("bad argument #%d to '%s' (%s expected, got %s)", n, fname, expected, type(v)), 3)
end

local function merge(into, from)
  for k, v in pairs(from or {}) do
    into[k] = v
  end
  return into
end

local function escape(s)
  return (str_gsub(tostring(s), "[^%w%-%._~]", function(c)
    return fmt("%%%02X", c:byte())
  end))
end

-- "a=1&b=x%20y", keys sorted, list values repeated.
local function encode_query(q)
  if type(q) == "string" then
    return q
  end
  local keys = {}
  for k in pairs(q) do
    keys[#keys + 1] = k
  end
  tbl_sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    for _, one in ipairs(type(v) == "table" and v or { v }) do
      parts[#parts + 1] = one == true and escape(k) or (escape(k) .. "=" .. escape(one))
    end
  end
  return concat(parts, "&")
end

-- Header lines of a { name = value or { values } } table, and whether a
-- header (lower-case name) is among them.
local function header_lines(lines, headers)
  local seen = {}
  local names = {}
  for k in pairs(headers or {}) do
    names[#names + 1] = k
  end
  tbl_sort(names)
  for _, k in ipairs(names) do
    local v = headers[k]
    seen[str_lower(k)] = true
    for _, one in ipairs(type(v) == "table" and v or { v }) do
      lines[#lines + 1] = k .. ": " .. tostring(one)
    end
  end
  return seen
end

-- A body given as a string, or as a table sent as JSON.
local function body_of(body, seen, lines)
  if type(body) == "table" then
    body = assert(cjson.encode(body))
    if not seen["content-type"] then
      lines[#lines + 1] = "Content-Type: application/json"
    end
  end
  return body
end

-- Builds a plugin under test: conf is checked with the plugin's schema and
-- the defaults filled in; opts = { plugin_paths = { dir, ... } (searched
-- before the bundled plugins), service = { url =, ... } and route = {
-- paths =, strip_path =, ... } (merged into the service and route the
-- request goes through: by default http://127.0.0.1:8080 and paths "/"),
-- trusted_ips = { cidr, ... }, server = { key = value } (more `server:`
-- settings: { underscores_in_headers = true }) }. The plugin's init_worker
-- and configure run once, as in a worker. Raises on an unknown plugin or an
-- invalid config.
-- Creates, in this process, the shared dicts a config names that do not
-- exist yet (a plugin's SHARED_DICTS among them), as the master would. They
-- live as long as the process: their entries outlive a t.plugin object.
local function open_dicts(dicts)
  local shared = require("sluice.shared")
  local out, err = ffi.new("sl_shdict_t *[1]"), ffi.new("const char *[1]")
  for _, d in ipairs(dicts or {}) do
    if not shared[d.name] and ffi.C.sl_ffi_shdict_open(d.name, #d.name, d.size, out, err) ~= 0 then
      error("t.plugin: cannot create the shared dict '" .. d.name .. "': "
        .. ffi.string(err[0]), 3)
    end
  end
end

function _M.new(name, conf, opts)
  if type(name) ~= "string" then
    arg_error(1, "plugin", "string", name)
  end
  if conf ~= nil and type(conf) ~= "table" then
    arg_error(2, "plugin", "table", conf)
  end
  if opts ~= nil and type(opts) ~= "table" then
    arg_error(3, "plugin", "table", opts)
  end
  opts = opts or {}
  plugins.set_paths(opts.plugin_paths)
  local p, err = plugins.load(name)
  if not p then
    error("t.plugin: " .. err, 2)
  end
  local _, errors = schema.validate(p.schema, conf or {}, "config", { "config" })
  if errors then
    local lines = {}
    for i, e in ipairs(errors) do
      lines[i] = (e.path ~= "" and e.path or "config") .. ": " .. e.message
    end
    error("t.plugin: invalid config for plugin '" .. name .. "':\n  " .. concat(lines, "\n  "), 2)
  end

  local route = merge({ name = "t-plugin", paths = { "/" } }, opts.route)
  local service = merge({ name = "t-plugin", url = "http://127.0.0.1:8080" }, opts.service)
  service.routes = { route }
  local doc = {
    _format_version = "3.0",
    server = merge({ plugin_paths = opts.plugin_paths, trusted_ips = opts.trusted_ips },
      opts.server),
    services = { service },
    plugins = { { name = name, config = conf or {} } },
    consumers = opts.consumers,
  }
  local cfg, text = config.validate(doc, nil, "t.plugin")
  if not cfg then
    error("t.plugin: " .. text, 2)
  end
  open_dicts(cfg.server.shared_dicts)
  if opts.consumers then
    consumers.init(cfg.consumers, cfg.credentials)
  end
  local info, used = runner.add(cfg)
  local handle = inproc.new(cfg, info)
  for pname, u in pairs(used) do
    local h = u.handler
    for _, hook in ipairs({ "init_worker", "configure" }) do
      if type(h[hook]) == "function" then
        local ok, herr = xpcall(h[hook], traceback, h, hook == "configure" and u.configs or nil)
        if not ok then
          error("t.plugin: " .. pname .. ":" .. hook .. " failed: " .. tostring(herr), 2)
        end
      end
    end
  end
  local obj = setmetatable({ name = name, handle = handle, config = cfg.plugins[1].config,
                            handler = used[name].handler }, Plugin)
  if opts.consumers then
    obj.cfg = cfg
    consumers_of = obj
  end
  return obj
end

-- Runs one request through the plugin: opts = { method = "GET", path = "/",
-- query = { k = v } or "raw", headers = {}, body = string or table (JSON),
-- consumer = table and credential = table (as sluice.client.authenticate
-- records them),
-- client_ip = "127.0.0.1", client_port = 40000, upstream = { status = 200,
-- headers = {}, body = "" or table (JSON) } (what the upstream answers if the
-- request gets there), timeout = seconds (10) }. Returns { status, headers
-- (lower-case names; lists for repeated ones), body, upstream = { method,
-- path, query, headers, body } or nil when a plugin answered first, logs =
-- { "[level] [plugin] message", ... } }.
function Plugin:run(opts)
  if opts ~= nil and type(opts) ~= "table" then
    arg_error(1, "run", "table", opts)
  end
  opts = opts or {}
  local target = opts.path or "/"
  if type(target) ~= "string" or target:sub(1, 1) ~= "/" then
    error("bad argument #1 to 'run' (path: a string starting with '/' expected)", 2)
  end
  if opts.query then
    local q = encode_query(opts.query)
    if q ~= "" then
      target = target .. (target:find("?", 1, true) and "&" or "?") .. q
    end
  end
  local lines = { (opts.method or "GET") .. " " .. target .. " HTTP/1.1" }
  local seen = header_lines(lines, opts.headers)
  if not seen.host then
    lines[#lines + 1] = "Host: localhost"
  end
  local body = body_of(opts.body, seen, lines)
  if body ~= nil then
    if type(body) ~= "string" then
      error("bad argument #1 to 'run' (body: string or table expected)", 2)
    end
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  local raw = concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")

  local up = opts.upstream or {}
  local status = up.status or 200
  local ulines = { fmt("HTTP/1.1 %d %s", status, REASONS[status] or "Status") }
  local useen = header_lines(ulines, up.headers)
  local ubody = body_of(up.body, useen, ulines) or ""
  if not useen["content-length"] and not useen["transfer-encoding"] then
    ulines[#ulines + 1] = "Content-Length: " .. #ubody
  end
  local uraw = concat(ulines, "\r\n") .. "\r\n\r\n" .. ubody

  if self.cfg and consumers_of ~= self then
    consumers.init(self.cfg.consumers, self.cfg.credentials)
    consumers_of = self
  end
  seq = seq + 1
  -- As if an earlier plugin had called sluice.client.authenticate(consumer,
  -- credential): sluice.client.get_consumer/get_credential see them.
  if opts.consumer ~= nil and type(opts.consumer) ~= "table" then
    error("bad argument #1 to 'run' (consumer: table expected, got " .. type(opts.consumer)
      .. ")", 2)
  end
  local ctx = { logs = {}, consumer = opts.consumer, credential = opts.credential }
  pdk.contexts[seq] = ctx
  local ok, res = pcall(inproc.run, self.handle, seq, raw, opts.client_ip or "127.0.0.1",
    opts.client_port or 40000, uraw, opts.timeout)
  pdk.contexts[seq] = nil
  if not ok then
    error("t.plugin('" .. self.name .. "'):run: " .. tostring(res), 2)
  end
  res.logs = ctx.logs
  return setmetatable(res, response_mt)
end

return _M
