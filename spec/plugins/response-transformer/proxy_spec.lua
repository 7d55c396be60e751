-- response-transformer through the real binary and a real nginx upstream that answers plain,
-- chunked and gzipped (nginx's own gzip filter) JSON: what the client got.
local t = require("sluice.test")
local helpers = t.helpers

local fmt = string.format

-- The upstream's /doc: a JSON document of about 3 KiB; /stream sends it in
-- three flushed pieces (chunked); /text is the same bytes as text/plain.
local LOCATIONS = [[
    location /doc {
      default_type application/json;
      content_by_lua_block {
        ngx.print('{"id":12345678901234567,"secret":"s","pad":"' .. string.rep("p", 3000)
          .. '","tags":[]}')
      }
    }
    location /stream {
      default_type application/json;
      content_by_lua_block {
        ngx.print('{"id":12345678901234567,"secret":"s",') ngx.flush(true)
        ngx.print('"pad":"' .. string.rep("p", 3000) .. '",') ngx.flush(true)
        ngx.print('"tags":[]}')
      }
    }
    location /text {
      default_type text/plain;
      content_by_lua_block { ngx.print('{"secret":"s"}') }
    }
]]

local WANT = '{"id":12345678901234567,"pad":"' .. string.rep("p", 3000)
  .. '","tags":[],"via":"sluice"}'

describe("plugin: response-transformer (proxy)", function()
  local upstream, proxy

  setup(function()
    upstream = helpers.start_upstream({ locations = LOCATIONS,
      http = "gzip on; gzip_types application/json text/plain; gzip_min_length 0;" })
    proxy = t.start({ services = {
      { name = "api", url = "http://127.0.0.1:" .. upstream.port, routes = {
          { name = "all", paths = { "/" }, strip_path = false, plugins = {
              { name = "response-transformer", config = {
                  remove = { json = { "secret" }, headers = { "Server" } },
                  add = { json = { "via:sluice" }, headers = { "X-Transformed:yes" } },
              } },
            } },
          { name = "headers-only", paths = { "/h" }, strip_path = true, plugins = {
              { name = "response-transformer", config = {
                  add = { headers = { "X-Transformed:headers" } } } },
            } },
        } },
    } })
  end)

  teardown(function()
    t.stop()
  end)

  local function get(path, args)
    return helpers.curl(fmt("%s '%s%s'", args or "", proxy.url, path))
  end

  it("transforms a plain JSON body", function()
    local status, h, body = get("/doc")
    assert.equal(200, status)
    assert.equal(WANT, body)
    assert.equal("yes", h["x-transformed"])
    assert.is_nil(h.server)
    assert.is_nil(h["content-encoding"])
  end)

  it("transforms a chunked JSON body", function()
    local status, h, body = get("/stream")
    assert.equal(200, status)
    assert.equal(WANT, body)
    assert.equal("chunked", h["transfer-encoding"])
  end)

  for _, path in ipairs({ "/doc", "/stream" }) do
    it("inflates the upstream's gzip for " .. path .. " and sends it transformed, uncompressed",
      function()
        -- Without --compressed curl shows the bytes as they came: plain JSON.
        local status, h, body = get(path, "-H 'Accept-Encoding: gzip'")
        assert.equal(200, status)
        assert.is_nil(h["content-encoding"])
        assert.equal(WANT, body)
        assert.truthy(helpers.upstream_saw(upstream, "GET " .. path))
      end)
  end

  it("proves the upstream really gzips (the headers-only route passes it on)", function()
    local status, h, body = get("/h/doc", "-H 'Accept-Encoding: gzip'")
    assert.equal(200, status)
    assert.equal("gzip", h["content-encoding"])
    assert.equal("headers", h["x-transformed"])
    assert.equal("\31\139", body:sub(1, 2))
  end)

  it("leaves a non-JSON body alone, gzipped or not", function()
    local _, h, body = get("/text", "-H 'Accept-Encoding: gzip'")
    assert.equal("gzip", h["content-encoding"])
    assert.equal("\31\139", body:sub(1, 2))
    local _, _, plain = get("/text")
    assert.equal('{"secret":"s"}', plain)
  end)

  it("serves many gzipped responses in a row on one connection", function()
    local out = helpers.run(fmt("curl -sS -H 'Accept-Encoding: gzip' %s", string.rep(
      "'" .. proxy.url .. "/stream' ", 20)))
    local n = 0
    for doc in out:gmatch('{"id":[^}]*}') do
      assert.equal(WANT, doc)
      n = n + 1
    end
    assert.equal(20, n)
    assert.is_nil(proxy:error_log():find("[error]", 1, true))
  end)
end)
