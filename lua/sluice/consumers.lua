-- consumers.lua: the consumers of the loaded config, looked up by id or username.
--
-- The runner hands it the normalized config's consumers (config.lua) when it
-- builds the chains; sluice.client.load_consumer and the auth plugins read it.
-- A consumer there is { id =, username =, custom_id =, tags =, created_at =,
-- updated_at =, where =, keyauth_credentials = { ... }, ... }, shared by
-- every request: what leaves this module for a plugin is a copy.

local ipairs = ipairs

local _M = {}

-- by_id[id] = consumer; by_username[username] = consumer (usernames are
-- case-sensitive, as in Kong).
local by_id, by_username = {}, {}

-- Indexes the consumers of a normalized config (nil: none).
function _M.init(list)
  by_id, by_username = {}, {}
  for _, c in ipairs(list or {}) do
    by_id[c.id] = c
    if c.username then
      by_username[c.username] = c
    end
  end
end

-- The consumer with this id, or nil.
function _M.by_id(id)
  return by_id[id]
end

-- The consumer with this username, or nil.
function _M.by_username(username)
  return by_username[username]
end

-- The consumer as Kong's PDK returns one: a fresh table with the entity's
-- fields (credentials are entities of their own and are not part of it).
function _M.entity(c)
  local tags
  if c.tags then
    tags = {}
    for i, t in ipairs(c.tags) do
      tags[i] = t
    end
  end
  return { id = c.id, username = c.username, custom_id = c.custom_id, tags = tags,
           created_at = c.created_at, updated_at = c.updated_at }
end

-- The credentials of one kind ("keyauth_credentials", "acls", ...) of the
-- consumer with this id, as the config wrote them, or nil when there is no
-- such consumer. For the auth plugins; the list is shared: do not change it.
function _M.credentials(id, kind)
  local c = by_id[id]
  return c and c[kind]
end

return _M
