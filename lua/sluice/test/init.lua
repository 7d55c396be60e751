-- sluice.test: what a plugin's specs need: a real sluice, a mock upstream, a real Redis.
--
--   local t = require("sluice.test")
--   local upstream = t.mock_upstream()
--   local proxy = t.start({ services = { { name = "s", url = upstream.url,
--     routes = { { paths = { "/" }, plugins = { { name = "my-plugin" } } } } } } },
--     { plugin_paths = { "plugins" } })
--   local res = proxy:get("/hello", { headers = { ["X-Key"] = "k" } })
--   assert.res_status(200, res)
--   t.stop()
--
-- Everything runs on 127.0.0.1 on free ports and is stopped by t.stop().
--
-- For unit tests, t.plugin runs a plugin's phases in-process (no sockets):
--
--   local res = t.plugin("my-plugin", { key = "k" }):run({ path = "/hello" })
--   assert.equal("k", res.upstream.headers["x-key"])

local helpers = require("sluice.test.helpers")
local cjson = require("cjson.safe")
local socket = require("socket")

local fmt = string.format
local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local concat = table.concat

local _M = {}

_M.helpers = helpers

-- Responses --------------------------------------------------------------------

local Response = {}
Response.__index = Response

-- The body decoded as JSON, or nil, err.
function Response:json()
  return cjson.decode(self.body)
end

function Response:read_body()
  return self.body
end

-- In-process plugins (lua/sluice/test/plugin.lua) -------------------------------

local plugin = require("sluice.test.plugin")
plugin.set_response_mt(Response)

-- t.plugin(name, conf, opts): the plugin under test, with :run(request).
_M.plugin = plugin.new

-- A client of a running sluice -------------------------------------------------------

local Proxy = {}
Proxy.__index = Proxy

-- Sends one request on a new connection: opts = { method, path, headers =
-- {}, body = string or table (sent as JSON), query = { k = v } }. Returns a
-- response { status, headers (lower-case names), body } or nil, err.
function Proxy:request(opts)
  local method = opts.method or "GET"
  local path = opts.path or "/"
  if opts.query then
    local parts = {}
    for k, v in pairs(opts.query) do
      parts[#parts + 1] = k .. "=" .. tostring(v)
    end
    table.sort(parts)
    path = path .. (path:find("?", 1, true) and "&" or "?") .. concat(parts, "&")
  end
  local headers = {}
  for k, v in pairs(opts.headers or {}) do
    headers[k:lower()] = { k, v }
  end
  local body = opts.body
  if type(body) == "table" then
    body = assert(cjson.encode(body))
    if not headers["content-type"] then
      headers["content-type"] = { "Content-Type", "application/json" }
    end
  end
  if not headers.host then
    headers.host = { "Host", "127.0.0.1:" .. self.port }
  end
  if body then
    headers["content-length"] = { "Content-Length", tostring(#body) }
  end
  local lines = { fmt("%s %s HTTP/1.1", method, path) }
  for _, h in pairs(headers) do
    lines[#lines + 1] = h[1] .. ": " .. tostring(h[2])
  end
  lines[#lines + 1] = "Connection: close"
  local raw = concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
  local res, err = helpers.request(self.port, raw)
  if not res then
    return nil, err
  end
  return setmetatable(res, Response)
end

for _, m in ipairs({ "get", "post", "put", "patch", "delete", "head", "options" }) do
  Proxy[m] = function(self, path, opts)
    opts = opts or {}
    opts.method = m:upper()
    opts.path = path
    return self:request(opts)
  end
end

-- The sluice error log so far (plugin errors, sluice.log lines).
function Proxy:error_log()
  return helpers.read_file(self.dir .. "/error.log") or ""
end

-- Starts sluice on config: a YAML string, or a Lua table in Kong's shape (JSON
-- is YAML). server sets node keys (plugin_paths, shared_dicts, ...); the
-- listen address, pid file and logs are chosen here. Returns a Proxy.
function _M.start(config, server)
  local handle
  local doc = config
  if type(config) == "table" then
    doc = {}
    for k, v in pairs(config) do
      doc[k] = v
    end
    doc._format_version = doc._format_version or "3.0"
  end
  local port = helpers.free_port()
  local dir = helpers.tmpdir()
  helpers.track({ dir = dir, name = "logs" })
  local s = {}
  for k, v in pairs(type(doc) == "table" and doc.server or {}) do
    s[k] = v
  end
  for k, v in pairs(server or {}) do
    s[k] = v
  end
  s.listen = { "127.0.0.1:" .. port }
  s.workers = s.workers or 1
  s.pid_file = dir .. "/sluice.pid"
  s.error_log = dir .. "/error.log"
  s.access_log = s.access_log or "off"
  if type(doc) == "table" then
    doc.server = s
    doc = assert(cjson.encode(doc))
  else
    doc = doc .. "\nserver: " .. assert(cjson.encode(s)) .. "\n"
  end
  handle = helpers.start_sluice(doc, { port = port, own_server = true })
  return setmetatable({ port = port, url = "http://127.0.0.1:" .. port, handle = handle,
                        pid = handle.pid, dir = dir }, Proxy)
end

-- A mock upstream ---------------------------------------------------------------------

local Upstream = {}
Upstream.__index = Upstream

-- Every request the upstream received, oldest first: { method, uri, headers, body }.
function Upstream:requests()
  local out = {}
  local text = helpers.read_file(self.handle.dir .. "/requests.log") or ""
  for line in text:gmatch("[^\n]+") do
    out[#out + 1] = cjson.decode(line)
  end
  return out
end

function Upstream:last_request()
  local all = self:requests()
  return all[#all]
end

local function lua_string(s)
  return fmt("%q", s)
end

-- Starts an HTTP server (nginx) that records every request and answers as
-- told: routes = { ["/path"] = { status =, body = (string or table), headers = {} } };
-- any other path echoes the request as JSON { method, uri, headers, body }.
function _M.mock_upstream(opts)
  opts = opts or {}
  local locations = {}
  for path, r in pairs(opts.routes or {}) do
    local body = r.body
    local ctype = "text/plain"
    if type(body) == "table" then
      body, ctype = assert(cjson.encode(body)), "application/json"
    end
    local hdrs = {}
    for k, v in pairs(r.headers or {}) do
      hdrs[#hdrs + 1] = fmt("ngx.header[%s] = %s", lua_string(k), lua_string(tostring(v)))
    end
    locations[#locations + 1] = fmt([[
    location = %s {
      content_by_lua_block {
        ngx.req.read_body()
        ngx.status = %d
        ngx.header["Content-Type"] = %s
        %s
        ngx.print(%s)
      }
    }]], path, r.status or 200, lua_string(ctype), concat(hdrs, "\n        "),
      lua_string(body or ""))
  end
  -- Recording happens before the answer (access_by_lua, inherited by every
  -- location), so a spec that got its response finds the request recorded.
  local handle = helpers.start_upstream({
    locations = concat(locations, "\n"),
    http = [[
  access_by_lua_block {
    ngx.req.read_body()
    local cjson = require "cjson"
    local f = io.open(ngx.config.prefix() .. "/requests.log", "a")
    if f then
      f:write(cjson.encode({ method = ngx.req.get_method(), uri = ngx.var.request_uri,
        headers = ngx.req.get_headers(100), body = ngx.req.get_body_data() }), "\n")
      f:close()
    end
  }]],
  })
  return setmetatable({ port = handle.port, host = "127.0.0.1",
                        url = "http://127.0.0.1:" .. handle.port, handle = handle }, Upstream)
end

-- Redis ------------------------------------------------------------------------------------

-- Starts a redis-server on a free port (no persistence). Returns { host, port }.
function _M.redis()
  local port = helpers.free_port()
  local dir = helpers.tmpdir()
  local out, rc = helpers.run(fmt("redis-server --port %d --bind 127.0.0.1 --save '' "
    .. "--appendonly no --daemonize yes --pidfile %s/redis.pid --dir %s --logfile %s/redis.log",
    port, dir, dir, dir))
  if rc ~= 0 then
    error("cannot start redis-server (apt-get install redis-server): " .. out, 2)
  end
  assert(helpers.wait_port(port, 10), "redis-server did not start")
  local pid = tonumber(helpers.wait_for(function()
    return helpers.read_file(dir .. "/redis.pid")
  end, 5))
  helpers.track({ pid = pid, dir = dir, name = "redis" })
  return { host = "127.0.0.1", port = port, pid = pid }
end

-- Stops every sluice, upstream and redis these helpers started.
function _M.stop()
  helpers.stop_all()
end

-- Assertions ------------------------------------------------------------------------------

local say = require("say")
local luassert = require("luassert")

-- assert.res_status(200, res): checks the status, returns the body.
local function res_status(_, args)
  local expected, res = args[1], args[2]
  if type(res) ~= "table" then
    args[1] = "a response"
    args[2] = tostring(res)
    return false
  end
  if res.status ~= expected then
    args[1] = expected
    args[2] = fmt("%s (body: %s)", tostring(res.status), tostring(res.body))
    return false
  end
  return true, { res.body }
end
say:set("assertion.res_status.positive", "Expected status %s, got %s")
say:set("assertion.res_status.negative", "Expected a status other than %s, got %s")
luassert:register("assertion", "res_status", res_status, "assertion.res_status.positive",
  "assertion.res_status.negative")

-- assert.response(res).has.header("x-name"): returns the header's value.
local function modifier_response(state, args)
  rawset(state, "sluice_response", args[1])
  return state
end
luassert:register("modifier", "response", modifier_response)

local function has_header(state, args)
  local res = rawget(state, "sluice_response")
  local name = tostring(args[1]):lower()
  local v = res and res.headers and res.headers[name]
  if v == nil then
    args[1] = name
    return false
  end
  return true, { v }
end
say:set("assertion.sluice_header.positive", "Expected the response to have header %s")
say:set("assertion.sluice_header.negative", "Expected the response not to have header %s")
luassert:register("assertion", "header", has_header, "assertion.sluice_header.positive",
  "assertion.sluice_header.negative")

_M.socket = socket

return _M
