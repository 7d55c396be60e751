-- sluice.redis through the real binary against a real redis-server.
local helpers = require("spec.helpers")
local t = require("sluice.test")

local fmt = string.format

describe("sluice.redis", function()
  local s, redis

  setup(function()
    redis = t.redis()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/r"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local red, err = sluice.redis.connect({ port = %d })
                    if not red then return sluice.response.exit(502, { err = err }) end
                    local out = {}
                    out.set = red:set("k", "v")
                    out.get = red:get("k")
                    out.missing = red:get("nope") == sluice.redis.null
                    out.incr = red:incr("n")
                    local _, e = red:command("NOSUCHCOMMAND")
                    out.err = e
                    red:init_pipeline()
                    red:incr("p")
                    red:incr("p")
                    red:lpush("l", "a", "b")
                    red:lrange("l", 0, -1)
                    out.pipeline = red:commit_pipeline()
                    out.eval = red:eval("return {KEYS[1], ARGV[1]}", 1, "key", "arg")
                    out.keepalive = red:set_keepalive()
                    return sluice.response.exit(200, out)
                  end
      - name: down
        paths: ["/down"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local red, err = sluice.redis.connect({ port = 9 })
                    return sluice.response.exit(200, { red = red ~= nil, err = err })
                  end
      - name: dies
        paths: ["/dies"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local red = assert(sluice.redis.connect({ port = %d }))
                    if sluice.request.get_query_arg("at_once") then
                      error("the plugin dies right after connecting")
                    end
                    red:get("k")
                    error("the plugin dies holding a connection")
                  end
      - name: count
        paths: ["/count"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return function()
                    local red = assert(sluice.redis.connect({ port = %d }))
                    local n = red:incr("c")
                    red:set_keepalive()
                    return sluice.response.exit(200, { n = n })
                  end
]], redis.port, redis.port, redis.port), { workers = 2 })
  end)

  teardown(function()
    t.stop()
    helpers.stop_all()
  end)

  local function get(path)
    local status, _, body = helpers.curl(fmt("http://127.0.0.1:%d%s", s.port, path))
    return status, helpers.json(body)
  end

  it("runs commands, pipelines and scripts", function()
    local status, b = get("/r")
    assert.equal(200, status)
    assert.equal("OK", b.set)
    assert.equal("v", b.get)
    assert.is_true(b.missing)
    assert.equal(1, b.incr)
    assert.matches("ERR", b.err)
    assert.same({ 1, 2, 2, { "b", "a" } }, b.pipeline)
    assert.same({ "key", "arg" }, b.eval)
    assert.is_true(b.keepalive)
  end)

  it("says why it cannot connect", function()
    local status, b = get("/down")
    assert.equal(200, status)
    assert.is_false(b.red)
    assert.matches("could not connect to redis at 127.0.0.1:9", b.err)
  end)

  it("closes the connection of a request whose plugin failed, and lives on", function()
    for _ = 1, 5 do
      assert.equal(500, (get("/dies")))
      assert.equal(500, (get("/dies?at_once=1")))
    end
    local status, b = get("/r")
    assert.equal(200, status)
    assert.equal("v", b.get)
  end)

  it("counts exactly across workers and pooled connections", function()
    helpers.run(fmt("for i in $(seq 100); do curl -s -o /dev/null "
      .. "http://127.0.0.1:%d/count & done; wait", s.port))
    local _, b = get("/count")
    assert.equal(101, b.n)
  end)
end)
