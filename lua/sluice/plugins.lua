-- plugins.lua: finds plugins in server.plugin_paths and the bundled folder, and loads them.
--
-- A plugin is a folder NAME/ holding handler.lua (returns the handler table)
-- and schema.lua (returns its config schema: a record schema, or Kong's shape
-- { name = ..., fields = { { config = RECORD } } }); an auth plugin may add
-- daos.lua, the entity schemas of the credentials it owns ({ keyauth_credentials
-- = { fields = ..., transform = }, ... }, see config.lua). Sibling modules load as
-- require("sluice.plugins.NAME.MODULE") from NAME/MODULE.lua.

local paths = require("sluice.paths")
-- Handlers may use the `sluice` global at load time.
require("sluice.pdk")

local error = error
local io_open = io.open
local loadfile = loadfile
local pcall = pcall
local type = type
local ipairs = ipairs
local str_match = string.match
local str_gsub = string.gsub

local NAME = "^[%w][%w%-_]*$"

local _M = {}

-- Folders searched, user folders first; set by _M.set_paths at config load.
local search = { paths.plugins }

-- Loaded plugins, by name: { name =, dir =, handler =, schema =, daos = }.
local loaded = {}

local function exists(file)
  local f = io_open(file, "r")
  if f then
    f:close()
    return true
  end
  return false
end

-- Sets the user folders searched before the bundled one; forgets what was loaded.
function _M.set_paths(user_paths)
  search = {}
  for _, p in ipairs(user_paths or {}) do
    search[#search + 1] = p
  end
  search[#search + 1] = paths.plugins
  loaded = {}
end

local function find(name)
  for _, dir in ipairs(search) do
    local d = dir .. "/" .. name
    if exists(d .. "/handler.lua") then
      return d
    end
  end
  return nil
end

local function run_file(file)
  local chunk, err = loadfile(file)
  if not chunk then
    return nil, err
  end
  local ok, res = pcall(chunk)
  if not ok then
    return nil, res
  end
  return res
end

-- The config record of a plugin schema, whichever shape it was written in.
local function config_schema(s)
  if type(s) ~= "table" then
    return nil
  end
  if s.type == "record" then
    return s
  end
  for _, f in ipairs(s.fields or {}) do
    if type(f) == "table" and type(f.config) == "table" then
      return f.config
    end
  end
  return nil
end

-- Returns the plugin { name, dir, handler, schema, daos } or nil, err.
function _M.load(name)
  if type(name) ~= "string" then
    error("bad argument #1 to 'load' (string expected, got " .. type(name) .. ")", 2)
  end
  local p = loaded[name]
  if p then
    return p
  end
  if not str_match(name, NAME) then
    return nil, "invalid plugin name '" .. name .. "'"
  end
  local dir = find(name)
  if not dir then
    local where = {}
    for i, d in ipairs(search) do
      where[i] = d
    end
    return nil, "plugin '" .. name .. "' not found (looked in " .. table.concat(where, ", ")
      .. ")"
  end
  local handler, err = run_file(dir .. "/handler.lua")
  if type(handler) ~= "table" then
    return nil, "plugin '" .. name .. "': handler.lua "
      .. (err and ("failed: " .. err) or "must return a table")
  end
  local schema = { type = "record", fields = {} }
  if exists(dir .. "/schema.lua") then
    local s, serr = run_file(dir .. "/schema.lua")
    schema = config_schema(s)
    if not schema then
      return nil, "plugin '" .. name .. "': schema.lua "
        .. (serr and ("failed: " .. serr) or "must return a record schema")
    end
  end
  if type(handler.PRIORITY) ~= "number" then
    return nil, "plugin '" .. name .. "': handler.lua needs a numeric PRIORITY"
  end
  local daos
  if exists(dir .. "/daos.lua") then
    local d, derr = run_file(dir .. "/daos.lua")
    if type(d) ~= "table" then
      return nil, "plugin '" .. name .. "': daos.lua "
        .. (derr and ("failed: " .. derr) or "must return a table of entity schemas")
    end
    daos = d
  end
  p = { name = name, dir = dir, handler = handler, schema = schema, daos = daos }
  loaded[name] = p
  return p
end

-- require("sluice.plugins.NAME.MODULE") loads NAME/MODULE.lua of a known plugin.
local function searcher(modname)
  local name, rest = str_match(modname, "^sluice%.plugins%.([^%.]+)%.(.+)$")
  if not name then
    return nil
  end
  local dir = find(name)
  if not dir then
    return "\n\tno plugin '" .. name .. "'"
  end
  local file = dir .. "/" .. str_gsub(rest, "%.", "/") .. ".lua"
  local chunk, err = loadfile(file)
  if not chunk then
    return "\n\t" .. (err or ("no file '" .. file .. "'"))
  end
  return chunk
end

local loaders = package.loaders
loaders[#loaders + 1] = searcher

return _M
