-- post-function: inline Lua per phase, compiled once when the config loads.
local loadstring = loadstring

local function compiles(code)
  local fn, err = loadstring(code, "=post-function")
  if not fn then
    return nil, "invalid Lua: " .. err
  end
  return true
end

local function phase(description)
  return { type = "array", default = {}, elements = { type = "string", custom = compiles },
           description = description }
end

return {
  name = "post-function",
  fields = {
    { config = {
        type = "record",
        fields = {
          { rewrite = phase("Code run in rewrite (global instances only).") },
          { access = phase("Code run in access.") },
          { header_filter = phase("Code run in header_filter.") },
          { log = phase("Code run in log.") },
        },
      } },
  },
}
