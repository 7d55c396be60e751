-- acl: which groups may (allow) or may not (deny) use a route or service (Kong's fields).
local pairs = pairs

local GROUPS = { type = "array", len_min = 1, elements = { type = "string", len_min = 1 } }

local function groups(description)
  local s = { description = description }
  for k, v in pairs(GROUPS) do
    s[k] = v
  end
  return s
end

return {
  name = "acl",
  fields = {
    { config = {
        type = "record",
        fields = {
          { allow = groups("Only consumers in at least one of these groups get through.") },
          { deny = groups("Consumers in any of these groups are refused; everyone else "
              .. "gets through.") },
          { hide_groups_header = { type = "boolean", default = false,
                                   description = "Do not send X-Consumer-Groups (the "
                                     .. "consumer's groups) upstream." } },
          { always_use_authenticated_groups = {
              type = "boolean", default = false,
              description = "Check the groups another plugin authenticated "
                .. "(sluice.ctx.shared.authenticated_groups) even when a consumer is known." } },
          { include_consumer_groups = {
              type = "boolean", default = false,
              custom = function(v)
                if v then
                  return nil, "consumer groups are not supported: list the consumer's groups "
                    .. "as acls"
                end
                return true
              end,
              description = "Kong's consumer groups: not supported, only false." } },
        },
        entity_checks = {
          { only_one_of = { "allow", "deny" } },
          { at_least_one_of = { "allow", "deny" } },
        },
      } },
  },
}
