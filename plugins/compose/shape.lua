-- compose/shape.lua: what is kept of one backend's JSON answer, and where it goes.
local ipairs = ipairs
local next = next
local pairs = pairs
local type = type
local str_gmatch = string.gmatch

local _M = {}

-- A JSON array (Debian's lua-cjson decodes [] and {} alike: both count as
-- objects, with no fields).
local function is_list(v)
  return type(v) == "table" and v[1] ~= nil
end

-- The compiled shaping of a backend's config, made once at configure time:
-- { target = { "data", "user" } | nil, allow = { name = true } | nil,
--   deny = { name = true } | nil, mapping = { old = new } | nil }.
function _M.compile(b)
  local s = {}
  if b.target then
    s.target = {}
    for part in str_gmatch(b.target, "[^%.]+") do
      s.target[#s.target + 1] = part
    end
  end
  for _, k in ipairs({ "allow", "deny" }) do
    if b[k] then
      s[k] = {}
      for _, name in ipairs(b[k]) do
        s[k][name] = true
      end
    end
  end
  if b.mapping and next(b.mapping) then
    s.mapping = b.mapping
  end
  return s
end

-- One object filtered and renamed; other values pass as they are.
local function fields(s, v)
  if type(v) ~= "table" or is_list(v) then
    return v
  end
  if not (s.allow or s.deny or s.mapping) then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    if (not s.allow or s.allow[k]) and not (s.deny and s.deny[k]) then
      out[s.mapping and s.mapping[k] or k] = x
    end
  end
  return out
end

-- The part of a decoded answer that is kept (target, then allow/deny and
-- mapping, applied to each element of a list). nil when target is missing.
function _M.apply(s, v)
  if s.target then
    for _, k in ipairs(s.target) do
      if type(v) ~= "table" then
        return nil
      end
      v = v[k]
    end
  end
  if is_list(v) then
    local out = {}
    for i, x in ipairs(v) do
      out[i] = fields(s, x)
    end
    return out
  end
  return fields(s, v)
end

-- Puts a backend's kept answer v into the merged answer out: under group
-- when given; an object's fields at the top otherwise; anything else under
-- the backend's name.
function _M.merge(out, name, group, v)
  if v == nil then
    return
  end
  if group then
    out[group] = v
  elseif type(v) == "table" and not is_list(v) then
    for k, x in pairs(v) do
      out[k] = x
    end
  else
    out[name] = v
  end
end

return _M
