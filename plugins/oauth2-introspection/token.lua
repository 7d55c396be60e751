-- token.lua: where a request carries its access token (RFC 6750 section 2), and
-- hiding it from the upstream.
--
--   local tok, where, args = token.find()
--   -- where: "header", "query" or "body" (args: the decoded body then);
--   -- tok == nil and where == "malformed": an Authorization header that says
--   -- Bearer but holds no single token.
local sluice = sluice

local str_find = string.find
local str_gsub = string.gsub
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub
local tbl_concat = table.concat
local type = type

local PARAM = "access_token"
-- Content types a token may come in the body with: Kong's three (RFC 6750
-- defines only the form).
local BODY_TYPES = { "application/x-www-form-urlencoded", "application/json",
                     "multipart/form-data" }
local NO_BODY = { GET = true, HEAD = true, OPTIONS = true, TRACE = true }
local SCHEMES = { bearer = true, token = true }

local _M = {}

local function from_header()
  local value = sluice.request.get_header("authorization")
  if not value then
    return nil
  end
  local scheme, rest = str_match(value, "^%s*(%S+)%s*(.-)%s*$")
  if not scheme or not SCHEMES[str_lower(scheme)] then
    return nil -- another scheme: for another plugin
  end
  if rest == "" or str_find(rest, "%s") then
    return nil, "malformed"
  end
  return rest, "header"
end

local function body_args()
  if NO_BODY[sluice.request.get_method()] then
    return nil
  end
  local ctype = sluice.request.get_header("content-type")
  if not ctype then
    return nil
  end
  ctype = str_lower(ctype)
  for i = 1, #BODY_TYPES do
    if str_find(ctype, BODY_TYPES[i], 1, true) then
      local args = sluice.request.get_body()
      return type(args) == "table" and args or nil
    end
  end
  return nil
end

-- The request's token: the Authorization header (Bearer, or Kong's Token),
-- else the access_token query parameter, else the access_token body
-- parameter (form, JSON or multipart bodies). Returns the token and where it
-- was, nil and "malformed", or nil.
function _M.find()
  local tok, where = from_header()
  if tok or where then
    return tok, where
  end
  local q = sluice.request.get_query_arg(PARAM)
  if type(q) == "string" and q ~= "" then
    return q, "query"
  end
  local args = body_args()
  local b = args and args[PARAM]
  if type(b) == "string" and b ~= "" then
    return b, "body", args
  end
  return nil
end

-- The raw query without its access_token parameters (raw: sent as it came).
local function strip_query(raw)
  local kept = {}
  local pos = 1
  local n = #raw
  while pos <= n do
    local amp = str_find(raw, "&", pos, true) or n + 1
    local piece = str_sub(raw, pos, amp - 1)
    local name = str_gsub(str_match(piece, "^[^=]*"), "%%5[Ff]", "_")
    if name ~= PARAM and piece ~= "" then
      kept[#kept + 1] = piece
    end
    pos = amp + 1
  end
  return tbl_concat(kept, "&")
end

-- Removes the token from what goes upstream, where find found it.
function _M.hide(where, args)
  if where == "header" then
    sluice.service.request.clear_header("Authorization")
  elseif where == "query" then
    sluice.service.request.set_raw_query(strip_query(sluice.request.get_raw_query()))
  elseif where == "body" then
    args[PARAM] = nil
    sluice.service.request.set_body(args)
  end
end

_M.strip_query = strip_query

return _M
