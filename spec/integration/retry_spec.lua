-- retry_on, retry_budget and retry_non_idempotent (beyond Kong) through the
-- real binary: one target answers badly, the other well.
local helpers = require("spec.helpers")

local fmt = string.format

local BAD = [[
    location = /flaky { return 503 "bad target\n"; }
    location = /slow { content_by_lua_block { ngx.sleep(1) ngx.say("late") } }
]]

describe("retries beyond Kong", function()
  local bad, good

  setup(function()
    bad = helpers.start_upstream({ locations = BAD })
    good = helpers.start_upstream()
  end)

  teardown(function()
    helpers.stop_all()
  end)

  -- A service over an upstream with the bad target first (round-robin).
  local function start(service_extra, route_extra)
    return helpers.start_sluice(fmt([[
_format_version: "3.0"
upstreams:
  - name: pair
    targets:
      - target: 127.0.0.1:%d
      - target: 127.0.0.1:%d
services:
  - name: s
    host: pair
    read_timeout: 300
%s
    routes:
      - paths: ["/"]
        strip_path: false
%s
]], bad.port, good.port, service_extra or "", route_extra or ""))
  end

  local function statuses(s, n, method)
    local counts = {}
    for _ = 1, n do
      local status = helpers.curl(fmt("-X %s 'http://127.0.0.1:%d/flaky'", method or "GET",
        s.port))
      counts[status] = (counts[status] or 0) + 1
    end
    return counts
  end

  it("without retry_on, the bad target's 503 reaches the client (Kong's behaviour)", function()
    local s = start()
    local counts = statuses(s, 10)
    assert.equals(5, counts[503])
    assert.equals(5, counts[200])
  end)

  it("retry_on: [503] tries the other target, for idempotent methods", function()
    local s = start("    retry_on: [502, 503]")
    assert.same({ [200] = 10 }, statuses(s, 10))
    -- POST is not retried: its 503s reach the client.
    assert.equals(5, statuses(s, 10, "POST")[503])
  end)

  it("retry_non_idempotent on the route retries POST too", function()
    local s = start("    retry_on: [503]", "        retry_non_idempotent: true")
    assert.same({ [200] = 10 }, statuses(s, 10, "POST"))
  end)

  it("retry_budget bounds the retries: 10 to start, then budget per 100 requests", function()
    local s = start("    retry_on: [503]\n    retry_budget: 20")
    local counts = statuses(s, 100)
    -- 50 requests meet the bad target first; 10 + 100 x 20% = 30 of them may
    -- be retried, so about 20 of its 503s reach the client.
    assert.is_true(counts[503] >= 15 and counts[503] <= 25,
      "503s seen: " .. tostring(counts[503]))
    local s0 = start("    retry_on: [503]\n    retry_budget: 0")
    assert.equals(5, statuses(s0, 10)[503])
  end)

  it("retry_on: [timeout] moves a slow idempotent request to another target", function()
    local s = start("    retry_on: [timeout]")
    local t0 = require("socket").gettime()
    local status, _, body = helpers.curl(fmt("'http://127.0.0.1:%d/slow'", s.port))
    local took = require("socket").gettime() - t0
    -- Either the good target answered at once, or the bad one timed out
    -- (300 ms) and the good one answered.
    assert.equals(200, status, body)
    assert.is_true(took < 0.9, fmt("took %.2f s", took))
    status = helpers.curl(fmt("'http://127.0.0.1:%d/slow'", s.port))
    assert.equals(200, status)
  end)

  it("refuses a retry_on entry that is not a status or \"timeout\"", function()
    local dir = helpers.tmpdir()
    local file = dir .. "/bad.yaml"
    helpers.write_file(file, [[
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    retry_on: [503, 200]
]])
    local out, code = helpers.run(fmt("%s check -c %s 2>&1", helpers.bin, file))
    os.execute("rm -rf " .. dir)
    assert.equals(1, code)
    assert.matches("bad.yaml:5: services%[0%]%.retry_on%[1%]: expected a status code from 400 "
      .. "to 599 or \"timeout\", got 200", out)
  end)
end)
