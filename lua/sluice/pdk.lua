-- pdk.lua: the `sluice` global plugins use: request, response, service, client, ctx, log, ...
--
-- Names follow Kong's PDK (kong.request.get_header -> sluice.request.get_header).
-- Every function checks the phase it is called in; misuse raises an error,
-- runtime failures return nil, err. docs/pdk.md documents each one.

local ffi = require("ffi")
local base = require("sluice.ffi")
local cjson = require("cjson.safe")
local consumers = require("sluice.consumers")

local bit = require("bit")
local band = bit.band
local lshift = bit.lshift
local error = error
local type = type
local tostring = tostring
local tonumber = tonumber
local pairs = pairs
local ipairs = ipairs
local select = select
local ffi_string = ffi.string
local str_lower = string.lower
local str_find = string.find
local str_match = string.match
local str_sub = string.sub
local str_gsub = string.gsub
local str_char = string.char
local tbl_concat = table.concat
local table_new = require("table.new")
local co_yield = coroutine.yield
local unpack = unpack
local setmetatable = setmetatable
local getmetatable = getmetatable
local math_floor = math.floor

local C = ffi.C
local cur = C.sl_ffi_current
local str1, str2, str3 = base.str1, base.str2, base.str3
local len1, len2, len3 = base.len1, base.len2, base.len3
local int1, int2 = base.int1, base.int2
local errp = base.err

local REWRITE, ACCESS, HEADER_FILTER, BODY_FILTER, LOG, TIMER = 2, 3, 4, 5, 6, 7
local PHASE_NAMES = { [0] = "(no request)", "init_worker", "rewrite", "access",
                      "header_filter", "body_filter", "log", "timer" }

-- Phase masks: bit n set = allowed in phase n.
local REQ_PHASES = lshift(1, REWRITE) + lshift(1, ACCESS) + lshift(1, HEADER_FILTER)
  + lshift(1, BODY_FILTER) + lshift(1, LOG)
local BEFORE_PROXY = lshift(1, REWRITE) + lshift(1, ACCESS)
local RESPONSE_EDIT = lshift(1, REWRITE) + lshift(1, ACCESS) + lshift(1, HEADER_FILTER)
local AFTER_HEAD = lshift(1, HEADER_FILTER) + lshift(1, BODY_FILTER) + lshift(1, LOG)
local IN_BODY_FILTER = lshift(1, BODY_FILTER)
local RESPONSE_BODY = lshift(1, HEADER_FILTER) + lshift(1, BODY_FILTER)
-- Where a call may wait for I/O: a request before it is proxied, a timer.
local WAITABLE = lshift(1, REWRITE) + lshift(1, ACCESS) + lshift(1, TIMER)

local JSON_TYPE = "application/json; charset=utf-8"
local MAX_TIMEOUT = 2147483646

local _M = {}

-- Per-task Lua state, by task number (a request's number, or a timer run's,
-- below 0), made on first use (get_ctx): { shared =, plugins = { [plugin
-- name] = {} }, exit_status =, exit_body =, exit_headers =, logs = { line,
-- ... } when an in-process test request captures its log lines, and the wait
-- and thread fields below }.
local contexts = {}
_M.contexts = contexts

-- What runs now: plugin = the running plugin's name (nil between plugins),
-- index = its place in the chain, route = the runner's entry for the route
-- (its chains). The runner sets them before each call; a plugin that waits
-- saves them and puts them back when it is resumed.
local state = { plugin = nil, index = 0 }
_M.state = state

-- The running request's context, made when a plugin first needs it: a
-- request whose plugins never do allocates nothing and costs no Lua call
-- when it ends (has_ctx tells C to drop it then).
local function get_ctx()
  local id = cur.id
  local c = contexts[id]
  if not c then
    c = {}
    contexts[id] = c
    cur.has_ctx = 1
  end
  return c
end
_M.get_ctx = get_ctx

local function check(mask, fname)
  local phase = cur.phase
  if band(mask, lshift(1, phase)) == 0 then
    error(fname .. " is not allowed in phase " .. PHASE_NAMES[phase], 3)
  end
  return cur.r
end

local function arg_error(n, fname, expected, v)
  error("bad argument #" .. n .. " to '" .. fname .. "' (" .. expected .. " expected, got "
    .. type(v) .. ")", 3)
end

local function hex_char(h)
  return str_char(tonumber(h, 16))
end

-- Percent-decoding for query strings and form bodies ('+' is a space). Plain
-- finds first: the common case, nothing to decode, stays compiled.
local function unescape(s)
  if not str_find(s, "%", 1, true) and not str_find(s, "+", 1, true) then
    return s
  end
  s = str_gsub(s, "%+", " ")
  return (str_gsub(s, "%%(%x%x)", hex_char))
end

-- Adds a value under key: a second value turns it into a list, as Kong's
-- tables of query arguments and headers are.
local function add_value(t, k, v)
  local old = t[k]
  if old == nil then
    t[k] = v
  elseif type(old) == "table" then
    old[#old + 1] = v
  else
    t[k] = { old, v }
  end
end

-- "a=1&b=2&b=3&c" -> { a = "1", b = { "2", "3" }, c = true }, as Kong does.
local function decode_args(s)
  local args = {}
  local pos, len = 1, #s
  while pos <= len do
    local amp = str_find(s, "&", pos, true) or len + 1
    if amp > pos then
      local eq = str_find(s, "=", pos, true)
      if eq and eq < amp then
        add_value(args, unescape(str_sub(s, pos, eq - 1)), unescape(str_sub(s, eq + 1, amp - 1)))
      else
        add_value(args, unescape(str_sub(s, pos, amp - 1)), true)
      end
    end
    pos = amp + 1
  end
  return args
end

local function header_table(count_fn, at_fn, r, max)
  local t = {}
  local n = count_fn(r)
  if max and max > 0 and n > max then
    n = max
  end
  for i = 0, n - 1 do
    if at_fn(r, i, str1, len1, str2, len2) == 0 then
      add_value(t, str_lower(ffi_string(str1[0], len1[0])), ffi_string(str2[0], len2[0]))
    end
  end
  return t
end

-- The first value of a header: target 0 the request, 1 the response.
local function find_header(r, target, name)
  if C.sl_ffi_header_get(r, target, name, #name, str1, len1) ~= 0 then
    return nil
  end
  return ffi_string(str1[0], len1[0])
end

-- sluice.request ----------------------------------------------------------------

local request = {}

local function line(r)
  C.sl_ffi_req_get_line(r, str1, len1, str2, len2, str3, len3, int1)
end

function request.get_method()
  local r = check(REQ_PHASES, "sluice.request.get_method")
  line(r)
  return ffi_string(str1[0], len1[0])
end

function request.get_scheme()
  check(REQ_PHASES, "sluice.request.get_scheme")
  return "http"
end

function request.get_host()
  local r = check(REQ_PHASES, "sluice.request.get_host")
  C.sl_ffi_req_get_host(r, str1, len1, int1)
  return str_lower(ffi_string(str1[0], len1[0]))
end

function request.get_port()
  local r = check(REQ_PHASES, "sluice.request.get_port")
  C.sl_ffi_req_get_host(r, str1, len1, int1)
  return int1[0]
end

function request.get_raw_path()
  local r = check(REQ_PHASES, "sluice.request.get_raw_path")
  line(r)
  return ffi_string(str2[0], len2[0])
end

function request.get_path()
  local r = check(REQ_PHASES, "sluice.request.get_path")
  C.sl_ffi_req_get_match(r, str1, len1, base.caps, int1, base.names)
  if str1[0] == nil then
    line(r)
    return ffi_string(str2[0], len2[0])
  end
  return ffi_string(str1[0], len1[0])
end

function request.get_raw_query()
  local r = check(REQ_PHASES, "sluice.request.get_raw_query")
  line(r)
  if int1[0] == 0 then
    return ""
  end
  return ffi_string(str3[0], len3[0])
end

function request.get_http_version()
  local r = check(REQ_PHASES, "sluice.request.get_http_version")
  return C.sl_ffi_req_http_version(r) == 10 and 1.0 or 1.1
end

-- Kong's forwarded getters: what a proxy in front said in X-Forwarded-*,
-- when the client is in server.trusted_ips; else what sluice itself saw.
local function forwarded(name)
  C.sl_ffi_req_client(cur.r, str1, len1, int1)
  if C.sl_ffi_ip_trusted(str1[0], len1[0]) ~= 1 then
    return nil
  end
  local v = request.get_header(name)
  -- The first element of a list: the proxy nearest the client.
  return v and str_match(v, "^%s*([^,%s]+)")
end

function request.get_forwarded_scheme()
  check(REQ_PHASES, "sluice.request.get_forwarded_scheme")
  local v = forwarded("x-forwarded-proto")
  return v and str_lower(v) or request.get_scheme()
end

-- The forwarded host, without a port.
local function forwarded_host()
  local v = forwarded("x-forwarded-host")
  if not v then
    return nil
  end
  local host, port = str_match(v, "^(%[.-%]):?(%d*)$")
  if not host then
    host, port = str_match(v, "^([^:]+):?(%d*)$")
  end
  return host and str_lower(host), tonumber(port)
end

function request.get_forwarded_host()
  check(REQ_PHASES, "sluice.request.get_forwarded_host")
  return forwarded_host() or request.get_host()
end

function request.get_forwarded_port()
  check(REQ_PHASES, "sluice.request.get_forwarded_port")
  local p = tonumber(forwarded("x-forwarded-port"))
  if not p then
    local _, hp = forwarded_host()
    p = hp
  end
  if p and p >= 1 and p <= 65535 then
    return p
  end
  return request.get_port()
end

function request.get_forwarded_path()
  check(REQ_PHASES, "sluice.request.get_forwarded_path")
  local v = forwarded("x-forwarded-path")
  return v or request.get_path()
end

function request.get_path_with_query()
  local r = check(REQ_PHASES, "sluice.request.get_path_with_query")
  line(r)
  local path = ffi_string(str2[0], len2[0])
  if int1[0] == 0 or len3[0] == 0 then
    return path
  end
  return path .. "?" .. ffi_string(str3[0], len3[0])
end

function request.get_query(max_args)
  check(REQ_PHASES, "sluice.request.get_query")
  local q = request.get_raw_query()
  local args = decode_args(q)
  if max_args then
    local n = 0
    for k in pairs(args) do
      n = n + 1
      if n > max_args then
        args[k] = nil
      end
    end
  end
  return args
end

function request.get_query_arg(name)
  if type(name) ~= "string" then
    arg_error(1, "get_query_arg", "string", name)
  end
  check(REQ_PHASES, "sluice.request.get_query_arg")
  local v = request.get_query()[name]
  if type(v) == "table" then
    return v[1]
  end
  return v
end

function request.get_header(name)
  if type(name) ~= "string" then
    arg_error(1, "get_header", "string", name)
  end
  local r = check(REQ_PHASES, "sluice.request.get_header")
  return find_header(r, 0, name)
end

function request.get_headers(max_headers)
  local r = check(REQ_PHASES, "sluice.request.get_headers")
  return header_table(C.sl_ffi_req_header_count, C.sl_ffi_req_header_at, r, max_headers)
end

function request.get_start_time()
  local r = check(REQ_PHASES, "sluice.request.get_start_time")
  return C.sl_ffi_req_start_time(r) * 1000
end

function request.get_uri_captures()
  local r = check(REQ_PHASES, "sluice.request.get_uri_captures")
  C.sl_ffi_req_get_match(r, str1, len1, base.caps, int1, base.names)
  local unnamed, named = {}, {}
  local path = str1[0] ~= nil and ffi_string(str1[0], len1[0]) or ""
  local caps, names = base.caps[0], base.names[0]
  for i = 1, int1[0] - 1 do
    local s, e = caps[2 * i], caps[2 * i + 1]
    local v = s >= 0 and str_sub(path, s + 1, e) or false
    unnamed[i] = v
    if names ~= nil and names[i] ~= nil then
      named[ffi_string(names[i])] = v
    end
  end
  return { unnamed = unnamed, named = named }
end

-- sluice.client -------------------------------------------------------------------

local client = {}

function client.get_ip()
  local r = check(REQ_PHASES, "sluice.client.get_ip")
  C.sl_ffi_req_client(r, str1, len1, int1)
  return ffi_string(str1[0], len1[0])
end

function client.get_port()
  local r = check(REQ_PHASES, "sluice.client.get_port")
  C.sl_ffi_req_client(r, str1, len1, int1)
  return int1[0]
end

-- The client address as the proxies in server.trusted_ips report it: from a
-- trusted peer, X-Forwarded-For is walked right to left past trusted
-- addresses (nginx's real_ip_recursive); otherwise it is the peer.
function client.get_forwarded_ip()
  check(REQ_PHASES, "sluice.client.get_forwarded_ip")
  local ip = client.get_ip()
  if C.sl_ffi_ip_trusted(ip, #ip) ~= 1 then
    return ip
  end
  local xff = request.get_headers()["x-forwarded-for"]
  if type(xff) == "table" then
    xff = tbl_concat(xff, ",")
  end
  if not xff then
    return ip
  end
  local hops = {}
  for hop in xff:gmatch("[^,%s]+") do
    hops[#hops + 1] = hop
  end
  for i = #hops, 1, -1 do
    local rc = C.sl_ffi_ip_trusted(hops[i], #hops[i])
    if rc == 0 then
      return hops[i]
    elseif rc ~= 1 then
      -- Not an address: what is left of it cannot be trusted.
      return hops[i + 1] or ip
    end
  end
  return hops[1] or ip
end

-- The port the client connected from, or X-Forwarded-Port from a trusted peer.
function client.get_forwarded_port()
  check(REQ_PHASES, "sluice.client.get_forwarded_port")
  local ip = client.get_ip()
  if C.sl_ffi_ip_trusted(ip, #ip) == 1 then
    local p = tonumber(request.get_header("x-forwarded-port"))
    if p and p >= 1 and p <= 65535 then
      return p
    end
  end
  return client.get_port()
end

-- Out-params of sl_ffi_req_conn: the local address's text, the serial.
local conn_addr = ffi.new("char[64]")
local conn_serial = ffi.new("double[1]")

-- The connection the request came on, as nginx's $server_addr,
-- $server_port, $connection and $connection_requests.
function client.get_connection()
  local r = check(REQ_PHASES, "sluice.client.get_connection")
  C.sl_ffi_req_conn(r, conn_addr, 64, len1, int1, conn_serial, int2)
  return ffi_string(conn_addr, len1[0]), int1[0], conn_serial[0], int2[0]
end

-- "http": sluice has no TLS listeners yet. allow_terminated is Kong's
-- argument for TLS ended in front of sluice: then X-Forwarded-Proto of a
-- trusted client counts.
function client.get_protocol(allow_terminated)
  check(REQ_PHASES, "sluice.client.get_protocol")
  if allow_terminated and request.get_forwarded_scheme() == "https" then
    return "https"
  end
  return "http"
end

-- Consumers: kong.client.authenticate and friends. The consumer and the
-- credential live in the request's context; the runner (which requires this
-- module) sets _M.on_authenticate to re-resolve the plugins that run after.

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local AUTH_PHASES = BEFORE_PROXY

-- Sets who the request is from, for the plugins that run after this one and
-- for the log. Returns true.
function client.authenticate(consumer, credential)
  if consumer ~= nil and type(consumer) ~= "table" then
    arg_error(1, "authenticate", "table or nil", consumer)
  end
  if credential ~= nil and type(credential) ~= "table" then
    arg_error(2, "authenticate", "table or nil", credential)
  end
  if consumer == nil and credential == nil then
    error("bad argument #1 to 'authenticate' (a consumer or a credential expected, got neither)",
      2)
  end
  local r = check(AUTH_PHASES, "sluice.client.authenticate")
  local ctx = get_ctx()
  ctx.consumer, ctx.credential = consumer, credential
  -- What upstreams with hash_on: consumer hash on (Kong: the consumer's id,
  -- else the credential's).
  local id = consumer and consumer.id
  if type(id) ~= "string" then
    id = credential and credential.id
  end
  if type(id) ~= "string" then
    id = nil
  end
  if C.sl_ffi_req_set_consumer(r, id, id and #id or 0, errp) ~= 0 then
    return nil, "could not record the consumer: " .. ffi_string(errp[0])
  end
  local hook = _M.on_authenticate
  if hook then
    hook(ctx, cur.phase)
  end
  return true
end

function client.get_consumer()
  check(REQ_PHASES, "sluice.client.get_consumer")
  local ctx = contexts[cur.id]
  return ctx and ctx.consumer
end

function client.get_credential()
  check(REQ_PHASES, "sluice.client.get_credential")
  local ctx = contexts[cur.id]
  return ctx and ctx.credential
end

-- The consumer of the loaded config with this id (or, when
-- search_by_username, this username), as a fresh table; nil when there is
-- none.
function client.load_consumer(consumer_id, search_by_username)
  if type(consumer_id) ~= "string" then
    arg_error(1, "load_consumer", "string", consumer_id)
  end
  local is_id = str_find(consumer_id, UUID) ~= nil
  if not is_id and not search_by_username then
    error("bad argument #1 to 'load_consumer' (consumer ids are UUIDs; pass true as argument "
      .. "#2 to look up a username)", 2)
  end
  check(REQ_PHASES, "sluice.client.load_consumer")
  local c = is_id and consumers.by_id(consumer_id)
  if not c and search_by_username then
    c = consumers.by_username(consumer_id)
  end
  return c and consumers.entity(c) or nil
end

-- sluice.response ----------------------------------------------------------------

local response = {}

-- The name and value are checked in C (a token; no CR, LF or NUL), which
-- keeps this path free of patterns the JIT cannot compile.
local function header_op(target, op, fname, name, value)
  if type(name) ~= "string" or name == "" then
    arg_error(1, fname, "non-empty string", name)
  end
  if op == 2 then
    value = ""
  elseif type(value) ~= "string" then
    local t = type(value)
    if t == "number" or t == "boolean" then
      value = tostring(value)
    else
      arg_error(2, fname, "string", value)
    end
  end
  local r = cur.r
  if r == nil then
    error(fname .. " can only be called while handling a request", 3)
  end
  local rc = C.sl_ffi_header_op(r, target, op, name, #name, value, #value, errp)
  if rc ~= 0 then
    if rc == 1 then
      error("bad argument #1 to '" .. fname .. "' (invalid header name '" .. name .. "')", 3)
    elseif rc == 2 then
      error("bad argument #2 to '" .. fname .. "' (header values cannot hold CR, LF or NUL)",
        3)
    end
    error(fname .. ": " .. ffi_string(errp[0]) .. " (phase " .. PHASE_NAMES[cur.phase] .. ")",
      3)
  end
  return true
end

-- One header of an exit, checked (the name a token; the value a string,
-- number or boolean without CR, LF or NUL) in C, with no pattern the JIT
-- cannot compile: a cache hit answers with a dozen of them. Returns the
-- value as a string.
local function exit_header_check(k, v)
  local tv = type(v)
  if tv ~= "string" then
    if tv ~= "number" and tv ~= "boolean" then
      error("bad argument #3 to 'exit' (header '" .. k .. "': string expected, got " .. tv
        .. ")", 3)
    end
    v = tostring(v)
  end
  local rc = C.sl_ffi_header_check(k, #k, v, #v)
  if rc == 1 then
    error("bad argument #3 to 'exit' (invalid header name '" .. k .. "')", 3)
  elseif rc == 2 then
    error("bad argument #3 to 'exit' (header '" .. k .. "' holds CR, LF or NUL)", 3)
  end
  return v
end

-- Where the response comes from: "exit" (a plugin's sluice.response.exit),
-- "service" (the upstream answered) or "error" (sluice could not get an
-- answer, or a plugin failed).
function response.get_source()
  local r = check(AFTER_HEAD, "sluice.response.get_source")
  local ctx = contexts[cur.id]
  if ctx and ctx.exit_status then
    return "exit"
  end
  if C.sl_ffi_upstream_status(r) > 0 then
    return "service"
  end
  return "error"
end

function response.get_status()
  local r = check(AFTER_HEAD, "sluice.response.get_status")
  return C.sl_ffi_resp_status(r)
end

function response.set_status(status)
  if type(status) ~= "number" or status < 100 or status > 999 then
    arg_error(1, "set_status", "status code (100-999)", status)
  end
  local r = check(lshift(1, HEADER_FILTER), "sluice.response.set_status")
  C.sl_ffi_resp_set_status(r, status, errp)
  return true
end

function response.get_header(name)
  if type(name) ~= "string" then
    arg_error(1, "get_header", "string", name)
  end
  local r = check(AFTER_HEAD, "sluice.response.get_header")
  return find_header(r, 1, name)
end

function response.get_headers(max_headers)
  local r = check(AFTER_HEAD, "sluice.response.get_headers")
  return header_table(C.sl_ffi_resp_header_count, C.sl_ffi_resp_header_at, r, max_headers)
end

function response.set_header(name, value)
  check(RESPONSE_EDIT, "sluice.response.set_header")
  header_op(1, 0, "set_header", name, value)
  return true
end

function response.add_header(name, value)
  check(RESPONSE_EDIT, "sluice.response.add_header")
  header_op(1, 1, "add_header", name, value)
  return true
end

function response.clear_header(name)
  check(RESPONSE_EDIT, "sluice.response.clear_header")
  header_op(1, 2, "clear_header", name)
  return true
end

-- set_headers for target (0 upstream request, 1 client response): a list
-- value sends the header once per element, replacing what was there.
local function set_headers(target, headers)
  for k, v in pairs(headers) do
    if type(v) == "table" then
      header_op(target, 2, "set_headers", k)
      for _, one in ipairs(v) do
        header_op(target, 1, "set_headers", k, one)
      end
    else
      header_op(target, 0, "set_headers", k, v)
    end
  end
  return true
end

function response.set_headers(headers)
  if type(headers) ~= "table" then
    arg_error(1, "set_headers", "table", headers)
  end
  check(RESPONSE_EDIT, "sluice.response.set_headers")
  return set_headers(1, headers)
end

-- Ends the request with this response; plugins after this one do not run.
-- A table body is sent as JSON. Use as `return sluice.response.exit(...)`.
function response.exit(status, body, headers)
  if type(status) ~= "number" or status < 100 or status > 999 then
    arg_error(1, "exit", "status code (100-999)", status)
  end
  if headers ~= nil and type(headers) ~= "table" then
    arg_error(3, "exit", "table", headers)
  end
  check(BEFORE_PROXY, "sluice.response.exit")
  local ctx = get_ctx()
  local out = {}
  for k, v in pairs(headers or {}) do
    if type(k) ~= "string" then
      error("bad argument #3 to 'exit' (invalid header name '" .. tostring(k) .. "')", 2)
    end
    if type(v) == "table" then
      for _, one in ipairs(v) do
        exit_header_check(k, one)
      end
      out[k] = v
    else
      out[k] = exit_header_check(k, v)
    end
  end
  if type(body) == "table" then
    local json, err = cjson.encode(body)
    if not json then
      error("bad argument #2 to 'exit' (cannot encode the body as JSON: " .. tostring(err)
        .. ")", 2)
    end
    body = json
    local has_type = false
    for k in pairs(out) do
      if str_lower(k) == "content-type" then
        has_type = true
      end
    end
    if not has_type then
      out["Content-Type"] = JSON_TYPE
    end
  elseif body ~= nil and type(body) ~= "string" then
    arg_error(2, "exit", "string or table", body)
  end
  ctx.exit_status, ctx.exit_body, ctx.exit_headers = status, body, out
end

-- Like exit, with Kong's JSON error body { message = ... }.
function response.error(status, message, headers)
  if message == nil then
    message = status >= 500 and "An unexpected error occurred" or "Request failed"
  end
  return response.exit(status, { message = message }, headers)
end

-- sluice.service ------------------------------------------------------------------

local service = { request = {}, response = {} }

local function upstream_set(what, fname, value)
  if type(value) ~= "string" then
    arg_error(1, fname, "string", value)
  end
  local r = check(BEFORE_PROXY, "sluice.service.request." .. fname)
  if C.sl_ffi_upstream_set(r, what, value, #value, errp) ~= 0 then
    error(fname .. ": " .. ffi_string(errp[0]), 2)
  end
  return true
end

-- Named upstreams of the loaded config: lower-case name -> 0-based index in
-- the config's order (C's too). Set by the runner.
local upstream_index = {}

function _M.set_upstreams(list)
  upstream_index = {}
  for i, u in ipairs(list or {}) do
    upstream_index[str_lower(u.name)] = i - 1
  end
end

-- A whole number from min to max, else a bad argument error naming it.
local function check_int(n, fname, v, min, max)
  if type(v) ~= "number" or v ~= math_floor(v) or v < min or v > max then
    error("bad argument #" .. n .. " to '" .. fname .. "' (integer from " .. min .. " to "
      .. max .. " expected, got " .. (type(v) == "number" and tostring(v) or type(v)) .. ")", 3)
  end
end

-- Sends this request to a configured upstream instead of the service's
-- (access). Returns true, or nil, err when there is no such upstream.
function service.set_upstream(host)
  if type(host) ~= "string" then
    arg_error(1, "set_upstream", "string", host)
  end
  local r = check(lshift(1, ACCESS), "sluice.service.set_upstream")
  local i = upstream_index[str_lower(host)]
  if not i then
    return nil, "could not find an upstream named '" .. host .. "'"
  end
  if C.sl_ffi_service_set_upstream(r, i, errp) ~= 0 then
    return nil, ffi_string(errp[0])
  end
  return true
end

-- Sends this request to host:port, bypassing the balancer (rewrite,
-- access). host is an IP address or "localhost": the proxy's connect path
-- does not wait on the resolver yet, so anything else returns nil, err.
function service.set_target(host, port)
  if type(host) ~= "string" or host == "" then
    arg_error(1, "set_target", "non-empty string", host)
  end
  check_int(2, "set_target", port, 1, 65535)
  local r = check(BEFORE_PROXY, "sluice.service.set_target")
  local rc = C.sl_ffi_service_set_target(r, host, #host, nil, 0, port, errp)
  if rc == base.DECLINED then
    -- A name: resolve it (waiting, without blocking the worker), connect to
    -- the address, keep the name for the Host header.
    local ip, err = _M.dns_lookup("sluice.service.set_target", host)
    if not ip then
      return nil, err
    end
    r = cur.r
    rc = C.sl_ffi_service_set_target(r, host, #host, ip, #ip, port, errp)
  end
  if rc ~= 0 then
    return nil, ffi_string(errp[0])
  end
  return true
end

-- Replaces the service's timeouts for this request, in milliseconds, in
-- Kong's order (rewrite, access).
function service.set_timeouts(connect_timeout, write_timeout, read_timeout)
  check_int(1, "set_timeouts", connect_timeout, 1, MAX_TIMEOUT)
  check_int(2, "set_timeouts", write_timeout, 1, MAX_TIMEOUT)
  check_int(3, "set_timeouts", read_timeout, 1, MAX_TIMEOUT)
  local r = check(BEFORE_PROXY, "sluice.service.set_timeouts")
  if C.sl_ffi_service_set_timeouts(r, connect_timeout, write_timeout, read_timeout, errp)
      ~= 0 then
    return nil, ffi_string(errp[0])
  end
  return true
end

-- Replaces the service's retries for this request (rewrite, access).
function service.set_retries(retries)
  check_int(1, "set_retries", retries, 0, 32767)
  local r = check(BEFORE_PROXY, "sluice.service.set_retries")
  if C.sl_ffi_service_set_retries(r, retries, errp) ~= 0 then
    return nil, ffi_string(errp[0])
  end
  return true
end

function service.request.set_method(m)
  if type(m) == "string" and not str_find(m, "^[%u]+$") then
    error("bad argument #1 to 'set_method' (invalid method '" .. m .. "')", 2)
  end
  return upstream_set(0, "set_method", m)
end

function service.request.set_path(p)
  if type(p) == "string" and str_sub(p, 1, 1) ~= "/" then
    error("bad argument #1 to 'set_path' (path must start with '/')", 2)
  end
  if type(p) == "string" and str_find(p, "[%s%c?#]") then
    error("bad argument #1 to 'set_path' (path cannot hold spaces, '?' or '#')", 2)
  end
  return upstream_set(1, "set_path", p)
end

function service.request.set_raw_query(q)
  if type(q) == "string" and str_find(q, "[%s%c#]") then
    error("bad argument #1 to 'set_raw_query' (query cannot hold spaces or '#')", 2)
  end
  return upstream_set(2, "set_raw_query", q)
end

local function escape(s)
  return (str_gsub(tostring(s), "[^%w%-%._~]", function(c)
    return ("%%%02X"):format(c:byte())
  end))
end

-- A table as a query string or form body: keys sorted, true for a bare key,
-- a list for a repeated key, false left out.
local function encode_form(args)
  local keys, key_of = {}, {}
  for k in pairs(args) do
    local name = tostring(k)
    keys[#keys + 1] = name
    key_of[name] = k
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = args[key_of[k]]
    if v == true then
      parts[#parts + 1] = escape(k)
    elseif type(v) == "table" then
      for _, one in ipairs(v) do
        parts[#parts + 1] = escape(k) .. "=" .. escape(one)
      end
    elseif v ~= false then
      parts[#parts + 1] = escape(k) .. "=" .. escape(v)
    end
  end
  return tbl_concat(parts, "&")
end

function service.request.set_query(args)
  if type(args) ~= "table" then
    arg_error(1, "set_query", "table", args)
  end
  return upstream_set(2, "set_query", encode_form(args))
end

function service.request.set_header(name, value)
  check(BEFORE_PROXY, "sluice.service.request.set_header")
  header_op(0, 0, "set_header", name, value)
  return true
end

function service.request.add_header(name, value)
  check(BEFORE_PROXY, "sluice.service.request.add_header")
  header_op(0, 1, "add_header", name, value)
  return true
end

function service.request.clear_header(name)
  check(BEFORE_PROXY, "sluice.service.request.clear_header")
  header_op(0, 2, "clear_header", name)
  return true
end

function service.request.set_headers(headers)
  if type(headers) ~= "table" then
    arg_error(1, "set_headers", "table", headers)
  end
  check(BEFORE_PROXY, "sluice.service.request.set_headers")
  return set_headers(0, headers)
end

-- The status the upstream answered with, or nil when no upstream answered.
function service.response.get_status()
  local r = check(AFTER_HEAD, "sluice.service.response.get_status")
  local st = C.sl_ffi_upstream_status(r)
  return st > 0 and st or nil
end

service.response.get_header = response.get_header
service.response.get_headers = response.get_headers

-- sluice.ctx --------------------------------------------------------------------

-- sluice.ctx.shared: one table per request shared by its plugins;
-- sluice.ctx.plugin: one per request and plugin.
local ctx_ns = setmetatable({}, {
  __index = function(_, k)
    if cur.r == nil then
      return nil
    end
    if k == "shared" then
      local c = get_ctx()
      c.shared = c.shared or {}
      return c.shared
    end
    if k == "plugin" then
      local c = get_ctx()
      local plugins = c.plugins or {}
      c.plugins = plugins
      local name = state.plugin or "?"
      local t = plugins[name]
      if not t then
        t = {}
        plugins[name] = t
      end
      return t
    end
    return nil
  end,
})

-- sluice.log ---------------------------------------------------------------------

-- A copy of a plain table (tables shared within it are copied once).
local function deep_copy(t, seen)
  seen = seen or {}
  if seen[t] then
    return seen[t]
  end
  local out = {}
  seen[t] = out
  for k, v in pairs(t) do
    out[k] = type(v) == "table" and deep_copy(v, seen) or v
  end
  -- Keeps cjson's array marks: an empty list stays [] in JSON.
  return setmetatable(out, getmetatable(t))
end

local LEVELS = { err = 0, warn = 1, notice = 2, info = 3, debug = 4 }
local LEVEL_NAMES = { [0] = "err", "warn", "notice", "info", "debug" }

local log = {}

-- Writes to sluice's error log, tagged with the running plugin's name.
local function write_log(level, ...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    parts[i] = tostring((select(i, ...)))
  end
  local plugin = cur.r ~= nil and state.plugin
  local msg = (plugin and ("[" .. plugin .. "] ") or "") .. tbl_concat(parts)
  local c = cur.task ~= nil and contexts[cur.id]
  local logs = c and c.logs
  if logs then
    logs[#logs + 1] = "[" .. LEVEL_NAMES[level] .. "] " .. msg
    return
  end
  C.sl_ffi_log(level, msg, #msg)
end
_M.write_log = write_log

for name, level in pairs(LEVELS) do
  log[name] = function(...)
    write_log(level, ...)
  end
end

-- What the serializer hides. Header names (lower-case) whose values are
-- credentials, in the request and in the response.
local SECRET_HEADERS = { authorization = true, ["proxy-authorization"] = true, cookie = true,
                         ["set-cookie"] = true, ["x-api-key"] = true, apikey = true,
                         ["api-key"] = true }
-- Query argument names whose values are credentials, hidden even when the
-- caller asks for query values.
local SECRET_ARGS = { apikey = true, api_key = true, ["api-key"] = true, key = true,
                      access_token = true, id_token = true, refresh_token = true, token = true,
                      jwt = true, password = true, passwd = true, secret = true,
                      client_secret = true, signature = true, sig = true, code = true }
-- Credential fields whose values are secrets wherever they appear (key-auth's
-- key, whatever header or argument carried it).
local SECRET_FIELDS = { "key", "secret", "password" }
local REDACTED = "REDACTED"
local FAILURES = { "connect", "connect timeout", "write", "reset", "write timeout",
                   "read timeout", "invalid response", "status" }
local PATH_CAP = 4096

local log_info = ffi.new("sl_ffi_log_info_t")
local path_buf = ffi.new("char[?]", PATH_CAP)
local path_len = ffi.new("size_t[1]")

-- Per redact list (a config's, shared by its requests): { names = { [lower-case
-- header or argument name] = true }, paths = { { "request", "headers", ... }, ... } }.
local redact_sets = setmetatable({}, { __mode = "k" })

local function redact_set(list)
  local set = redact_sets[list]
  if set then
    return set
  end
  set = { names = {}, paths = {} }
  for _, entry in ipairs(list) do
    if type(entry) ~= "string" or entry == "" then
      error("bad argument #1 to 'serialize' (opts.redact: a list of non-empty strings "
        .. "expected)", 3)
    end
    if str_find(entry, ".", 1, true) then
      local path = {}
      for part in entry:gmatch("[^%.]+") do
        path[#path + 1] = part
      end
      set.paths[#set.paths + 1] = path
    else
      set.names[str_lower(entry)] = true
    end
  end
  redact_sets[list] = set
  return set
end

-- Replaces the value at each path of the set (when it is there) by REDACTED.
local function redact_paths(t, set)
  for _, path in ipairs(set.paths) do
    local node = t
    local n = #path
    for i = 1, n - 1 do
      node = type(node) == "table" and node[path[i]] or nil
    end
    if type(node) == "table" and node[path[n]] ~= nil then
      node[path[n]] = REDACTED
    end
  end
end
_M.redact_paths = function(t, list)
  return redact_paths(t, redact_set(list))
end

-- Does the value (a string or a list of them) hold one of the secrets?
local function holds_secret(v, secrets)
  if secrets == nil then
    return false
  end
  if type(v) == "table" then
    for _, e in ipairs(v) do
      if holds_secret(e, secrets) then
        return true
      end
    end
    return false
  end
  if type(v) ~= "string" then
    return false
  end
  for i = 1, #secrets do
    if str_find(v, secrets[i], 1, true) then
      return true
    end
  end
  return false
end

-- Hides the credential headers, those named in `names`, and any whose value
-- holds a secret.
local function redact_headers(headers, names, secrets)
  for name, v in pairs(headers) do
    if SECRET_HEADERS[name] or (names and names[name]) or holds_secret(v, secrets) then
      headers[name] = REDACTED
    end
  end
  return headers
end

local function ms(seconds)
  return math_floor(seconds * 1000 + 0.5)
end

-- The request as the log plugins serialize it, in the shape of Kong's basic
-- serializer. opts (optional): redact = { header or argument names, and
-- dotted paths into the result }, query_values = true to keep the values of
-- query arguments (credential names stay hidden). See docs/pdk.md.
function log.serialize(opts)
  local r = check(REQ_PHASES, "sluice.log.serialize")
  if opts ~= nil and type(opts) ~= "table" then
    arg_error(1, "serialize", "table or nil", opts)
  end
  local set = opts and opts.redact and redact_set(opts.redact)
  local names = set and set.names
  local phase = cur.phase
  local ctx = contexts[cur.id]
  local consumer, credential = ctx and ctx.consumer, ctx and ctx.credential

  -- The values of the credential that authenticated the request are
  -- secrets wherever the client put them.
  local secrets
  if type(credential) == "table" then
    for _, f in ipairs(SECRET_FIELDS) do
      local v = credential[f]
      if type(v) == "string" and #v >= 4 then
        secrets = secrets or {}
        secrets[#secrets + 1] = v
      end
    end
  end

  local info = log_info
  C.sl_ffi_log_info(r, info, path_buf, PATH_CAP, path_len, errp)
  local now = info.now
  local upstream_uri = path_len[0] > 0 and ffi_string(path_buf, path_len[0]) or nil

  local query = request.get_query()
  local keep_values = opts and opts.query_values
  for k, v in pairs(query) do
    local lk = type(k) == "string" and str_lower(k) or k
    if not keep_values or SECRET_ARGS[lk] or (names and names[lk]) or holds_secret(v, secrets)
        or v == true then
      query[k] = v == true and true or REDACTED
    end
  end

  local host = request.get_host()
  local port = request.get_port()
  local path = request.get_raw_path()
  local out = {
    request = {
      method = request.get_method(),
      uri = path,
      url = "http://" .. (host ~= "" and host or "localhost")
        .. (port ~= 80 and (":" .. port) or "") .. path,
      querystring = query,
      headers = redact_headers(request.get_headers(), names, secrets),
      size = info.request_size,
    },
    client_ip = client.get_forwarded_ip(),
    started_at = info.start * 1000,
  }
  local route = state.route
  if phase >= ACCESS and route then
    out.route = deep_copy(route.entity)
    out.service = route.service_entity and deep_copy(route.service_entity)
    out.upstream_uri = upstream_uri
  end

  local upstream_status = info.upstream_status
  if phase >= HEADER_FILTER then
    out.response = { status = info.status, size = info.bytes_sent,
                     headers = redact_headers(response.get_headers(), names, secrets) }
    out.source = response.get_source()
    if upstream_status > 0 then
      out.upstream_status = upstream_status
    end
  end

  local ntries = info.nattempts
  if ntries > 0 then
    local tries = table_new(ntries, 0)
    for i = 0, ntries - 1 do
      local a = info.attempts[i]
      local until_ = a.header > 0 and a.header or (a.finish > 0 and a.finish or now)
      local t = { ip = ffi_string(a.ip), port = a.port, balancer_start = a.start * 1000,
                  latency = ms(until_ - a.start) }
      if a.failure > 0 then
        t.state = "failed"
        t.reason = FAILURES[a.failure]
        if a.status > 0 then
          t.code = a.status
        end
      end
      tries[i + 1] = t
    end
    out.tries = tries
    out.try_count = info.tries
  end

  local total = now - info.start
  local proxy = info.upstream_header > 0 and info.upstream_header - info.upstream_start or nil
  local receive = info.upstream_header > 0 and now - info.upstream_header or 0
  local before = info.upstream_start > 0 and info.upstream_start - info.start or total
  out.latencies = { request = ms(total), proxy = proxy and ms(proxy) or -1,
                    kong = ms(before + receive), receive = ms(receive) }

  -- Who the request is from, as Kong's log serializer says it.
  if consumer then
    out.consumer = deep_copy(consumer)
  end
  if credential then
    local of = type(credential.consumer) == "table" and credential.consumer.id
    out.authenticated_entity = { id = credential.id,
                                 consumer_id = credential.consumer_id or of
                                   or (consumer and consumer.id) }
  end
  -- What plugins added with set_serialize_value.
  local sv = ctx and ctx.serialize
  if sv then
    for _, k in ipairs(sv.keys) do
      if sv[k] ~= nil then
        out[k] = sv[k]
      end
    end
  end
  if set then
    redact_paths(out, set)
  end
  return out
end

-- How many times this worker was told to reopen its log files (SIGUSR1).
function log.generation()
  return C.sl_ffi_log_generation()
end

-- The access log's own fields: a plugin's value may not take their names.
local ACCESS_LOG_FIELDS = {
  time = true, request_id = true, client_ip = true, method = true, path = true,
  status = true, bytes_sent = true, request_bytes = true, latency_ms = true,
  upstream_latency_ms = true, route = true, service = true, upstream = true,
}
local MAX_SERIALIZE_VALUES = 32
local MAX_SERIALIZE_BYTES = 4096

-- Adds key = value to what sluice.log.serialize returns and to the
-- request's access log line; nil removes it. The context keeps
-- serialize = { keys in the order first set, [key] = value }.
function log.set_serialize_value(key, value)
  if type(key) ~= "string" then
    arg_error(1, "set_serialize_value", "string", key)
  end
  if not str_find(key, "^[%a_][%w_]*$") or #key > 64 then
    error("bad argument #1 to 'set_serialize_value' (a name of letters, digits and _ "
      .. "expected, got '" .. key .. "')", 2)
  end
  if ACCESS_LOG_FIELDS[key] then
    error("bad argument #1 to 'set_serialize_value' ('" .. key .. "' is a field of the "
      .. "access log's own)", 2)
  end
  local vt = type(value)
  if value ~= nil and vt ~= "string" and vt ~= "boolean"
      and (vt ~= "number" or value ~= value or value == math.huge or value == -math.huge) then
    arg_error(2, "set_serialize_value", "string, finite number, boolean or nil", value)
  end
  local r = check(REQ_PHASES, "sluice.log.set_serialize_value")
  local ctx = get_ctx()
  local sv = ctx.serialize
  if not sv then
    sv = { keys = {} }
    ctx.serialize = sv
  end
  if sv[key] == nil then
    if value == nil then
      return true
    end
    if #sv.keys >= MAX_SERIALIZE_VALUES then
      return nil, "too many serialize values (at most " .. MAX_SERIALIZE_VALUES .. ")"
    end
    sv.keys[#sv.keys + 1] = key
  end
  local old = sv[key]
  sv[key] = value
  local parts, n = {}, 0
  for _, k in ipairs(sv.keys) do
    local v = sv[k]
    if v ~= nil then
      n = n + 1
      parts[n] = "," .. cjson.encode(k) .. ":" .. cjson.encode(v)
    end
  end
  local json = tbl_concat(parts)
  if #json > MAX_SERIALIZE_BYTES then
    sv[key] = old
    return nil, "serialize values too large (at most " .. MAX_SERIALIZE_BYTES .. " bytes of JSON)"
  end
  if C.sl_ffi_log_set_fields(r, json, #json, errp) ~= 0 then
    sv[key] = old
    return nil, ffi_string(errp[0])
  end
  return true
end

-- sluice.node / sluice.worker ------------------------------------------------------------

local node = {}

-- One id per sluice node: drawn when the master loads the config, so every
-- worker (forked after) reports the same one.
local node_id
do
  local f = io.open("/proc/sys/kernel/random/uuid", "r")
  node_id = f and f:read("*l") or tostring(os.time())
  if f then
    f:close()
  end
end

function node.get_id()
  return node_id
end

function node.get_hostname()
  local f = io.open("/proc/sys/kernel/hostname", "r")
  local h = f and f:read("*l") or "localhost"
  if f then
    f:close()
  end
  return h
end

function node.get_worker_id()
  return C.sl_ffi_worker_id(int2), int2[0]
end

function node.get_memory_stats()
  return { lua_kb = collectgarbage("count") }
end

-- sluice.worker: this worker process, as OpenResty's ngx.worker.
local worker = {}

-- True once the worker is stopping (a graceful stop runs pending timers
-- once, early: a timer function checks this to know why it runs).
function worker.exiting()
  return C.sl_ffi_worker_exiting() == 1
end

function worker.id()
  return (C.sl_ffi_worker_id(int2))
end

function worker.pid()
  return C.sl_ffi_worker_pid()
end

function worker.count()
  C.sl_ffi_worker_id(int2)
  return int2[0]
end

-- sluice.upstream ---------------------------------------------------------------

local upstream = {}
local target_health = ffi.new("sl_ffi_target_health_t")

-- The health of a configured upstream's targets as every worker sees it
-- (any phase). Returns { health = "HEALTHY" | "UNHEALTHY" | "HEALTHCHECKS_OFF",
-- data = { { target =, address =, weight =, health =, counters = {...},
-- ejections =, ejected_for =, probes = }, ... } } (Kong's
-- /upstreams/NAME/health shape), or nil, err when there is no such upstream.
function upstream.get_health(name)
  if type(name) ~= "string" then
    arg_error(1, "get_health", "string", name)
  end
  local index = upstream_index[str_lower(name)]
  local n = index and C.sl_ffi_upstream_health(index, -1, target_health, int1)
  if not n or n < 0 then
    return nil, "could not find an upstream named '" .. name .. "'"
  end
  local data = table_new(n, 0)
  local checked = false
  for i = 0, n - 1 do
    local t = target_health
    C.sl_ffi_upstream_health(index, i, t, int1)
    local health = ffi_string(t.health)
    checked = checked or health ~= "HEALTHCHECKS_OFF"
    local host = ffi_string(t.host)
    data[i + 1] = {
      target = (str_find(host, ":", 1, true) and "[" .. host .. "]" or host) .. ":" .. t.port,
      address = ffi_string(t.address),
      weight = t.weight,
      health = health,
      counters = { successes = t.successes, http_failures = t.http_failures,
                   tcp_failures = t.tcp_failures, timeouts = t.timeouts,
                   consecutive_5xx = t.consecutive_5xx,
                   consecutive_gateway_failure = t.consecutive_gateway_failure },
      ejections = t.ejections,
      ejected_for = t.ejected_for,
      probes = tonumber(t.probes),
    }
  end
  local health = not checked and "HEALTHCHECKS_OFF" or int1[0] == 1 and "HEALTHY" or "UNHEALTHY"
  return { health = health, data = data }
end

-- Waits and threads ----------------------------------------------------------------
--
-- C resumes a task's coroutine (its "main" one: the plugin chain of a
-- request, or a timer's function) with the id of the wait that completed.
-- Threads are Lua coroutines run inside it: a thread that waits registers
-- the id and yields back to the main coroutine, which hands each completed
-- id to its waiter. Per task (in its context): main = the coroutine,
-- waiters = { [id] = thread }, threads = { thread, ... } of the current
-- phase, where a thread is { co =, done = bool, results = { n =, ok, ... } }.
--
-- In `sluice test` a spec's own code is no task: a call that waits there
-- starts its operation on the main task (sl_ffi_main_task) and blocks in
-- sluice.loop.wait, which runs the event loop until it completes; a thread
-- spawned there is a task of its own (see docs/architecture.md).

local co_running = coroutine.running
local co_create = coroutine.create
local co_resume = coroutine.resume
local co_status = coroutine.status

local wait_seq = 0

local function next_wait_id()
  wait_seq = wait_seq + 1
  if wait_seq >= 0x3fffffff then
    wait_seq = 1
  end
  return wait_seq
end

local function pack(...)
  return { n = select("#", ...), ... }
end

local function run_thread(ctx, t, ...)
  t.results = pack(co_resume(t.co, ...))
  if co_status(t.co) == "dead" then
    t.done = true
    ctx.thread_of[t.co] = nil
    if not t.results[1] then
      write_log(0, "thread failed: ", tostring(t.results[2]))
    end
  end
end

local function dispatch(ctx, id)
  local t = ctx.waiters[id]
  if t then
    ctx.waiters[id] = nil
    run_thread(ctx, t)
  end
end

local function wait_for(ctx, id)
  local plugin, index, route, entry = state.plugin, state.index, state.route, state.entry
  local t = ctx.thread_of[co_running()]
  if not t then
    -- the request's main coroutine
    while true do
      local got = co_yield()
      if got == id then
        break
      end
      dispatch(ctx, got)
    end
  else
    ctx.waiters[id] = t
    co_yield()
  end
  state.plugin, state.index, state.route, state.entry = plugin, index, route, entry
end

-- Called by the runner at the end of rewrite and access: the phase is over
-- when every thread it spawned is.
function _M.finish_threads(ctx)
  local threads = ctx.threads
  if not threads then
    return
  end
  local i = 1
  while i <= #threads do
    if threads[i].done then
      i = i + 1
    else
      dispatch(ctx, co_yield())
    end
  end
  ctx.threads = nil
end

local loop_wait

-- The task a waiting call belongs to and its context; the context is nil on
-- the main task of `sluice test`, where the caller blocks instead.
local function task_ctx(fname)
  local task = cur.task
  if task == nil then
    task = C.sl_ffi_main_task()
    if task ~= nil then
      return nil, task
    end
  end
  check(WAITABLE, fname)
  local ctx = get_ctx()
  ctx.waiters = ctx.waiters or {}
  ctx.thread_of = ctx.thread_of or setmetatable({}, { __mode = "k" })
  return ctx, task
end

-- The context of a request that waits (rewrite, access): for the waits
-- that belong to a request, such as its body.
local function request_ctx(fname)
  check(BEFORE_PROXY, fname)
  local ctx = get_ctx()
  ctx.waiters = ctx.waiters or {}
  ctx.thread_of = ctx.thread_of or setmetatable({}, { __mode = "k" })
  return ctx
end

local function wait(ctx, id)
  if ctx then
    return wait_for(ctx, id)
  end
  loop_wait = loop_wait or require("sluice.loop").wait
  loop_wait(id)
end

-- sluice.sleep: waits without blocking the worker (rewrite, access, timers).
local function sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    arg_error(1, "sleep", "non-negative number", seconds)
  end
  local ctx, task = task_ctx("sluice.sleep")
  local id = next_wait_id()
  if C.sl_ffi_sleep(task, seconds, id, errp) ~= 0 then
    error("sluice.sleep: " .. ffi_string(errp[0]), 2)
  end
  wait(ctx, id)
  return true
end

-- Resolves a host name through the worker's DNS cache, waiting if it must:
-- the address as text, or nil, "could not resolve 'NAME': reason".
local dns_buf = ffi.new("char[64]")
function _M.dns_lookup(fname, name)
  local ctx, task = task_ctx(fname)
  local id = next_wait_id()
  local rc = C.sl_ffi_dns_resolve(task, id, name, #name, dns_buf, 64, errp)
  if rc == base.AGAIN then
    wait(ctx, id)
    rc = C.sl_ffi_dns_result(task, id, dns_buf, 64, errp)
  end
  if rc ~= 0 then
    return nil, "could not resolve '" .. name .. "': " .. ffi_string(errp[0])
  end
  return ffi_string(dns_buf)
end

-- sluice.http ------------------------------------------------------------------------

local http = {}

local DEFAULT_MAX_SIZE = 8 * 1024 * 1024

local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then
    return nil, "invalid URL '" .. url .. "'"
  end
  scheme = str_lower(scheme)
  if scheme == "https" then
    return nil, "https is not supported yet (TLS comes in a later release)"
  end
  if scheme ~= "http" then
    return nil, "unsupported scheme '" .. scheme .. "'"
  end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  local host, port
  if authority:sub(1, 1) == "[" then
    host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
  else
    host, port = authority:match("^([^:]+):?(%d*)$")
  end
  if not host or host == "" then
    return nil, "invalid URL '" .. url .. "': no host"
  end
  port = tonumber(port) or 80
  if port < 1 or port > 65535 then
    return nil, "invalid port in '" .. url .. "'"
  end
  if path == "" or path:sub(1, 1) == "?" then
    path = "/" .. path
  end
  path = path:gsub("#.*$", "")
  return host, port, path, authority
end

-- Calls another HTTP service without blocking the worker (rewrite, access).
-- opts: { method = "GET", url =, headers = {}, body = string, timeout =
-- seconds (5), max_size = bytes (8 MiB) }. Returns { status, headers
-- (lower-case names), body } or nil, err. Connections are kept alive and
-- reused per worker.
function http.request(opts)
  if type(opts) ~= "table" then
    arg_error(1, "request", "table", opts)
  end
  if type(opts.url) ~= "string" then
    error("bad argument #1 to 'request' (url: string expected, got " .. type(opts.url) .. ")", 2)
  end
  local ctx, task = task_ctx("sluice.http.request")
  local host, port, path, authority = parse_url(opts.url)
  if not host then
    return nil, port
  end
  local method = opts.method or "GET"
  if type(method) ~= "string" or not method:find("^%u+$") then
    error("bad argument #1 to 'request' (method: upper-case token expected)", 2)
  end
  local body = opts.body
  if body ~= nil and type(body) ~= "string" then
    error("bad argument #1 to 'request' (body: string expected, got " .. type(body) .. ")", 2)
  end
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: " .. authority }
  for k, v in pairs(opts.headers or {}) do
    if type(k) ~= "string" or k:find("[^%w!#%$%%&'%*%+%-%.%^_`|~]") then
      error("bad argument #1 to 'request' (invalid header name '" .. tostring(k) .. "')", 2)
    end
    local lk = str_lower(k)
    for _, one in ipairs(type(v) == "table" and v or { v }) do
      one = tostring(one)
      if one:find("[\r\n%z]") then
        error("bad argument #1 to 'request' (header '" .. k .. "' holds CR, LF or NUL)", 2)
      end
      if lk ~= "host" and lk ~= "content-length" and lk ~= "connection"
          and lk ~= "transfer-encoding" then
        lines[#lines + 1] = k .. ": " .. one
      elseif lk == "host" then
        lines[2] = "Host: " .. one
      end
    end
  end
  if body then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  local raw = tbl_concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
  local id = next_wait_id()
  if C.sl_ffi_http_start(task, id, host, #host, port, raw, #raw, method == "HEAD" and 1 or 0,
      tonumber(opts.timeout) or 5, tonumber(opts.max_size) or DEFAULT_MAX_SIZE, errp) ~= 0 then
    return nil, ffi_string(errp[0])
  end
  wait(ctx, id)
  if C.sl_ffi_http_result(task, id, int1, int2, str1, len1, errp) ~= 0 then
    local err = ffi_string(errp[0])
    C.sl_ffi_http_free(task, id)
    return nil, err
  end
  local res = { status = int1[0], headers = {}, body = ffi_string(str1[0], len1[0]) }
  local nheaders = int2[0]
  for i = 0, nheaders - 1 do
    if C.sl_ffi_http_header_at(task, id, i, str1, len1, str2, len2) == 0 then
      add_value(res.headers, str_lower(ffi_string(str1[0], len1[0])),
        ffi_string(str2[0], len2[0]))
    end
  end
  C.sl_ffi_http_free(task, id)
  return res
end

-- sluice.redis: the module does the protocol; the PDK lends it the scheduler.
local redis = require("sluice.redis")
redis.set_hooks({
  begin = function(what)
    local ctx, task = task_ctx("sluice." .. what)
    return ctx, task, next_wait_id()
  end,
  wait = wait,
  resolve = function(name)
    return _M.dns_lookup("sluice.redis.connect", name)
  end,
})

-- Bodies -------------------------------------------------------------------------

local RESP_BODY_TOO_LARGE = "response body did not fit into response body buffer, consider "
  .. "raising 'response_body_buffer_size'"
local NOT_BUFFERED = "the response body is not buffered (call "
  .. "sluice.service.request.enable_buffering in access)"

-- The media type of a Content-Type value, lower-case, without parameters.
local function media_type(ctype)
  return str_lower((ctype or ""):match("^%s*([^;%s]*)") or "")
end

-- A multipart/form-data body -> { name = value } (a repeated name: a list), or
-- nil, err. File parts give their content like any other part.
local function decode_multipart(raw, ctype)
  local boundary = ctype:match(";%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=\"([^\"]+)\"")
    or ctype:match(";%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
  if not boundary then
    return nil, "invalid multipart body: no boundary in the Content-Type"
  end
  local delim = "--" .. boundary
  local args = {}
  local at = str_find(raw, delim, 1, true)
  if not at then
    return nil, "invalid multipart body: no part starts with the boundary"
  end
  at = at + #delim
  while true do
    if str_sub(raw, at, at + 1) == "--" then
      return args
    end
    local head_end = str_find(raw, "\r\n\r\n", at, true)
    if not head_end then
      return nil, "invalid multipart body: a part has no header end"
    end
    local head = str_sub(raw, at, head_end - 1)
    local next_at = str_find(raw, "\r\n" .. delim, head_end + 4, true)
    if not next_at then
      return nil, "invalid multipart body: a part has no closing boundary"
    end
    local name = head:match("[Nn][Aa][Mm][Ee]=\"([^\"]*)\"")
      or head:match("[Nn][Aa][Mm][Ee]=([^;%s]+)")
    if name then
      add_value(args, name, str_sub(raw, head_end + 4, next_at - 1))
    end
    at = next_at + 2 + #delim
  end
end

-- Decodes raw by the media type of ctype: JSON, form or multipart. Returns
-- value, nil, mime or nil, err.
local function decode_body(raw, ctype)
  local mime = media_type(ctype)
  if mime == "application/json" or str_sub(mime, -5) == "+json" then
    local v, jerr = cjson.decode(raw)
    if v == nil then
      return nil, "invalid JSON body: " .. tostring(jerr)
    end
    return v, nil, "application/json"
  end
  if mime == "application/x-www-form-urlencoded" then
    return decode_args(raw), nil, mime
  end
  if mime == "multipart/form-data" then
    local v, err = decode_multipart(raw, ctype)
    if not v then
      return nil, err
    end
    return v, nil, mime
  end
  return nil, "unsupported content type '" .. (ctype or "") .. "'"
end

-- The whole request body; waits (without blocking the worker) for the rest
-- of it to arrive.
function request.get_raw_body()
  local ctx = request_ctx("sluice.request.get_raw_body")
  while true do
    local id = next_wait_id()
    local rc = C.sl_ffi_req_read_body(cur.r, id, str1, len1, errp)
    if rc == base.OK then
      return ffi_string(str1[0], len1[0])
    elseif rc == base.DECLINED then
      return ""
    elseif rc == base.ERROR then
      return nil, ffi_string(errp[0])
    end
    wait_for(ctx, id)
  end
end

function request.get_body(mimetype)
  if mimetype ~= nil and type(mimetype) ~= "string" then
    arg_error(1, "get_body", "string", mimetype)
  end
  check(BEFORE_PROXY, "sluice.request.get_body")
  local ctype = mimetype or request.get_header("content-type") or ""
  local raw, err = request.get_raw_body()
  if not raw then
    return nil, err
  end
  return decode_body(raw, ctype)
end

-- Lowers the most bytes this request's body may have (rewrite, access); the
-- C core answers 413 past it, for Content-Length and chunked bodies alike.
-- true, or nil, err when the body is already known to be larger.
function request.set_max_body_size(bytes)
  check_int(1, "set_max_body_size", bytes, 0, 1e15)
  local r = check(BEFORE_PROXY, "sluice.request.set_max_body_size")
  local rc = C.sl_ffi_req_set_max_body_size(r, bytes, errp)
  if rc == base.DECLINED then
    return nil, "request body larger than " .. bytes .. " bytes"
  elseif rc ~= base.OK then
    return nil, ffi_string(errp[0])
  end
  return true
end

-- Replaces the body sent upstream; the client's own body is read to its end
-- and dropped first, so its connection can carry the next request.
function service.request.set_raw_body(body)
  if type(body) ~= "string" then
    arg_error(1, "set_raw_body", "string", body)
  end
  local ctx = request_ctx("sluice.service.request.set_raw_body")
  local id = next_wait_id()
  local rc = C.sl_ffi_req_set_body(cur.r, id, body, #body, errp)
  if rc == base.AGAIN then
    wait_for(ctx, id)
  elseif rc ~= base.OK then
    return nil, ffi_string(errp[0])
  end
  return true
end

local function encode_multipart(args, boundary)
  local keys = {}
  for k in pairs(args) do
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = args[k]
    for _, one in ipairs(type(v) == "table" and v or { v }) do
      parts[#parts + 1] = "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\""
        .. k .. "\"\r\n\r\n" .. tostring(one) .. "\r\n"
    end
  end
  parts[#parts + 1] = "--" .. boundary .. "--\r\n"
  return tbl_concat(parts)
end

-- Encodes args by the request's Content-Type (or mimetype, which then also
-- becomes the Content-Type sent upstream) and makes it the upstream body.
function service.request.set_body(args, mimetype)
  if type(args) ~= "table" then
    arg_error(1, "set_body", "table", args)
  end
  if mimetype ~= nil and type(mimetype) ~= "string" then
    arg_error(2, "set_body", "string", mimetype)
  end
  check(BEFORE_PROXY, "sluice.service.request.set_body")
  local ctype = mimetype or request.get_header("content-type")
  local mime = media_type(ctype)
  local body
  if mime == "application/json" or str_sub(mime, -5) == "+json" then
    local err
    body, err = cjson.encode(args)
    if not body then
      error("bad argument #1 to 'set_body' (cannot encode as JSON: " .. tostring(err) .. ")", 2)
    end
  elseif mime == "application/x-www-form-urlencoded" then
    body = encode_form(args)
  elseif mime == "multipart/form-data" then
    local boundary = ctype:match(";%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=\"?([^\";%s]+)")
    if not boundary then
      boundary = "sluice" .. tostring(next_wait_id()) .. tostring(math.random(1e9))
      ctype = "multipart/form-data; boundary=" .. boundary
    end
    body = encode_multipart(args, boundary)
  else
    return nil, "unsupported content type '" .. (ctype or "") .. "'"
  end
  if mimetype then
    header_op(0, 0, "set_body", "Content-Type", ctype)
  end
  return service.request.set_raw_body(body)
end

-- The upstream response is read whole (up to response_body_buffer_size)
-- before header_filter, which can then read and replace it.
function service.request.enable_buffering()
  local r = check(BEFORE_PROXY, "sluice.service.request.enable_buffering")
  C.sl_ffi_resp_enable_buffering(r, errp)
  return true
end

-- The body_filter call in progress; there is one at a time, as body_filter
-- cannot wait, so a streaming filter makes no per-request table. Shape:
-- chunk = the piece as the plugins so far left it (nil: not read from C
-- yet), eof = whether it is the last call, set = whether a plugin replaced it.
local piece = { chunk = nil, eof = false, set = false }

local function load_chunk(r)
  if piece.chunk == nil then
    C.sl_ffi_resp_get_chunk(r, str1, len1, int1, len2)
    piece.chunk = ffi_string(str1[0], len1[0])
    piece.eof = int1[0] == 1
  end
  return piece.chunk, piece.eof
end

local function replace_chunk(s)
  piece.chunk = s
  piece.set = true
end

-- Called by the runner around each body_filter call: the piece is read from
-- C only when a plugin asks; a replacement goes to C once, after the last
-- plugin.
function _M.body_filter_begin()
  piece.chunk, piece.eof, piece.set = nil, false, false
end

function _M.body_filter_end()
  local set, s = piece.set, piece.chunk
  piece.chunk, piece.eof, piece.set = nil, false, false
  if set and C.sl_ffi_resp_set_chunk(cur.r, s, #s, errp) ~= 0 then
    error("body_filter: " .. ffi_string(errp[0]))
  end
end

-- The current piece of the response body and whether it is the last one.
function response.get_chunk()
  local r = check(IN_BODY_FILTER, "sluice.response.get_chunk")
  return load_chunk(r)
end

-- Replaces what the client gets for the current piece ("" sends nothing).
function response.set_chunk(chunk)
  if type(chunk) ~= "string" then
    arg_error(1, "set_chunk", "string", chunk)
  end
  check(IN_BODY_FILTER, "sluice.response.set_chunk")
  replace_chunk(chunk)
  return true
end

-- Kong's body buffering: each call keeps the piece (sending nothing) and
-- returns nil; the last call returns, and sends, the whole body. Each plugin
-- buffers for itself. Past response_body_buffer_size what was kept is sent
-- at once and the rest streams.
-- Shape: ctx.body_buffers[plugin] = { n =, size =, piece, ... } or false
-- (gave up).
function response.get_raw_body()
  local r = check(IN_BODY_FILTER, "sluice.response.get_raw_body")
  local ctx = get_ctx()
  local chunk, eof = load_chunk(r)
  local bufs = ctx.body_buffers
  if not bufs then
    bufs = {}
    ctx.body_buffers = bufs
  end
  local name = state.plugin or "?"
  local b = bufs[name]
  if b == false then
    return nil, RESP_BODY_TOO_LARGE
  end
  if not b then
    b = { n = 0, size = 0 }
    bufs[name] = b
  end
  if chunk ~= "" then
    b.n = b.n + 1
    b[b.n] = chunk
    b.size = b.size + #chunk
    if b.size > tonumber(len2[0]) then
      bufs[name] = false
      replace_chunk(tbl_concat(b, "", 1, b.n))
      return nil, RESP_BODY_TOO_LARGE
    end
  end
  if eof then
    local body = tbl_concat(b, "", 1, b.n)
    bufs[name] = nil
    replace_chunk(body)
    return body
  end
  replace_chunk("")
  return nil
end

-- Replaces the whole response body: in body_filter, pieces before the last
-- send nothing and the last sends body; in header_filter (with buffering),
-- the buffered body is replaced and its Content-Length follows.
function response.set_raw_body(body)
  if type(body) ~= "string" then
    arg_error(1, "set_raw_body", "string", body)
  end
  local r = check(RESPONSE_BODY, "sluice.response.set_raw_body")
  if cur.phase == HEADER_FILTER then
    if C.sl_ffi_resp_set_body(r, body, #body, errp) ~= 0 then
      error("sluice.response.set_raw_body: " .. ffi_string(errp[0]), 2)
    end
    return true
  end
  local _, eof = load_chunk(r)
  replace_chunk(eof and body or "")
  return true
end

-- The upstream's body: whole with buffering on (header_filter, body_filter);
-- without it, in body_filter, as sluice.response.get_raw_body.
function service.response.get_raw_body()
  local r = check(RESPONSE_BODY, "sluice.service.response.get_raw_body")
  local rc = C.sl_ffi_upstream_body(r, str1, len1, errp)
  if rc == base.OK then
    return ffi_string(str1[0], len1[0])
  elseif rc == base.ERROR then
    return nil, ffi_string(errp[0])
  end
  if cur.phase == BODY_FILTER then
    return response.get_raw_body()
  end
  return nil, NOT_BUFFERED
end

function service.response.get_body(mimetype)
  if mimetype ~= nil and type(mimetype) ~= "string" then
    arg_error(1, "get_body", "string", mimetype)
  end
  check(RESPONSE_BODY, "sluice.service.response.get_body")
  local raw, err = service.response.get_raw_body()
  if not raw then
    return nil, err
  end
  return decode_body(raw, mimetype or response.get_header("content-type") or "")
end

local thread = {}

-- Runs fn(...) concurrently with the caller (rewrite, access, timers); it
-- starts at once and runs until it waits. Returns the thread for
-- sluice.thread.wait.
function thread.spawn(fn, ...)
  if type(fn) ~= "function" then
    arg_error(1, "spawn", "function", fn)
  end
  local ctx = task_ctx("sluice.thread.spawn")
  if not ctx then
    -- A spec's own code: the thread is a task of its own on the loop.
    local t = { co = false, done = false }
    require("sluice.timer").spawn(t, fn, ...)
    return t
  end
  local t = { co = co_create(fn), done = false }
  ctx.thread_of[t.co] = t
  ctx.threads = ctx.threads or {}
  ctx.threads[#ctx.threads + 1] = t
  run_thread(ctx, t, ...)
  return t
end

-- Waits until one of the threads ends; returns true and its results, or
-- false and its error. Called from the plugin's own code, not from a thread.
function thread.wait(...)
  local n = select("#", ...)
  if n == 0 then
    error("bad argument #1 to 'wait' (thread expected, got no value)", 2)
  end
  for i = 1, n do
    local t = select(i, ...)
    if type(t) ~= "table" or t.co == nil then
      arg_error(i, "wait", "thread", t)
    end
  end
  local ctx = task_ctx("sluice.thread.wait")
  if ctx and ctx.thread_of[co_running()] then
    error("sluice.thread.wait is called from the plugin's code, not from a thread", 2)
  end
  while true do
    for i = 1, n do
      local t = select(i, ...)
      if t.done then
        return unpack(t.results, 1, t.results.n)
      end
    end
    if ctx then
      dispatch(ctx, co_yield())
    else
      require("sluice.loop").step()
    end
  end
end

-- Waits for every thread given and returns their results in order:
-- { ok, ... } per thread.
function thread.wait_all(...)
  local out = {}
  for i = 1, select("#", ...) do
    out[i] = pack(thread.wait((select(i, ...))))
  end
  return out
end

-- sluice.plugin: about the running plugin instance.
local plugin_ns = {}

function plugin_ns.get_scope()
  check(REQ_PHASES, "sluice.plugin.get_scope")
  local e = state.entry
  return e and e.scope
end

-- sluice.upstream: the state the upstream-protection plugins keep.
-- The circuit-breaker plugin's state for a service (and a route, for an
-- instance attached to that route): { state, failures, requests, opened_at },
-- or nil when no breaker has seen that service yet.
function upstream.get_breaker(service_name, route_name)
  if type(service_name) ~= "string" or service_name == "" then
    arg_error(1, "get_breaker", "non-empty string", service_name)
  end
  if route_name ~= nil and type(route_name) ~= "string" then
    arg_error(2, "get_breaker", "string", route_name)
  end
  local ok, breaker = pcall(require, "sluice.plugins.circuit-breaker.breaker")
  if not ok then
    return nil, "the circuit-breaker plugin is not available: " .. tostring(breaker)
  end
  return breaker.get(route_name and (route_name .. "@" .. service_name) or service_name)
end

-- The current wall-clock time in seconds, with sub-millisecond precision.
local function now()
  return C.sl_ffi_now()
end

local timer_mod = require("sluice.timer")

-- sluice.router: the route and service the request matched (Kong's entity
-- shapes, built once at load and shared by every request: read them, do not
-- change them). nil before routing (rewrite) and in timers.
local router = {}
local ROUTED = lshift(1, ACCESS) + lshift(1, HEADER_FILTER) + lshift(1, BODY_FILTER)
  + lshift(1, LOG)

function router.get_route()
  check(ROUTED, "sluice.router.get_route")
  local route = state.route
  return route and route.entity
end

function router.get_service()
  check(ROUTED, "sluice.router.get_service")
  local route = state.route
  return route and route.service_entity
end

-- sluice.db.NAME: the credential collections the auth plugins declared
-- (consumers.lua); nil for any other name.
local db = setmetatable({}, { __index = function(_, kind)
  return consumers.dao(kind)
end })

_M.sluice = {
  db = db,
  request = request,
  router = router,
  response = response,
  service = service,
  plugin = plugin_ns,
  upstream = upstream,
  client = client,
  ctx = ctx_ns,
  log = log,
  json = cjson,
  node = node,
  worker = worker,
  sleep = sleep,
  now = now,
  thread = thread,
  http = http,
  redis = { connect = redis.connect, null = redis.null },
  shared = require("sluice.shared"),
  timer = { at = timer_mod.at, every = timer_mod.every, cancel = timer_mod.cancel },
  crypto = require("sluice.crypto"),
  version = "0.1.0",
}

-- The global every plugin sees.
rawset(_G, "sluice", _M.sluice)

return _M
