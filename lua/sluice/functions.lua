-- functions.lua: the shared implementation of the pre-function and post-function plugins.
--
-- Each config's code strings are compiled once per worker (configure) and
-- cached by config table; a chunk runs with the `sluice` global like any
-- plugin code. As in Kong, each chunk is tried once when compiled (errors
-- ignored, outside any request): one that returns a function has that
-- function run per request; any other chunk is itself run per request.

local loadstring = loadstring
local pcall = pcall
local setmetatable = setmetatable
local type = type
local ipairs = ipairs

local PHASES = { "rewrite", "access", "header_filter", "body_filter", "log" }

local _M = {}

-- Shape: compiled[conf] = { access = { fn, ... }, ... }; weak so old configs go.
local compiled = setmetatable({}, { __mode = "k" })

local function compile(conf, name)
  local out = {}
  for _, phase in ipairs(PHASES) do
    local list = {}
    for i, code in ipairs(conf[phase] or {}) do
      local chunk = assert(loadstring(code, "=" .. name .. "[" .. phase .. "][" .. i .. "]"))
      local ok, ret = pcall(chunk)
      list[i] = (ok and type(ret) == "function") and ret or chunk
    end
    out[phase] = list
  end
  compiled[conf] = out
  return out
end

-- The config schema of the plugin `name` (pre-function or post-function):
-- Lua code strings per phase, each checked to compile.
function _M.schema(name)
  local function compiles(code)
    local fn, err = loadstring(code, "=" .. name)
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
    name = name,
    fields = {
      { config = {
          type = "record",
          fields = {
            { rewrite = phase("Code run in rewrite (global instances only).") },
            { access = phase("Code run in access.") },
            { header_filter = phase("Code run in header_filter.") },
            { body_filter = phase("Code run in body_filter, once per piece of the body.") },
            { log = phase("Code run in log.") },
          },
        } },
    },
  }
end

function _M.new(name, priority)
  local handler = { PRIORITY = priority, VERSION = "0.1.0" }

  -- Only phases with code join the chain.
  function handler.uses_phase(conf, phase)
    return conf[phase] ~= nil and #conf[phase] > 0
  end

  function handler.configure(_, configs)
    for _, conf in ipairs(configs or {}) do
      compile(conf, name)
    end
  end

  for _, phase in ipairs(PHASES) do
    handler[phase] = function(_, conf)
      local fns = (compiled[conf] or compile(conf, name))[phase]
      for i = 1, #fns do
        fns[i]()
      end
    end
  end
  return handler
end

return _M
