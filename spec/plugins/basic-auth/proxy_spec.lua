-- basic-auth through the real binary: what reaches a real upstream, and every refusal as a 401.
local t = require("sluice.test")
local crypto = require("sluice.crypto")

local function basic(userpass)
  return { Authorization = "Basic " .. crypto.base64_encode(userpass) }
end

describe("plugin: basic-auth (proxy)", function()
  local upstream, proxy

  lazy_setup(function()
    upstream = t.mock_upstream()
    proxy = t.start({
      consumers = {
        { username = "aladdin", basicauth_credentials = {
            { username = "Aladdin", password = "open sesame" } } },
      },
      services = { {
        name = "api", url = upstream.url,
        routes = { { name = "r", paths = { "/" },
                     plugins = { { name = "basic-auth",
                                   config = { hide_credentials = true } } } } },
      } },
    }, { workers = 2 })
  end)

  lazy_teardown(t.stop)

  it("sends the consumer upstream and not the password, request after request", function()
    for _ = 1, 4 do -- the first in each worker hashes, the others are remembered
      local res = proxy:get("/items", { headers = basic("Aladdin:open sesame") })
      assert.res_status(200, res)
      local got = upstream:last_request()
      assert.equal("aladdin", got.headers["x-consumer-username"])
      assert.equal("Aladdin", got.headers["x-credential-identifier"])
      assert.is_nil(got.headers["authorization"])
    end
  end)

  it("answers 401 with the Basic challenge to missing, wrong and malformed credentials",
    function()
      local before = #upstream:requests()
      for _, headers in ipairs({ {}, basic("Aladdin:open-sesame"), basic("Aladdin"),
                                 { Authorization = "Basic ???" },
                                 { Authorization = "Basic" } }) do
        local res = proxy:get("/items", { headers = headers })
        assert.equal('{"message":"Unauthorized"}', assert.res_status(401, res))
        assert.equal('Basic realm="service"', res.headers["www-authenticate"])
      end
      assert.equal(before, #upstream:requests())
      assert.is_nil(proxy:error_log():find("[error]", 1, true))
    end)
end)
