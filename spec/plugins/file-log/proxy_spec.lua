-- file-log through the real binary, two workers: logrotate's rename + SIGUSR1 makes new lines
-- go to a new file (file-log's and the access log), and no line is lost or written twice.
local t = require("sluice.test")
local helpers = require("spec.helpers")
local cjson = require("cjson.safe")

local function uris(path)
  local out = {}
  for l in (helpers.read_file(path) or ""):gmatch("([^\n]*)\n") do
    local e = assert(cjson.decode(l), l)
    out[#out + 1] = e.request and e.request.uri or e.path
  end
  return out
end

describe("plugin: file-log (proxy)", function()
  local upstream, proxy, dir

  lazy_setup(function()
    upstream = t.mock_upstream()
    dir = helpers.tmpdir()
    helpers.track({ dir = dir, name = "file-log" })
    proxy = t.start({
      services = { { name = "api", url = upstream.url,
                     routes = { { name = "r", paths = { "/" },
                                  plugins = { { name = "file-log", config = {
                                    path = dir .. "/requests.log" } } } } } } },
    }, { workers = 2, access_log = dir .. "/access.log", access_log_buffer = 4096 })
  end)

  lazy_teardown(t.stop)

  it("reopens on SIGUSR1 after a rename: new lines in the new file, nothing lost", function()
    local sent = {}
    for i = 1, 10 do
      assert.res_status(200, proxy:get("/before-" .. i))
      sent[#sent + 1] = "/before-" .. i
    end
    assert(os.rename(dir .. "/requests.log", dir .. "/requests.log.1"))
    assert(os.rename(dir .. "/access.log", dir .. "/access.log.1"))
    os.execute("kill -USR1 " .. proxy.pid)
    assert.truthy(helpers.wait_for(function()
      return proxy:error_log():find("SIGUSR1: reopening log files", 1, true)
    end, 5))
    -- Each worker handles the signal on its own loop: send until both
    -- files exist again (bounded), then a few more.
    local i = 0
    assert.truthy(helpers.wait_for(function()
      i = i + 1
      assert.res_status(200, proxy:get("/after-" .. i))
      sent[#sent + 1] = "/after-" .. i
      return helpers.read_file(dir .. "/requests.log") ~= nil
    end, 10, 0.05))
    for _ = 1, 10 do
      i = i + 1
      assert.res_status(200, proxy:get("/after-" .. i))
      sent[#sent + 1] = "/after-" .. i
    end

    -- A request's log phase runs after its response went out: its line may
    -- land just after the client got the answer.
    local old, new
    helpers.wait_for(function()
      old, new = uris(dir .. "/requests.log.1"), uris(dir .. "/requests.log")
      return #old + #new >= #sent
    end, 5)
    for _, u in ipairs(old) do
      assert.is_nil(u:find("^/after%-1[0-9]$"), "a late line went to the renamed file: " .. u)
    end
    assert.is_true(#new >= 10)
    local all = {}
    for _, u in ipairs(old) do all[#all + 1] = u end
    for _, u in ipairs(new) do all[#all + 1] = u end
    table.sort(all)
    table.sort(sent)
    assert.same(sent, all)
    for k = 1, 10 do
      assert.truthy(table.concat(old, " "):find("/before-" .. k .. " ", 1, true)
        or old[#old] == "/before-" .. k, "line /before-" .. k .. " missing from the old file")
    end

    -- The access log (C) was reopened too: its buffer is flushed every second.
    assert.truthy(helpers.wait_for(function()
      local a = " " .. table.concat(uris(dir .. "/access.log"), " ") .. " "
      return a:find(" /after-" .. i .. " ", 1, true)
    end, 5))
    local old_access = table.concat(uris(dir .. "/access.log.1"), " ")
    assert.truthy(old_access:find("/before-10", 1, true))
  end)
end)
