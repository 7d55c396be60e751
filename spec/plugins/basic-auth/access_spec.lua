-- basic-auth in-process: each header form, every refusal, anonymous, hiding, and password formats.
local t = require("sluice.test")
local cjson = require("cjson")
local crypto = require("sluice.crypto")
local password = require("sluice.plugins.basic-auth.password")

local ALADDIN = "7e0a6c54-6a3b-4d5e-9c1f-2b3a4c5d6e01"
local KONG = "7e0a6c54-6a3b-4d5e-9c1f-2b3a4c5d6e07"
local ANON = "7e0a6c54-6a3b-4d5e-9c1f-2b3a4c5d6e09"

-- Hashes made outside sluice (Python's hashlib), so the spec checks the
-- format, not only a round trip: open-sesame, and pa:ss with PBKDF2-SHA512.
local OPEN_SESAME = "$pbkdf2-sha256$i=1000$MDEyMzQ1Njc4OWFiY2RlZg$"
  .. "erCPmpcVBrXal833JRIwhzuHUMa/1rbAQyIkg3pPHtA"
local PA_SS = "$pbkdf2-sha512$i=2000$c2FsdHNhbHRzYWx0c2FsdA$tH0RmpZkVNv1CSxUfjRbWVDzfNxYuhYG"
  .. "48Ip/yS5NmYl5TOa1vkp1wzv6QlDyLD1pdJ8YadmURxArib6251JzA"

local CONSUMERS = {
  { id = ALADDIN, username = "aladdin", custom_id = "crm-7",
    basicauth_credentials = { { username = "Aladdin", password = OPEN_SESAME } } },
  { username = "bob", basicauth_credentials = {
      { username = "bob", password = "plain secret" },
      { username = "colon", password = PA_SS },
  } },
  -- Kong's own hash: sha1("kong-pw" .. consumer id), as a decK dump has it.
  { id = KONG, username = "from-kong", basicauth_credentials = {
      { username = "kong-user", password = "3160d49fab11cff53e0b8044ed65542bf921d71a" } } },
  { id = ANON, username = "guest" },
}

local function plugin(conf)
  return t.plugin("basic-auth", conf, { consumers = CONSUMERS })
end

local function basic(userpass, scheme)
  return { Authorization = (scheme or "Basic") .. " " .. crypto.base64_encode(userpass) }
end

local function message(res, status)
  return cjson.decode(assert.res_status(status, res)).message
end

describe("plugin: basic-auth (access)", function()
  local p = plugin({})
  before_each(password._reset)

  it("lets valid credentials through and tells the upstream who it is", function()
    local res = p:run({ headers = basic("Aladdin:open-sesame") })
    assert.res_status(200, res)
    local h = res.upstream.headers
    assert.equal(ALADDIN, h["x-consumer-id"])
    assert.equal("aladdin", h["x-consumer-username"])
    assert.equal("crm-7", h["x-consumer-custom-id"])
    assert.equal("Aladdin", h["x-credential-identifier"])
    assert.is_nil(h["x-anonymous-consumer"])
    assert.is_not_nil(h["authorization"]) -- not hidden by default
  end)

  it("checks plain passwords from the config, hashed at load", function()
    assert.res_status(200, p:run({ headers = basic("bob:plain secret") }))
    assert.equal("Unauthorized", message(p:run({ headers = basic("bob:plain secreT") }), 401))
    local cred = sluice.db.basicauth_credentials:select_by_username("bob")
    assert.matches("^%$pbkdf2%-sha256%$i=100000%$[%w+/]+%$[%w+/]+$", cred.password)
  end)

  it("splits at the first colon: the password may hold more", function()
    assert.res_status(200, p:run({ headers = basic("colon:pa:ss") }))
    assert.res_status(401, p:run({ headers = basic("colon:pa") }))
  end)

  it("accepts Kong's sha1 hashes, salted with the consumer's id", function()
    assert.res_status(200, p:run({ headers = basic("kong-user:kong-pw") }))
    assert.res_status(401, p:run({ headers = basic("kong-user:kong-pwx") }))
    -- The hash itself is not a password.
    local hash = "3160d49fab11cff53e0b8044ed65542bf921d71a"
    assert.res_status(401, p:run({ headers = basic("kong-user:" .. hash) }))
  end)

  it("reads the scheme in any case, and Proxy-Authorization first", function()
    assert.res_status(200, p:run({ headers = basic("Aladdin:open-sesame", "bAsIc") }))
    local res = p:run({ headers = {
      ["Proxy-Authorization"] = basic("bob:plain secret").Authorization,
      Authorization = basic("Aladdin:open-sesame").Authorization } })
    assert.equal("bob", res.upstream.headers["x-consumer-username"])
    -- An unknown user in Proxy-Authorization falls back to Authorization.
    res = p:run({ headers = {
      ["Proxy-Authorization"] = basic("nobody:x").Authorization,
      Authorization = basic("Aladdin:open-sesame").Authorization } })
    assert.equal("aladdin", res.upstream.headers["x-consumer-username"])
  end)

  it("answers 401 with the Basic challenge without credentials", function()
    local res = p:run({})
    assert.equal("Unauthorized", message(res, 401))
    assert.equal('Basic realm="service"', res.headers["www-authenticate"])
    assert.is_nil(res.upstream)
    res = plugin({ realm = "orders" }):run({ headers = basic("Aladdin:wrong") })
    assert.equal('Basic realm="orders"', res.headers["www-authenticate"])
  end)

  it("answers 401, never 500, for wrong and malformed credentials", function()
    for _, auth in ipairs({
      basic("Aladdin:wrong").Authorization,
      basic("aladdin:open-sesame").Authorization, -- usernames are case-sensitive
      basic("nobody:open-sesame").Authorization,
      basic(":open-sesame").Authorization,
      basic("Aladdin").Authorization,             -- no colon
      basic("").Authorization,
      "Basic",
      "Basic ",
      "Basic !!!notbase64",
      "Basic QWxhZGRpbjpvcGVuLXNlc2FtZQ",          -- unpadded
      "Basic QWxhZGRpbjpvcGVuLXNlc2FtZQ== trailing",
      "Bearer " .. crypto.base64_encode("Aladdin:open-sesame"),
      "Basically " .. crypto.base64_encode("Aladdin:open-sesame"),
      "",
    }) do
      local res = p:run({ headers = { Authorization = auth } })
      assert.equal("Unauthorized", message(res, 401), auth)
      assert.equal('Basic realm="service"', res.headers["www-authenticate"])
      assert.is_nil(res.upstream)
    end
  end)

  it("remembers checked passwords per worker, right and wrong", function()
    local hashes = 0
    local matches = password.matches
    password.matches = function(...)
      hashes = hashes + 1
      return matches(...)
    end
    finally(function() password.matches = matches end)
    for _ = 1, 3 do
      assert.res_status(200, p:run({ headers = basic("Aladdin:open-sesame") }))
      assert.res_status(401, p:run({ headers = basic("Aladdin:guess") }))
    end
    assert.equal(2, hashes)
  end)

  it("hides the header it read when hide_credentials is set", function()
    local hidden = plugin({ hide_credentials = true })
    local res = hidden:run({ headers = basic("Aladdin:open-sesame") })
    assert.res_status(200, res)
    assert.is_nil(res.upstream.headers["authorization"])
    -- Authorization is for the upstream when Proxy-Authorization authenticated.
    res = hidden:run({ headers = {
      ["Proxy-Authorization"] = basic("Aladdin:open-sesame").Authorization,
      Authorization = "Bearer upstream-token" } })
    assert.res_status(200, res)
    assert.is_nil(res.upstream.headers["proxy-authorization"])
    assert.equal("Bearer upstream-token", res.upstream.headers["authorization"])
  end)

  it("lets missing or wrong credentials in as the anonymous consumer", function()
    local a = plugin({ anonymous = "guest" })
    for _, req in ipairs({ {}, { headers = basic("Aladdin:wrong") },
                           { headers = { Authorization = "Basic %%%" } } }) do
      local res = a:run(req)
      assert.res_status(200, res)
      assert.equal("true", res.upstream.headers["x-anonymous-consumer"])
      assert.equal(ANON, res.upstream.headers["x-consumer-id"])
      assert.is_nil(res.upstream.headers["x-credential-identifier"])
    end
    local res = a:run({ headers = basic("Aladdin:open-sesame") })
    assert.equal("aladdin", res.upstream.headers["x-consumer-username"])
    assert.is_nil(res.upstream.headers["x-anonymous-consumer"])
  end)

  it("skips preflights when run_on_preflight is false, and already-authenticated requests "
    .. "when anonymous is set", function()
    assert.res_status(200, plugin({ run_on_preflight = false }):run({ method = "OPTIONS" }))
    assert.res_status(401, p:run({ method = "OPTIONS" }))
    local res = plugin({ anonymous = "guest" }):run({ consumer = { id = ALADDIN },
                                                      credential = { id = "key" } })
    assert.res_status(200, res)
    assert.is_nil(res.upstream.headers["x-anonymous-consumer"])
  end)

  it("answers 401, not 500, when the config holds no credentials at all", function()
    local none = t.plugin("basic-auth", {}, { consumers = {} })
    assert.equal("Unauthorized", message(none:run({ headers = basic("Aladdin:open-sesame") }),
      401))
  end)
end)
