-- key-auth: authenticates a request by an API key in a header, the query or the body (Kong's).
--
-- The hot path, for a key in a header: one header lookup per key name, one
-- indexed select (sluice.db), and the X-Consumer-* header sets of
-- sluice.auth. Everything that depends on the config alone (the challenge,
-- the header names to clear) is computed once per config, in configure.
local auth = require("sluice.auth")

local sluice = sluice
local ipairs = ipairs
local select = select
local setmetatable = setmetatable
local tonumber = tonumber
local type = type
local str_char = string.char
local str_find = string.find
local str_gsub = string.gsub
local str_sub = string.sub
local tbl_concat = table.concat

local NO_KEY = "No API key found in request"
local INVALID = "Unauthorized"
local DUPLICATE = "Duplicate API key found"
-- The most '-' or '_' in a key name whose every spelling hide_credentials
-- clears (2^n header ops); beyond it only the name as configured and its
-- all-dash form are cleared.
local MAX_SPELLING_SEPARATORS = 4

local KeyAuth = {
  PRIORITY = 1250,
  VERSION = "1.0.0",
}

-- What each config needs on the request path, computed once per config:
-- prepared[conf] = { challenge = 'Key realm="..."' or "Key",
--                    spellings = { [name] = { "x-api-key", "x_api_key", ... } } }.
local prepared = setmetatable({}, { __mode = "k" })

-- Every spelling of name with '-' and '_' swapped, which sluice.request.get_header
-- treats as the same header but clear_header does not.
local function spellings(name)
  local out = { name }
  local n = select(2, str_gsub(name, "[-_]", ""))
  if n > MAX_SPELLING_SEPARATORS then
    local dashed = str_gsub(name, "_", "-")
    if dashed ~= name then
      out[2] = dashed
    end
    return out
  end
  out = { "" }
  for i = 1, #name do
    local c = str_sub(name, i, i)
    local alt = (c == "-" and "_") or (c == "_" and "-") or nil
    local nxt = {}
    for _, prefix in ipairs(out) do
      nxt[#nxt + 1] = prefix .. c
      if alt then
        nxt[#nxt + 1] = prefix .. alt
      end
    end
    out = nxt
  end
  return out
end

local function prepare(conf)
  local p = prepared[conf]
  if p then
    return p
  end
  local names = {}
  for _, name in ipairs(conf.key_names) do
    names[name] = spellings(name)
  end
  p = { challenge = conf.realm and ('Key realm="' .. conf.realm .. '"') or "Key",
        spellings = names }
  prepared[conf] = p
  return p
end

function KeyAuth.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    prepare(conf)
  end
end

local function unescape(hex)
  return str_char(tonumber(hex, 16))
end

-- The query string without the arguments named name (whatever their
-- encoding), for hide_credentials.
local function without_arg(raw, name)
  local kept = {}
  local pos = 1
  while pos <= #raw + 1 do
    local amp = str_find(raw, "&", pos, true) or #raw + 1
    local part = str_sub(raw, pos, amp - 1)
    local eq = str_find(part, "=", 1, true)
    local k = eq and str_sub(part, 1, eq - 1) or part
    if str_find(k, "[%%+]") then
      k = str_gsub(str_gsub(k, "+", " "), "%%(%x%x)", unescape)
    end
    if k ~= name and part ~= "" then
      kept[#kept + 1] = part
    end
    pos = amp + 1
  end
  return tbl_concat(kept, "&")
end

-- The body as get_body decodes it, or nil when it holds no fields.
local function body_fields()
  local body = sluice.request.get_body()
  if type(body) ~= "table" then
    return nil
  end
  return body
end

-- hide_credentials: the key's name leaves every place it can be read from,
-- as in Kong: the header (each spelling), the query, and the body when it
-- was read.
local function hide(p, name, body)
  local clear = sluice.service.request.clear_header
  local names = p.spellings[name]
  for i = 1, #names do
    clear(names[i])
  end
  local raw = sluice.request.get_raw_query()
  if raw ~= "" and sluice.request.get_query()[name] ~= nil then
    sluice.service.request.set_raw_query(without_arg(raw, name))
  end
  if body and body[name] ~= nil then
    body[name] = nil
    sluice.service.request.set_body(body)
  end
end

-- Finds the key: returns it, or nil and the 401 message.
local function find_key(conf, p)
  local names = conf.key_names
  local body
  for i = 1, #names do
    local name = names[i]
    local v
    if conf.key_in_header then
      v = sluice.request.get_header(name)
    end
    if v == nil and conf.key_in_query then
      v = sluice.request.get_query()[name]
    end
    if v == nil and conf.key_in_body then
      if body == nil then
        body = body_fields() or false
      end
      v = body and body[name]
    end
    if type(v) == "string" then
      if v == "" then
        return nil, NO_KEY
      end
      if conf.hide_credentials then
        hide(p, name, body)
      end
      return v
    elseif type(v) == "table" then
      return nil, DUPLICATE
    end
  end
  return nil, NO_KEY
end

function KeyAuth.access(_, conf)
  if auth.skip(conf) then
    return
  end
  local p = prepared[conf] or prepare(conf)
  local key, message = find_key(conf, p)
  -- sluice.db has no keyauth_credentials when the config holds none.
  local dao = key and sluice.db.keyauth_credentials
  local cred = dao and dao:select_by_key(key)
  if cred and cred.ttl and sluice.now() >= cred.created_at + cred.ttl then
    cred = nil
  end
  if not cred then
    return auth.fail(conf, 401, message or INVALID, p.challenge)
  end
  return auth.accept(auth.consumer(cred.consumer.id), cred, cred.id)
end

return KeyAuth
