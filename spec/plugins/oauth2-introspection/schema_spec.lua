-- oauth2-introspection's config: Kong EE's defaults, client credentials, the URL
-- (http only for now), header and claim names, and the shared dict it brings.
local config = require("sluice.config")

local HEAD = '_format_version: "3.0"\n'

local function load(plugin_yaml, server_yaml)
  return config.load_string(HEAD .. (server_yaml or "") .. [[
services:
  - name: orders
    url: http://127.0.0.1:3000
    routes:
      - name: r
        paths: ["/"]
    plugins:
      - name: oauth2-introspection
]] .. (plugin_yaml or [[
        config:
          introspection_url: http://127.0.0.1:9000/introspect
          authorization_value: Basic Zm9vOmJhcg==
]]), "t.yaml")
end

describe("plugin: oauth2-introspection (schema)", function()
  it("fills Kong EE's defaults", function()
    local c = assert(load()).plugins[1].config
    assert.same({
      introspection_url = "http://127.0.0.1:9000/introspect",
      authorization_value = "Basic Zm9vOmJhcg==",
      ttl = 30, inactive_ttl = 5, timeout = 10000, keepalive = 60000,
      hide_credentials = false, run_on_preflight = true, consumer_by = "username",
      introspect_request = false, custom_introspection_headers = {},
      custom_claims_forward = {}, required_scopes = {}, scopes_match = "all",
    }, c)
  end)

  it("loads a Kong EE config with every field", function()
    local c = assert(load([[
        config:
          introspection_url: http://auth.internal:8080/oauth2/introspect?realm=a
          authorization_value: Bearer abc
          token_type_hint: access_token
          ttl: 0.5
          timeout: 2000
          keepalive: 1000
          hide_credentials: true
          run_on_preflight: false
          anonymous: ""
          consumer_by: client_id
          introspect_request: true
          custom_introspection_headers: { X-Tenant: acme }
          custom_claims_forward: [email, roles]
          required_scopes: [read, "orders:write"]
          scopes_required_mode: any
]])).plugins[1].config
    assert.equal(0.5, c.ttl)
    assert.equal("client_id", c.consumer_by)
    assert.same({ "email", "roles" }, c.custom_claims_forward)
    assert.same({ ["X-Tenant"] = "acme" }, c.custom_introspection_headers)
    assert.same({ "read", "orders:write" }, c.required_scopes)
    assert.equal("any", c.scopes_match)
  end)

  it("takes the jwt plugin's scopes_match, or scopes_required_mode, not both", function()
    local base = [[
        config:
          introspection_url: http://127.0.0.1:9000/introspect
          authorization_value: Basic Zm9vOmJhcg==
]]
    local c = assert(load(base .. "          scopes_match: any\n")).plugins[1].config
    assert.equal("any", c.scopes_match)
    local _, err = load(base .. "          scopes_match: any\n"
      .. "          scopes_required_mode: all\n")
    assert.matches("config.scopes_required_mode: cannot be combined with 'scopes_match'", err, 1,
      true)
  end)

  it("takes client_id and client_secret instead of authorization_value", function()
    local c = assert(load([[
        config:
          introspection_url: http://127.0.0.1:9000/introspect
          client_id: gateway
          client_secret: s3cret
]])).plugins[1].config
    assert.equal("gateway", c.client_id)
    assert.is_nil(c.authorization_value)
  end)

  it("requires client credentials, naming the plugin's config", function()
    local out, err = load([[
        config:
          introspection_url: http://127.0.0.1:9000/introspect
]])
    assert.is_nil(out)
    assert.matches("t.yaml:%d+: services%[0%]%.plugins%[0%]%.config: the introspection "
      .. "endpoint needs client credentials: set authorization_value, or client_id and "
      .. "client_secret", err)
  end)

  it("refuses both kinds of client credentials, and a half pair", function()
    local _, err = load([[
        config:
          introspection_url: http://127.0.0.1:9000/introspect
          authorization_value: Basic Zm9vOmJhcg==
          client_id: gateway
          client_secret: s3cret
]])
    assert.matches("set authorization_value or client_id and client_secret, not both", err, 1,
      true)
    _, err = load([[
        config:
          introspection_url: http://127.0.0.1:9000/introspect
          client_id: gateway
]])
    assert.matches("config: client_id and client_secret go together", err, 1, true)
  end)

  it("refuses https:// at load, saying why", function()
    local out, err = load([[
        config:
          introspection_url: https://auth.example.com/introspect
          authorization_value: Basic Zm9vOmJhcg==
]])
    assert.is_nil(out)
    assert.matches("config.introspection_url: https:// introspection URLs are not supported "
      .. "yet: sluice.http has no TLS", err, 1, true)
  end)

  it("refuses URLs it cannot request", function()
    for url, message in pairs({
      ["auth.internal/introspect"] = "expected an absolute URL",
      ["ftp://auth.internal/x"] = "expected an http:// URL, got scheme 'ftp'",
      ["http:///introspect"] = "expected a host in",
      ["http://auth.internal:70000/x"] = "invalid port in",
      ["http://auth.internal/x#frag"] = "a URL with a #fragment cannot be requested",
    }) do
      local _, err = load(([[
        config:
          introspection_url: "%s"
          authorization_value: Basic Zm9vOmJhcg==
]]):format(url))
      assert.matches("config.introspection_url: " .. message, err, 1, true)
    end
  end)

  it("refuses bad values with the path of the field", function()
    local _, err = load([[
        config:
          introspection_url: http://127.0.0.1:9000/introspect
          authorization_value: "Basic a\nb"
          ttl: -1
          timeout: 0
          consumer_by: email
          custom_introspection_headers: { "Bad Name": x }
          custom_claims_forward: ["https://example.com/roles"]
          required_scopes: ["two words"]
          scopes_required_mode: some
]])
    assert.matches("config.authorization_value: a header value cannot hold CR, LF or NUL", err,
      1, true)
    assert.matches("config.ttl: value should be between 0 and 31536000", err, 1, true)
    assert.matches("config.timeout: value should be between 1 and 2147483646", err, 1, true)
    assert.matches("config.consumer_by: expected one of: username, client_id", err, 1, true)
    assert.matches("config.custom_introspection_headers", err, 1, true)
    assert.matches("config.custom_claims_forward[0]", err, 1, true)
    assert.matches("config.required_scopes[0]", err, 1, true)
    assert.matches("config.scopes_required_mode: expected one of: all, any", err, 1, true)
  end)

  it("brings its shared dict, 16m, unless the user sizes it", function()
    local out = assert(load())
    local sizes = {}
    for _, d in ipairs(out.server.shared_dicts) do
      sizes[d.name] = d.size
    end
    assert.same({ ["oauth2-introspection"] = 16 * 1024 * 1024 }, sizes)
    out = assert(load(nil, "server:\n  shared_dicts: { oauth2-introspection: 1m }\n"))
    assert.equal(1024 * 1024, out.server.shared_dicts[1].size)
  end)
end)
