-- schema.lua: the schema language: data that declares, validates and normalizes a config value.
--
-- A schema is a plain table. Records list their fields in order, one
-- single-key table per field, as Kong's schemas do:
--
--   {
--     type = "record",
--     fields = {
--       { name = { type = "string", required = true, description = "..." } },
--       { port = { type = "integer", default = 80, between = { 1, 65535 } } },
--       { timeout = { type = "duration", default = "60s" } },
--     },
--     check = function(record) return true end,   -- cross-field rules
--   }
--
-- Types: string, integer, number, boolean, duration (milliseconds, written
-- 60000 or "60s"), size (bytes, written 8192 or "8k"), array (elements =
-- schema), set (an array of unique values), map (keys = schema, values =
-- schema), record (fields = ...), any.
--
-- Attributes (every type): required, default (deep-copied, then normalized
-- like any input), description, nullable, one_of, not_one_of, unique (in a
-- plugin's daos.lua: no two entities of the collection share the value; the
-- config loader checks it and sluice.db indexes it; validate ignores it),
-- custom = function(value) -> true | nil, err, normalize = function(value) ->
-- value (runs right after the type check, before the other attributes).
-- Strings: len_eq, len_min, len_max, match, match_all, match_any, match_none,
-- starts_with, uuid. Numbers, durations and sizes: between = { min, max }, gt.
-- Arrays, sets and maps: len_eq, len_min, len_max. Records: check =
-- function(record) -> true | nil, err [, err_path], entity_checks = {
-- { at_least_one_of = { names } }, { only_one_of = ... },
-- { mutually_exclusive = ... } }, shorthand_fields = { { url = { type =
-- "string", func = function(value) -> { field = value, ... } | nil, err } } }
-- (shorthands that return a table for the same record field are merged, so
-- flat redis_host and redis_port can fill redis = { host, port }).
--
-- A schema with an unknown attribute or a malformed one is a programming
-- error: validate raises it. A value with an unknown field, a wrong type or a
-- failed rule is a user error: validate collects them all and returns them.
--
-- Absent values and nulls: a field whose value is nil, or the null sentinel
-- (`schema.null`, the YAML loader's `~`) when the field is not nullable, is
-- absent: its default fills in, or "required field missing" is reported. A
-- nullable field keeps an explicit null as `schema.null`.

local error = error
local ipairs = ipairs
local next = next
local pairs = pairs
local pcall = pcall
local require = require
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type
local math_floor = math.floor
local math_huge = math.huge
local math_min = math.min
local str_byte = string.byte
local str_find = string.find
local str_format = string.format
local str_gsub = string.gsub
local str_match = string.match
local str_sub = string.sub
local tbl_concat = table.concat
local tbl_sort = table.sort

local MAX_QUOTED = 60
local UUID_PATTERN = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local IDENTIFIER = "^[%a_][%w_%-]*$"

local TYPE_NAMES = {
  string = "a string",
  integer = "an integer",
  number = "a number",
  boolean = "a boolean",
  duration = 'a duration (milliseconds, or a string like "500ms", "60s", "2m", "1h")',
  size = 'a size (bytes, or a string like "512", "8k", "16m", "1g")',
  array = "a list",
  set = "a list of unique values",
  map = "a mapping",
  record = "a mapping",
  any = "a value",
}

local COMMON_ATTRS = {
  type = true, required = true, default = true, description = true, nullable = true,
  custom = true, normalize = true, one_of = true, not_one_of = true, unique = true,
}

local TYPE_ATTRS = {
  string = { len_eq = true, len_min = true, len_max = true, match = true, match_all = true,
             match_any = true, match_none = true, starts_with = true, uuid = true },
  integer = { between = true, gt = true },
  number = { between = true, gt = true },
  duration = { between = true, gt = true },
  size = { between = true, gt = true },
  boolean = {},
  array = { elements = true, len_eq = true, len_min = true, len_max = true },
  set = { elements = true, len_eq = true, len_min = true, len_max = true },
  map = { keys = true, values = true, len_eq = true, len_min = true, len_max = true },
  record = { fields = true, check = true, entity_checks = true, shorthand_fields = true },
  any = {},
}

local DURATION_UNITS = { ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000 }
local SIZE_UNITS = { [""] = 1, k = 1024, m = 1024 * 1024, g = 1024 * 1024 * 1024 }

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
for b = 0, 31 do
  local c = string.char(b)
  if not ESCAPES[c] then
    ESCAPES[c] = str_format("\\x%02x", b)
  end
end
ESCAPES["\127"] = "\\x7f"

local _M = {}

do
  -- The YAML loader's null, when the loader is there (inside sluice it is).
  local ok, yaml = pcall(require, "sluice.yaml")
  _M.null = ok and yaml.null
    or setmetatable({}, { __tostring = function() return "null" end })
end
local NULL = _M.null

-- Schemas already checked by check_schema: schema table -> true.
local checked = setmetatable({}, { __mode = "k" })

-- Value helpers ---------------------------------------------------------------

-- Returns s in double quotes with control characters escaped, cut at
-- MAX_QUOTED bytes.
local function quote(s)
  if #s > MAX_QUOTED then
    return '"' .. str_gsub(str_sub(s, 1, MAX_QUOTED), '[%c"\\]', ESCAPES) .. '..."'
  end
  return '"' .. str_gsub(s, '[%c"\\]', ESCAPES) .. '"'
end
_M.quote = quote

-- The pattern of an HTTP token (RFC 9110): a header name, a method. For
-- `match = schema.HEADER_NAME` in config and plugin schemas.
_M.HEADER_NAME = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"

local function format_number(n)
  if n ~= n then
    return "nan"
  elseif n == math_huge then
    return "inf"
  elseif n == -math_huge then
    return "-inf"
  elseif n == math_floor(n) and n > -1e15 and n < 1e15 then
    return str_format("%d", n)
  end
  return str_format("%.14g", n)
end

-- True when t is a table whose keys are exactly 1..n for some n >= 1.
local function is_list(t)
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  if n == 0 then
    return false
  end
  for i = 1, n do
    if t[i] == nil then
      return false
    end
  end
  return true
end

local function count(t)
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  return n
end

-- Describes a value for "expected X, got Y" messages.
local function describe(v)
  local t = type(v)
  if v == nil or v == NULL then
    return "null"
  elseif t == "string" then
    return "string " .. quote(v)
  elseif t == "number" then
    return "number " .. format_number(v)
  elseif t == "boolean" then
    return "boolean " .. tostring(v)
  elseif t == "table" then
    if next(v) == nil then
      return "an empty mapping or list"
    end
    return is_list(v) and "a list" or "a mapping"
  end
  return t
end
_M.describe = describe

-- Formats a scalar the way it would be written in YAML.
local function scalar(v)
  if type(v) == "string" then
    return quote(v)
  elseif type(v) == "number" then
    return format_number(v)
  end
  return tostring(v)
end
_M.scalar = scalar

local function deep_copy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = deep_copy(x)
  end
  return out
end
_M.deep_copy = deep_copy

local function is_integer(v)
  return type(v) == "number" and v == math_floor(v) and v ~= math_huge and v ~= -math_huge
end

-- Parses a duration: an integer of milliseconds, or a string of one or more
-- NUMBER UNIT terms ("1m30s") with units ms, s, m, h, d. Returns the
-- milliseconds, or nil.
function _M.parse_duration(v)
  if type(v) == "number" then
    return (is_integer(v) and v >= 0) and v or nil
  end
  if type(v) ~= "string" or v == "" then
    return nil
  end
  local total, pos = 0, 1
  while pos <= #v do
    local digits, unit, nxt = str_match(v, "^(%d+)(%a+)()", pos)
    local mul = unit and DURATION_UNITS[unit]
    if not mul then
      return nil
    end
    total = total + tonumber(digits) * mul
    pos = nxt
  end
  return total
end

-- Parses a size: an integer of bytes, or a string of digits with an optional
-- k, m or g suffix (powers of 1024, either case). Returns the bytes, or nil.
function _M.parse_size(v)
  if type(v) == "number" then
    return (is_integer(v) and v >= 0) and v or nil
  end
  if type(v) ~= "string" then
    return nil
  end
  local digits, unit = str_match(v, "^(%d+)([kKmMgG]?)$")
  if not digits then
    return nil
  end
  return tonumber(digits) * SIZE_UNITS[unit:lower()]
end

-- Renders a path element: `.name` for identifiers, `["odd name"]` otherwise.
local function field_path(path, name)
  if type(name) == "string" and str_find(name, IDENTIFIER) then
    return path == "" and name or path .. "." .. name
  end
  return path .. "[" .. scalar(name) .. "]"
end
_M.field_path = field_path

local function index_path(path, i)
  return path .. "[" .. (i - 1) .. "]"
end

-- Returns the display path of a list of Lua keys: {"services", 1, "routes",
-- 2} -> "services[0].routes[1]" (array indices are shown 0-based).
function _M.path_of(keys, first)
  local path = ""
  for i = first or 1, #keys do
    local k = keys[i]
    if type(k) == "number" then
      path = index_path(path, k)
    else
      path = field_path(path, k)
    end
  end
  return path
end

-- Schema checking -------------------------------------------------------------

local function bad_schema(where, msg)
  error("invalid schema at " .. (where == "" and "the root" or where) .. ": " .. msg, 0)
end

local check_schema

-- Returns the name and definition of a single-key table ({ name = def }).
local function single(where, entry, what)
  if type(entry) ~= "table" then
    bad_schema(where, what .. " entries must be single-key tables")
  end
  local name, def = next(entry)
  if type(name) ~= "string" or next(entry, name) ~= nil or type(def) ~= "table" then
    bad_schema(where, what .. " entries must be single-key tables { name = definition }")
  end
  return name, def
end

local function check_list(where, v, attr)
  if type(v) ~= "table" then
    bad_schema(where, "'" .. attr .. "' must be a list")
  end
end

local function check_func(where, v, attr)
  if v ~= nil and type(v) ~= "function" then
    bad_schema(where, "'" .. attr .. "' must be a function")
  end
end

local function check_patterns(where, list, attr)
  check_list(where, list, attr)
  for _, p in ipairs(list) do
    if type(p) ~= "table" or type(p.pattern) ~= "string" or type(p.err) ~= "string" then
      bad_schema(where, "'" .. attr .. "' entries must be { pattern = ..., err = ... }")
    end
  end
end

check_schema = function(s, where, extra)
  if type(s) ~= "table" then
    bad_schema(where, "a schema must be a table")
  end
  local t = s.type
  if type(t) ~= "string" or not TYPE_ATTRS[t] then
    bad_schema(where, "unknown type " .. describe(t))
  end
  for k in pairs(s) do
    if not COMMON_ATTRS[k] and not TYPE_ATTRS[t][k] and not (extra and extra[k]) then
      bad_schema(where, "unknown attribute '" .. tostring(k) .. "' for type " .. t)
    end
  end
  if s.required and s.nullable then
    bad_schema(where, "a field cannot be both required and nullable")
  end
  check_func(where, s.custom, "custom")
  check_func(where, s.normalize, "normalize")
  check_func(where, s.check, "check")
  if s.one_of ~= nil then
    check_list(where, s.one_of, "one_of")
  end
  if s.not_one_of ~= nil then
    check_list(where, s.not_one_of, "not_one_of")
  end
  if s.between ~= nil and (type(s.between) ~= "table" or type(s.between[1]) ~= "number"
      or type(s.between[2]) ~= "number") then
    bad_schema(where, "'between' must be { min, max }")
  end
  for _, attr in ipairs({ "match_all", "match_none" }) do
    if s[attr] ~= nil then
      check_patterns(where, s[attr], attr)
    end
  end
  if s.match_any ~= nil and (type(s.match_any) ~= "table"
      or type(s.match_any.patterns) ~= "table" or type(s.match_any.err) ~= "string") then
    bad_schema(where, "'match_any' must be { patterns = { ... }, err = ... }")
  end

  if t == "array" or t == "set" then
    if s.elements == nil then
      bad_schema(where, "type " .. t .. " needs 'elements'")
    end
    check_schema(s.elements, where .. "[]")
  elseif t == "map" then
    if s.values == nil then
      bad_schema(where, "type map needs 'values'")
    end
    if s.keys ~= nil then
      check_schema(s.keys, where .. "{key}")
    end
    check_schema(s.values, where .. "{}")
  elseif t == "record" then
    check_list(where, s.fields, "fields")
    local names = {}
    for _, entry in ipairs(s.fields) do
      local name, def = single(where, entry, "fields")
      if names[name] then
        bad_schema(where, "duplicate field '" .. name .. "'")
      end
      names[name] = true
      check_schema(def, field_path(where, name))
    end
    for _, entry in ipairs(s.shorthand_fields or {}) do
      local name, def = single(where, entry, "shorthand_fields")
      if names[name] then
        bad_schema(where, "shorthand '" .. name .. "' has the name of a field")
      end
      if type(def.func) ~= "function" then
        bad_schema(field_path(where, name), "a shorthand field needs 'func'")
      end
      check_schema(def, field_path(where, name), { func = true })
    end
    for _, entry in ipairs(s.entity_checks or {}) do
      local kind, list = single(where, entry, "entity_checks")
      if kind ~= "at_least_one_of" and kind ~= "only_one_of" and kind ~= "mutually_exclusive" then
        bad_schema(where, "unknown entity check '" .. kind .. "'")
      end
      for _, name in ipairs(list) do
        if not names[name] then
          bad_schema(where, "entity check " .. kind .. " names unknown field '" .. name .. "'")
        end
      end
    end
  end
end

-- Checks that s is a well-formed schema; raises an error naming the place
-- and the problem otherwise. Returns true.
function _M.check_schema(s)
  if not checked[s] then
    check_schema(s, "")
    checked[s] = true
  end
  return true
end

-- Validation ------------------------------------------------------------------

-- A validation run keeps its errors and the stack of Lua keys from the root
-- to the value being looked at:
--   ctx = { errors = { { path =, message =, keys = }, ... }, keys = { ... }, nkeys = n }

local function add_error(ctx, path, message)
  local keys = {}
  for i = 1, ctx.nkeys do
    keys[i] = ctx.keys[i]
  end
  ctx.errors[#ctx.errors + 1] = { path = path, message = message, keys = keys }
end

local function push_key(ctx, k)
  ctx.nkeys = ctx.nkeys + 1
  ctx.keys[ctx.nkeys] = k
end

local function pop_key(ctx)
  ctx.keys[ctx.nkeys] = nil
  ctx.nkeys = ctx.nkeys - 1
end

local function mismatch(s, v)
  return "expected " .. TYPE_NAMES[s.type] .. ", got " .. describe(v)
end

local function join(list, q)
  local out = {}
  for i, v in ipairs(list) do
    out[i] = q and ("'" .. tostring(v) .. "'") or (type(v) == "string" and v or scalar(v))
  end
  return tbl_concat(out, ", ")
end

-- Edit distance, for "did you mean" hints on unknown fields.
local function distance(a, b)
  local prev, cur = {}, {}
  for j = 0, #b do
    prev[j] = j
  end
  for i = 1, #a do
    cur[0] = i
    local ca = str_byte(a, i)
    for j = 1, #b do
      local cost = ca == str_byte(b, j) and 0 or 1
      cur[j] = math_min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[#b]
end

local function suggest(name, fields)
  if type(name) ~= "string" or #name < 3 then
    return ""
  end
  local best, best_d
  for _, entry in ipairs(fields) do
    local candidate = next(entry)
    local d = distance(name, candidate)
    if d <= 2 and (not best_d or d < best_d) then
      best, best_d = candidate, d
    end
  end
  return best and (" (did you mean '" .. best .. "'?)") or ""
end

local function size_of(v)
  if type(v) == "string" then
    return #v
  end
  return count(v)
end

-- Checks the attributes that apply after the type check; returns true or
-- nil, message.
local function check_attributes(s, v)
  if s.one_of then
    local found = false
    for _, x in ipairs(s.one_of) do
      if x == v then
        found = true
        break
      end
    end
    if not found then
      return nil, "expected one of: " .. join(s.one_of) .. ", got " .. scalar(v)
    end
  end
  if s.not_one_of then
    for _, x in ipairs(s.not_one_of) do
      if x == v then
        return nil, "must not be one of: " .. join(s.not_one_of)
      end
    end
  end
  if s.len_eq or s.len_min or s.len_max then
    local n = size_of(v)
    local what = type(v) == "string" and "length" or "number of entries"
    if s.len_eq and n ~= s.len_eq then
      return nil, what .. " must be " .. s.len_eq
    elseif s.len_min and n < s.len_min then
      return nil, what .. " must be at least " .. s.len_min
    elseif s.len_max and n > s.len_max then
      return nil, what .. " must be at most " .. s.len_max
    end
  end
  if s.between and (v < s.between[1] or v > s.between[2]) then
    local unit = s.type == "duration" and " (milliseconds)" or s.type == "size" and " (bytes)" or ""
    return nil, str_format("value should be between %s and %s%s", format_number(s.between[1]),
                           format_number(s.between[2]), unit)
  end
  if s.gt and v <= s.gt then
    return nil, "value must be greater than " .. format_number(s.gt)
  end
  if s.starts_with and str_sub(v, 1, #s.starts_with) ~= s.starts_with then
    return nil, "should start with: " .. s.starts_with
  end
  if s.match and not str_find(v, s.match) then
    return nil, "invalid value " .. quote(v) .. ": must match the Lua pattern " .. s.match
  end
  if s.match_all then
    for _, p in ipairs(s.match_all) do
      if not str_find(v, p.pattern) then
        return nil, p.err
      end
    end
  end
  if s.match_none then
    for _, p in ipairs(s.match_none) do
      if str_find(v, p.pattern) then
        return nil, p.err
      end
    end
  end
  if s.match_any then
    local any = false
    for _, p in ipairs(s.match_any.patterns) do
      if str_find(v, p) then
        any = true
        break
      end
    end
    if not any then
      return nil, s.match_any.err
    end
  end
  if s.uuid and not str_find(v, UUID_PATTERN) then
    return nil, "expected a UUID, got " .. quote(v)
  end
  return true
end

local validate_value, validate_field

-- Type checkers: each returns the (new) value, or nil and a message. Checkers
-- of collections add their children's errors themselves and return what they
-- could build.
local CHECKERS = {}

function CHECKERS.string(s, v)
  if type(v) ~= "string" then
    return nil, mismatch(s, v)
  end
  return v
end

function CHECKERS.integer(s, v)
  if not is_integer(v) then
    return nil, mismatch(s, v)
  end
  return v
end

function CHECKERS.number(s, v)
  if type(v) ~= "number" or v ~= v then
    return nil, mismatch(s, v)
  end
  return v
end

function CHECKERS.boolean(s, v)
  if type(v) ~= "boolean" then
    return nil, mismatch(s, v)
  end
  return v
end

function CHECKERS.duration(s, v)
  local ms = _M.parse_duration(v)
  if ms == nil then
    return nil, mismatch(s, v)
  end
  return ms
end

function CHECKERS.size(s, v)
  local bytes = _M.parse_size(v)
  if bytes == nil then
    return nil, mismatch(s, v)
  end
  return bytes
end

function CHECKERS.any(_, v)
  return deep_copy(v)
end

-- Arrays keep the positions of their elements: an invalid element leaves
-- `false` in its slot of the partial result.
function CHECKERS.array(s, v, path, ctx)
  if type(v) ~= "table" or (next(v) ~= nil and not is_list(v)) then
    return nil, mismatch(s, v)
  end
  local out = {}
  for i = 1, #v do
    push_key(ctx, i)
    local x = validate_value(s.elements, v[i], index_path(path, i), ctx)
    pop_key(ctx)
    if x == nil then
      x = false
    end
    out[i] = x
  end
  return out
end

function CHECKERS.set(s, v, path, ctx)
  local before = #ctx.errors
  local out, err = CHECKERS.array(s, v, path, ctx)
  if out == nil or #ctx.errors > before then
    return out, err
  end
  local seen = {}
  for i = 1, #out do
    local x = out[i]
    if type(x) ~= "table" then
      if seen[x] then
        push_key(ctx, i)
        add_error(ctx, index_path(path, i), "duplicate value " .. scalar(x)
          .. " (also at " .. index_path(path, seen[x]) .. ")")
        pop_key(ctx)
      else
        seen[x] = i
      end
    end
  end
  return out
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  tbl_sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then
      return a < b
    end
    return type(a) < type(b)
  end)
  return keys
end

local STRING_KEYS = { type = "string" }

function CHECKERS.map(s, v, path, ctx)
  if type(v) ~= "table" or is_list(v) then
    return nil, mismatch(s, v)
  end
  local out, origin = {}, {}
  for _, k in ipairs(sorted_keys(v)) do
    local kpath = field_path(path, k)
    push_key(ctx, k)
    local nk = validate_value(s.keys or STRING_KEYS, k, kpath, ctx)
    if nk ~= nil then
      local nv = validate_value(s.values, v[k], kpath, ctx)
      if origin[nk] ~= nil then
        add_error(ctx, kpath, "duplicate key " .. scalar(nk) .. " (also given as "
          .. scalar(origin[nk]) .. ")")
      elseif nv ~= nil then
        out[nk], origin[nk] = nv, k
      end
    end
    pop_key(ctx)
  end
  return out
end

local function non_empty(v)
  return v ~= nil and v ~= NULL and not (type(v) == "table" and next(v) == nil)
end

local function quoted_names(list)
  return join(list, true)
end

local function run_entity_checks(s, out, path, ctx)
  for _, entry in ipairs(s.entity_checks or {}) do
    local kind, list = next(entry)
    local n = 0
    for _, name in ipairs(list) do
      if non_empty(out[name]) then
        n = n + 1
      end
    end
    if kind == "at_least_one_of" and n == 0 then
      add_error(ctx, path, "at least one of these fields must be non-empty: "
        .. quoted_names(list))
    elseif kind == "only_one_of" and n ~= 1 then
      add_error(ctx, path, "exactly one of these fields must be non-empty: "
        .. quoted_names(list))
    elseif kind == "mutually_exclusive" and n > 1 then
      add_error(ctx, path, "only one or none of these fields must be set: "
        .. quoted_names(list))
    end
  end
end

-- Calls a record's check; err_path, when given, is a field name or a list of
-- keys below the record, and is where the error is reported.
local function run_check(s, out, path, ctx)
  local ok, res, err, err_path = pcall(s.check, out)
  if not ok then
    add_error(ctx, path, "check failed: " .. tostring(res))
    return
  end
  if res then
    return
  end
  local n = 0
  if type(err_path) == "string" then
    err_path = { err_path }
  end
  for _, k in ipairs(err_path or {}) do
    path = type(k) == "number" and index_path(path, k) or field_path(path, k)
    push_key(ctx, k)
    n = n + 1
  end
  add_error(ctx, path, err or "invalid value")
  for _ = 1, n do
    pop_key(ctx)
  end
end

-- Expands the shorthand fields present in v; returns expanded values
-- (field -> value) and where each came from (field -> shorthand name).
local function expand_shorthands(s, v, path, ctx)
  local expanded, from = {}, {}
  for _, entry in ipairs(s.shorthand_fields or {}) do
    local name, def = next(entry)
    local raw = v[name]
    if raw ~= nil and raw ~= NULL then
      local spath = field_path(path, name)
      push_key(ctx, name)
      local sv = validate_value(def, raw, spath, ctx)
      if sv ~= nil then
        local ok, fields, err = pcall(def.func, sv)
        if not ok or fields == nil then
          add_error(ctx, spath, ok and (err or "invalid value") or tostring(fields))
        else
          for k, x in pairs(fields) do
            local prev = expanded[k]
            if v[k] ~= nil and v[k] ~= NULL then
              add_error(ctx, spath, "cannot be combined with '" .. k .. "': give one or the other")
            elseif type(prev) == "table" and type(x) == "table" then
              -- Two shorthands filling one record (Kong's flat redis_host
              -- and redis_port for redis.host and redis.port): merge them.
              for rk, rx in pairs(x) do
                prev[rk] = rx
              end
            else
              expanded[k], from[k] = x, name
            end
          end
        end
      end
      pop_key(ctx)
    end
  end
  return expanded, from
end

function CHECKERS.record(s, v, path, ctx)
  if type(v) ~= "table" or is_list(v) then
    return nil, mismatch(s, v)
  end
  local before = #ctx.errors
  local expanded, from = expand_shorthands(s, v, path, ctx)
  local out, known = {}, {}
  for _, entry in ipairs(s.fields) do
    local name, fs = next(entry)
    known[name] = true
    if from[name] then
      -- The value came from a shorthand: report problems there.
      push_key(ctx, from[name])
      out[name] = validate_field(fs, expanded[name], field_path(path, from[name]), ctx)
    else
      push_key(ctx, name)
      out[name] = validate_field(fs, v[name], field_path(path, name), ctx)
    end
    pop_key(ctx)
  end
  for _, entry in ipairs(s.shorthand_fields or {}) do
    known[next(entry)] = true
  end
  for _, k in ipairs(sorted_keys(v)) do
    if not known[k] then
      push_key(ctx, k)
      add_error(ctx, field_path(path, k), "unknown field '" .. tostring(k) .. "'"
        .. suggest(k, s.fields))
      pop_key(ctx)
    end
  end
  if #ctx.errors == before then
    run_entity_checks(s, out, path, ctx)
  end
  if #ctx.errors == before and s.check then
    run_check(s, out, path, ctx)
  end
  return out
end

-- Validates a present value (possibly null) against s. Returns the normalized
-- value; after errors it returns what it could build (a partial table) or nil.
validate_value = function(s, v, path, ctx)
  if v == nil or v == NULL then
    if s.nullable then
      return NULL
    end
    add_error(ctx, path, "expected " .. TYPE_NAMES[s.type] .. ", got null")
    return nil
  end
  local before = #ctx.errors
  local out, err = CHECKERS[s.type](s, v, path, ctx)
  if out == nil then
    if err then
      add_error(ctx, path, err)
    end
    return nil
  end
  if #ctx.errors > before then
    return out
  end
  if s.normalize then
    out = s.normalize(out)
  end
  local ok
  ok, err = check_attributes(s, out)
  if ok and s.custom then
    local pok, res, cerr = pcall(s.custom, out)
    if not pok then
      ok, err = nil, "custom validation failed: " .. tostring(res)
    else
      ok, err = res, cerr
    end
  end
  if not ok then
    add_error(ctx, path, err or "invalid value")
    return nil
  end
  return out
end

-- Validates the value of a record field: handles absence, defaults and
-- required.
validate_field = function(fs, v, path, ctx)
  if v == nil or (v == NULL and not fs.nullable) then
    if fs.default ~= nil then
      return validate_value(fs, deep_copy(fs.default), path, ctx)
    end
    if fs.required then
      add_error(ctx, path, "required field missing")
    end
    return nil
  end
  return validate_value(fs, v, path, ctx)
end

-- Validates value against schema s and returns the normalized value: defaults
-- filled in, durations in milliseconds, sizes in bytes, `normalize` applied.
-- On failure returns nil, errors, partial: errors lists every problem found,
-- as { path = "services[0].routes[1].paths[2]", message = "...", keys = {
-- "services", 1, "routes", 2, "paths", 3 } } (paths show 0-based indices,
-- keys are the Lua keys), and partial is what could be built (invalid
-- elements of arrays are `false`). path (default "") prefixes every path;
-- keys (optional) prefixes every keys list. Raises an error if s itself is
-- malformed.
function _M.validate(s, value, path, keys)
  _M.check_schema(s)
  local ctx = { errors = {}, keys = {}, nkeys = 0 }
  for i, k in ipairs(keys or {}) do
    ctx.keys[i] = k
    ctx.nkeys = i
  end
  local out = validate_field(s, value, path or "", ctx)
  if #ctx.errors > 0 then
    return nil, ctx.errors, out
  end
  return out
end

return _M
