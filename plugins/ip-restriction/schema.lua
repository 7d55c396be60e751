-- ip-restriction: the addresses a route accepts or refuses, in Kong's fields.
local matcher = require("sluice.plugins.ip-restriction.matcher")

local function check_ip_or_cidr(s)
  local family, err = matcher.parse_cidr(s)
  if not family then
    return nil, err
  end
  return true
end

local function list(what)
  return { type = "array", elements = { type = "string", custom = check_ip_or_cidr },
           description = what .. ": IPv4 and IPv6 addresses and CIDR blocks "
             .. "(\"10.0.0.0/8\", \"2001:db8::/32\", \"::1\")." }
end

return {
  name = "ip-restriction",
  fields = {
    { config = {
        type = "record",
        fields = {
          { allow = list("Clients allowed: when set, any other address is refused") },
          { deny = list("Clients refused, even when allow lists them too") },
          { status = { type = "integer", default = 403, between = { 100, 599 },
                       description = "The status refused clients get." } },
          { message = { type = "string", default = "Your IP address is not allowed",
                        description = "The message of the refusal, sent as "
                          .. "{\"message\": ...}." } },
        },
        check = function(c)
          if c.allow == nil and c.deny == nil then
            return nil, "at least one of 'allow' or 'deny' is required"
          end
          return true
        end,
      } },
  },
}
