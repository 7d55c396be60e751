-- consumers.lua: the consumers of the loaded config and their credentials, indexed at load.
--
-- The runner hands it the normalized config's consumers and credential
-- collections (config.lua) when it builds the chains;
-- sluice.client.load_consumer and sluice.db (the auth plugins' lookups) read
-- it. A consumer there is { id =, username =, custom_id =, tags =,
-- created_at =, updated_at =, where =, keyauth_credentials = { ... }, ... },
-- shared by every request: what leaves this module as a consumer is a copy.
-- Credentials leave as they are, shared, as Kong's cache hands them out.

local error = error
local getmetatable = getmetatable
local ipairs = ipairs
local pairs = pairs
local rawset = rawset
local setmetatable = setmetatable
local type = type
local str_match = string.match

local _M = {}

-- by_id[id] = consumer; by_username[username] = consumer (usernames are
-- case-sensitive, as in Kong); by_custom_id[custom_id] = consumer (the
-- config loader keeps custom ids unique).
local by_id, by_username, by_custom_id = {}, {}, {}

-- The credential collections whose plugin declared them:
-- collections[kind] = { by_id = { [id] = credential },
--                       unique = { [field] = { [value] = credential } },
--                       list = { credential, ... } } (file order).
local collections = {}

-- sluice.db's objects, one per collection: daos[kind] = dao (see below).
local daos = {}

-- Indexes the consumers of a normalized config (nil: none) and the
-- credentials of the collections in kinds (config.credentials: { [kind] = {
-- unique = { field, ... } } }, nil: none), and the services (Kong's entity
-- shape, for sluice.db.services). O(entities); every lookup after it is O(1).
function _M.init(list, kinds, services)
  by_id, by_username, by_custom_id, collections, daos = {}, {}, {}, {}, {}
  -- Services, for sluice.db.services (select, select_by_name, each).
  local svc = { by_id = {}, unique = { name = {} }, list = {} }
  for i, s in ipairs(services or {}) do
    svc.by_id[s.id] = s
    if s.name then
      svc.unique.name[s.name] = s
    end
    svc.list[i] = s
  end
  collections.services = svc
  for kind, k in pairs(kinds or {}) do
    local unique = {}
    for _, field in ipairs(k.unique) do
      unique[field] = {}
    end
    collections[kind] = { by_id = {}, unique = unique, list = {} }
  end
  for _, c in ipairs(list or {}) do
    by_id[c.id] = c
    if c.username then
      by_username[c.username] = c
    end
    if c.custom_id then
      by_custom_id[c.custom_id] = c
    end
    for kind, coll in pairs(collections) do
      for _, cred in ipairs(c[kind] or {}) do
        coll.by_id[cred.id] = cred
        coll.list[#coll.list + 1] = cred
        for field, index in pairs(coll.unique) do
          local v = cred[field]
          if v ~= nil then
            index[v] = cred
          end
        end
      end
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

-- The consumer with this custom_id, or nil.
function _M.by_custom_id(custom_id)
  return by_custom_id[custom_id]
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

-- entities[consumer] = the consumer's shared entity (see shared_entity).
local entities = setmetatable({}, { __mode = "k" })

-- The consumer with this id or username as an entity (entity's shape), built
-- once per consumer and config load and shared by every caller: for the auth
-- plugins, which must not allocate per request. nil when there is none.
function _M.shared_entity(id_or_username)
  local c = by_id[id_or_username] or by_username[id_or_username]
  if not c then
    return nil
  end
  local e = entities[c]
  if not e then
    e = _M.entity(c)
    entities[c] = e
  end
  return e
end

-- The credentials of one kind ("keyauth_credentials", "acls", ...) of the
-- consumer with this id, as the config wrote them, or nil when there is no
-- such consumer. For the auth plugins; the list is shared: do not change it.
function _M.credentials(id, kind)
  local c = by_id[id]
  return c and c[kind]
end

-- sluice.db.NAME: read-only access to one credential collection, with the
-- method names of Kong's DAOs (kong.db.NAME) so that Kong plugins port as
-- they are. Every method answers from the indexes built at load.
local Dao = {}

local function check_self(self, fname)
  if getmetatable(self) ~= Dao then
    error("bad argument #1 to '" .. fname .. "' (call it as sluice.db.NAME:" .. fname
      .. "(...))", 3)
  end
end

local function pk_of(pk, fname)
  local t = type(pk)
  if t == "table" then
    pk = pk.id
    t = type(pk)
  end
  if t ~= "string" then
    error("bad argument #2 to '" .. fname .. "' (an id or { id = ID } expected, got "
      .. t .. ")", 3)
  end
  return pk
end

-- dao:select(pk): the credential with this id (pk a string or { id = }), or nil.
function Dao.select(self, pk)
  check_self(self, "select")
  return collections[self.kind].by_id[pk_of(pk, "select")]
end

-- dao:each_for_consumer(consumer_pk): an iterator over the consumer's
-- credentials of this collection, in file order (for row in dao:each_for_consumer(c)).
function Dao.each_for_consumer(self, consumer_pk)
  check_self(self, "each_for_consumer")
  local c = by_id[pk_of(consumer_pk, "each_for_consumer")]
  local list = c and c[self.kind] or {}
  local i = 0
  return function()
    i = i + 1
    return list[i]
  end
end

-- dao:each(): an iterator over every credential of this collection, in file order.
function Dao.each(self)
  check_self(self, "each")
  local list = collections[self.kind].list
  local i = 0
  return function()
    i = i + 1
    return list[i]
  end
end

-- dao:select_by_FIELD(value) for every field the plugin's daos.lua marks
-- unique: the credential whose FIELD is value, or nil.
Dao.__index = function(self, name)
  local m = Dao[name]
  if m and name ~= "__index" then
    return m
  end
  local field = type(name) == "string" and str_match(name, "^select_by_(.+)$")
  local index = field and collections[self.kind].unique[field]
  if not index then
    return nil
  end
  local fname = name
  local f = function(dao, value)
    check_self(dao, fname)
    if value == nil then
      error("bad argument #2 to '" .. fname .. "' (a value expected, got nil)", 2)
    end
    return index[value]
  end
  rawset(self, name, f)
  return f
end

-- The sluice.db object of collection kind, or nil when no loaded plugin
-- declared it.
function _M.dao(kind)
  local d = daos[kind]
  if d == nil and collections[kind] then
    d = setmetatable({ kind = kind }, Dao)
    daos[kind] = d
  end
  return d
end

return _M
