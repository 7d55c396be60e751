-- basic-auth: authenticates a request by username and password (RFC 7617), as Kong's.
--
-- Proxy-Authorization is read first, then Authorization, as in Kong. A
-- header that is not "Basic <base64 of user:password>" is a 401, never an
-- error. Password checks are cached per worker (password.lua).
local auth = require("sluice.auth")
local crypto = require("sluice.crypto")
local password = require("sluice.plugins.basic-auth.password")

local sluice = sluice
local ipairs = ipairs
local setmetatable = setmetatable
local str_find = string.find
local str_match = string.match
local str_sub = string.sub

local UNAUTHORIZED = "Unauthorized"
local PROXY_AUTHORIZATION = "Proxy-Authorization"
local AUTHORIZATION = "Authorization"

local BasicAuth = {
  PRIORITY = 1100,
  VERSION = "1.0.0",
}

-- challenges[conf] = 'Basic realm="..."', made once per config.
local challenges = setmetatable({}, { __mode = "k" })

local function challenge(conf)
  local c = challenges[conf]
  if not c then
    c = 'Basic realm="' .. conf.realm .. '"'
    challenges[conf] = c
  end
  return c
end

function BasicAuth.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    challenge(conf)
  end
end

-- The credential and decoded "user:pass" of a header value, or nil when it
-- is not Basic credentials of a known username. The scheme is
-- case-insensitive (RFC 7235); the base64 must be canonical.
local function credentials(value)
  local scheme, token = str_match(value, "^%s*(%a+) +([%w+/=]+)%s*$")
  if not scheme or #scheme ~= 5 or scheme:lower() ~= "basic" then
    return nil
  end
  local userpass = crypto.base64_decode(token)
  local colon = userpass and str_find(userpass, ":", 1, true)
  if not colon or colon == 1 then
    return nil
  end
  -- sluice.db has no basicauth_credentials when the config holds none.
  local dao = sluice.db.basicauth_credentials
  local cred = dao and dao:select_by_username(str_sub(userpass, 1, colon - 1))
  if not cred then
    return nil
  end
  return cred, userpass, str_sub(userpass, colon + 1)
end

-- The credential the request proves it holds, or nil.
local function authenticate(conf)
  local proxy = sluice.request.get_header(PROXY_AUTHORIZATION)
  local plain = sluice.request.get_header(AUTHORIZATION)
  if not proxy and not plain then
    return nil
  end
  local cred, userpass, pass
  if proxy then
    cred, userpass, pass = credentials(proxy)
    if conf.hide_credentials then
      sluice.service.request.clear_header(PROXY_AUTHORIZATION)
    end
  end
  if not cred and plain then
    cred, userpass, pass = credentials(plain)
    if conf.hide_credentials then
      sluice.service.request.clear_header(AUTHORIZATION)
    end
  end
  if cred and password.check(cred, userpass, pass) then
    return cred
  end
  return nil
end

function BasicAuth.access(_, conf)
  if auth.skip(conf) then
    return
  end
  local cred = authenticate(conf)
  if not cred then
    return auth.fail(conf, 401, UNAUTHORIZED, challenges[conf] or challenge(conf))
  end
  return auth.accept(auth.consumer(cred.consumer.id), cred, cred.username)
end

return BasicAuth
