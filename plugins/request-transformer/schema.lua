-- request-transformer: Kong's fields: what to remove, rename, replace, add and append upstream.
local template = require("sluice.template")

local nv = require("sluice.name_value")

local str_find = string.find

local split = nv.split

local function check_template(value)
  local ok, err = template.check(value)
  if not ok then
    return nil, err
  end
  return true
end

-- The name and value of an entry that needs both, or nil and why not.
local function name_and_value(entry)
  local name, value = split(entry)
  if not name or value == "" then
    return nil, "key '" .. (name or entry) .. "' has no value"
  end
  return name, value
end

-- body and querystring entries of rename, replace, add and append.
local function check_pair(entry)
  local name, value = name_and_value(entry)
  if not name then
    return nil, value
  end
  return check_template(value)
end

local function check_header_name(entry)
  return nv.check_header_name(split(entry) or entry)
end

-- rename.headers: both sides are header names.
local function check_header_rename(entry)
  local name, value = name_and_value(entry)
  if not name then
    return nil, value
  end
  local ok, err = nv.check_header_name(name)
  if not ok then
    return nil, err
  end
  return nv.check_header_name(value)
end

-- replace, add and append headers: a header name and a value template.
local function check_header_pair(entry)
  local name, value = name_and_value(entry)
  if not name then
    return nil, value
  end
  local ok, err = nv.check_header_line(name, value)
  if not ok then
    return nil, err
  end
  return check_template(value)
end

local function check_uri(uri)
  local ok, err = check_template(uri)
  if not ok then
    return nil, err
  end
  if not template.is_dynamic(template.compile(uri)) then
    if not str_find(uri, "^/") then
      return nil, "must start with '/'"
    end
    if str_find(uri, "[%s%c%?#]") then
      return nil, "must not hold spaces, control characters, '?' or '#'"
    end
  end
  return true
end

local function list(description, custom)
  return { type = "array", default = {}, elements = { type = "string", custom = custom },
           description = description }
end

-- One of replace, add, append: "name:value" entries per part.
local function pairs_record(verb, extra)
  local fields = {
    { body = list("'name:value' entries: " .. verb .. " in the JSON, form or multipart body.",
                  check_pair) },
    { headers = list("'Header-Name:value' entries: " .. verb .. " as headers.",
                     check_header_pair) },
    { querystring = list("'name:value' entries: " .. verb .. " as query arguments.",
                         check_pair) },
  }
  if extra then
    fields[#fields + 1] = extra
  end
  return { type = "record", default = {}, fields = fields,
           description = "What to " .. verb .. "; values may be templates ($(...))." }
end

return {
  name = "request-transformer",
  fields = {
    { config = {
        type = "record",
        fields = {
          { http_method = { type = "string", match = "^%a+$",
                            normalize = function(m) return m:upper() end,
                            custom = function(m)
                              if m == "HEAD" then
                                return nil, "changing the method to HEAD is not supported"
                              end
                              return true
                            end,
                            description = "The method sent upstream. To GET (or TRACE), a "
                              .. "form body's fields also go into the query." } },
          { remove = { type = "record", default = {},
                       description = "What to remove (first of the five operations).",
                       fields = {
                         { body = list("Body field names to remove.") },
                         { headers = list("Header names to remove.", check_header_name) },
                         { querystring = list("Query argument names to remove.") },
                       } } },
          { rename = { type = "record", default = {},
                       description = "What to rename: 'old:new' entries; absent ones are "
                         .. "skipped.",
                       fields = {
                         { body = list("'old:new' body field renames.", check_pair) },
                         { headers = list("'Old-Name:New-Name' header renames.",
                                          check_header_rename) },
                         { querystring = list("'old:new' query argument renames.",
                                              check_pair) },
                       } } },
          { replace = pairs_record("replace when present",
              { uri = { type = "string", custom = check_uri,
                        description = "The path sent upstream instead (a template; it "
                          .. "replaces the service path and strip_path)." } }) },
          { add = pairs_record("add when absent") },
          { append = pairs_record("append (another value, or an array element)") },
        },
      } },
  },
}
