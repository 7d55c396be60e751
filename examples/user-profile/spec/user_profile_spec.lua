-- The user-profile example, run as it is (its listen port swapped for a free
-- one): the profile is composed from three services in about the time of
-- the slowest, and degrades when one fails.
local helpers = require("spec.helpers")
local cjson = require("cjson")
local socket = require("socket")

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."

describe("example: user-profile", function()
  local s
  setup(function()
    local yaml = assert(helpers.read_file(HERE .. "/sluice.yaml"))
    -- Its server block goes; the helpers write one with a free port, logs and
    -- a pid file of their own.
    yaml = yaml:gsub("\nserver:\n.-\n\n", "\n"):gsub("127%.0%.0%.1:8000", "127.0.0.1:{PORT}")
    s = helpers.start_sluice(yaml, { workers = 1 })
  end)
  teardown(function()
    helpers.stop_all()
  end)

  local function profile(id)
    local t0 = socket.gettime()
    local status, headers, body = helpers.curl(string.format(
      "-H 'Authorization: Bearer demo' http://127.0.0.1:%d/profile/%d", s.port, id))
    return status, headers, cjson.decode(body), socket.gettime() - t0
  end

  it("composes the profile from three services at once", function()
    profile(42) -- warm up
    -- The best of three, so that one slow scheduling of a loaded machine
    -- does not count as the calls running one after another.
    local status, headers, body, took = profile(42)
    for _ = 1, 2 do
      local _, _, _, t = profile(42)
      took = math.min(took, t)
    end
    assert.equal(200, status)
    assert.equal("true", headers["x-sluice-completed"])
    assert.equal("Ada Lovelace", body.name)
    assert.equal("Bearer demo", body.seen_with)
    assert.is_nil(body.password_hash)
    assert.same({ id = "o-42-1", total = 42.5, status = "shipped" }, body.orders[1])
    assert.same({ product_id = "book-17", score = 0.93 }, body.recommended[1])
    assert.is_false(body._meta.partial)
    -- 60 + 80 + 100 ms one after the other would be 240 ms.
    assert.is_true(took < 0.2, string.format("took %.3f s", took))
  end)

  it("degrades to a partial profile when recommendations fail", function()
    local status, headers, body = profile(13)
    assert.equal(200, status)
    assert.equal("false", headers["x-sluice-completed"])
    assert.same({}, body.recommended)
    assert.equal("rejected", body._meta.backends.recommendations.status)
    assert.equal(503, body._meta.backends.recommendations.http_status)
  end)
end)
