-- correlation-id in-process (t.plugin): each generator's format, ids kept from the
-- client, echoing, and the id in sluice.log.serialize.
local t = require("sluice.test")

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function id_of(res, name)
  return res.upstream.headers[(name or "kong-request-id"):lower()]
end

describe("plugin: correlation-id (access)", function()
  it("uuid: a new random version 4 UUID for every request", function()
    local p = t.plugin("correlation-id", { generator = "uuid" })
    local seen = {}
    for _ = 1, 300 do
      local id = id_of(p:run({}))
      assert.matches(UUID, id)
      assert.is_nil(seen[id], "a repeated id: " .. id)
      seen[id] = true
    end
  end)

  it("uuid#counter: this worker's UUID and a counter that goes up by one", function()
    local p = t.plugin("correlation-id", {})
    local a = id_of(p:run({}))
    local b = id_of(p:run({}))
    local ua, na = a:match("^(.+)#(%d+)$")
    local ub, nb = b:match("^(.+)#(%d+)$")
    assert.matches(UUID, ua)
    assert.equal(ua, ub)
    assert.equal(tonumber(na) + 1, tonumber(nb))
  end)

  it("tracker: address-port-pid-connection-requests-time, as Kong's", function()
    local p = t.plugin("correlation-id", { generator = "tracker" })
    local before = sluice.now()
    local id = id_of(p:run({}))
    local addr, port, pid, conn, n, time =
      id:match("^(%d+%.%d+%.%d+%.%d+)%-(%d+)%-(%d+)%-(%d+)%-(%d+)%-(%d+%.%d%d%d)$")
    assert.is_string(addr, id)
    assert.equal(tostring(sluice.worker.pid()), pid)
    assert.equal("1", n)
    assert.is_number(tonumber(port))
    assert.is_number(tonumber(conn))
    assert.is_true(math.abs(tonumber(time) - before) < 5)
  end)

  it("keeps the client's id as it is, in any case of the header name", function()
    local p = t.plugin("correlation-id", { header_name = "X-Request-Id" })
    local res = p:run({ headers = { ["x-request-id"] = "client id 42/α" } })
    assert.equal("client id 42/α", id_of(res, "x-request-id"))
  end)

  it("replaces an empty id with a new one", function()
    local p = t.plugin("correlation-id", { generator = "uuid" })
    assert.matches(UUID, id_of(p:run({ headers = { ["Kong-Request-ID"] = "" } })))
  end)

  it("echoes the id the upstream got only with echo_downstream", function()
    local quiet = t.plugin("correlation-id", {})
    assert.is_nil(quiet:run({}).headers["kong-request-id"])
    local p = t.plugin("correlation-id", { echo_downstream = true })
    local res = p:run({})
    assert.equal(id_of(res), res.headers["kong-request-id"])
    res = p:run({ headers = { ["Kong-Request-ID"] = "from-client" } })
    assert.equal("from-client", res.headers["kong-request-id"])
  end)

  it("echoes over the upstream's own header of that name", function()
    local p = t.plugin("correlation-id", { echo_downstream = true })
    local res = p:run({ upstream = { headers = { ["Kong-Request-ID"] = "upstream's" } } })
    assert.equal(id_of(res), res.headers["kong-request-id"])
  end)
end)

describe("pdk: sluice.log.set_serialize_value", function()
  local function run(phase, code)
    local res = t.plugin("post-function", { [phase] = { code } }):run({})
    return res, table.concat(res.logs, "\n")
  end

  it("adds, replaces and removes keys in serialize()", function()
    local res = run("header_filter", [[
      assert(sluice.log.set_serialize_value("a", 1))
      assert(sluice.log.set_serialize_value("b", "x"))
      assert(sluice.log.set_serialize_value("a", true))
      assert(sluice.log.set_serialize_value("b", nil))
      local s = sluice.log.serialize()
      sluice.response.set_header("X-A", tostring(s.a))
      sluice.response.set_header("X-B", tostring(s.b))
    ]])
    assert.equal("true", res.headers["x-a"])
    assert.equal("nil", res.headers["x-b"])
  end)

  it("refuses the access log's own names, bad keys and bad values", function()
    local _, logs = run("access", "sluice.log.set_serialize_value('status', 1)")
    assert.matches("bad argument #1 to 'set_serialize_value' ('status' is a field of the "
      .. "access log's own)", logs, 1, true)
    _, logs = run("access", "sluice.log.set_serialize_value('a.b', 1)")
    assert.matches("bad argument #1 to 'set_serialize_value' (a name of letters", logs, 1, true)
    _, logs = run("access", "sluice.log.set_serialize_value('k', {})")
    assert.matches("bad argument #2 to 'set_serialize_value' (string, finite number, boolean "
      .. "or nil expected, got table)", logs, 1, true)
    _, logs = run("access", "sluice.log.set_serialize_value('k', 0/0)")
    assert.matches("bad argument #2 to 'set_serialize_value'", logs, 1, true)
  end)

  it("returns nil, err past 32 keys or 4096 bytes", function()
    local res = run("access", [[
      for i = 1, 32 do assert(sluice.log.set_serialize_value("k" .. i, i)) end
      local ok, err = sluice.log.set_serialize_value("k33", 1)
      local ok2, err2 = sluice.log.set_serialize_value("k1", string.rep("x", 5000))
      sluice.response.set_header("X-Err", tostring(ok) .. " " .. err .. "; "
        .. tostring(ok2) .. " " .. err2)
      sluice.response.set_header("X-K1", tostring(sluice.log.serialize().k1))
    ]])
    assert.equal("nil too many serialize values (at most 32); nil serialize values too large "
      .. "(at most 4096 bytes of JSON)", res.headers["x-err"])
    assert.equal("1", res.headers["x-k1"])
  end)
end)
