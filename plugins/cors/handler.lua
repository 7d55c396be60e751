-- cors: answers CORS preflights and adds the Access-Control-* headers browsers check.
local policy = require("sluice.plugins.cors.policy")

local sluice = sluice

local ipairs = ipairs
local str_find = string.find
local str_lower = string.lower
local type = type

local policy_get = policy.get
local allowed = policy.allowed

-- A Vary value that already names Origin (as a whole token, any case) or is "*".
local VARY_ORIGIN = "%f[%w_%-]origin%f[^%w_%-]"

local Cors = {
  PRIORITY = 2000, -- Kong's: before authentication, so preflights never need credentials
  VERSION = "1.0.0",
}

function Cors.configure(_, configs)
  for _, conf in ipairs(configs) do
    policy_get(conf)
  end
end

local function names_origin(v)
  v = str_lower(v)
  return str_find(v, VARY_ORIGIN) ~= nil or str_find(v, "*", 1, true) ~= nil
end

-- Adds Origin to the response's Vary, keeping what the upstream sent there
-- and adding nothing when it names Origin (or "*") already.
local function vary_origin()
  local response = sluice.response
  if response.get_header("Vary") ~= nil then
    local v = response.get_headers()["vary"]
    if type(v) == "table" then
      for i = 1, #v do
        if names_origin(v[i]) then
          return
        end
      end
    elseif names_origin(v) then
      return
    end
  end
  response.add_header("Vary", "Origin")
end

-- A preflight is an OPTIONS request with an Origin and an
-- Access-Control-Request-Method: the browser asking before the real request.
local function preflight_origin()
  local request = sluice.request
  if request.get_method() ~= "OPTIONS" then
    return nil
  end
  local origin = request.get_header("Origin")
  if origin and request.get_header("Access-Control-Request-Method") then
    return origin
  end
  return nil
end

-- Preflights are answered here with 200, unless preflight_continue sends
-- them upstream (whose answer then goes back untouched).
function Cors.access(_, conf)
  local origin = preflight_origin()
  if not origin or conf.preflight_continue then
    return
  end
  local p = policy_get(conf)
  if not allowed(p, origin) then
    return sluice.response.exit(200, nil, p.refused)
  end
  local request, response = sluice.request, sluice.response
  response.set_header("Access-Control-Allow-Origin", p.echo and origin or "*")
  if p.echo_headers then
    local asked = request.get_header("Access-Control-Request-Headers")
    if asked then
      response.set_header("Access-Control-Allow-Headers", asked)
    end
  end
  if conf.private_network
      and request.get_header("Access-Control-Request-Private-Network") == "true" then
    response.set_header("Access-Control-Allow-Private-Network", "true")
  end
  return sluice.response.exit(200, nil, p.preflight)
end

-- Every other response (the upstream's, another plugin's exit, sluice's
-- 502/503/504) gets the headers for its request's Origin.
function Cors.header_filter(_, conf)
  if preflight_origin() then
    return -- answered above, or the upstream's own answer (preflight_continue)
  end
  local p = policy_get(conf)
  local response = sluice.response
  local origin = sluice.request.get_header("Origin")
  local value
  if origin == nil then
    if conf.allow_origin_absent then
      -- Kong: without an Origin, "*" or the one configured origin.
      value = p.allow_all and "*" or p.single
    end
  elseif allowed(p, origin) then
    value = p.echo and origin or "*"
  end
  if value then
    response.set_header("Access-Control-Allow-Origin", value)
    if p.credentials and value ~= "*" then
      response.set_header("Access-Control-Allow-Credentials", "true")
    end
    if p.expose then
      response.set_header("Access-Control-Expose-Headers", p.expose)
    end
  elseif origin ~= nil or conf.allow_origin_absent then
    -- Refused: nothing the upstream says about CORS may let it through.
    response.clear_header("Access-Control-Allow-Origin")
    response.clear_header("Access-Control-Allow-Credentials")
  end
  if p.vary then
    vary_origin()
  end
end

return Cors
