-- proxy-cache through the real binary: a real nginx upstream, 2 workers
-- sharing the cache, a miss storm coalesced into one upstream request, and a
-- small dict that evicts instead of failing.
local helpers = require("spec.helpers")

local fmt = string.format

-- /slow answers after 0.3 s, /chunked sends a chunked JSON body, /big a body
-- of the size its query says; every answer says which request it was (the
-- nginx request counter), so a cached answer is recognisable.
local function upstream()
  return helpers.start_upstream({ locations = [[
    location /slow {
      content_by_lua_block {
        ngx.sleep(0.3)
        ngx.header["Content-Type"] = "application/json"
        ngx.say('{"request":', ngx.var.connection_requests + ngx.var.connection * 1000, '}')
      }
    }
    location /chunked {
      content_by_lua_block {
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"part":1,')
        ngx.flush(true)
        ngx.print('"part2":"', ngx.var.request_id, '"}')
      }
    }
    location /big {
      content_by_lua_block {
        ngx.header["Content-Type"] = "text/plain"
        ngx.print(string.rep("x", tonumber(ngx.var.arg_size)))
      }
    }
]] })
end

local function gateway(up, extra)
  return helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: api
    url: http://127.0.0.1:%d
    routes:
      - name: api
        paths: ["/"]
        plugins:
          - name: proxy-cache
            config: { cache_ttl: 60, purge_method: PURGE }
%s]], up.port, extra or ""), { workers = 2 })
end

local function hits(up, path)
  local n = 0
  for _, line in ipairs(helpers.upstream_requests(up)) do
    if line:find(" " .. path, 1, true) then
      n = n + 1
    end
  end
  return n
end

describe("plugin: proxy-cache (proxy)", function()
  local up, s
  setup(function()
    up = upstream()
    s = gateway(up)
  end)
  teardown(function()
    helpers.stop_all()
  end)

  it("sends one request upstream for a storm of 50 concurrent misses, over 2 workers",
    function()
      local url = fmt(" -o /dev/null http://127.0.0.1:%d/slow", s.port)
      local out = helpers.run("curl -s --no-progress-meter --parallel --parallel-max 50 "
        .. "--parallel-immediate -w '%{http_code} %header{x-cache-status}\\n'"
        .. string.rep(url, 50))
      local counts = {}
      for status, state in out:gmatch("(%d+) (%a+)") do
        counts[status .. " " .. state] = (counts[status .. " " .. state] or 0) + 1
      end
      assert.same({ ["200 Miss"] = 1, ["200 Hit"] = 49 }, counts)
      assert.equal(1, hits(up, "/slow"))
    end)

  it("stores a chunked response and serves it with a Content-Length", function()
    local status, headers, body = helpers.curl(fmt("http://127.0.0.1:%d/chunked", s.port))
    assert.equal(200, status)
    assert.equal("Miss", headers["x-cache-status"])
    assert.equal("chunked", headers["transfer-encoding"])
    local status2, headers2, body2 = helpers.curl(fmt("http://127.0.0.1:%d/chunked", s.port))
    assert.equal(200, status2)
    assert.equal("Hit", headers2["x-cache-status"])
    assert.equal(body, body2)
    assert.equal(tostring(#body), headers2["content-length"])
    assert.equal(1, hits(up, "/chunked"))
  end)

  it("purges an entry, and the next request goes upstream again", function()
    helpers.curl(fmt("http://127.0.0.1:%d/big?size=10", s.port))
    assert.equal(1, hits(up, "/big?size=10"))
    local status = helpers.curl(fmt("-X PURGE http://127.0.0.1:%d/big?size=10", s.port))
    assert.equal(200, status)
    local _, headers = helpers.curl(fmt("http://127.0.0.1:%d/big?size=10", s.port))
    assert.equal("Miss", headers["x-cache-status"])
    assert.equal(2, hits(up, "/big?size=10"))
  end)
end)

describe("plugin: proxy-cache (bounded memory)", function()
  teardown(function()
    helpers.stop_all()
  end)

  it("evicts the least recently used entries of a full dict and keeps serving", function()
    local up = upstream()
    local s = gateway(up, [[
server:
  listen: ["127.0.0.1:{PORT}"]
  workers: 1
  error_log: "{DIR}/sluice.log"
  access_log: "{DIR}/access.log"
  pid_file: "{DIR}/sluice.pid"
  shared_dicts:
    proxy_cache: 256k
]])
    -- 100 entries of 8 KiB do not fit into 256 KiB: the oldest go.
    helpers.run(fmt("curl -s --no-progress-meter --parallel --parallel-max 4 -o /dev/null "
      .. "'http://127.0.0.1:%d/big?size=8192&n=[1-100]'", s.port))
    assert.equal(100, hits(up, "/big?size=8192"))
    local _, newest = helpers.curl(fmt("'http://127.0.0.1:%d/big?size=8192&n=100'", s.port))
    assert.equal("Hit", newest["x-cache-status"])
    local _, oldest = helpers.curl(fmt("'http://127.0.0.1:%d/big?size=8192&n=1'", s.port))
    assert.equal("Miss", oldest["x-cache-status"])
    assert.is_nil(helpers.read_file(s.log):find("%[error%]"))
  end)
end)
