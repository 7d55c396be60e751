-- response-transformer in-process (t.plugin): every header and JSON operation, json_types,
-- nested paths, bodies it must leave alone, and gzip/deflate bodies (made by the gzip and
-- python3 zlib CLIs) served inflated.
local t = require("sluice.test")
local helpers = t.helpers

-- s compressed by a real tool: "gzip" (gzip -n) or "deflate" (a zlib stream).
local function compress(s, how)
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/in", s)
  local cmd = how == "deflate"
    and ("python3 -c 'import sys,zlib; sys.stdout.buffer.write(zlib.compress("
      .. "sys.stdin.buffer.read()))' < %s/in > %s/out")
    or "gzip -n -c %s/in > %s/out"
  local _, rc = helpers.run(cmd:format(dir, dir))
  assert.equal(0, rc)
  local f = assert(io.open(dir .. "/out", "rb"))
  local out = f:read("*a")
  f:close()
  os.execute("rm -rf " .. dir)
  return out
end

local function run(conf, upstream, req)
  req = req or {}
  req.upstream = upstream
  return t.plugin("response-transformer", conf):run(req)
end

local JSON = { ["Content-Type"] = "application/json" }

describe("plugin: response-transformer (access)", function()
  describe("headers", function()
    it("removes, renames, replaces, adds and appends, checking the upstream's headers", function()
      local res = run({
        remove = { headers = { "Server", "X-Absent" } },
        rename = { headers = { "X-Old:X-New", "X-Nope:X-Never" } },
        replace = { headers = { "X-Env:prod", "X-Missing:no" } },
        add = { headers = { "X-Added:1", "X-Env:not-added" } },
        append = { headers = { "X-Env:second", "X-Fresh:f" } },
      }, { headers = { Server = "nginx", ["X-Old"] = "o", ["X-Env"] = "dev" }, body = "hi" })
      assert.equal("hi", assert.res_status(200, res))
      local h = res.headers
      assert.is_nil(h.server)
      assert.is_nil(h["x-old"])
      assert.equal("o", h["x-new"])
      assert.is_nil(h["x-never"])
      assert.same({ "prod", "second" }, h["x-env"])
      assert.is_nil(h["x-missing"])
      assert.equal("1", h["x-added"])
      assert.equal("f", h["x-fresh"])
    end)

    it("renames every line of a repeated header", function()
      local res = run({ rename = { headers = { "Set-Cookie:X-Cookie" } } },
        { headers = { ["Set-Cookie"] = { "a=1", "b=2" } } })
      assert.same({ "a=1", "b=2" }, res.headers["x-cookie"])
      assert.is_nil(res.headers["set-cookie"])
    end)

    it("keeps Content-Length when only headers change", function()
      local res = run({ add = { headers = { "X-A:1" } } }, { headers = JSON, body = '{"a":1}' })
      assert.equal("7", res.headers["content-length"])
    end)
  end)

  describe("JSON bodies", function()
    local body = '{"secret":"s","id":12345678901234567,"tags":[],"old":"o","n":1,'
      .. '"list":["a"],"one":"x","url":"http://x/y","u":"\\u00e9"}'

    it("applies the five operations and keeps every value it did not touch", function()
      local res = run({
        remove = { json = { "secret" } },
        rename = { json = { "old:new" } },
        replace = { json = { "n:2", "absent:1" }, json_types = { "number", "number" } },
        add = { json = { "ok:true", "name:gw", "n:99" }, json_types = { "boolean" } },
        append = { json = { "list:b", "one:y", "fresh:z" } },
      }, { headers = JSON, body = body })
      assert.equal('{"id":12345678901234567,"tags":[],"new":"o","n":2,"list":["a","b"],'
        .. '"one":["x","y"],"url":"http://x/y","u":"\\u00e9","ok":true,"name":"gw",'
        .. '"fresh":["z"]}', assert.res_status(200, res))
      assert.is_nil(res.headers["content-length"])
    end)

    it("escapes string values", function()
      local res = run({ add = { json = { 'q:say "hi"\\' } } }, { headers = JSON, body = "{}" })
      assert.equal('{"q":"say \\"hi\\"\\\\"}', res.body)
    end)

    it("takes dotted keys as they are, or as paths with dots_in_keys: false", function()
      local up = { headers = JSON, body = '{"a.b":1,"a":{"b":2,"c":{"d":3}}}' }
      local res = run({ remove = { json = { "a.b" } } }, up)
      assert.equal('{"a":{"b":2,"c":{"d":3}}}', res.body)
      res = run({ dots_in_keys = false, remove = { json = { "a.b" } },
                  rename = { json = { "a.c.d:e" } },
                  replace = { json = { "a.c.e:4" }, json_types = { "number" } },
                  add = { json = { "x.y.z:new" } },
                  append = { json = { "a.list:1" }, json_types = { "number" } } }, up)
      assert.equal('{"a.b":1,"a":{"c":{"e":4},"list":[1]},"x":{"y":{"z":"new"}}}', res.body)
    end)

    it("transforms application/*+json too, and an exit-free 4xx answer", function()
      local res = run({ add = { json = { "a:1" } } },
        { status = 404, headers = { ["Content-Type"] = "application/problem+json" },
          body = '{"title":"nope"}' })
      assert.equal('{"title":"nope","a":"1"}', assert.res_status(404, res))
    end)

    it("leaves other content types, invalid JSON and arrays as they are", function()
      local conf = { add = { json = { "a:1" } } }
      local cases = {
        { { ["Content-Type"] = "text/plain" }, '{"b":1}' },
        { JSON, '{"b":' },
        { JSON, "[1,2]" },
        { JSON, "" },
      }
      for _, c in ipairs(cases) do
        local res = run(conf, { headers = c[1], body = c[2] })
        assert.equal(c[2], res.body)
      end
    end)
  end)

  describe("compressed bodies", function()
    local doc = '{"keep":"' .. string.rep("k", 2000) .. '","secret":"s"}'
    local conf = { remove = { json = { "secret" } }, add = { json = { "via:gw" } } }
    local want = '{"keep":"' .. string.rep("k", 2000) .. '","via":"gw"}'

    for _, how in ipairs({ "gzip", "deflate" }) do
      it("inflates a " .. how .. " body, transforms it and sends it uncompressed", function()
        local res = run(conf, { headers = { ["Content-Type"] = "application/json",
                                            ["Content-Encoding"] = how },
                                body = compress(doc, how) })
        assert.equal(want, assert.res_status(200, res))
        assert.is_nil(res.headers["content-encoding"])
      end)
    end

    it("inflates two gzip members one after the other", function()
      local res = run(conf, { headers = { ["Content-Type"] = "application/json",
                                          ["Content-Encoding"] = "gzip" },
                              body = compress('{"keep":"' .. string.rep("k", 2000), "gzip")
                                .. compress('","secret":"s"}', "gzip") })
      assert.equal(want, res.body)
    end)

    it("passes an encoding it cannot inflate on untouched", function()
      local res = run(conf, { headers = { ["Content-Type"] = "application/json",
                                          ["Content-Encoding"] = "br" }, body = "\1\2\3" })
      assert.equal("\1\2\3", res.body)
      assert.equal("br", res.headers["content-encoding"])
    end)

    it("answers 500 and logs when the upstream's gzip body is corrupt", function()
      local res = run(conf, { headers = { ["Content-Type"] = "application/json",
                                          ["Content-Encoding"] = "gzip" },
                              body = "\31\139\8\0garbage-garbage-garbage" })
      assert.res_status(500, res)
      assert.matches("could not inflate the upstream's body: invalid compressed body",
        table.concat(res.logs, "\n"), 1, true)
    end)

    it("leaves the head of a HEAD answer alone", function()
      local res = run(conf, { headers = { ["Content-Type"] = "application/json",
                                          ["Content-Encoding"] = "gzip" }, body = "" },
        { method = "HEAD" })
      assert.equal("gzip", res.headers["content-encoding"])
    end)
  end)
end)
