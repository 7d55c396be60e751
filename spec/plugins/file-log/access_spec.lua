-- file-log in-process: one JSON line per request in the file, secrets kept out, reopen.
local t = require("sluice.test")
local helpers = require("spec.helpers")
local cjson = require("cjson.safe")

local function lines(path)
  local out = {}
  for l in (helpers.read_file(path) or ""):gmatch("([^\n]*)\n") do
    out[#out + 1] = assert(cjson.decode(l), l)
  end
  return out
end

describe("plugin: file-log (in-process)", function()
  local dir

  setup(function()
    dir = helpers.tmpdir()
  end)

  teardown(function()
    os.execute("rm -rf " .. dir)
  end)

  it("appends one JSON line per request, creating the file", function()
    local path = dir .. "/a.log"
    local p = t.plugin("file-log", { path = path })
    p:run({ path = "/one" })
    p:run({ method = "POST", path = "/two", body = "x" })
    local got = lines(path)
    assert.equal(2, #got)
    assert.equal("/one", got[1].request.uri)
    assert.equal("POST", got[2].request.method)
    assert.equal(200, got[2].response.status)
    assert.equal("t-plugin", got[2].route.name)
  end)

  it("never writes Authorization, Cookie, API keys or redacted fields", function()
    local path = dir .. "/secret.log"
    local p = t.plugin("file-log", { path = path, redact = { "X-Tenant" },
                                     custom_fields_by_lua = { shard = "return 3" } })
    p:run({ path = "/s", query = "apikey=k-sekrit-1&q=sekrit-2",
            headers = { Authorization = "Bearer sekrit-3", Cookie = "a=sekrit-4",
                        ["X-Api-Key"] = "sekrit-5", ["X-Tenant"] = "sekrit-6" } })
    local text = helpers.read_file(path)
    assert.not_matches("sekrit", text)
    local e = lines(path)[1]
    assert.equal(3, e.shard)
    assert.equal("REDACTED", e.request.headers["x-tenant"])
  end)

  it("with reopen, writes to a new file at the same path at once", function()
    local path = dir .. "/re.log"
    local p = t.plugin("file-log", { path = path, reopen = true })
    p:run({ path = "/r1" })
    assert(os.rename(path, path .. ".1"))
    p:run({ path = "/r2" })
    assert.equal("/r1", lines(path .. ".1")[1].request.uri)
    assert.equal("/r2", lines(path)[1].request.uri)
  end)

  it("logs an error and serves the request when the file cannot be opened", function()
    local p = t.plugin("file-log", { path = dir .. "/no/such/dir/x.log" })
    local res = p:run({ path = "/e" })
    assert.res_status(200, res)
    assert.matches("cannot open " .. dir .. "/no/such/dir/x.log: No such file or directory",
      table.concat(res.logs, "\n"), 1, true)
  end)
end)
