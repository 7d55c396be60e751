-- sluice.client through the real binary: the peer, and what trusted proxies forward.
local helpers = require("spec.helpers")

local fmt = string.format

local function start(trusted)
  return helpers.start_sluice(fmt([[
_format_version: "3.0"
server:
  listen: ["127.0.0.1:{PORT}"]
  workers: 1
  pid_file: "{DIR}/sluice.pid"
  access_log: "off"
  trusted_ips: %s
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: who
        paths: ["/who"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    return sluice.response.exit(200, {
                      ip = sluice.client.get_ip(),
                      forwarded_ip = sluice.client.get_forwarded_ip(),
                      forwarded_port = sluice.client.get_forwarded_port(),
                    })
                  end
]], trusted))
end

local function who(s, headers)
  local _, _, body = helpers.curl(fmt("http://127.0.0.1:%d/who %s", s.port, headers or ""))
  return helpers.json(body)
end

describe("sluice.client", function()
  teardown(function()
    helpers.stop_all()
  end)

  it("ignores X-Forwarded-For from an untrusted peer", function()
    local s = start("[]")
    local t = who(s, "-H 'X-Forwarded-For: 203.0.113.9' -H 'X-Forwarded-Port: 444'")
    assert.equal("127.0.0.1", t.ip)
    assert.equal("127.0.0.1", t.forwarded_ip)
    assert.is_true(t.forwarded_port ~= 444)
  end)

  it("walks X-Forwarded-For past trusted proxies", function()
    local s = start('["127.0.0.1", "10.0.0.0/8"]')
    local t = who(s, "-H 'X-Forwarded-For: 198.51.100.7, 203.0.113.9, 10.1.2.3' "
      .. "-H 'X-Forwarded-Port: 444'")
    assert.equal("127.0.0.1", t.ip)
    assert.equal("203.0.113.9", t.forwarded_ip)
    assert.equal(444, t.forwarded_port)
    assert.equal("127.0.0.1", who(s).forwarded_ip)
  end)
end)
