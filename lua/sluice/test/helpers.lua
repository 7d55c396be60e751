-- helpers.lua: start the real sluice binary and a real nginx upstream on 127.0.0.1,
-- talk to them with curl and raw sockets, and stop everything after. The
-- project's own integration specs use this directly; plugin authors use the
-- friendlier sluice.test built on it.
local socket = require("socket")
local cjson = require("cjson.safe")

local fmt = string.format
local concat = table.concat

local _M = {}

-- The sluice binary to start: SLUICE_BIN, else the one running these specs
-- (`sluice test` is sluice itself), else build/sluice.
local function own_binary()
  local p = io.popen("readlink /proc/$PPID/exe 2>/dev/null")
  local exe = p and p:read("*l")
  if p then
    p:close()
  end
  if exe and exe:match("/sluice$") then
    return exe
  end
  return nil
end

_M.bin = os.getenv("SLUICE_BIN") or own_binary() or "build/sluice"

local NGINX_MODULES = "/usr/lib/nginx/modules"

-- Processes started by this module: { pid = N, name = "..." }.
local running = {}

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("*a")
  p:close()
  return out
end

-- Runs cmd, returning its output and exit code.
function _M.run(cmd)
  local out = sh(cmd .. "; echo \"rc=$?\"")
  local body, rc = out:match("^(.*)rc=(%d+)%s*$")
  return body or out, tonumber(rc)
end

function _M.sleep(seconds)
  socket.sleep(seconds)
end

function _M.tmpdir()
  local dir = sh("mktemp -d /tmp/sluice-spec.XXXXXX"):gsub("%s+$", "")
  return dir
end

function _M.write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

function _M.read_file(path)
  local f = io.open(path, "r")
  if not f then
    return nil
  end
  local s = f:read("*a")
  f:close()
  return s
end

-- Ports free_port handed out in this process: { [port] = true }. The kernel may
-- give a closed port out again at once, so a spec that asks for a dead upstream's
-- port and then starts a gateway could otherwise get the same port twice.
local handed_out = {}

-- A port nothing listens on right now, never one this process was given before.
function _M.free_port()
  for _ = 1, 100 do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    port = tonumber(port)
    if not handed_out[port] then
      handed_out[port] = true
      return port
    end
  end
  error("no free port that was not handed out before")
end

function _M.wait_port(port, seconds, address)
  local deadline = socket.gettime() + (seconds or 10)
  while socket.gettime() < deadline do
    local c = socket.tcp()
    c:settimeout(0.2)
    if c:connect(address or "127.0.0.1", port) then
      c:close()
      return true
    end
    c:close()
    socket.sleep(0.02)
  end
  return false
end

local function spawn(cmd, log)
  local pid = sh(fmt("sh -c '%s >%s 2>&1 & echo $!'", cmd, log)):match("(%d+)")
  return tonumber(pid)
end

function _M.alive(pid)
  local stat = _M.read_file(fmt("/proc/%d/stat", pid))
  -- A zombie has exited; only its parent has not collected it yet.
  return stat ~= nil and not stat:match("^%d+ %b() Z")
end

-- Sends sig to pid and waits up to `seconds` for it to exit.
function _M.kill(pid, sig, seconds)
  os.execute(fmt("kill -%s %d 2>/dev/null", sig or "TERM", pid))
  local deadline = socket.gettime() + (seconds or 10)
  while socket.gettime() < deadline do
    if not _M.alive(pid) then
      return true
    end
    socket.sleep(0.02)
  end
  return false
end

-- Starts nginx as an upstream. By default every location echoes the request
-- as JSON: { method, uri, headers, body }. `locations` adds raw nginx
-- location blocks; `http` adds http-level directives.
function _M.start_upstream(opts)
  opts = opts or {}
  local dir = _M.tmpdir()
  local port = opts.port or _M.free_port()
  local conf = fmt([[
load_module %s/ndk_http_module.so;
load_module %s/ngx_http_lua_module.so;
daemon off;
master_process off;
worker_processes 1;
error_log %s/error.log warn;
pid %s/nginx.pid;
events { worker_connections 4096; }
http {
  log_format spec '$request $status';
  access_log %s/access.log spec;
  client_body_temp_path %s/body;
  client_max_body_size 0;
  keepalive_requests 100000;
  keepalive_timeout %s;
  lua_package_path "/usr/share/lua/5.1/?.lua;;";
  %s
  server {
    listen %s:%d;
    %s
    location / {
      content_by_lua_block {
        ngx.req.read_body()
        local cjson = require "cjson"
        local body = ngx.req.get_body_data()
        if not body then
          local f = ngx.req.get_body_file()
          if f then
            local h = io.open(f, "rb"); body = h:read("*a"); h:close()
          end
        end
        ngx.header["Content-Type"] = "application/json"
        ngx.say(cjson.encode({ method = ngx.req.get_method(), uri = ngx.var.request_uri,
          headers = ngx.req.get_headers(100, true), body = body,
          http_version = ngx.req.http_version(), connection = tonumber(ngx.var.connection),
          port = tonumber(ngx.var.server_port), addr = ngx.var.server_addr }))
      }
    }
  }
}
]], NGINX_MODULES, NGINX_MODULES, dir, dir, dir, dir, opts.keepalive_timeout or "75s",
    opts.http or "", opts.address or "127.0.0.1", port, opts.locations or "")
  _M.write_file(dir .. "/nginx.conf", conf)
  local pid = spawn(fmt("exec nginx -p %s -c %s/nginx.conf", dir, dir), dir .. "/stdout.log")
  assert(_M.wait_port(port, nil, opts.address),
    "nginx did not start: " .. (_M.read_file(dir .. "/error.log") or ""))
  local u = { pid = pid, port = port, dir = dir, name = "nginx" }
  running[#running + 1] = u
  return u
end

-- Starts a DNS server on 127.0.0.1 (lua/sluice/test/dns_server.lua) that
-- answers from `records`: a list of lines as that file describes
-- ("svc.test A 127.0.0.1 30"). Returns { port =, dir =, set = fn(records)
-- to change the answers, queries = fn(name, type) -> how many it was asked }.
function _M.start_dns(records)
  local dir = _M.tmpdir()
  local port = _M.free_port()
  local script = package.searchpath("sluice.test.dns_server", package.path)
  assert(script, "sluice/test/dns_server.lua not found on package.path")
  local d = { port = port, dir = dir, name = "dns", zone = dir .. "/zone",
              log = dir .. "/queries.log" }
  function d.set(recs)
    _M.write_file(d.zone, concat(recs, "\n") .. "\n")
  end
  function d.queries(qname, qtype)
    local n = 0
    for line in (_M.read_file(d.log) or ""):gmatch("[^\n]+") do
      if line == qname .. " " .. (qtype or "A") then
        n = n + 1
      end
    end
    return n
  end
  d.set(records or {})
  d.pid = spawn(fmt("exec lua5.1 %s %d %s %s", script, port, d.zone, d.log), dir .. "/stdout.log")
  running[#running + 1] = d
  assert(_M.wait_for(function()
    return _M.read_file(d.log) ~= nil
  end, 5), "the DNS server did not start: " .. (_M.read_file(dir .. "/stdout.log") or ""))
  return d
end

-- Renders a Lua value as a YAML flow value (strings double-quoted).
local function yaml_value(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do
      parts[i] = yaml_value(x)
    end
    return "[" .. concat(parts, ", ") .. "]"
  elseif type(v) == "string" then
    return '"' .. v:gsub('[\\"]', "\\%0") .. '"'
  end
  return tostring(v)
end

-- The `server:` block start_sluice writes when the document has none.
-- `extra` is a table of more server keys ({ keepalive_timeout = "300ms" }).
function _M.server_block(port, dir, extra)
  extra = extra or {}
  local lines = {
    "server:",
    fmt('  listen: ["127.0.0.1:%d"]', port),
    "  workers: " .. yaml_value(extra.workers or 1),
    fmt('  pid_file: "%s/sluice.pid"', dir),
    fmt('  access_log: "%s/access.log"', dir),
  }
  local keys = {}
  for k in pairs(extra) do
    if k ~= "workers" then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    lines[#lines + 1] = fmt("  %s: %s", k, yaml_value(extra[k]))
  end
  return concat(lines, "\n") .. "\n"
end

-- Children of pid, as a list of numbers (the workers of a sluice master).
function _M.children(pid)
  local out = sh(fmt("pgrep -P %d", pid))
  local pids = {}
  for p in out:gmatch("%d+") do
    pids[#pids + 1] = tonumber(p)
  end
  table.sort(pids)
  return pids
end

-- Resident memory of pid in KiB (nil when it is gone).
function _M.rss_kb(pid)
  local status = _M.read_file(fmt("/proc/%d/status", pid))
  return status and tonumber(status:match("VmRSS:%s*(%d+)"))
end

-- Calls fn every `step` seconds until it returns a true value or `seconds`
-- pass; returns what fn returned last.
function _M.wait_for(fn, seconds, step)
  local deadline = socket.gettime() + (seconds or 5)
  local v = fn()
  while not v and socket.gettime() < deadline do
    socket.sleep(step or 0.05)
    v = fn()
  end
  return v
end

-- Writes a sluice config and starts sluice on it. `yaml` is the whole
-- document; it may use {PORT} for the listen port, which is chosen here, and
-- {DIR} for a fresh directory that goes away with it. Without a `server:`
-- block one is added: listen on {PORT}, opts.workers (1), pid file and access
-- log in {DIR}, plus the keys in opts.server. opts.wait = false returns at
-- once, without waiting for the port.
-- Returns { pid, port, dir, file, log = path, access_log = path, pid_file };
-- s.pid is the master's pid and helpers.exit_code(s) its exit code.
function _M.start_sluice(yaml, opts)
  opts = opts or {}
  local dir = _M.tmpdir()
  local port = opts.port or _M.free_port()
  local text = yaml:gsub("{PORT}", tostring(port)):gsub("{DIR}", dir)
  if not opts.own_server and not text:find("\nserver:") and not text:find("^server:") then
    local extra = {}
    for k, v in pairs(opts.server or {}) do
      extra[k] = v
    end
    extra.workers = extra.workers or opts.workers
    text = text .. "\n" .. _M.server_block(port, dir, extra)
  end
  local file = dir .. "/sluice.yaml"
  _M.write_file(file, text)
  local s = { port = port, dir = dir, file = file, log = dir .. "/sluice.log",
    access_log = dir .. "/access.log", pid_file = dir .. "/sluice.pid", name = "sluice" }
  -- A shell waits for sluice to record its exit code; sluice is its child.
  local wrapper = tonumber(sh(fmt("sh -c '%s start -c %s >%s 2>&1; echo $? >%s/exit_code' "
    .. ">/dev/null 2>&1 </dev/null & echo $!", _M.bin, file, s.log, dir)):match("(%d+)"))
  s.pid = _M.wait_for(function()
    return _M.children(wrapper)[1]
  end, 5, 0.01)
  if not s.pid then
    s.pid = wrapper
  end
  running[#running + 1] = s
  if opts.wait ~= false and not _M.wait_port(port, 10) then
    error("sluice did not start:\n" .. (_M.read_file(s.log) or ""))
  end
  return s
end

-- The exit code of a sluice started by start_sluice, waiting up to `seconds`
-- for it to exit; nil if it is still running.
function _M.exit_code(s, seconds)
  local path = s.dir .. "/exit_code"
  local rc = _M.wait_for(function()
    local text = _M.read_file(path)
    return text and tonumber(text:match("%d+"))
  end, seconds or 10)
  return rc
end

-- What in a sluice log means the process itself went wrong: sanitizer
-- reports, crashes. (Workers killed by a spec with SIGKILL are fine.)
local CRASH_PATTERNS = {
  "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
  "signal 6 ", "signal 11 ", "signal 7 ", "signal 4 ", "core dumped",
}

local function crash_report(log)
  for _, pattern in ipairs(CRASH_PATTERNS) do
    local at = log:find(pattern, 1, true)
    if at then
      return log:sub(math.max(1, at - 200), at + 3000)
    end
  end
end

-- Registers a process (or, without pid, a folder) for stop_all to stop and
-- remove: { pid =, dir =, name = }.
function _M.track(p)
  running[#running + 1] = p
end

-- Stops everything this module started (call from after_each/teardown).
-- Raises an error afterwards when a sluice log shows a sanitizer report or a
-- crashed process, so that such a run never passes quietly.
function _M.stop_all()
  local crashes = {}
  for i = #running, 1, -1 do
    local p = running[i]
    if p.pid and _M.alive(p.pid) then
      if not _M.kill(p.pid, "TERM", 15) then
        _M.kill(p.pid, "KILL", 5)
      end
    end
    if p.name == "sluice" then
      -- The wrapper shell records the exit code once sluice (and LSan) is done.
      _M.exit_code(p, 5)
      local report = crash_report(_M.read_file(p.log) or "")
      if report then
        crashes[#crashes + 1] = fmt("sluice (%s):\n%s", p.file, report)
      end
    end
    os.execute("rm -rf " .. p.dir)
    running[i] = nil
  end
  if #crashes > 0 then
    error("sluice crashed or a sanitizer reported an error:\n" .. concat(crashes, "\n"), 2)
  end
end

-- Request lines an upstream started by start_upstream has answered, in order
-- ("GET /path HTTP/1.1 200"); nginx logs each one as it completes.
function _M.upstream_requests(u)
  local lines = {}
  for line in (_M.read_file(u.dir .. "/access.log") or ""):gmatch("[^\n]+") do
    lines[#lines + 1] = line
  end
  return lines
end

-- True when the upstream logged a request whose line contains `text`.
function _M.upstream_saw(u, text)
  for _, line in ipairs(_M.upstream_requests(u)) do
    if line:find(text, 1, true) then
      return true
    end
  end
  return false
end

-- The echo upstream's headers keyed by lower-case name.
function _M.lower_headers(headers)
  local t = {}
  for k, v in pairs(headers or {}) do
    t[k:lower()] = v
  end
  return t
end

-- Runs curl; returns status (number), headers (lower-case names; repeated
-- ones joined with ", ") and body.
function _M.curl(args)
  local out = sh("curl -sS -i --max-time 20 " .. args)
  -- Skip interim 100 Continue heads.
  while out:match("^HTTP/1%.%d 1%d%d") do
    out = out:gsub("^.-\r\n\r\n", "", 1)
  end
  local head, body = out:match("^(.-)\r\n\r\n(.*)$")
  if not head then
    return nil, out
  end
  local status = tonumber(head:match("^HTTP/%d%.%d (%d+)"))
  local headers = {}
  for name, value in head:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  return status, headers, body
end

function _M.json(s)
  return cjson.decode(s)
end

-- A raw connection for byte-exact requests.
local Conn = {}
Conn.__index = Conn

function _M.connect(port)
  local c = assert(socket.tcp())
  c:settimeout(5)
  assert(c:connect("127.0.0.1", port))
  return setmetatable({ sock = c }, Conn)
end

function Conn:send(bytes)
  return self.sock:send(bytes)
end

-- Reads one response: returns { status, headers, body, head, status_line }
-- or nil, err. Handles Content-Length, chunked and close-delimited bodies;
-- interim 1xx responses are skipped (the last one is in res.interim).
function Conn:read_response(head_request)
  local lines = {}
  local status_line, err = self.sock:receive("*l")
  if not status_line then
    return nil, err
  end
  local status = tonumber(status_line:match("^HTTP/%d%.%d (%d%d%d)"))
  if not status then
    return nil, "bad status line: " .. status_line
  end
  local headers = {}
  while true do
    local line = self.sock:receive("*l")
    if not line then
      return nil, "closed in the head"
    end
    if line == "" then
      break
    end
    lines[#lines + 1] = line
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if not name then
      return nil, "bad header line: " .. line
    end
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  if status >= 100 and status < 200 then
    local res, rerr = self:read_response(head_request)
    if res then
      res.interim = status_line
    end
    return res, rerr
  end
  local body
  if head_request or status == 204 or status == 304 then
    body = ""
  elseif headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size_line = self.sock:receive("*l")
      local size = size_line and tonumber(size_line:match("^%x+"), 16)
      if not size then
        return nil, "bad chunk size line: " .. tostring(size_line)
      end
      if size == 0 then
        repeat
          local t = self.sock:receive("*l")
        until t == "" or t == nil
        break
      end
      local data, rerr = self.sock:receive(size)
      if not data then
        return nil, "truncated chunk: " .. tostring(rerr)
      end
      parts[#parts + 1] = data
      self.sock:receive("*l")
    end
    body = concat(parts)
  elseif headers["content-length"] then
    -- A zero length reads nothing: luasocket's receive(0) on a connection
    -- the server closed (Connection: close) would report it closed.
    local length, rerr = tonumber(headers["content-length"])
    body = ""
    if length > 0 then
      body, rerr = self.sock:receive(length)
    end
    if not body then
      return nil, "truncated body: " .. tostring(rerr)
    end
  else
    local data, _, partial = self.sock:receive("*a")
    body = data or partial
  end
  return { status = status, headers = headers, body = body, head = concat(lines, "\n"),
    status_line = status_line }
end

-- Reads one CRLF- or LF-terminated line (without it), or nil, err.
function Conn:receive_line()
  return self.sock:receive("*l")
end

function Conn:settimeout(seconds)
  self.sock:settimeout(seconds)
end

-- True when the server closed the connection (reads EOF within `seconds`).
function Conn:closed(seconds)
  self.sock:settimeout(seconds or 2)
  local data, err, partial = self.sock:receive(1)
  if data then
    return false, "got data: " .. data
  end
  if err == "closed" then
    return true, partial
  end
  return false, err
end

function Conn:close()
  self.sock:close()
end

-- Sends one request on a new connection and returns the response.
function _M.request(port, raw)
  local c = _M.connect(port)
  c:send(raw)
  local res, err = c:read_response(raw:match("^HEAD "))
  c:close()
  return res, err
end

return _M
