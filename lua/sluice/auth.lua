-- auth.lua: what every authentication plugin does once it knows (or not) who
-- the request is from, as Kong's auth plugins do it.
--
--   local auth = require("sluice.auth")
--   if auth.skip(conf) then return end          -- preflight, or another plugin won
--   local cred = sluice.db.keyauth_credentials:select_by_key(key)
--   if not cred then return auth.fail(conf, 401, "Invalid authentication credentials",
--                                     'Key realm="sluice"') end
--   auth.accept(auth.consumer(cred.consumer.id), cred, cred.id)
--
-- The upstream gets Kong's headers: X-Consumer-ID, X-Consumer-Custom-ID,
-- X-Consumer-Username, X-Credential-Identifier, and X-Anonymous-Consumer:
-- true for the anonymous consumer (each one cleared when it does not apply,
-- so a client cannot send them itself).

local consumers = require("sluice.consumers")

local type = type
local error = error

local _M = {}

local ANONYMOUS_HEADER = "X-Anonymous-Consumer"

-- The consumer with this id (or username), as plugins and logs see it: one
-- table per consumer and config load, shared by every request (read it, do
-- not change it); nil when there is none.
function _M.consumer(id_or_username)
  return consumers.shared_entity(id_or_username)
end

-- Whether the plugin has nothing to do for this request: an OPTIONS preflight
-- when conf.run_on_preflight is false, or, when conf.anonymous is set (the
-- plugin is one of several alternatives), a request another plugin already
-- authenticated with a real credential (Kong's "logical OR").
function _M.skip(conf)
  if conf.run_on_preflight == false and sluice.request.get_method() == "OPTIONS" then
    return true
  end
  return conf.anonymous ~= nil and sluice.client.get_credential() ~= nil
end

-- Records who the request is from and tells the upstream. consumer (from
-- _M.consumer) may be nil when a credential without a consumer authenticated;
-- credential is nil for the anonymous consumer; identifier is what
-- X-Credential-Identifier says (key-auth: the credential's id, basic-auth:
-- its username, jwt: its key). Returns true.
function _M.accept(consumer, credential, identifier)
  local set, clear = sluice.service.request.set_header, sluice.service.request.clear_header
  sluice.client.authenticate(consumer, credential)
  if consumer then
    set("X-Consumer-ID", consumer.id)
    if consumer.custom_id then
      set("X-Consumer-Custom-ID", consumer.custom_id)
    else
      clear("X-Consumer-Custom-ID")
    end
    if consumer.username then
      set("X-Consumer-Username", consumer.username)
    else
      clear("X-Consumer-Username")
    end
  else
    clear("X-Consumer-ID")
    clear("X-Consumer-Custom-ID")
    clear("X-Consumer-Username")
  end
  if credential and identifier then
    set("X-Credential-Identifier", identifier)
  else
    clear("X-Credential-Identifier")
  end
  if credential then
    clear(ANONYMOUS_HEADER)
  else
    set(ANONYMOUS_HEADER, "true")
  end
  return true
end

-- Refuses the request, or lets it in as conf.anonymous when that is set:
-- status (401 or 403) with {"message": message} and, for 401, the
-- WWW-Authenticate challenge when one is given. An anonymous consumer that
-- does not exist is a configuration mistake: 500, as Kong answers. Returns
-- what sluice.response.exit returns, or true when the anonymous consumer was
-- accepted.
function _M.fail(conf, status, message, challenge)
  if type(status) ~= "number" then
    error("bad argument #2 to 'fail' (number expected, got " .. type(status) .. ")", 2)
  end
  local anonymous = conf.anonymous
  if anonymous ~= nil then
    local consumer = consumers.shared_entity(anonymous)
    if not consumer then
      sluice.log.err("anonymous consumer ", anonymous, " is configured but doesn't exist")
      return sluice.response.error(500, "An unexpected error occurred")
    end
    return _M.accept(consumer, nil, nil)
  end
  if challenge and status == 401 then
    return sluice.response.exit(status, { message = message },
      { ["WWW-Authenticate"] = challenge })
  end
  return sluice.response.exit(status, { message = message })
end

-- The consumer whose `field` ("username", "custom_id" or "id") equals value,
-- exactly, as _M.consumer returns one (shared: read it, do not change it);
-- nil when there is none. For plugins that map a claim to a consumer
-- (oauth2-introspection's consumer_by), where a username must not match an id.
function _M.consumer_by(field, value)
  local c
  if field == "username" then
    c = consumers.by_username(value)
  elseif field == "custom_id" then
    c = consumers.by_custom_id(value)
  elseif field == "id" then
    c = consumers.by_id(value)
  else
    error("bad argument #1 to 'consumer_by' (username, custom_id or id expected, got "
      .. tostring(field) .. ")", 2)
  end
  return c and consumers.shared_entity(c.id)
end

return _M
