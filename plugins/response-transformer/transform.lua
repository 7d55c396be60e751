-- transform.lua: response-transformer's work: a config compiled once, applied to each response.
--
-- Kong's order for headers and for the JSON body: remove, rename, replace,
-- add, append. Header presence is the upstream's (what it sent, before any
-- of this plugin's edits), as in Kong.
local json_edit = require("sluice.json_edit")

local sluice = sluice

local ipairs = ipairs
local setmetatable = setmetatable
local str_find = string.find
local str_gmatch = string.gmatch
local str_lower = string.lower
local type = type

local _M = {}

local split = require("sluice.name_value").split

local function path_of(key, dots)
  if dots then
    return { key }
  end
  local path = {}
  for part in str_gmatch(key, "[^%.]+") do
    path[#path + 1] = part
  end
  if #path == 0 then
    path[1] = key
  end
  return path
end

-- The JSON text of a configured value, by its json_types entry.
local function json_value(value, t)
  if t == "number" or t == "boolean" then
    return value -- the schema checked it is a JSON number, or true or false
  end
  return json_edit.string(value)
end

-- conf -> compiled config; per worker, weak so old configs go.
local compiled = setmetatable({}, { __mode = "k" })

-- { headers = { remove =, rename =, replace =, add =, append = } or nil,
--   json = { same } or nil }: lists of { name =, key =, value =, to = }
-- (json: path =, raw = the value as JSON text).
function _M.compile(conf)
  local c = compiled[conf]
  if c then
    return c
  end
  local dots = conf.dots_in_keys
  local headers, json = {}, {}
  local any_headers, any_json = false, false
  for _, op in ipairs({ "remove", "rename", "replace", "add", "append" }) do
    local r = conf[op]
    local hl = {}
    for i, entry in ipairs(r.headers) do
      local name, value = entry, nil
      if op ~= "remove" then
        name, value = split(entry)
      end
      hl[i] = { name = name, key = str_lower(name), value = value ~= "" and value or nil }
      if op == "rename" then
        hl[i].to = value
      end
    end
    if #hl > 0 then
      headers[op], any_headers = hl, true
    end
    local jl = {}
    for i, entry in ipairs(r.json) do
      local e
      if op == "remove" then
        e = { path = path_of(entry, dots) }
      else
        local name, value = split(entry)
        e = { path = path_of(name, dots) }
        if op == "rename" then
          local to = path_of(value, dots)
          e.to = to[#to] -- the new key, in the same object
        else
          e.raw = json_value(value, r.json_types[i])
        end
      end
      jl[i] = e
    end
    if #jl > 0 then
      json[op], any_json = jl, true
    end
  end
  c = { headers = any_headers and headers or nil, json = any_json and json or nil }
  compiled[conf] = c
  return c
end

-- A Content-Type that announces JSON: application/json, or any +json type.
function _M.is_json(ctype)
  if not ctype then
    return false
  end
  ctype = str_lower(ctype)
  return str_find(ctype, "application/json", 1, true) ~= nil
    or str_find(ctype, "+json", 1, true) ~= nil
end

-- Applies the header operations in header_filter.
function _M.headers(ops)
  local resp = sluice.response
  local get = resp.get_header
  if ops.remove then
    for _, e in ipairs(ops.remove) do
      resp.clear_header(e.name)
    end
  end
  if ops.rename then
    local all
    for _, e in ipairs(ops.rename) do
      if get(e.key) ~= nil then
        all = all or resp.get_headers()
        local v = all[e.key]
        resp.clear_header(e.name)
        if type(v) == "table" then
          resp.set_headers({ [e.to] = v })
        else
          resp.set_header(e.to, v)
        end
      end
    end
  end
  if ops.replace then
    for _, e in ipairs(ops.replace) do
      if e.value and get(e.key) ~= nil then
        resp.set_header(e.name, e.value)
      end
    end
  end
  if ops.add then
    for _, e in ipairs(ops.add) do
      if e.value and get(e.key) == nil then
        resp.set_header(e.name, e.value)
      end
    end
  end
  if ops.append then
    for _, e in ipairs(ops.append) do
      if e.value then
        resp.add_header(e.name, e.value)
      end
    end
  end
end

-- The JSON body after the operations, or nil when it is unchanged or not a
-- JSON object (left as it is, as Kong leaves a body it cannot decode).
function _M.json(ops, body)
  local doc = json_edit.parse(body)
  if not doc then
    return nil
  end
  local changed = false
  if ops.remove then
    for _, e in ipairs(ops.remove) do
      changed = json_edit.remove(doc, e.path) or changed
    end
  end
  if ops.rename then
    for _, e in ipairs(ops.rename) do
      if json_edit.rename(doc, e.path, e.to) and e.path[#e.path] ~= e.to then
        changed = true
      end
    end
  end
  if ops.replace then
    for _, e in ipairs(ops.replace) do
      changed = json_edit.set(doc, e.path, e.raw, "replace") or changed
    end
  end
  if ops.add then
    for _, e in ipairs(ops.add) do
      changed = json_edit.set(doc, e.path, e.raw, "add") or changed
    end
  end
  if ops.append then
    for _, e in ipairs(ops.append) do
      changed = json_edit.append(doc, e.path, e.raw) or changed
    end
  end
  return changed and json_edit.encode(doc) or nil
end

return _M
