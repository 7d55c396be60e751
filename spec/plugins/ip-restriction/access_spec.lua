-- ip-restriction in-process (t.plugin): allow and deny over IPv4, IPv6 and mixed
-- lists, /0, /32, /128, deny winning, forwarded addresses, and the matcher itself
-- against a linear scan on a 10,000-entry list.
local t = require("sluice.test")
local matcher = require("sluice.plugins.ip-restriction.matcher")

local fmt = string.format

local function status(p, ip, headers)
  return p:run({ client_ip = ip, headers = headers }).status
end

describe("plugin: ip-restriction (access)", function()
  it("refuses an address outside allow with Kong's 403", function()
    local p = t.plugin("ip-restriction", { allow = { "10.0.0.0/8" } })
    local res = p:run({ client_ip = "192.168.0.1" })
    assert.equal(403, res.status)
    assert.same({ message = "Your IP address is not allowed" }, assert(res:json()))
    assert.is_nil(res.upstream)
    assert.equal(200, status(p, "10.255.0.1"))
    assert.equal(403, status(p, "11.0.0.0"))
  end)

  it("refuses what deny lists and lets the rest through", function()
    local p = t.plugin("ip-restriction", { deny = { "10.0.0.1", "172.16.0.0/12" } })
    assert.equal(403, status(p, "10.0.0.1"))
    assert.equal(200, status(p, "10.0.0.2"))
    assert.equal(403, status(p, "172.31.255.255"))
    assert.equal(200, status(p, "172.32.0.0"))
  end)

  it("lets deny win over allow, as Kong", function()
    local p = t.plugin("ip-restriction", { allow = { "10.0.0.0/8" }, deny = { "10.1.0.0/16" } })
    assert.equal(200, status(p, "10.2.3.4"))
    assert.equal(403, status(p, "10.1.3.4"))
  end)

  it("matches /0 and /32 at the edges", function()
    local all = t.plugin("ip-restriction", { deny = { "0.0.0.0/0" } })
    assert.equal(403, status(all, "1.2.3.4"))
    assert.equal(403, status(all, "255.255.255.255"))
    assert.equal(200, status(all, "::1"), "an IPv4 /0 does not cover IPv6")
    local one = t.plugin("ip-restriction", { allow = { "203.0.113.7/32" } })
    assert.equal(200, status(one, "203.0.113.7"))
    assert.equal(403, status(one, "203.0.113.6"))
    assert.equal(403, status(one, "203.0.113.8"))
  end)

  it("matches IPv6 addresses and blocks, /128 and ::/0", function()
    local p = t.plugin("ip-restriction", { allow = { "2001:db8::/32", "fe80::1/128" } })
    assert.equal(200, status(p, "2001:db8:ffff::1"))
    assert.equal(200, status(p, "2001:0db8:0000:0000:0000:0000:0000:0001"))
    assert.equal(403, status(p, "2001:db9::1"))
    assert.equal(200, status(p, "fe80::1"))
    assert.equal(403, status(p, "fe80::2"))
    local all = t.plugin("ip-restriction", { deny = { "::/0" } })
    assert.equal(403, status(all, "2001:db8::1"))
    assert.equal(200, status(all, "10.0.0.1"))
    local odd = t.plugin("ip-restriction", { allow = { "2001:db8:8000::/33" } })
    assert.equal(200, status(odd, "2001:db8:8000::1"))
    assert.equal(403, status(odd, "2001:db8:7fff::1"))
  end)

  it("takes mixed lists, and IPv4 entries match IPv4-mapped IPv6 clients", function()
    local p = t.plugin("ip-restriction", { allow = { "10.0.0.0/8", "::1" } })
    assert.equal(200, status(p, "10.1.1.1"))
    assert.equal(200, status(p, "::1"))
    assert.equal(200, status(p, "::ffff:10.1.1.1"))
    assert.equal(403, status(p, "::ffff:11.1.1.1"))
    assert.equal(403, status(p, "::2"))
  end)

  it("ignores host bits beyond the prefix, as Kong's matcher", function()
    local p = t.plugin("ip-restriction", { allow = { "10.1.2.3/8" } })
    assert.equal(200, status(p, "10.200.0.1"))
  end)

  it("answers with the configured status and message", function()
    local p = t.plugin("ip-restriction", { deny = { "127.0.0.1" }, status = 401,
                                           message = "Not here" })
    local res = p:run({})
    assert.equal(401, res.status)
    assert.same({ message = "Not here" }, assert(res:json()))
  end)

  it("checks the forwarded address only from server.trusted_ips", function()
    local opts = { trusted_ips = { "127.0.0.1" } }
    local p = t.plugin("ip-restriction", { allow = { "198.51.100.0/24" } }, opts)
    assert.equal(200, status(p, "127.0.0.1", { ["X-Forwarded-For"] = "198.51.100.9" }))
    assert.equal(403, status(p, "127.0.0.1", { ["X-Forwarded-For"] = "203.0.113.9" }))
    -- an untrusted peer cannot claim an address
    assert.equal(403, status(p, "192.0.2.1", { ["X-Forwarded-For"] = "198.51.100.9" }))
    local d = t.plugin("ip-restriction", { deny = { "203.0.113.0/24" } }, opts)
    assert.equal(403, status(d, "127.0.0.1", { ["X-Forwarded-For"] = "203.0.113.5, 127.0.0.1" }))
  end)
end)

describe("plugin: ip-restriction (matcher)", function()
  it("parses what it should and nothing else", function()
    assert.same({ 4, 0x0a000001 }, { matcher.parse("10.0.0.1") })
    assert.same({ 6, 0, 0, 0, 1 }, { matcher.parse("::1") })
    assert.same({ 6, 0, 0, 0xffff, 0x0a000001 }, { matcher.parse("::ffff:10.0.0.1") })
    assert.same({ 6, 0x20010db8, 0, 0, 0 }, { matcher.parse("2001:db8::") })
    assert.same({ 6, 0x00010002, 0x00030004, 0x00050006, 0x00070008 },
      { matcher.parse("1:2:3:4:5:6:7:8") })
    for _, bad in ipairs({ "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3",
                           ":::", "1:2:3:4:5:6:7:8:9", "1::2::3", "::g", "12345::",
                           "1:2:3:4:5:6:7::8", "fe80::1%eth0", "1.2.3.4:80", "[::1]",
                           "::1.2.3", "1:", ":1" }) do
      assert.is_nil(matcher.parse(bad), bad)
    end
  end)

  it("answers like a linear scan on a list of 10,000 mixed entries", function()
    -- A deterministic list: /8 to /32 IPv4 blocks and /16 to /128 IPv6 ones.
    local state = 12345
    local function rnd(n)
      state = (state * 1103515245 + 12345) % 2147483648
      return state % n
    end
    local list, entries = {}, {}
    for i = 1, 10000 do
      local s
      if i % 2 == 0 then
        local len = 8 + rnd(25)
        s = fmt("%d.%d.%d.%d/%d", rnd(256), rnd(256), rnd(256), rnd(256), len)
      else
        local len = 16 + rnd(113)
        s = fmt("%x:%x:%x:%x:%x:%x:%x:%x/%d", rnd(65536), rnd(65536), rnd(65536),
          rnd(65536), rnd(65536), rnd(65536), rnd(65536), rnd(65536), len)
      end
      list[i] = s
      entries[i] = { matcher.parse_cidr(s) }
    end
    local m = matcher.compile(list)
    local bit = require("bit")
    local function covers(e, family, w)
      if e[1] ~= family then
        return false
      end
      local len = e[2]
      for k = 1, #w do
        local b = math.min(math.max(len - 32 * (k - 1), 0), 32)
        local mask = b == 0 and 0 or bit.tobit(bit.lshift(-1, 32 - b))
        if b == 32 then
          mask = -1
        end
        if bit.band(w[k], mask) ~= bit.band(e[2 + k], mask) then
          return false
        end
      end
      return true
    end
    local hits = 0
    for probe = 1, 2000 do
      local addr
      if probe % 4 == 0 then
        -- an address inside a listed block: a hit
        local e = list[1 + rnd(10000)]
        addr = e:match("^[^/]+")
      elseif probe % 2 == 0 then
        addr = fmt("%d.%d.%d.%d", rnd(256), rnd(256), rnd(256), rnd(256))
      else
        addr = fmt("%x:%x::%x", rnd(65536), rnd(65536), rnd(65536))
      end
      local family, w1, w2, w3, w4 = matcher.parse(addr)
      local w = family == 4 and { w1 } or { w1, w2, w3, w4 }
      local want = false
      for _, e in ipairs(entries) do
        if covers(e, family, w) then
          want = true
          break
        end
      end
      assert.equal(want, matcher.match(m, family, w1, w2, w3, w4), addr)
      if want then
        hits = hits + 1
      end
    end
    assert.is_true(hits >= 500, "too few hits to mean anything: " .. hits)
  end)
end)
