-- transform.lua: request-transformer's work: a config compiled once, applied to each request.
--
-- Kong's order: the uri, the method, then headers, body and query, each with
-- remove, rename, replace, add and append in that order. Templates are
-- rendered from the client's request as it arrived (sluice.request), so an
-- operation never sees what an earlier one changed, as in Kong.
local template = require("sluice.template")
local json_edit = require("sluice.json_edit")
local multipart = require("sluice.plugins.request-transformer.multipart")

local sluice = sluice

local ipairs = ipairs
local next = next
local pairs = pairs
local setmetatable = setmetatable
local str_byte = string.byte
local str_find = string.find
local str_format = string.format
local str_gsub = string.gsub
local str_lower = string.lower
local type = type

local OPS = { "remove", "rename", "replace", "add", "append" }
local JSON, FORM, MULTIPART = 1, 2, 3
local FORM_TYPE = "application/x-www-form-urlencoded"
local BAD_VALUE = { message = "Bad Request" }

local _M = {}

-- Compiling -------------------------------------------------------------------------

local split = require("sluice.name_value").split

-- A list of entries as { { name =, key = lower-case name (headers) or name,
-- value = compiled template, to =, to_key = rename's new name }, ... }; nil
-- when empty. op "remove" takes names, "rename" pairs of names (literal, as
-- Kong's are validated as names), the others name:template pairs.
local function compile_list(entries, op, lower, dyn)
  if not entries or #entries == 0 then
    return nil
  end
  local out = {}
  for i, entry in ipairs(entries) do
    local e
    if op == "remove" then
      e = { name = entry }
    else
      local name, value = split(entry)
      e = { name = name }
      if op == "rename" then
        e.to, e.to_key = value, lower and str_lower(value) or value
      else
        e.value = assert(template.compile(value)) -- the schema checked that it compiles
        dyn.any = dyn.any or template.is_dynamic(e.value)
      end
    end
    e.key = lower and str_lower(e.name) or e.name
    out[i] = e
  end
  return out
end

local function compile_part(conf, part, lower, dyn)
  local ops, any = {}, false
  for _, op in ipairs(OPS) do
    local list = compile_list(conf[op][part], op, lower, dyn)
    if list then
      ops[op] = list
      any = true
    end
  end
  return any and ops or nil
end

-- conf -> compiled config; per worker, weak so old configs go.
local compiled = setmetatable({}, { __mode = "k" })

function _M.compile(conf)
  local c = compiled[conf]
  if c then
    return c
  end
  local dyn = { any = false }
  c = {
    headers = compile_part(conf, "headers", true, dyn),
    query = compile_part(conf, "querystring", false, dyn),
    body = compile_part(conf, "body", false, dyn),
    method = conf.http_method,
  }
  if conf.replace.uri then
    c.uri = assert(template.compile(conf.replace.uri))
    dyn.any = dyn.any or template.is_dynamic(c.uri)
  end
  c.dynamic = dyn.any
  compiled[conf] = c
  return c
end

-- Values --------------------------------------------------------------------------------

-- Kong's append: a list grows, a single value becomes a list of two.
local function append_value(cur, v)
  if type(cur) == "table" then
    cur[#cur + 1] = v
    return cur
  elseif cur == nil then
    return { v }
  end
  return { cur, v }
end

-- Headers -------------------------------------------------------------------------------

-- The header operations' scratch, one set for every request (transform_headers
-- never yields, and clears what the previous request left before it starts,
-- also after an expression raised): hs = { [key] = final value (string, list)
-- or false (removed) }, hs_names = { [key] = name as configured }, hs_order =
-- { n =, key, ... } (the keys hs holds, in the order they were touched).
local hs, hs_names, hs_order = {}, {}, { n = 0 }

local function reset()
  for i = 1, hs_order.n do
    local key = hs_order[i]
    hs[key], hs_names[key], hs_order[i] = nil, nil, nil
  end
  hs_order.n = 0
end

-- The value upstream would get for key now (its first line), or nil. Host is
-- never present for the operations, as in Kong.
local function current(key)
  local v = hs[key]
  if v ~= nil then
    return v or nil
  end
  if key == "host" then
    return nil
  end
  return sluice.request.get_header(key)
end

local function touch(key, v, name)
  if hs[key] == nil then
    local n = hs_order.n + 1
    hs_order.n = n
    hs_order[n] = key
  end
  hs[key] = v
  if name then
    hs_names[key] = name
  end
end

-- Every value of key (a list for a header sent on several lines), or nil.
local function all_values(key, st)
  local v = hs[key]
  if v ~= nil then
    return v or nil
  end
  if key == "host" then
    return nil
  end
  local all = st.all_headers
  if not all then
    all = sluice.request.get_headers()
    st.all_headers = all
  end
  return all[key]
end

-- A rendered header value that could not be sent (a template filled from
-- the request with CR or LF): the request is refused.
local function bad_header_value(v)
  if type(v) == "string" then
    -- Plain finds, which the JIT compiles (a character class it does not).
    return str_find(v, "\r", 1, true) ~= nil or str_find(v, "\n", 1, true) ~= nil
      or str_find(v, "\0", 1, true) ~= nil
  end
  return false
end

local function transform_headers(ops, st)
  reset()
  local adds
  if ops.remove then
    for _, e in ipairs(ops.remove) do
      if current(e.key) ~= nil then
        touch(e.key, false)
      end
    end
  end
  if ops.rename then
    for _, e in ipairs(ops.rename) do
      local v = all_values(e.key, st)
      if v ~= nil then
        if e.key ~= e.to_key then
          touch(e.key, false)
        end
        touch(e.to_key, v, e.to)
      end
    end
  end
  if ops.replace then
    for _, e in ipairs(ops.replace) do
      if e.key == "host" or current(e.key) ~= nil then
        touch(e.key, template.render(e.value, st), e.name)
      end
    end
  end
  if ops.add then
    for _, e in ipairs(ops.add) do
      if e.key ~= "host" and current(e.key) == nil then
        touch(e.key, template.render(e.value, st), e.name)
      end
    end
  end
  if ops.append then
    for _, e in ipairs(ops.append) do
      if e.key ~= "host" then
        local v = template.render(e.value, st)
        local cur = hs[e.key]
        if cur ~= nil then
          -- Changed above: its whole value is known here.
          touch(e.key, append_value(cur or nil, v), e.name)
        else
          -- The client's lines stay; this one is added after them.
          adds = adds or {}
          adds[#adds + 1] = e.name
          adds[#adds + 1] = v
        end
      end
    end
  end
  local req = sluice.service.request
  for i = 1, hs_order.n do
    local key = hs_order[i]
    local v = hs[key]
    if v == false then
      req.clear_header(key)
    elseif type(v) == "table" then
      for j = 1, #v do
        if bad_header_value(v[j]) then
          return false
        end
      end
      req.set_headers({ [hs_names[key] or key] = v })
    else
      if bad_header_value(v) then
        return false
      end
      req.set_header(hs_names[key] or key, v)
    end
  end
  if adds then
    for i = 1, #adds, 2 do
      if bad_header_value(adds[i + 1]) then
        return false
      end
      req.add_header(adds[i], adds[i + 1])
    end
  end
  return true
end

-- Query and form fields -----------------------------------------------------------------

-- Applies ops to args (a table shaped like sluice.request.get_query's);
-- has_content: the body had content (remove, rename and replace need it, as
-- in Kong). Returns whether anything changed.
local function transform_args(ops, args, st, has_content)
  local changed = false
  if has_content and ops.remove then
    for _, e in ipairs(ops.remove) do
      if args[e.name] ~= nil then
        args[e.name] = nil
        changed = true
      end
    end
  end
  if has_content and ops.rename then
    for _, e in ipairs(ops.rename) do
      local v = args[e.name]
      if v ~= nil and e.name ~= e.to then
        args[e.name] = nil
        args[e.to] = v
        changed = true
      end
    end
  end
  if has_content and ops.replace then
    for _, e in ipairs(ops.replace) do
      if args[e.name] ~= nil then
        args[e.name] = template.render(e.value, st)
        changed = true
      end
    end
  end
  if ops.add then
    for _, e in ipairs(ops.add) do
      if args[e.name] == nil then
        args[e.name] = template.render(e.value, st)
        changed = true
      end
    end
  end
  if ops.append then
    for _, e in ipairs(ops.append) do
      local cur = args[e.name]
      args[e.name] = append_value(cur ~= true and cur or nil, template.render(e.value, st))
      changed = true
    end
  end
  return changed
end

-- Bodies ----------------------------------------------------------------------------------

local function body_kind(ctype)
  if not ctype then
    return nil
  end
  ctype = str_lower(ctype)
  if str_find(ctype, "application/json", 1, true) or str_find(ctype, "+json", 1, true) then
    return JSON
  elseif str_find(ctype, FORM_TYPE, 1, true) then
    return FORM
  elseif str_find(ctype, "multipart/form-data", 1, true) then
    return MULTIPART
  end
  return nil
end

local function transform_json(ops, raw, st)
  local has_content = raw ~= ""
  local doc
  if has_content then
    doc = json_edit.parse(raw)
    if not doc then
      return nil -- not a JSON object: left alone, as Kong leaves bodies it cannot decode
    end
  else
    doc = { n = 0 }
  end
  local changed = false
  local path = {}
  if has_content and ops.remove then
    for _, e in ipairs(ops.remove) do
      path[1] = e.name
      changed = json_edit.remove(doc, path) or changed
    end
  end
  if has_content and ops.rename then
    for _, e in ipairs(ops.rename) do
      path[1] = e.name
      changed = json_edit.rename(doc, path, e.to) and e.name ~= e.to or changed
    end
  end
  if has_content and ops.replace then
    for _, e in ipairs(ops.replace) do
      path[1] = e.name
      changed = json_edit.set(doc, path, json_edit.string(template.render(e.value, st)),
        "replace") or changed
    end
  end
  if ops.add then
    for _, e in ipairs(ops.add) do
      path[1] = e.name
      changed = json_edit.set(doc, path, json_edit.string(template.render(e.value, st)), "add")
        or changed
    end
  end
  if ops.append then
    for _, e in ipairs(ops.append) do
      path[1] = e.name
      changed = json_edit.append(doc, path, json_edit.string(template.render(e.value, st)))
        or changed
    end
  end
  return changed and json_edit.encode(doc) or nil
end

local function transform_multipart(ops, raw, ctype, st)
  local boundary = multipart.boundary(ctype)
  if not boundary then
    return nil
  end
  local has_content = raw ~= ""
  local parts
  if has_content then
    parts = multipart.parse(raw, boundary)
    if not parts then
      return nil
    end
  else
    parts = { n = 0 }
  end
  local changed = false
  if has_content and ops.remove then
    for _, e in ipairs(ops.remove) do
      changed = multipart.remove(parts, e.name) or changed
    end
  end
  if has_content and ops.rename then
    for _, e in ipairs(ops.rename) do
      if e.name ~= e.to and multipart.find(parts, e.name) then
        multipart.remove(parts, e.to)
        changed = multipart.rename(parts, e.name, e.to) or changed
      end
    end
  end
  if has_content and ops.replace then
    for _, e in ipairs(ops.replace) do
      if multipart.remove(parts, e.name) then
        multipart.add(parts, e.name, template.render(e.value, st))
        changed = true
      end
    end
  end
  if ops.add then
    for _, e in ipairs(ops.add) do
      if not multipart.find(parts, e.name) then
        multipart.add(parts, e.name, template.render(e.value, st))
        changed = true
      end
    end
  end
  if ops.append then
    for _, e in ipairs(ops.append) do
      multipart.add(parts, e.name, template.render(e.value, st))
      changed = true
    end
  end
  return changed and multipart.encode(parts, boundary) or nil
end

local function transform_body(ops, st)
  local ctype = sluice.request.get_header("Content-Type")
  local kind = body_kind(ctype)
  if not kind then
    return
  end
  local raw, err = sluice.request.get_raw_body()
  if not raw then
    sluice.log.warn("body left as it is: ", err)
    return
  end
  if kind == FORM then
    local args = sluice.request.get_body(FORM_TYPE)
    if args and transform_args(ops, args, st, raw ~= "") then
      sluice.service.request.set_body(args)
    end
    return
  end
  local new
  if kind == JSON then
    new = transform_json(ops, raw, st)
  else
    new = transform_multipart(ops, raw, ctype, st)
  end
  if new then
    sluice.service.request.set_raw_body(new)
  end
end

-- Method and uri ----------------------------------------------------------------------------

-- A form body's fields join the query when the method becomes GET or TRACE
-- (Kong's rule). Returns the query table when it changed it.
local function transform_method(method)
  local client_method = sluice.request.get_method()
  if client_method == "HEAD" then
    return nil -- the answer to a HEAD has no body; changing it is not supported
  end
  if method ~= client_method then
    sluice.service.request.set_method(method)
  end
  if method ~= "GET" and method ~= "TRACE" then
    return nil
  end
  if body_kind(sluice.request.get_header("Content-Type")) ~= FORM then
    return nil
  end
  local form = sluice.request.get_body(FORM_TYPE)
  if not form or next(form) == nil then
    return nil
  end
  local query = sluice.request.get_query()
  for name, v in pairs(form) do
    local cur = query[name]
    if cur == nil then
      query[name] = v
    else
      if type(cur) ~= "table" then
        cur = { cur }
      end
      if type(v) == "table" then
        for _, one in ipairs(v) do
          cur[#cur + 1] = one
        end
      else
        cur[#cur + 1] = v
      end
      query[name] = cur
    end
  end
  return query
end

local function escape_path_byte(c)
  return str_format("%%%02X", str_byte(c))
end

-- A rendered uri as a valid upstream path: bytes a path cannot hold are
-- percent-encoded, and a missing leading '/' is added.
local function path_of(s)
  s = str_gsub(s, "[%s%c%?#\128-\255]", escape_path_byte)
  if str_byte(s, 1) ~= 47 then
    s = "/" .. s
  end
  return s
end

-- Applies c (from compile) to this request. Returns false when the request
-- must be refused (a rendered header value holding CR or LF), else true.
function _M.execute(c)
  local st = {}
  if c.uri then
    sluice.service.request.set_path(path_of(template.render(c.uri, st)))
  end
  local query
  if c.method then
    query = transform_method(c.method)
  end
  if c.headers and not transform_headers(c.headers, st) then
    return false
  end
  if c.body then
    transform_body(c.body, st)
  end
  if c.query then
    local q = query or sluice.request.get_query()
    if transform_args(c.query, q, st, true) then
      query = q
    end
  end
  if query then
    sluice.service.request.set_query(query)
  end
  return true
end

_M.BAD_VALUE = BAD_VALUE

return _M
