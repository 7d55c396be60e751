-- template.lua: Kong's `$(...)` value templates, compiled at config load, rendered per request.
--
--   local tpl = assert(template.compile("Bearer $(headers.x_token)"))
--   local st = {}                      -- one per request: caches what renders read
--   local value = template.render(tpl, st)
--
-- compile turns a template into a list of literal pieces and accessors. A
-- string without `$(` compiles to itself, so rendering it costs nothing. An
-- accessor is one of the forms Kong documents, read straight from the PDK:
--
--   $(headers.x_tenant)  $(headers["X-Tenant"])     the client's header (first value)
--   $(query_params.id)   $(query_params["id"])      the client's query argument (first value)
--   $(uri_captures.version)  $(uri_captures[1])     the route's regex captures
--   $(shared.NAME)  $(ctx.shared.NAME)              sluice.ctx.shared.NAME (and deeper keys)
--   $(consumer.username)                            the authenticated consumer's field
--
-- Anything else inside `$(...)` is a Lua expression, as in Kong
-- (`$(query_params.user or "anonymous")`): it is compiled once, runs in a
-- sandbox that holds only the variables above (`headers` is the table of
-- every header, a repeated one as a list; `query_params`, `uri_captures`
-- with both numbered and named captures, `shared`, `ctx`, `consumer`) and
-- the safe standard functions (string, table, math, tonumber, tostring,
-- type, pairs, ipairs, ...), and cannot assign globals.
--
-- Rendering follows Kong's (penlight's) rules: nil and false render as "",
-- other values with tostring, except a list, which renders as its values
-- joined with ", " (Kong would print "table: 0x..."). `$(` starts a template
-- only when its parentheses balance; there is no escape character: write
-- `$('$(literal)')` for a literal `$(`, as Kong's documentation says.

local sluice = sluice

local error = error
local getmetatable = getmetatable
local next = next
local ipairs = ipairs
local loadstring = loadstring
local pairs = pairs
local pcall = pcall
local rawget = rawget
local setfenv = setfenv
local setmetatable = setmetatable
local str_find = string.find
local str_gsub = string.gsub
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub
local tbl_concat = table.concat
local tonumber = tonumber
local tostring = tostring
local type = type

local ROOTS = {
  headers = true, query_params = true, uri_captures = true, shared = true, consumer = true,
  ctx = true,
}
local ROOT_LIST = "headers, query_params, uri_captures, shared, ctx.shared, consumer"

local _M = {}

-- The safe globals of the expression sandbox: Kong's sandbox environment.
local SAFE = {}
do
  for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "select",
                          "tonumber", "tostring", "type", "unpack", "xpcall" }) do
    SAFE[name] = _G[name]
  end
  local function copy(t, skip)
    local c = {}
    for k, v in pairs(t) do
      if not (skip and skip[k]) then
        c[k] = v
      end
    end
    return c
  end
  SAFE.string = copy(string, { dump = true })
  SAFE.table = copy(table)
  SAFE.math = copy(math, { randomseed = true })
  SAFE.os = { clock = os.clock, date = os.date, difftime = os.difftime, time = os.time }
end

-- Values ---------------------------------------------------------------------------

local function is_list(t)
  return t[1] ~= nil or next(t) == nil
end

-- A rendered value as a string, by the rules in the header.
local function as_string(v)
  local t = type(v)
  if t == "string" then
    return v
  elseif v == nil or v == false then
    return ""
  elseif t == "table" and is_list(v) then
    local parts = {}
    for i = 1, #v do
      parts[i] = as_string(v[i])
    end
    return tbl_concat(parts, ", ")
  end
  return tostring(v)
end

-- Per-request caches, filled on first use: st.query, st.captures, st.consumer.
local function captures(st)
  local c = st.captures
  if c == nil then
    c = sluice.request.get_uri_captures()
    st.captures = c
  end
  return c
end

local function consumer(st)
  local c = st.consumer
  if c == nil then
    c = sluice.client.get_consumer() or false
    st.consumer = c
  end
  return c or nil
end

-- Walks keys a.k[2], a.k[3], ... from a table; nil when a step is not a table.
local function walk(v, a, from)
  for i = from, a.n do
    if type(v) ~= "table" then
      return nil
    end
    v = v[a[i]]
  end
  return v
end

-- Accessors: a = { get = one of these, n = #keys, key1, key2, ... }.
local function get_header(a)
  return sluice.request.get_header(a[1])
end

local function get_query(a)
  return sluice.request.get_query_arg(a[1])
end

local function get_named_capture(a, st)
  return captures(st).named[a[1]]
end

local function get_unnamed_capture(a, st)
  return captures(st).unnamed[a[1]]
end

local function get_shared(a)
  local shared = sluice.ctx.shared
  return shared and walk(shared, a, 1)
end

local function get_consumer(a, st)
  local c = consumer(st)
  return c and walk(c, a, 1)
end

-- Expressions ------------------------------------------------------------------------

-- The render state of the expression running now; renders never yield, so
-- one module-level slot is enough.
local current_st

-- headers["X-Tenant"] and headers.x_tenant both find x-tenant.
local HEADERS_MT = {
  __index = function(t, k)
    if type(k) ~= "string" then
      return nil
    end
    local lk = str_gsub(str_lower(k), "_", "-")
    if lk == k then
      return nil
    end
    return rawget(t, lk)
  end,
}

local LAZY = {
  headers = function()
    return setmetatable(sluice.request.get_headers(), HEADERS_MT)
  end,
  query_params = function()
    return sluice.request.get_query()
  end,
  uri_captures = function(st)
    local c = captures(st)
    local all = {}
    for k, v in pairs(c.named) do
      all[k] = v
    end
    for i, v in ipairs(c.unnamed) do
      all[i] = v
    end
    return all
  end,
  shared = function()
    return sluice.ctx.shared
  end,
  ctx = function()
    return { shared = sluice.ctx.shared }
  end,
  consumer = function(st)
    return consumer(st)
  end,
}

-- The environment of every expression: variables from the current render
-- state (computed once per request each), then the safe globals.
local ENV = setmetatable({}, {
  __index = function(_, k)
    local lazy = LAZY[k]
    if lazy then
      local st = current_st
      local key = "expr_" .. k
      local v = st[key]
      if v == nil then
        v = lazy(st)
        if v == nil then
          v = false
        end
        st[key] = v
      end
      return v or nil
    end
    local vars = current_st and current_st.vars
    local v = vars and vars[k]
    if v ~= nil then
      return v
    end
    return SAFE[k]
  end,
  __newindex = function(_, k)
    error("templates cannot assign variables (tried to set '" .. tostring(k) .. "')", 2)
  end,
})

local function get_expression(a, st)
  current_st = st
  local ok, v = pcall(a.fn)
  current_st = nil
  if not ok then
    error("template $(" .. a.source .. ") failed: " .. tostring(v), 0)
  end
  return v
end

-- Compiling ------------------------------------------------------------------------------

-- Parses an accessor ("headers.x", 'headers["X-Y"]', "uri_captures[1]",
-- "ctx.shared.a.b") into a root and a list of keys, or nil when expr is
-- not one.
local function parse_accessor(expr)
  expr = str_match(expr, "^%s*(.-)%s*$")
  local root, pos = str_match(expr, "^([%a_][%w_]*)()")
  if not root then
    return nil
  end
  local keys = {}
  local len = #expr
  while pos <= len do
    local key, nextpos = str_match(expr, "^%.([%a_][%w_]*)()", pos)
    if not key then
      local q
      q, key, nextpos = str_match(expr, "^%[%s*([\"'])(.-)%1%s*%]()", pos)
      if q then
        if str_find(key, "\\", 1, true) then
          return nil -- escapes: leave them to Lua
        end
      else
        local n
        n, nextpos = str_match(expr, "^%[%s*(%d+)%s*%]()", pos)
        if not n then
          return nil
        end
        key = tonumber(n)
      end
    end
    keys[#keys + 1] = key
    pos = nextpos
  end
  return root, keys
end

-- An accessor for one `$(...)`, or nil, err.
local function get_var(a, st)
  local vars = st.vars
  return vars and walk(vars[a.root], a, 1)
end

local function compile_piece(expr, vars)
  local root, keys = parse_accessor(expr)
  if root and vars and vars[root] and #keys > 0 then
    -- A variable of the caller's (compile's vars): st.vars[root] and deeper keys.
    local a = { n = #keys, get = get_var, root = root }
    for i = 1, a.n do
      a[i] = keys[i]
    end
    return a
  end
  if root and ROOTS[root] then
    if root == "ctx" then
      if keys[1] ~= "shared" then
        return nil, "ctx has only 'shared' (ctx.shared.NAME)"
      end
      root = "shared"
      table.remove(keys, 1)
    end
    -- A whole table ($(consumer), n == 0) is rendered by the expression path below.
    local n = #keys
    if n > 0 and (root == "headers" or root == "query_params" or root == "uri_captures") then
      if n > 1 then
        return nil, root .. " takes one key (" .. root .. ".NAME)"
      end
      local a = { n = 1, keys[1] }
      if root == "headers" then
        if type(a[1]) ~= "string" then
          return nil, "a header name must be a string"
        end
        a.get = get_header
      elseif root == "query_params" then
        a[1] = tostring(a[1])
        a.get = get_query
      elseif type(a[1]) == "number" then
        a.get = get_unnamed_capture
      else
        a.get = get_named_capture
      end
      return a
    elseif n > 0 then
      local a = { n = n, get = root == "shared" and get_shared or get_consumer }
      for i = 1, n do
        a[i] = keys[i]
      end
      return a
    end
  elseif root and not SAFE[root] and #keys > 0 then
    -- A plain accessor on a variable that does not exist: a typo.
    return nil, "unknown template variable '" .. root .. "' (expected one of "
      .. ROOT_LIST .. ")"
  end
  local fn, err = loadstring("return " .. expr, "=template")
  if not fn then
    return nil, "invalid Lua expression: " .. tostring(err):gsub("^template:%d+: ", "")
  end
  setfenv(fn, ENV)
  return { get = get_expression, fn = fn, source = expr }
end

-- Compiles s. Returns s itself when it holds no template (render returns it
-- as is), else a compiled template; nil, err for a template that does not
-- compile (an unknown variable, a Lua syntax error). vars (optional) names
-- variables of the caller's ({ backends = true }): `$(backends.user.id)`
-- then reads st.vars.backends.user.id at render time (and expressions see
-- st.vars.backends as `backends`).
function _M.compile(s, vars)
  if type(s) ~= "string" then
    error("bad argument #1 to 'compile' (string expected, got " .. type(s) .. ")", 2)
  end
  local at = str_find(s, "$(", 1, true)
  if not at then
    return s
  end
  local t = { n = 0 }
  local literal_from = 1
  while at do
    local e = str_match(s, "^%b()()", at + 1)
    if e then
      if at > literal_from then
        t.n = t.n + 1
        t[t.n] = str_sub(s, literal_from, at - 1)
      end
      local expr = str_sub(s, at + 2, e - 2)
      local a, err = compile_piece(expr, vars)
      if not a then
        return nil, "bad template $(" .. expr .. "): " .. err
      end
      t.n = t.n + 1
      t[t.n] = a
      literal_from = e
      at = str_find(s, "$(", e, true)
    else
      at = str_find(s, "$(", at + 2, true)
    end
  end
  if literal_from <= #s then
    t.n = t.n + 1
    t[t.n] = str_sub(s, literal_from)
  end
  if t.n == 1 and type(t[1]) == "string" then
    return t[1]
  end
  return setmetatable(t, _M)
end

-- True when tpl (from compile) needs rendering.
function _M.is_dynamic(tpl)
  return type(tpl) == "table" and getmetatable(tpl) == _M
end

-- Scratch pieces for render; renders never yield, so one buffer is enough.
local parts = {}

-- Renders tpl (from compile) for the current request. st is a table the
-- caller keeps for the request (it caches the query, the captures and the
-- consumer across the renders of one request; st.vars holds the values of
-- compile's vars); pass {} for a one-off.
-- Raises when a Lua expression raises.
function _M.render(tpl, st)
  if type(tpl) == "string" then
    return tpl
  end
  local n = tpl.n
  if n == 1 then
    local a = tpl[1]
    return as_string(a.get(a, st))
  end
  for i = 1, n do
    local p = tpl[i]
    if type(p) == "string" then
      parts[i] = p
    else
      parts[i] = as_string(p.get(p, st))
    end
  end
  return tbl_concat(parts, "", 1, n)
end

-- For the schema language: `custom = template.check` refuses a string that
-- does not compile.
function _M.check(s)
  local tpl, err = _M.compile(s)
  if tpl == nil then
    return nil, err
  end
  return true
end

return _M
