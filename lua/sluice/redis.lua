-- redis.lua: sluice.redis: Redis from plugins without blocking the worker (hiredis async).
--
--   local red, err = sluice.redis.connect({ host = "127.0.0.1", port = 6379 })
--   local n = red:incr("hits")            -- any command, as a method
--   red:init_pipeline(); red:incr("a"); red:expire("a", 60)
--   local results = red:commit_pipeline() -- { 1, 1 }
--   red:set_keepalive()                   -- back to the worker's pool
--
-- Replies: strings, numbers, lists (tables) and sluice.redis.null for nil
-- bulk replies; an error reply returns nil, "ERR ..." (in a pipeline, the
-- element is { false, "ERR ..." }).

local ffi = require("ffi")
local base = require("sluice.ffi")

local C = ffi.C
local errp = base.err
local str1, len1 = base.str1, base.len1
local int1, int2 = base.int1, base.int2
local error = error
local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local setmetatable = setmetatable
local rawget = rawget
local str_sub = string.sub
local str_find = string.find
local str_byte = string.byte
local str_upper = string.upper
local ffi_string = ffi.string
local ipairs = ipairs

local BYTE_NIL, BYTE_INT, BYTE_ARR = str_byte("_"), str_byte(":"), str_byte("*")
local BYTE_ERR, BYTE_STATUS = str_byte("-"), str_byte("+")

local _M = {}

-- The value of a nil bulk reply (a missing key), distinct from Lua's nil.
_M.null = setmetatable({}, { __tostring = function() return "sluice.redis.null" end })
local null = _M.null

-- The scheduler hooks of the PDK (set by pdk.lua): begin(what) returns the
-- scheduler context, the task and a wait id; wait(ctx, id) waits for it.
local hooks

function _M.set_hooks(h)
  hooks = h
end

-- Decodes one serialized reply at pos (see core/redis.c). Returns the value
-- (or false, err for an error reply) and the next position.
local function decode(s, pos)
  local t = str_byte(s, pos)
  if t == BYTE_NIL then
    return null, pos + 1
  end
  if t == BYTE_INT then
    local e = str_find(s, "\n", pos, true)
    return tonumber(str_sub(s, pos + 1, e - 1)), e + 1
  end
  local colon = str_find(s, ":", pos + 1, true)
  local n = tonumber(str_sub(s, pos + 1, colon - 1))
  if t == BYTE_ARR then
    local list = {}
    local p = colon + 1
    for i = 1, n do
      local v, e = decode(s, p)
      if v == false then
        v = { false, e }
        e = select(3, decode(s, p))
      end
      list[i] = v
      p = e
    end
    return list, p
  end
  local v = str_sub(s, colon + 1, colon + n)
  if t == BYTE_ERR then
    return false, v, colon + n + 1
  end
  if t == BYTE_STATUS and v == "OK" then
    return "OK", colon + n + 1
  end
  return v, colon + n + 1
end

-- Returns every reply of the buffer: a list of { ok, value_or_err }.
local function decode_all(s, count)
  local out, pos = {}, 1
  for i = 1, count do
    local v, a, b = decode(s, pos)
    if v == false then
      out[i] = { false, a }
      pos = b
    else
      out[i] = { true, v }
      pos = a
    end
  end
  return out
end

local Conn = {}
-- Instance fields (handle, timeout, pipeline, args) are read with rawget:
-- every other missing key is a command.
Conn.__index = function(_, name)
  local m = Conn[name]
  if m ~= nil then
    return m
  end
  -- Any other method is a Redis command: red:hset("h", "f", "v").
  local cmd = str_upper(name)
  return function(self, ...)
    return self:command(cmd, ...)
  end
end

-- Sends commands ({ { "SET", "k", "v" }, ... }) and waits for their replies.
local function run(self, commands)
  if not rawget(self, "handle") then
    return nil, "closed"
  end
  local nargs = 0
  for _, c in ipairs(commands) do
    nargs = nargs + #c
  end
  local argcs = ffi.new("int[?]", #commands)
  local argv = ffi.new("const char *[?]", nargs)
  local argvlen = ffi.new("size_t[?]", nargs)
  local keep = {}
  local at = 0
  for i, c in ipairs(commands) do
    argcs[i - 1] = #c
    for _, a in ipairs(c) do
      local sarg = type(a) == "string" and a or tostring(a)
      keep[#keep + 1] = sarg
      argv[at] = sarg
      argvlen[at] = #sarg
      at = at + 1
    end
  end
  -- The argument strings must outlive the send (argv points into them).
  self.args = keep
  local ctx, task, id = hooks.begin("redis")
  local rc = C.sl_ffi_redis_send(task, id, self.handle, #commands, argcs, argv, argvlen,
    self.timeout, errp)
  self.args = nil
  if rc ~= 0 then
    return nil, ffi_string(errp[0])
  end
  hooks.wait(ctx, id)
  rc = C.sl_ffi_redis_result(task, id, str1, len1, errp)
  local buf = rc == 0 and ffi_string(str1[0], len1[0]) or nil
  local err = rc ~= 0 and ffi_string(errp[0]) or nil
  C.sl_ffi_redis_op_free(task, id)
  if not buf then
    self.handle = nil
    return nil, err
  end
  return decode_all(buf, #commands)
end

-- Runs one command; returns its value, or nil and the error.
function Conn:command(...)
  local n = select("#", ...)
  if n == 0 or type((...)) ~= "string" then
    error("bad argument #1 to 'command' (command name expected)", 2)
  end
  local pipeline = rawget(self, "pipeline")
  if pipeline then
    pipeline[#pipeline + 1] = { ... }
    return true
  end
  local replies, err = run(self, { { ... } })
  if not replies then
    return nil, err
  end
  local r = replies[1]
  if r[1] then
    return r[2]
  end
  return nil, r[2]
end

function Conn:init_pipeline()
  self.pipeline = {}
end

function Conn:cancel_pipeline()
  self.pipeline = nil
end

-- Sends the queued commands at once; returns their values in order (an
-- error reply as { false, err }), or nil, err when the connection failed.
function Conn:commit_pipeline()
  local cmds = rawget(self, "pipeline")
  self.pipeline = nil
  if not cmds or #cmds == 0 then
    return {}
  end
  local replies, err = run(self, cmds)
  if not replies then
    return nil, err
  end
  local out = {}
  for i, r in ipairs(replies) do
    out[i] = r[1] and r[2] or { false, r[2] }
  end
  return out
end

-- Returns the connection to the worker's pool for the next request.
function Conn:set_keepalive()
  if not rawget(self, "handle") then
    return nil, "closed"
  end
  local h = self.handle
  self.handle = nil
  if C.sl_ffi_redis_keepalive(h) ~= 0 then
    return nil, "the connection cannot be reused"
  end
  return true
end

function Conn:close()
  if rawget(self, "handle") then
    C.sl_ffi_redis_close(self.handle)
    self.handle = nil
  end
  return true
end

-- Connects (or takes a pooled connection): opts = { host = an IP address or
-- a name (default 127.0.0.1; names go through the worker's DNS cache),
-- port = 6379, password =, username = (with password), database = 0,
-- timeout = seconds (1) }.
-- The pool is keyed by host and port: AUTH and SELECT run on new connections
-- only, so one server is used with one password and database.
function _M.connect(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #1 to 'connect' (table expected, got " .. type(opts) .. ")", 2)
  end
  local host = opts.host or "127.0.0.1"
  if type(host) ~= "string" or host == "" then
    error("bad argument #1 to 'connect' (host: non-empty string expected, got "
      .. type(host) .. ")", 2)
  end
  if host == "localhost" then
    host = "127.0.0.1"
  elseif not str_find(host, "^[%d.]+$") and not str_find(host, ":", 1, true) then
    local ip, err = hooks.resolve(host)
    if not ip then
      return nil, err
    end
    host = ip
  end
  local port = tonumber(opts.port) or 6379
  local timeout = tonumber(opts.timeout) or 1
  local ctx, task, id = hooks.begin("redis")
  local rc = C.sl_ffi_redis_connect(task, id, host, port, timeout, int1, int2, errp)
  if rc == base.ERROR then
    return nil, ffi_string(errp[0])
  end
  local self = setmetatable({ handle = int1[0], timeout = timeout }, Conn)
  local fresh = int2[0] == 1
  if rc == base.AGAIN then
    hooks.wait(ctx, id)
    rc = C.sl_ffi_redis_result(task, id, str1, len1, errp)
    local err = rc ~= 0 and ffi_string(errp[0]) or nil
    C.sl_ffi_redis_op_free(task, id)
    if err then
      self.handle = nil
      return nil, err == "connection refused" and ("could not connect to redis at " .. host
        .. ":" .. port .. ": connection refused") or err
    end
  end
  if fresh then
    if opts.password then
      -- With a username, Redis 6's ACL form: AUTH username password.
      local ok, err
      if opts.username then
        ok, err = self:command("AUTH", opts.username, opts.password)
      else
        ok, err = self:command("AUTH", opts.password)
      end
      if not ok then
        self:close()
        return nil, "redis AUTH failed: " .. tostring(err)
      end
    end
    if opts.database and opts.database ~= 0 then
      local ok, err = self:command("SELECT", opts.database)
      if not ok then
        self:close()
        return nil, "redis SELECT failed: " .. tostring(err)
      end
    end
  end
  return self
end

return _M
