-- ip-restriction: refuses clients by address, with allow and deny lists of IPs and CIDRs.
--
-- The lists are compiled once per config (configure) into per-prefix-length
-- hash sets (matcher.lua): a request costs one parse of its address and a
-- probe per distinct prefix length in the list, not a walk of the list.
local matcher = require("sluice.plugins.ip-restriction.matcher")

local sluice = sluice

local parse = matcher.parse
local match = matcher.match
local setmetatable = setmetatable

local NO_ADDRESS = "Cannot identify the client IP address, unix domain sockets are not supported."

local IpRestriction = {
  PRIORITY = 990, -- Kong's: after authentication (1250), before request-size-limiting (951)
  VERSION = "1.0.0",
}

-- Per worker: config table -> { allow = matcher or nil, deny = matcher or
-- nil, body = the refusal's body }, made by configure.
local compiled = setmetatable({}, { __mode = "k" })

local function compile(conf)
  local c = compiled[conf]
  if not c then
    c = { body = { message = conf.message } }
    if conf.allow and #conf.allow > 0 then
      c.allow = matcher.compile(conf.allow)
    end
    if conf.deny and #conf.deny > 0 then
      c.deny = matcher.compile(conf.deny)
    end
    compiled[conf] = c
  end
  return c
end

function IpRestriction.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    compile(conf)
  end
end

function IpRestriction.access(_, conf)
  local c = compiled[conf] or compile(conf)
  local ip = sluice.client.get_forwarded_ip()
  local family, w1, w2, w3, w4 = parse(ip)
  if not family then
    return sluice.response.exit(403, { message = NO_ADDRESS })
  end
  -- deny wins, as in Kong: an address in both lists is refused.
  if c.deny and match(c.deny, family, w1, w2, w3, w4) then
    return sluice.response.exit(conf.status, c.body)
  end
  if c.allow and not match(c.allow, family, w1, w2, w3, w4) then
    return sluice.response.exit(conf.status, c.body)
  end
end

return IpRestriction
