-- acl: lets a request through by the groups of its authenticated consumer (Kong's).
--
-- A consumer's groups come from its acls and are gathered once per loaded
-- config (the first request after a load pays O(acls)); each config's
-- verdict for a set of groups is computed once too. The request path is
-- two table lookups and one header set.
local sluice = sluice
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local type = type
local tbl_concat = table.concat

local FORBIDDEN = "You cannot consume this service"
local CONSUMER_GROUPS = "X-Consumer-Groups"
local AUTHENTICATED_GROUPS = "X-Authenticated-Groups"

local ACL = {
  PRIORITY = 950,
  VERSION = "1.0.0",
}

-- groups_by_dao[sluice.db.acls] = { [consumer_id] = { set = { [group] = true },
-- header = "a, b" } }: built once per loaded config (each load makes a new dao).
local groups_by_dao = setmetatable({}, { __mode = "k" })
local NONE = {}

local function consumer_groups()
  local dao = sluice.db.acls
  if not dao then
    return NONE -- the config holds no acls
  end
  local by_consumer = groups_by_dao[dao]
  if by_consumer then
    return by_consumer
  end
  by_consumer = {}
  local lists = {}
  for row in dao:each() do
    local id = row.consumer.id
    local g = by_consumer[id]
    if not g then
      g = { set = {} }
      by_consumer[id] = g
      lists[id] = {}
    end
    if not g.set[row.group] then
      g.set[row.group] = true
      lists[id][#lists[id] + 1] = row.group
    end
  end
  for id, list in pairs(lists) do
    by_consumer[id].header = tbl_concat(list, ", ")
  end
  groups_by_dao[dao] = by_consumer
  return by_consumer
end

-- prepared[conf] = { deny = boolean, groups = { ... }, verdicts = { [groups] =
-- true (refused) or false (let through) } }.
local prepared = setmetatable({}, { __mode = "k" })

local function prepare(conf)
  local p = prepared[conf]
  if not p then
    p = { deny = conf.deny ~= nil, groups = conf.deny or conf.allow,
          verdicts = setmetatable({}, { __mode = "k" }) }
    prepared[conf] = p
  end
  return p
end

function ACL.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    prepare(conf)
  end
end

-- Whether a group set refuses the request under p.
local function refused(p, set)
  local hit = false
  local list = p.groups
  for i = 1, #list do
    if set[list[i]] then
      hit = true
      break
    end
  end
  if p.deny then
    return hit
  end
  return not hit
end

-- Groups another plugin authenticated (ldap-auth, oauth2 style), as a set and
-- the header value, or nil. Per request: these are the request's own.
local function authenticated_groups()
  local list = sluice.ctx.shared.authenticated_groups
  if type(list) ~= "table" or #list == 0 then
    return nil
  end
  local set = {}
  for i = 1, #list do
    set[list[i]] = true
  end
  return set, tbl_concat(list, ", ")
end

local function pass(conf, header, value)
  if conf.hide_groups_header or not value or value == "" then
    sluice.service.request.clear_header(header)
  else
    sluice.service.request.set_header(header, value)
  end
end

function ACL.access(_, conf)
  local p = prepared[conf] or prepare(conf)
  local consumer = sluice.client.get_consumer()
  local credential = sluice.client.get_credential()
  local id = consumer and consumer.id
  if not id and type(credential) == "table" then
    id = credential.consumer_id or (type(credential.consumer) == "table"
      and credential.consumer.id)
  end

  if not id or not credential or conf.always_use_authenticated_groups then
    local set, header = authenticated_groups()
    if set then
      if refused(p, set) then
        return sluice.response.error(403, FORBIDDEN)
      end
      -- No consumer's groups here: a client's own header of them goes too.
      sluice.service.request.clear_header(CONSUMER_GROUPS)
      return pass(conf, AUTHENTICATED_GROUPS, header)
    end
    if not id then
      -- Nobody authenticated: 401, unless a credential without a consumer did.
      if credential then
        return sluice.response.error(403, FORBIDDEN)
      end
      return sluice.response.error(401, "Unauthorized")
    end
  end

  local g = consumer_groups()[id]
  if not g then
    if p.deny then
      return pass(conf, CONSUMER_GROUPS, nil)
    end
    -- An allow list and a consumer in no group: 403 for a real credential,
    -- 401 for the anonymous consumer (as Kong since 2.0).
    return sluice.response.error(credential and 403 or 401,
      credential and FORBIDDEN or "Unauthorized")
  end
  local verdict = p.verdicts[g]
  if verdict == nil then
    verdict = refused(p, g.set)
    p.verdicts[g] = verdict
  end
  if verdict then
    return sluice.response.error(403, FORBIDDEN)
  end
  return pass(conf, CONSUMER_GROUPS, g.header)
end

return ACL
