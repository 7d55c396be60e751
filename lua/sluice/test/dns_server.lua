-- dns_server.lua: a small authoritative DNS server over UDP for the specs, so
-- sluice's resolver talks to a real server on 127.0.0.1.
--
-- Usage: lua5.1 spec/fixtures/dns_server.lua PORT ZONE_FILE LOG_FILE
--
-- ZONE_FILE is read again for every query, so a spec changes answers by
-- rewriting it. One record per line:
--   NAME A ADDRESS TTL         an IPv4 answer (several lines: several records)
--   NAME AAAA ADDRESS TTL      an IPv6 answer
--   NAME SERVFAIL              answer "server failure"
--   NAME DROP                  never answer (the client times out)
-- A name with no line is NXDOMAIN; a name with lines, but none of the type
-- asked, is an empty answer (NODATA). Every question is appended to LOG_FILE
-- as "NAME TYPE" (A or AAAA), for specs that count queries.
local socket = require("socket")

local port, zone_file, log_file = tonumber(arg[1]), arg[2], arg[3]
assert(port and zone_file and log_file, "usage: dns_server.lua PORT ZONE_FILE LOG_FILE")

local byte, char = string.byte, string.char
local TYPE_A, TYPE_AAAA = 1, 28
local TYPES = { [TYPE_A] = "A", [TYPE_AAAA] = "AAAA" }

local function u16(n)
  return char(math.floor(n / 256) % 256, n % 256)
end

local function u32(n)
  return u16(math.floor(n / 65536) % 65536) .. u16(n % 65536)
end

local function read_zone()
  local zone = {}
  local f = io.open(zone_file, "rb")
  if not f then
    return zone
  end
  for line in f:lines() do
    local name, kind, addr, ttl = line:match("^(%S+)%s+(%S+)%s*(%S*)%s*(%S*)")
    if name then
      name = name:lower()
      zone[name] = zone[name] or {}
      table.insert(zone[name], { kind = kind, addr = addr, ttl = tonumber(ttl) or 60 })
    end
  end
  f:close()
  return zone
end

local function ipv4(addr)
  local a, b, c, d = addr:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
end

-- Expands "::1"-style text to 16 bytes.
local function ipv6(addr)
  local head, tail = addr:match("^(.-)::(.*)$")
  local groups = {}
  local function split(s)
    local out = {}
    for g in s:gmatch("[^:]+") do
      out[#out + 1] = tonumber(g, 16)
    end
    return out
  end
  if head then
    local h, t = split(head), split(tail)
    for _, g in ipairs(h) do
      groups[#groups + 1] = g
    end
    for _ = 1, 8 - #h - #t do
      groups[#groups + 1] = 0
    end
    for _, g in ipairs(t) do
      groups[#groups + 1] = g
    end
  else
    groups = split(addr)
  end
  local out = {}
  for i = 1, 8 do
    out[i] = u16(groups[i] or 0)
  end
  return table.concat(out)
end

-- The question: name (lower-case), type, and where it ends in the packet.
local function question(p)
  local labels, i = {}, 13
  while true do
    local len = byte(p, i)
    if not len or len == 0 then
      break
    end
    labels[#labels + 1] = p:sub(i + 1, i + len)
    i = i + 1 + len
  end
  local qtype = byte(p, i + 1) * 256 + byte(p, i + 2)
  return table.concat(labels, "."):lower(), qtype, i + 4
end

local function answer(p)
  if #p < 17 then
    return nil
  end
  local name, qtype, qend = question(p)
  local log = io.open(log_file, "ab")
  if log then
    log:write(name, " ", TYPES[qtype] or tostring(qtype), "\n")
    log:close()
  end
  local records = read_zone()[name]
  local rcode, answers = 0, {}
  if not records then
    rcode = 3
  else
    for _, r in ipairs(records) do
      if r.kind == "DROP" then
        return nil
      elseif r.kind == "SERVFAIL" then
        rcode = 2
      elseif (r.kind == "A" and qtype == TYPE_A) or (r.kind == "AAAA" and qtype == TYPE_AAAA) then
        local rdata = qtype == TYPE_A and ipv4(r.addr) or ipv6(r.addr)
        answers[#answers + 1] = "\192\12" .. u16(qtype) .. u16(1) .. u32(r.ttl)
          .. u16(#rdata) .. rdata
      end
    end
  end
  if rcode ~= 0 then
    answers = {}
  end
  -- Header: the query's id; QR, AA, RD (copied) and RA; the rcode.
  local rd = byte(p, 3) % 2
  local flags = 0x8400 + rd * 0x100 + 0x80 + rcode
  return p:sub(1, 2) .. u16(flags) .. u16(1) .. u16(#answers) .. u16(0) .. u16(0)
    .. p:sub(13, qend) .. table.concat(answers)
end

local udp = assert(socket.udp())
assert(udp:setsockname("127.0.0.1", port))
-- The log file appears once the socket is bound: the caller waits for it.
assert(io.open(log_file, "ab")):close()
while true do
  local p, ip, from_port = udp:receivefrom()
  if p then
    local out = answer(p)
    if out then
      udp:sendto(out, ip, from_port)
    end
  end
end
