-- json_edit.lua: edits members of a JSON object in place, leaving every other byte of it alone.
--
--   local doc = json_edit.parse('{"id":12345678901234567,"tags":[],"a":{"b":1}}')
--   json_edit.remove(doc, { "a", "b" })
--   json_edit.set(doc, { "source" }, json_edit.string("gateway"))
--   json_edit.encode(doc)   --> {"id":12345678901234567,"tags":[],"a":{},"source":"gateway"}
--
-- The transformer plugins change a few members of a body and must not
-- change the rest: decoding a whole body into Lua and encoding it again (as
-- Kong does with cjson) turns `[]` into `{}`, `12345678901234567` into
-- `1.2345678901235e+16` and `/` into `\/`. Here a body is checked once in C
-- (core/json.c, which builds nothing) and then only scanned: an object becomes its list of
-- members, each kept as its raw key and raw value text; an edit replaces the
-- text of the members it names, and an object nested on a path is parsed
-- only when an edit goes into it. Output is compact between the members of
-- the objects that were parsed, and byte-identical inside every value that
-- no edit touched.
--
-- A doc is { n = number of members, [i] = { key = decoded key, k = raw key
-- text (quoted), v = raw value text, doc = the parsed object when an edit
-- went into it } }. Paths are lists of keys. When a key appears twice in an
-- object (JSON allows it, cjson keeps the last), reads and edits use the
-- last, remove removes all.

local ffi = require("ffi")
require("sluice.ffi")
local cjson = require("cjson.safe").new()

local str_byte = string.byte
local str_find = string.find
local str_format = string.format
local str_gsub = string.gsub
local str_sub = string.sub
local tbl_concat = table.concat
local type = type

local C = ffi.C

local COMMA = 44
local LBRACE, LBRACKET, RBRACE = 123, 91, 125

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
for b = 0, 31 do
  local c = string.char(b)
  ESCAPES[c] = ESCAPES[c] or str_format("\\u%04x", b)
end
ESCAPES["\127"] = "\\u007f"

local _M = {}

-- Scanning (the text is valid JSON: cjson said so) -------------------------------

-- The skipping is done in C (core/json.c, through the FFI): a byte loop in
-- Lua would step through every byte of a body, nested as these scans are
-- (LuaJIT compiles neither an inner loop of a root trace nor a loop that
-- leaves after a few bytes), and string.find with a class is slower still.
-- A body is mostly skipped. Each returns the index just past what starts at p.
local WS, STRING, VALUE = 0, 1, 2

local function skip_string(s, p)
  return C.sl_ffi_json_skip(STRING, s, #s, p)
end

local function skip_value(s, p)
  return C.sl_ffi_json_skip(VALUE, s, #s, p)
end

local function skip_ws(s, p)
  return C.sl_ffi_json_skip(WS, s, #s, p)
end

local function decode_key(k)
  if str_find(k, "\\", 1, true) then
    return cjson.decode(k)
  end
  return str_sub(k, 2, -2)
end

-- The members of the object whose `{` is at p (s is valid JSON).
local function parse_object(s, p)
  local doc = { n = 0 }
  local i = skip_ws(s, p + 1)
  if str_byte(s, i) == RBRACE then
    return doc
  end
  while i <= #s do
    local kend = skip_string(s, i)
    local k = str_sub(s, i, kend - 1)
    local vstart = skip_ws(s, skip_ws(s, kend) + 1) -- past the ':'
    local vend = skip_value(s, vstart)
    local n = doc.n + 1
    doc[n] = { key = decode_key(k), k = k, v = str_sub(s, vstart, vend - 1) }
    doc.n = n
    i = skip_ws(s, vend)
    if str_byte(s, i) ~= COMMA then
      break
    end
    i = skip_ws(s, i + 1)
  end
  return doc
end

-- Parses text when it is a JSON object; nil for anything else (not JSON, an
-- array, a scalar).
function _M.parse(text)
  if type(text) ~= "string" then
    return nil
  end
  local p = skip_ws(text, 1)
  if str_byte(text, p) ~= LBRACE or C.sl_ffi_json_valid(text, #text) == 0 then
    return nil
  end
  return parse_object(text, p)
end

-- Members -----------------------------------------------------------------------------

local function find(doc, key)
  for i = doc.n, 1, -1 do
    if doc[i].key == key then
      return doc[i], i
    end
  end
  return nil
end

local function is_object(m)
  return m.doc ~= nil or str_byte(m.v, 1) == LBRACE
end

local function child(m)
  local d = m.doc
  if not d then
    d = parse_object(m.v, 1)
    m.doc = d
  end
  return d
end

-- The object that holds the last key of path, or nil when a step is missing
-- or not an object; with create, missing steps become empty objects.
local function parent(doc, path, create)
  for i = 1, #path - 1 do
    local m = find(doc, path[i])
    if not m then
      if not create then
        return nil
      end
      local n = doc.n + 1
      m = { key = path[i], k = _M.string(path[i]), v = "{}", doc = { n = 0 } }
      doc[n] = m
      doc.n = n
    elseif not is_object(m) then
      return nil
    end
    doc = child(m)
  end
  return doc
end

-- s as a JSON string literal.
function _M.string(s)
  return '"' .. str_gsub(s, '[%c"\\]', ESCAPES) .. '"'
end

-- The raw value text at path, or nil.
function _M.get(doc, path)
  local d = parent(doc, path)
  local m = d and find(d, path[#path])
  if not m then
    return nil
  end
  if m.doc then
    return _M.encode(m.doc)
  end
  return m.v
end

-- Removes the member at path; returns whether there was one.
function _M.remove(doc, path)
  local d = parent(doc, path)
  if not d then
    return false
  end
  local key, j, removed = path[#path], 0, false
  for i = 1, d.n do
    local m = d[i]
    if m.key == key then
      removed = true
    else
      j = j + 1
      d[j] = m
    end
  end
  for i = j + 1, d.n do
    d[i] = nil
  end
  d.n = j
  return removed
end

-- Renames the member at path to new_key (in the same object), replacing a
-- member already called new_key; returns whether there was one to rename.
function _M.rename(doc, path, new_key)
  local d = parent(doc, path)
  local m = d and find(d, path[#path])
  if not m then
    return false
  end
  if new_key == m.key then
    return true
  end
  _M.remove(d, { new_key })
  m.key, m.k = new_key, _M.string(new_key)
  return true
end

-- Sets the value at path to the raw JSON text raw. mode "replace" changes
-- only a present member, "add" only creates an absent one (and the objects
-- on its way), "set" does either. Returns whether it changed anything.
function _M.set(doc, path, raw, mode)
  local d = parent(doc, path, mode ~= "replace")
  if not d then
    return false
  end
  local key = path[#path]
  local m = find(d, key)
  if m then
    if mode == "add" then
      return false
    end
    m.v, m.doc = raw, nil
    return true
  end
  if mode == "replace" then
    return false
  end
  local n = d.n + 1
  d[n] = { key = key, k = _M.string(key), v = raw }
  d.n = n
  return true
end

-- Appends the raw JSON value raw at path: to the end of an array, or, for
-- any other value, makes it an array of the old value and raw; an absent
-- member becomes [raw]. Returns true.
function _M.append(doc, path, raw)
  local d = parent(doc, path, true)
  if not d then
    return false
  end
  local m = find(d, path[#path])
  if not m then
    local n = d.n + 1
    d[n] = { key = path[#path], k = _M.string(path[#path]), v = "[" .. raw .. "]" }
    d.n = n
    return true
  end
  local v = m.doc and _M.encode(m.doc) or m.v
  m.doc = nil
  if str_byte(v, 1) == LBRACKET then
    -- A value's text ends at its ']' (the scanner keeps no trailing blanks).
    if skip_ws(v, 2) == #v then
      m.v = "[" .. raw .. "]"
    else
      m.v = str_sub(v, 1, -2) .. "," .. raw .. "]"
    end
  else
    m.v = "[" .. v .. "," .. raw .. "]"
  end
  return true
end

-- The object as JSON text.
function _M.encode(doc)
  local parts = {}
  for i = 1, doc.n do
    local m = doc[i]
    parts[i] = m.k .. ":" .. (m.doc and _M.encode(m.doc) or m.v)
  end
  return "{" .. tbl_concat(parts, ",") .. "}"
end

return _M
