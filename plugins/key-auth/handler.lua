-- key-auth: authenticates a request by an API key in a header, the query or the body (Kong's).
--
-- The hot path, for a key in a header: one header lookup per key name, one
-- indexed select (sluice.db), and the X-Consumer-* header sets of
-- sluice.auth. Everything that depends on the config alone (the challenge,
-- the header names to clear) is computed once per config, in configure.
local auth = require("sluice.auth")

local sluice = sluice
local ipairs = ipairs
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
local KeyAuth = {
  PRIORITY = 1250,
  VERSION = "1.0.0",
}

-- What each config needs on the request path, computed once per config:
-- prepared[conf] = { challenge = 'Key realm="..."' or "Key" }.
local prepared = setmetatable({}, { __mode = "k" })

local function prepare(conf)
  local p = prepared[conf]
  if p then
    return p
  end
  p = { challenge = conf.realm and ('Key realm="' .. conf.realm .. '"') or "Key" }
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
-- as in Kong: the header (clear_header matches '_' and '-' alike, as
-- get_header does), the query, and the body when it was read.
local function hide(name, body)
  sluice.service.request.clear_header(name)
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
local function find_key(conf)
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
        hide(name, body)
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
  local key, message = find_key(conf)
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
