-- response-transformer: Kong's fields: what to remove, rename, replace, add and append.
local nv = require("sluice.name_value")

local str_find = string.find
local str_match = string.match

local split = nv.split
local check_name = nv.check_header_name

local function check_colon(entry)
  if not str_find(entry, "^[^:]+:") then
    return nil, "'" .. entry .. "' is not a 'name:value' pair"
  end
  return true
end

local function check_header_pair(entry)
  local ok, err = check_colon(entry)
  if not ok then
    return nil, err
  end
  return nv.check_header_line(split(entry))
end

local function check_header_rename(entry)
  local ok, err = check_header_pair(entry)
  if not ok then
    return nil, err
  end
  local _, value = split(entry)
  return check_name(value)
end

-- RFC 8259's number grammar: -?(0|[1-9]digits)(.digits)?([eE][+-]?digits)?
local function is_json_number(v)
  local int, rest = str_match(v, "^%-?(%d+)(.*)$")
  if not int or (#int > 1 and str_find(int, "^0")) then
    return false
  end
  if str_find(rest, "^%.") then
    rest = str_match(rest, "^%.%d+(.*)$")
    if not rest then
      return false
    end
  end
  return rest == "" or str_find(rest, "^[eE][%+%-]?%d+$") ~= nil
end

-- json entries against their json_types: numbers and booleans must be ones.
local function check_types(r)
  for i, entry in ipairs(r.json) do
    local name, value = split(entry)
    local t = r.json_types[i] or "string"
    if t == "number" and not is_json_number(value) then
      return nil, "'" .. name .. "': '" .. value .. "' is not a number", { "json", i }
    elseif t == "boolean" and value ~= "true" and value ~= "false" then
      return nil, "'" .. name .. "': '" .. value .. "' is not a boolean (true or false)",
        { "json", i }
    end
  end
  return true
end

local function list(description, custom)
  return { type = "array", default = {}, elements = { type = "string", custom = custom },
           description = description }
end

local function values_record(verb)
  return { type = "record", default = {}, check = check_types,
           description = "What to " .. verb .. ".",
           fields = {
             { json = list("'key:value' entries: " .. verb .. " in a JSON body.", check_colon) },
             { json_types = { type = "array", default = {},
                              elements = { type = "string",
                                           one_of = { "string", "number", "boolean" } },
                              description = "The JSON type of each json entry's value, "
                                .. "by position (string when absent)." } },
             { headers = list("'Header-Name:value' entries: " .. verb .. " as headers.",
                              check_header_pair) },
           } }
end

return {
  name = "response-transformer",
  fields = {
    { config = {
        type = "record",
        fields = {
          { remove = { type = "record", default = {},
                       description = "What to remove (first of the five operations).",
                       fields = {
                         { json = list("Keys to remove from a JSON body.") },
                         { headers = list("Header names to remove.", check_name) },
                       } } },
          { rename = { type = "record", default = {},
                       description = "What to rename: 'old:new' entries; absent ones are "
                         .. "skipped.",
                       fields = {
                         { json = list("'old:new' JSON key renames (in the same object).",
                                       check_colon) },
                         { headers = list("'Old-Name:New-Name' header renames.",
                                          check_header_rename) },
                       } } },
          { replace = values_record("replace when present") },
          { add = values_record("add when absent") },
          { append = values_record("append (another header line, or an array element)") },
          { dots_in_keys = { type = "boolean", default = true,
                             description = "Keys are taken as they are (Kong's behaviour); "
                               .. "false makes a.b.c a path into nested objects." } },
        },
      } },
  },
}
