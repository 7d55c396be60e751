-- log_entry.lua: what the log plugins (http-log, file-log) write per request:
-- sluice.log.serialize, then custom_fields_by_lua, then the `redact` list again.
--
--   local log_entry = require("sluice.log_entry")
--   schema:  { custom_fields_by_lua = log_entry.custom_fields_schema() },
--            { redact = log_entry.redact_schema() }
--   per request (log phase):  local entry = log_entry.build(conf)
--
-- custom_fields_by_lua (Kong's): field name -> Lua code whose return value
-- becomes that field of the entry (nil removes it; a dotted name reaches
-- into nested tables: "request.tenant"). The code is compiled once per
-- config and runs in a sandbox: `sluice` (the PDK, whose request-changing
-- functions refuse in the log phase) and the safe standard functions; no
-- io, os.execute, require, load or globals (assignments to undeclared
-- variables fail). An error is logged and leaves the field out.

local pdk = require("sluice.pdk")

local sluice = sluice

local error = error
local ipairs = ipairs
local loadstring = loadstring
local pairs = pairs
local pcall = pcall
local setfenv = setfenv
local setmetatable = setmetatable
local tostring = tostring
local type = type
local str_find = string.find
local str_gmatch = string.gmatch
local tbl_sort = table.sort

local _M = {}

-- Read-only views of the standard libraries a custom field may use.
local function read_only(t, name)
  return setmetatable({}, {
    __index = t,
    __newindex = function()
      error("custom_fields_by_lua: '" .. name .. "' is read-only", 2)
    end,
    __metatable = false,
  })
end

local SANDBOX_BASE = {
  string = read_only(string, "string"),
  table = read_only(table, "table"),
  math = read_only(math, "math"),
  os = read_only({ time = os.time, date = os.date, clock = os.clock }, "os"),
  tonumber = tonumber, tostring = tostring, type = type, pairs = pairs, ipairs = ipairs,
  next = next, select = select, unpack = unpack, pcall = pcall, error = error,
  assert = assert, rawget = rawget, rawequal = rawequal,
}

-- One environment per compiled chunk: the base, plus `sluice`, and nothing
-- written to it.
local function sandbox()
  return setmetatable({}, {
    __index = function(_, k)
      if k == "sluice" then
        return sluice
      end
      return SANDBOX_BASE[k]
    end,
    __newindex = function(_, k)
      error("custom_fields_by_lua: assignment to undeclared global '" .. tostring(k) .. "'", 2)
    end,
  })
end

local function compile_one(name, code)
  local fn, err = loadstring(code, "=custom_fields_by_lua[" .. name .. "]")
  if not fn then
    return nil, err
  end
  setfenv(fn, sandbox())
  return fn
end

-- The schema check of a custom_fields_by_lua map: every name usable, every
-- code compiles.
local function check_custom_fields(map)
  for name, code in pairs(map) do
    if str_find(name, "^%.") or str_find(name, "%.$") or str_find(name, "%.%.") then
      return nil, "invalid field name '" .. name .. "'"
    end
    local ok, err = compile_one(name, code)
    if not ok then
      return nil, "field '" .. name .. "': invalid Lua: " .. err
    end
  end
  return true
end

function _M.custom_fields_schema()
  return { type = "map", keys = { type = "string", len_min = 1 },
           values = { type = "string", len_min = 1 }, custom = check_custom_fields,
           description = "Field name (dotted for nested fields) -> Lua code whose return value "
             .. "becomes that field of each entry (nil removes it); compiled at load, run in "
             .. "a sandbox with the sluice PDK." }
end

function _M.redact_schema()
  return { type = "array", default = {}, elements = { type = "string", len_min = 1 },
           description = "More values to write as \"REDACTED\": header and query argument "
             .. "names (any case), and dotted paths into the entry (\"consumer.custom_id\"). "
             .. "Authorization, Cookie and API keys are always redacted." }
end

-- Per config: { { path = { "a", "b" }, fn = compiled code }, ... } in a fixed
-- order (by name), so that "a" is set before "a.b".
local compiled = setmetatable({}, { __mode = "k" })

local function compile(conf)
  local list = {}
  local names = {}
  for name in pairs(conf.custom_fields_by_lua or {}) do
    names[#names + 1] = name
  end
  tbl_sort(names)
  for _, name in ipairs(names) do
    local path = {}
    for part in str_gmatch(name, "[^%.]+") do
      path[#path + 1] = part
    end
    list[#list + 1] = { name = name, path = path,
                        fn = assert(compile_one(name, conf.custom_fields_by_lua[name])) }
  end
  compiled[conf] = list
  return list
end
_M.compile = compile

local function set_path(t, path, v)
  local n = #path
  for i = 1, n - 1 do
    local k = path[i]
    local nxt = t[k]
    if type(nxt) ~= "table" then
      if v == nil then
        return
      end
      nxt = {}
      t[k] = nxt
    end
    t = nxt
  end
  t[path[n]] = v
end

-- Per config: the options sluice.log.serialize gets.
local serialize_opts = setmetatable({}, { __mode = "k" })

-- The entry for the current request (log phase), as a table.
function _M.build(conf)
  local opts = serialize_opts[conf]
  if not opts then
    opts = { redact = conf.redact or {}, query_values = conf.query_values or nil }
    serialize_opts[conf] = opts
  end
  local entry = sluice.log.serialize(opts)
  local fields = compiled[conf] or compile(conf)
  if #fields > 0 then
    for i = 1, #fields do
      local f = fields[i]
      local ok, v = pcall(f.fn)
      if ok then
        set_path(entry, f.path, v)
      else
        sluice.log.err("custom_fields_by_lua[", f.name, "] failed: ", tostring(v))
      end
    end
    -- The redact list wins over custom fields too.
    if #opts.redact > 0 then
      pdk.redact_paths(entry, opts.redact)
    end
  end
  return entry
end

return _M
