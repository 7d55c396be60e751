-- name_value.lua: Kong's "name:value" config entries (the transformer plugins'), split and checked.
local HEADER_NAME = require("sluice.schema").HEADER_NAME

local str_find = string.find
local str_match = string.match

local _M = {}

-- Kong's split of an entry: the name up to the first colon, the value after
-- the colons that follow it ("a:b:c" is a, b:c; "a::b" is a, b). The value is
-- "" when there is none; the name is nil for an entry starting with ':'.
function _M.split(entry)
  return str_match(entry, "^([^:]+):*(.-)$")
end

-- true, or nil and why name is not a header name.
function _M.check_header_name(name)
  if not str_find(name, HEADER_NAME) then
    return nil, "'" .. name .. "' is not a valid header"
  end
  return true
end

-- true, or nil and why name: value cannot be a header line (a bad name, or
-- a value holding CR, LF or NUL).
function _M.check_header_line(name, value)
  local ok, err = _M.check_header_name(name)
  if not ok then
    return nil, err
  end
  if str_find(value, "[%z\r\n]") then
    return nil, "'" .. name .. "' has a value with CR, LF or NUL"
  end
  return true
end

return _M
