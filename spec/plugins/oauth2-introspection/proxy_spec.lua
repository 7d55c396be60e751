-- oauth2-introspection through the real binary with 2 workers: a real nginx
-- introspection endpoint (server.lua), a real echo upstream, consumers from the
-- config, and the cache shared by the workers.
local helpers = require("spec.helpers")
local server = require("spec.plugins.oauth2-introspection.server")
local cjson = require("cjson")

local fmt = string.format

local AUTH = "Basic Z2F0ZXdheTpzM2NyZXQ="

local function plugin(url, extra)
  local c = { introspection_url = url, authorization_value = AUTH }
  for k, v in pairs(extra or {}) do
    c[k] = v
  end
  return cjson.encode(c)
end

-- /api: consumer_by username; /client: consumer_by client_id; /open: with
-- the anonymous consumer guest; /dead: an endpoint nothing listens on. Every
-- response says which worker served it (X-Worker).
local function gateway(as, up, dead_url)
  return helpers.start_sluice(fmt([[
_format_version: "3.0"
consumers:
  - username: alice
    custom_id: app-alice
  - username: guest
plugins:
  - name: post-function
    config:
      access:
        - "sluice.response.set_header('X-Worker', sluice.worker.id())"
services:
  - name: api
    url: http://127.0.0.1:%d
    routes:
      - name: api
        paths: ["/api"]
        plugins:
          - name: oauth2-introspection
            config: %s
      - name: client
        paths: ["/client"]
        plugins:
          - name: oauth2-introspection
            config: %s
      - name: open
        paths: ["/open"]
        plugins:
          - name: oauth2-introspection
            config: %s
      - name: dead
        paths: ["/dead"]
        plugins:
          - name: oauth2-introspection
            config: %s
]], up.port, plugin(as.url, { token_type_hint = "access_token" }),
    plugin(as.url, { consumer_by = "client_id" }),
    plugin(as.url, { anonymous = "guest", required_scopes = { "read" } }),
    plugin(dead_url)), { workers = 2 })
end

-- One request on a new connection; returns status, headers, and the headers
-- the upstream got (lower-case names), or nil when it did not reach it.
local function get(s, path, token, extra)
  local args = fmt("'http://127.0.0.1:%d%s'", s.port, path)
  if token then
    args = fmt("-H 'Authorization: Bearer %s' %s", token, args)
  end
  local status, headers, body = helpers.curl((extra or "") .. " " .. args)
  local echo = status == 200 and cjson.decode(body)
  return status, headers, echo and helpers.lower_headers(echo.headers)
end

describe("plugin: oauth2-introspection (proxy, 2 workers)", function()
  local as, up, s

  setup(function()
    as = server.start()
    up = helpers.start_upstream()
    s = gateway(as, up, "http://127.0.0.1:" .. helpers.free_port() .. "/introspect")
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("introspects a token once for every worker: the cache is shared", function()
    as:answer({ shared1 = { body = { active = true, username = "alice" } } })
    local workers = {}
    for _ = 1, 24 do
      local status, headers, upstream = get(s, "/api", "shared1")
      assert.equal(200, status)
      assert.equal("alice", upstream["x-consumer-username"])
      workers[headers["x-worker"]] = true
    end
    -- SO_REUSEPORT spreads new connections by hash: 24 of them reach both.
    assert.is_true(workers["0"] and workers["1"], "one worker served all 24 connections")
    assert.equal(1, #as:requests("shared1"))
    local r = as:requests("shared1")[1]
    assert.equal(AUTH, r.headers.authorization)
    assert.equal("token=shared1&token_type_hint=access_token", r.body)
  end)

  -- 12 requests at once with token tok; returns their statuses.
  local function burst(tok)
    local out = helpers.run(fmt("for i in $(seq 12); do curl -s -o /dev/null -w '%%{http_code}\\n' "
      .. "--max-time 10 -H 'Authorization: Bearer %s' 'http://127.0.0.1:%d/api' & done; wait",
      tok, s.port))
    local statuses = {}
    for code in out:gmatch("%d+") do
      statuses[#statuses + 1] = code
    end
    return statuses
  end

  it("introspects once for a burst of requests with the same new token", function()
    as:answer({ storm = { delay = 0.5, body = { active = true } } })
    local statuses = burst("storm")
    assert.equal(12, #statuses)
    for _, code in ipairs(statuses) do
      assert.equal("200", code)
    end
    assert.equal(1, #as:requests("storm"))
  end)

  it("gives a burst the one failure when the endpoint fails, without a storm", function()
    as:answer({ failing = { delay = 1, status = 500, body = "down" } })
    local statuses = burst("failing")
    assert.equal(12, #statuses)
    for _, code in ipairs(statuses) do
      assert.equal("503", code)
    end
    assert.equal(1, #as:requests("failing"))
  end)

  it("maps the consumer by username, or by client_id to custom_id", function()
    as:answer({ u1 = { body = { active = true, username = "alice", client_id = "other" } },
                c1 = { body = { active = true, client_id = "app-alice" } },
                c2 = { body = { active = true, client_id = "unknown-app" } } })
    local status, _, upstream = get(s, "/api", "u1")
    assert.equal(200, status)
    assert.equal("alice", upstream["x-consumer-username"])
    assert.equal("app-alice", upstream["x-consumer-custom-id"])
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", upstream["x-consumer-id"])
    assert.equal("alice", upstream["x-credential-identifier"])
    assert.equal("other", upstream["x-credential-client-id"])
    status, _, upstream = get(s, "/client", "c1")
    assert.equal(200, status)
    assert.equal("alice", upstream["x-consumer-username"])
    -- No consumer for this client: in, without one (as Kong EE).
    status, _, upstream = get(s, "/client", "c2")
    assert.equal(200, status)
    assert.is_nil(upstream["x-consumer-id"])
    assert.equal("unknown-app", upstream["x-credential-client-id"])
  end)

  it("lets a request without a good token in as the anonymous consumer", function()
    as:answer({ reader = { body = { active = true, scope = "read", username = "alice" } },
                writer = { body = { active = true, scope = "write" } } })
    local status, _, upstream = get(s, "/open", nil, "-H 'X-Credential-Scope: admin'")
    assert.equal(200, status)
    assert.equal("true", upstream["x-anonymous-consumer"])
    assert.equal("guest", upstream["x-consumer-username"])
    assert.is_nil(upstream["x-credential-scope"])
    for _, tok in ipairs({ "inactive-token", "writer" }) do
      status, _, upstream = get(s, "/open", tok)
      assert.equal(200, status)
      assert.equal("guest", upstream["x-consumer-username"])
      assert.is_nil(upstream["x-credential-scope"])
    end
    status, _, upstream = get(s, "/open", "reader")
    assert.equal(200, status)
    assert.equal("alice", upstream["x-consumer-username"])
    assert.is_nil(upstream["x-anonymous-consumer"])
    assert.equal("read", upstream["x-credential-scope"])
  end)

  it("answers 401 without a token and 503 when the endpoint is down, logging why", function()
    local status, headers, body = helpers.curl(fmt("'http://127.0.0.1:%d/api'", s.port))
    assert.equal(401, status)
    assert.equal('Bearer realm="service"', headers["www-authenticate"])
    assert.equal("The access token is missing", cjson.decode(body).error_description)
    local dead_status, _, dead_body = helpers.curl(fmt(
      "-H 'Authorization: Bearer x' 'http://127.0.0.1:%d/dead'", s.port))
    assert.equal(503, dead_status)
    assert.same({ message = "The access token could not be introspected" },
      cjson.decode(dead_body))
    assert.truthy(helpers.wait_for(function()
      return (helpers.read_file(s.log) or ""):find("could not introspect the access token at "
        .. "http://127.0.0.1:%d+/introspect: connection refused")
    end, 5))
  end)
end)
