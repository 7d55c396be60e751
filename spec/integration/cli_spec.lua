-- The command line: version, help, check, start on a bad config, stop, pid file.
local helpers = require("spec.helpers")

local fmt = string.format
local bin = helpers.bin

-- Runs a sluice command with stdout and stderr kept apart; returns rc, out, err.
local function sluice(args, dir)
  local out_file = (dir or "/tmp") .. "/cli.out." .. tostring(os.time()) .. math.random(1e6)
  local err_file = out_file .. ".err"
  local _, rc = helpers.run(fmt("timeout 10 %s %s >%s 2>%s", bin, args, out_file, err_file))
  local out, err = helpers.read_file(out_file) or "", helpers.read_file(err_file) or ""
  os.remove(out_file)
  os.remove(err_file)
  return rc, out, err
end

local function config(upstream_port)
  return fmt([[
_format_version: "3.0"
services:
  - name: echo-service
    url: http://127.0.0.1:%d
    routes:
      - name: echo-route
        paths: ["/"]
]], upstream_port)
end

local function listening(port)
  local c = require("socket").tcp()
  c:settimeout(0.5)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

describe("cli: version and help", function()
  it("`sluice version` prints the version and exits 0", function()
    local rc, out = sluice("version")
    assert.equals(0, rc)
    assert.matches("^sluice %d+%.%d+%.%d+\n$", out)
  end)

  it("`sluice help` lists the commands and exits 0", function()
    local rc, out = sluice("help")
    assert.equals(0, rc)
    for _, cmd in ipairs({ "start", "check", "stop", "test", "version", "help" }) do
      assert.matches("\n%s+" .. cmd .. " ", out)
    end
  end)

  it("an unknown command exits 2 and names it", function()
    local rc, out, err = sluice("frobnicate")
    assert.equals(2, rc)
    assert.equals("", out)
    assert.matches("frobnicate", err, 1, true)
  end)

  it("an unknown option exits 2 and names it", function()
    local rc, _, err = sluice("start --frobnicate")
    assert.equals(2, rc)
    assert.matches("--frobnicate", err, 1, true)
  end)

  it("no command at all prints the usage and exits 2", function()
    local rc, _, err = sluice("")
    assert.equals(2, rc)
    assert.matches("usage", err)
  end)
end)

describe("cli: check", function()
  local dir

  setup(function()
    dir = helpers.tmpdir()
  end)

  teardown(function()
    os.execute("rm -rf " .. dir)
  end)

  it("prints a summary of a valid config and exits 0", function()
    local file = dir .. "/good.yaml"
    helpers.write_file(file, config(helpers.free_port()))
    local rc, out = sluice("check -c " .. file)
    assert.equals(0, rc)
    assert.matches("echo-service", out, 1, true)
    assert.matches("echo-route", out, 1, true)
  end)

  it("exits 1 naming file:line:path for a broken config", function()
    local file = dir .. "/bad.yaml"
    helpers.write_file(file, [[
_format_version: "3.0"
services:
  - name: echo-service
    url: http://127.0.0.1:9
    routes:
      - name: echo-route
        paths: ["users"]
]])
    local rc, out, err = sluice("check -c " .. file)
    assert.equals(1, rc)
    assert.not_matches("configuration OK", out, 1, true)
    assert.matches(file .. ":7: services[0].routes[0].paths[0]", err, 1, true)
  end)
end)

describe("cli: start and stop", function()
  local upstream

  setup(function()
    upstream = helpers.start_upstream()
  end)

  teardown(function()
    helpers.stop_all()
  end)

  it("start on a bad config exits 1, says why, and does not listen", function()
    local dir = helpers.tmpdir()
    local port = helpers.free_port()
    local file = dir .. "/bad.yaml"
    helpers.write_file(file, config(upstream.port) .. "        methods: [get]\n"
      .. helpers.server_block(port, dir))
    local rc, _, err = sluice("start -c " .. file, dir)
    assert.equals(1, rc)
    assert.matches(file .. ":8: services[0].routes[0].methods", err, 1, true)
    assert.is_false(listening(port))
    assert.is_nil(helpers.read_file(dir .. "/sluice.pid"))
    os.execute("rm -rf " .. dir)
  end)

  it("stop reads the pid file and stops a running sluice gracefully", function()
    local s = helpers.start_sluice(config(upstream.port))
    assert.equals(200, (helpers.curl(fmt("http://127.0.0.1:%d/", s.port))))
    assert.matches(tostring(s.pid), helpers.read_file(s.pid_file) or "", 1, true)

    local rc, _, err = sluice("stop -c " .. s.file, s.dir)
    assert.equals(0, rc, err)
    assert.is_false(helpers.alive(s.pid))
    assert.equals(0, helpers.exit_code(s, 5))
    assert.is_nil(helpers.read_file(s.pid_file))
    assert.is_false(listening(s.port))
  end)

  it("stop exits 1 when nothing is running", function()
    local dir = helpers.tmpdir()
    local file = dir .. "/idle.yaml"
    helpers.write_file(file, config(upstream.port)
      .. helpers.server_block(helpers.free_port(), dir))
    local rc, _, err = sluice("stop -c " .. file, dir)
    assert.equals(1, rc)
    assert.matches("sluice.pid", err, 1, true)
    os.execute("rm -rf " .. dir)
  end)

  it("a second start with the same pid file refuses and leaves the first running", function()
    local s = helpers.start_sluice(config(upstream.port))
    local port2 = helpers.free_port()
    local file2 = s.dir .. "/second.yaml"
    -- Same pid file (and directory), another port: only the pid file is shared.
    helpers.write_file(file2, config(upstream.port) .. helpers.server_block(port2, s.dir))
    local rc, _, err = sluice("start -c " .. file2, s.dir)
    assert.equals(1, rc)
    assert.matches("already running", err, 1, true)
    assert.is_false(listening(port2))
    assert.is_true(helpers.alive(s.pid))
    assert.equals(tostring(s.pid), (helpers.read_file(s.pid_file) or ""):match("%d+"))
    assert.equals(200, (helpers.curl(fmt("http://127.0.0.1:%d/", s.port))))
  end)
end)
