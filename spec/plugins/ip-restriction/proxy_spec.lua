-- ip-restriction through the real binary: the peer's address, X-Forwarded-For from
-- server.trusted_ips (IPv4 and IPv6), and a 10,000-entry list loaded from YAML.
local helpers = require("spec.helpers")

local fmt = string.format

local function gateway(up, deny_list)
  return helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: local-only
        paths: ["/local"]
        plugins:
          - name: ip-restriction
            config: { allow: ["127.0.0.0/8"] }
      - name: nobody-local
        paths: ["/refuse-local"]
        plugins:
          - name: ip-restriction
            config: { deny: ["127.0.0.1"], status: 401, message: "Go away" }
      - name: offices
        paths: ["/offices"]
        plugins:
          - name: ip-restriction
            config:
              allow: ["198.51.100.0/24", "2001:db8:1::/48", "127.0.0.1"]
              deny: ["198.51.100.66", "2001:db8:1:bad::/64"]
      - name: big
        paths: ["/big"]
        plugins:
          - name: ip-restriction
            config:
              deny: [%s]
]], up.port, deny_list), { server = { trusted_ips = { "127.0.0.1" } } })
end

local function get(s, path, xff)
  local res = helpers.request(s.port, fmt("GET %s HTTP/1.1\r\nHost: gw\r\n%s\r\n", path,
    xff and ("X-Forwarded-For: " .. xff .. "\r\n") or ""))
  return res.status, res
end

describe("plugin: ip-restriction (proxy)", function()
  local up, s, big

  setup(function()
    up = helpers.start_upstream()
    -- 10,000 entries: 9,998 /32 and /24 blocks far from the probes, and two
    -- the probes hit, at the end of the list.
    big = {}
    for i = 1, 9998 do
      big[i] = i % 2 == 0 and fmt('"10.%d.%d.0/24"', math.floor(i / 256) % 256, i % 256)
        or fmt('"2001:db8:%x::%x"', i, i)
    end
    big[9999] = '"192.0.2.0/25"'
    big[10000] = '"2001:db8:ffff::/48"'
    s = gateway(up, table.concat(big, ", "))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("lets an allowed peer through and refuses another with Kong's 403", function()
    assert.equal(200, (get(s, "/local/a")))
    -- 127.0.0.1 is trusted: it may say who the client is.
    local status, res = get(s, "/local/b", "203.0.113.1")
    assert.equal(403, status)
    assert.equal('{"message":"Your IP address is not allowed"}', (res.body:gsub("%s+$", "")))
    assert.matches("^application/json", res.headers["content-type"])
    assert.is_false(helpers.upstream_saw(up, "/local/b"))
  end)

  it("answers with the configured status and message", function()
    local status, res = get(s, "/refuse-local/x")
    assert.equal(401, status)
    assert.equal('{"message":"Go away"}', (res.body:gsub("%s+$", "")))
  end)

  it("checks the forwarded IPv4 and IPv6 client, deny winning", function()
    assert.equal(200, (get(s, "/offices/1", "198.51.100.7")))
    assert.equal(403, (get(s, "/offices/2", "198.51.100.66")))
    assert.equal(403, (get(s, "/offices/3", "198.51.101.7")))
    assert.equal(200, (get(s, "/offices/4", "2001:db8:1:2::7")))
    assert.equal(403, (get(s, "/offices/5", "2001:db8:1:bad::7")))
    assert.equal(403, (get(s, "/offices/6", "2001:db8:2::7")))
    -- the peer itself, with no header
    assert.equal(200, (get(s, "/offices/7")))
  end)

  it("walks X-Forwarded-For past trusted proxies, not past the first untrusted hop", function()
    -- the client, then a trusted hop (127.0.0.1): the client is 198.51.100.7
    assert.equal(200, (get(s, "/offices/8", "198.51.100.7, 127.0.0.1")))
    -- an allowed address spoofed in front of an untrusted hop does not count
    assert.equal(403, (get(s, "/offices/9", "198.51.100.7, 203.0.113.9")))
  end)

  it("answers correctly from a 10,000-entry list", function()
    assert.equal(403, (get(s, "/big/1", "192.0.2.77")))
    assert.equal(200, (get(s, "/big/2", "192.0.2.200")))
    assert.equal(403, (get(s, "/big/3", "2001:db8:ffff:1::1")))
    assert.equal(403, (get(s, "/big/4", "10.0.2.9")))  -- 10.0.2.0/24, entry 2
    assert.equal(200, (get(s, "/big/5", "10.0.3.9")))  -- odd entries are IPv6
    assert.equal(403, (get(s, "/big/6", "2001:db8:3::3")))
    assert.equal(200, (get(s, "/big/7", "2001:db8:3::4")))
    assert.equal(200, (get(s, "/big/8")))
  end)

  it("refuses a config with an invalid entry at sluice check, naming it", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/bad.yaml", [[
_format_version: "3.0"
plugins:
  - name: ip-restriction
    config:
      allow: ["10.0.0.0/8", "10.0.0.0/40"]
]])
    local out, rc = helpers.run(fmt("%s check -c %s/bad.yaml 2>&1", helpers.bin, dir))
    assert.is_not.equal(0, rc)
    assert.matches("bad.yaml:5: plugins[0].config.allow[1]: invalid prefix length in "
      .. "'10.0.0.0/40': at most 32", out, 1, true)
  end)
end)
