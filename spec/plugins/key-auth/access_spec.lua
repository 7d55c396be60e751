-- key-auth in-process: where the key is found, what the upstream gets, and every refusal.
local t = require("sluice.test")
local cjson = require("cjson")

local ALICE = "6f1f5d9e-3c4a-4f0e-9d2b-1a2b3c4d5e01"
local ANON = "6f1f5d9e-3c4a-4f0e-9d2b-1a2b3c4d5e09"
local ALICE_KEY_ID = "0a0b0c0d-0000-4000-8000-000000000001"

local CONSUMERS = {
  { id = ALICE, username = "alice", custom_id = "crm-1",
    keyauth_credentials = { { id = ALICE_KEY_ID, key = "k-alice" } } },
  { username = "bob", keyauth_credentials = {
      { key = "k-bob" },
      { key = "k-bob-expired", ttl = 60, created_at = os.time() - 61 },
      { key = "k-bob-fresh", ttl = 3600 },
  } },
  { id = ANON, username = "guest" },
}

local function plugin(conf)
  return t.plugin("key-auth", conf, { consumers = CONSUMERS })
end

local function message(res, status)
  return cjson.decode(assert.res_status(status, res)).message
end

describe("plugin: key-auth (access)", function()
  local p = plugin({})

  it("lets a key in the apikey header through and tells the upstream who it is", function()
    local res = p:run({ headers = { apikey = "k-alice" } })
    assert.res_status(200, res)
    local h = res.upstream.headers
    assert.equal(ALICE, h["x-consumer-id"])
    assert.equal("alice", h["x-consumer-username"])
    assert.equal("crm-1", h["x-consumer-custom-id"])
    assert.equal(ALICE_KEY_ID, h["x-credential-identifier"])
    assert.is_nil(h["x-anonymous-consumer"])
    assert.equal("k-alice", h["apikey"]) -- not hidden by default
  end)

  it("replaces X-Consumer-* headers a client sent itself", function()
    local res = p:run({ headers = { apikey = "k-bob", ["X-Consumer-ID"] = "evil",
                                    ["X-Consumer-Custom-ID"] = "evil",
                                    ["X-Anonymous-Consumer"] = "true",
                                    ["X-Credential-Identifier"] = "evil" } })
    assert.res_status(200, res)
    local h = res.upstream.headers
    assert.equal("bob", h["x-consumer-username"])
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", h["x-consumer-id"])
    assert.not_equal("evil", h["x-credential-identifier"])
    assert.is_nil(h["x-consumer-custom-id"]) -- bob has none
    assert.is_nil(h["x-anonymous-consumer"])
  end)

  it("finds the key in the query string and leaves the query as it was", function()
    local res = p:run({ path = "/items", query = "page=2&apikey=k-bob" })
    assert.res_status(200, res)
    assert.equal("bob", res.upstream.headers["x-consumer-username"])
    assert.equal("page=2&apikey=k-bob", res.upstream.query)
  end)

  it("answers 401 with Kong's message and challenge when there is no key", function()
    local res = p:run({ path = "/items" })
    assert.equal("No API key found in request", message(res, 401))
    assert.equal("Key", res.headers["www-authenticate"])
    assert.is_nil(res.upstream)
    -- An empty key is no key.
    assert.equal("No API key found in request", message(p:run({ headers = { apikey = "" } }), 401))
  end)

  it("answers 401 Unauthorized for a key nobody has, with the challenge", function()
    local res = p:run({ headers = { apikey = "k-nobody" } })
    assert.equal("Unauthorized", message(res, 401))
    assert.equal("Key", res.headers["www-authenticate"])
    assert.is_nil(res.upstream)
    -- Keys are exact: case matters.
    assert.equal("Unauthorized", message(p:run({ headers = { apikey = "K-ALICE" } }), 401))
  end)

  it("names the realm in the challenge when one is configured", function()
    local res = plugin({ realm = "orders-api" }):run({})
    assert.equal('Key realm="orders-api"', res.headers["www-authenticate"])
  end)

  it("refuses a key sent twice in the query", function()
    local res = p:run({ query = "apikey=k-alice&apikey=k-bob" })
    assert.equal("Duplicate API key found", message(res, 401))
    assert.equal("Key", res.headers["www-authenticate"])
  end)

  it("ignores a bare query argument without a value", function()
    assert.equal("No API key found in request", message(p:run({ query = "apikey" }), 401))
  end)

  it("refuses an expired key and accepts one within its ttl", function()
    assert.equal("Unauthorized", message(p:run({ headers = { apikey = "k-bob-expired" } }), 401))
    assert.res_status(200, p:run({ headers = { apikey = "k-bob-fresh" } }))
  end)

  describe("key_names", function()
    local named = plugin({ key_names = { "x-api-key", "x_token" } })

    it("tries each name in order, in headers of any case and spelling", function()
      local res = named:run({ headers = { ["X-API-KEY"] = "k-alice" } })
      assert.equal("alice", res.upstream.headers["x-consumer-username"])
      res = named:run({ headers = { ["X-Token"] = "k-bob" } })
      assert.equal("bob", res.upstream.headers["x-consumer-username"])
      -- The first name wins when both are there.
      res = named:run({ headers = { ["X-Token"] = "k-bob", ["X-Api-Key"] = "k-alice" } })
      assert.equal("alice", res.upstream.headers["x-consumer-username"])
    end)

    it("matches query arguments by their exact name", function()
      assert.res_status(200, named:run({ query = { x_token = "k-bob" } }))
      assert.res_status(401, named:run({ query = { ["x-token"] = "k-bob" } }))
      assert.res_status(401, named:run({ query = { apikey = "k-bob" } }))
    end)
  end)

  it("looks only where key_in_header and key_in_query allow", function()
    local no_header = plugin({ key_in_header = false })
    assert.equal("No API key found in request",
      message(no_header:run({ headers = { apikey = "k-alice" } }), 401))
    assert.res_status(200, no_header:run({ query = { apikey = "k-alice" } }))
    local no_query = plugin({ key_in_query = false })
    assert.res_status(401, no_query:run({ query = { apikey = "k-alice" } }))
    assert.res_status(200, no_query:run({ headers = { apikey = "k-alice" } }))
  end)

  describe("key_in_body", function()
    local body = plugin({ key_in_body = true, hide_credentials = true })

    it("finds the key in a JSON body and removes it before proxying", function()
      local res = body:run({ method = "POST", body = { apikey = "k-alice", item = 7 } })
      assert.res_status(200, res)
      assert.equal("alice", res.upstream.headers["x-consumer-username"])
      assert.same({ item = 7 }, cjson.decode(res.upstream.body))
    end)

    it("finds the key in a form body and removes it before proxying", function()
      local res = body:run({ method = "POST", body = "item=7&apikey=k-bob",
        headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } })
      assert.res_status(200, res)
      assert.equal("bob", res.upstream.headers["x-consumer-username"])
      assert.equal("item=7", res.upstream.body)
    end)

    it("finds the key in a multipart body", function()
      local mp = "--XyZ\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nk-bob\r\n"
        .. "--XyZ\r\nContent-Disposition: form-data; name=\"item\"\r\n\r\n7\r\n--XyZ--\r\n"
      local res = plugin({ key_in_body = true }):run({ method = "POST", body = mp,
        headers = { ["Content-Type"] = "multipart/form-data; boundary=XyZ" } })
      assert.res_status(200, res)
      assert.equal("bob", res.upstream.headers["x-consumer-username"])
    end)

    it("answers 401, not 500, for a body it cannot read", function()
      local res = body:run({ method = "POST", body = "{not json",
        headers = { ["Content-Type"] = "application/json" } })
      assert.equal("No API key found in request", message(res, 401))
      res = body:run({ method = "POST", body = "[1, 2]",
        headers = { ["Content-Type"] = "application/json" } })
      assert.equal("No API key found in request", message(res, 401))
      res = body:run({ method = "POST", body = "apikey=k-bob",
        headers = { ["Content-Type"] = "text/plain" } })
      assert.equal("No API key found in request", message(res, 401))
    end)

    it("prefers a key in a header, without touching the body", function()
      local res = body:run({ method = "POST", headers = { apikey = "k-alice" },
                             body = { note = "x" } })
      assert.equal("alice", res.upstream.headers["x-consumer-username"])
      assert.same({ note = "x" }, cjson.decode(res.upstream.body))
    end)
  end)

  describe("hide_credentials", function()
    it("removes the key's header, in every spelling of its name", function()
      local hidden = plugin({ key_names = { "x_api_key" }, hide_credentials = true })
      local res = hidden:run({ headers = { ["X-Api-Key"] = "k-alice", ["X-Other"] = "1" } })
      assert.res_status(200, res)
      assert.is_nil(res.upstream.headers["x-api-key"])
      assert.equal("1", res.upstream.headers["x-other"])
      -- A client's x_api_key header only exists with underscores_in_headers
      -- on: sluice, as nginx, drops headers named with '_' by default.
      assert.res_status(401, hidden:run({ headers = { ["x_api_key"] = "k-alice" } }))
      local kept = t.plugin("key-auth", { key_names = { "x_api_key" }, hide_credentials = true },
        { consumers = CONSUMERS, server = { underscores_in_headers = true } })
      res = kept:run({ headers = { ["x_api_key"] = "k-alice", ["X_Other"] = "2" } })
      assert.res_status(200, res)
      assert.is_nil(res.upstream.headers["x_api_key"])
      assert.equal("2", res.upstream.headers["x_other"])
    end)

    it("removes the key from the query and keeps the other arguments", function()
      local res = plugin({ hide_credentials = true }):run({ path = "/items",
        query = "page=2&apikey=k-bob&sort=name" })
      assert.res_status(200, res)
      assert.equal("page=2&sort=name", res.upstream.query)
      res = plugin({ hide_credentials = true }):run({ query = "ap%69key=k-bob" })
      assert.res_status(200, res)
      assert.equal("", res.upstream.query)
    end)
  end)

  describe("anonymous", function()
    it("lets a request without a valid key in as the anonymous consumer", function()
      for _, anon in ipairs({ "guest", ANON }) do
        local a = plugin({ anonymous = anon })
        for _, req in ipairs({ {}, { headers = { apikey = "k-nobody" } } }) do
          local res = a:run(req)
          assert.res_status(200, res)
          local h = res.upstream.headers
          assert.equal("true", h["x-anonymous-consumer"])
          assert.equal(ANON, h["x-consumer-id"])
          assert.equal("guest", h["x-consumer-username"])
          assert.is_nil(h["x-credential-identifier"])
        end
        -- A valid key is still the key's consumer.
        local res = a:run({ headers = { apikey = "k-alice", ["X-Anonymous-Consumer"] = "true" } })
        assert.equal("alice", res.upstream.headers["x-consumer-username"])
        assert.is_nil(res.upstream.headers["x-anonymous-consumer"])
      end
    end)

    it("answers 500 and logs when the anonymous consumer does not exist", function()
      local res = plugin({ anonymous = "nobody" }):run({})
      assert.equal("An unexpected error occurred", message(res, 500))
      assert.matches("anonymous consumer nobody is configured but doesn't exist",
        table.concat(res.logs, "\n"))
    end)

    it("does nothing when another plugin already authenticated the request", function()
      local res = plugin({ anonymous = "guest" }):run({
        consumer = { id = ALICE, username = "alice" }, credential = { id = "other" } })
      assert.res_status(200, res)
      assert.is_nil(res.upstream.headers["x-consumer-id"])
    end)
  end)

  it("lets preflights through without a key when run_on_preflight is false", function()
    local res = plugin({ run_on_preflight = false }):run({ method = "OPTIONS" })
    assert.res_status(200, res)
    assert.is_nil(res.upstream.headers["x-consumer-id"])
    assert.res_status(401, plugin({}):run({ method = "OPTIONS" }))
    assert.res_status(401, plugin({ run_on_preflight = false }):run({ method = "GET" }))
  end)

  it("answers 401, not 500, when the config holds no keys at all", function()
    local none = t.plugin("key-auth", {}, { consumers = {} })
    assert.equal("Unauthorized", message(none:run({ headers = { apikey = "k-alice" } }), 401))
  end)
end)
