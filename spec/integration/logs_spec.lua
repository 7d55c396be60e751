-- Logs: the JSON-lines access log (and what it must never contain), and the
-- error log's report of a killed worker.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

-- The access log is flushed every second.
local FLUSH_WAIT = 1.5

local function config(upstream)
  return fmt([[
_format_version: "3.0"
services:
  - name: logged-service
    url: http://127.0.0.1:%d
    routes:
      - name: logged-route
        paths: ["/logged"]
]], upstream.port)
end

-- The access log's entries, decoded; fails on a line that is not JSON.
local function entries(s)
  local list = {}
  for line in (helpers.read_file(s.access_log) or ""):gmatch("[^\n]+") do
    local e = helpers.json(line)
    assert.is_table(e, "not a JSON line: " .. line)
    list[#list + 1] = e
  end
  return list
end

local function find(list, path)
  for _, e in ipairs(list) do
    if e.path == path then
      return e
    end
  end
end

describe("logs: access log", function()
  local upstream, s, list, text

  setup(function()
    upstream = helpers.start_upstream()
    s = helpers.start_sluice(config(upstream))
    helpers.curl(fmt("-H 'Authorization: Bearer authz-secret-123' "
      .. "-H 'Cookie: session=cookie-secret-456' "
      .. "'http://127.0.0.1:%d/logged/path?apikey=query-secret-789&x=1'", s.port))
    helpers.curl(fmt("http://127.0.0.1:%d/unrouted", s.port))
    helpers.curl(fmt("-X POST -d 'hello' http://127.0.0.1:%d/logged/post", s.port))
    socket.sleep(FLUSH_WAIT)
    text = helpers.read_file(s.access_log) or ""
    list = entries(s)
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("writes one JSON line per request with the documented fields", function()
    assert.equals(3, #list, text)
    local e = find(list, "/logged/path")
    assert.is_table(e, text)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d", e.time)
    assert.is_string(e.request_id)
    assert.is_true(#e.request_id >= 16)
    assert.equals("127.0.0.1", e.client_ip)
    assert.equals("GET", e.method)
    assert.equals(200, e.status)
    assert.is_number(e.bytes_sent)
    assert.is_true(e.bytes_sent > 100)
    assert.is_number(e.latency_ms)
    assert.is_true(e.latency_ms >= 0)
    assert.is_number(e.upstream_latency_ms)
    assert.is_true(e.upstream_latency_ms >= 0 and e.upstream_latency_ms <= e.latency_ms)
    assert.equals("logged-route", e.route)
    assert.equals("logged-service", e.service)
  end)

  it("gives each request its own request_id", function()
    local seen = {}
    for _, e in ipairs(list) do
      assert.is_nil(seen[e.request_id], "request_id repeated: " .. tostring(e.request_id))
      seen[e.request_id] = true
    end
  end)

  it("logs an unrouted request with its 404 and no route or service", function()
    local e = find(list, "/unrouted")
    assert.is_table(e, text)
    assert.equals(404, e.status)
    assert.is_not_number(e.upstream_latency_ms)
    assert.is_not_string(e.route)
    assert.is_not_string(e.service)
  end)

  it("logs the method of a POST", function()
    local e = find(list, "/logged/post")
    assert.is_table(e, text)
    assert.equals("POST", e.method)
    assert.equals(200, e.status)
  end)

  it("never contains the query string, Authorization or Cookie values", function()
    assert.is_true(#text > 0)
    assert.is_nil(text:find("query-secret-789", 1, true), "the query string was logged")
    assert.is_nil(text:find("apikey", 1, true), "the query string was logged")
    assert.is_nil(text:find("authz-secret-123", 1, true), "Authorization was logged")
    assert.is_nil(text:find("cookie-secret-456", 1, true), "Cookie was logged")
  end)
end)

describe("logs: error log", function()
  teardown(function()
    helpers.stop_all()
  end)

  it("reports a killed worker with its signal", function()
    local upstream = helpers.start_upstream()
    local s = helpers.start_sluice(config(upstream))
    local worker = helpers.wait_for(function()
      return helpers.children(s.pid)[1]
    end, 3)
    assert.is_number(worker)
    helpers.kill(worker, "KILL", 5)
    local line = helpers.wait_for(function()
      for l in (helpers.read_file(s.log) or ""):gmatch("[^\n]+") do
        if l:find("pid " .. worker, 1, true) or l:find(tostring(worker) .. ")", 1, true) then
          return l
        end
      end
    end, 5)
    assert.is_string(line, helpers.read_file(s.log))
    assert.matches("signal 9", line, 1, true)
    assert.matches("%[error%]", line)
  end)
end)
