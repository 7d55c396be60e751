-- cli_spec.lua: `sluice check -c FILE` as a user runs it: exit code, errors, summary.
local BIN = os.getenv("SLUICE_BIN") or "build/sluice"
local FIXTURES = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/fixtures"
local ROOT = FIXTURES:match("^(.-)/?spec/config/fixtures$") or ""

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs `sluice check -c path`; returns the output (stdout and stderr) and the exit code.
local function check(path)
  local p = assert(io.popen(shell_quote(BIN) .. " check -c " .. shell_quote(path)
    .. " 2>&1; echo \"rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.*)rc=(%d+)%s*$")
  return body, tonumber(rc)
end

local function plain(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

describe("sluice check", function()
  it("prints the summary of a good config and exits 0", function()
    local file = FIXTURES .. "/good.yaml"
    local out, rc = check(file)
    assert.equal(0, rc, out)
    assert.matches(plain(file), out)
    assert.matches("listen%s+127%.0%.0%.1:18000, %[::1%]:18001", out)
    assert.matches("workers%s+2\n", out)
    assert.matches("pid file%s+/tmp/sluice%-spec%.pid", out)
    assert.matches("services %(2%)\n", out)
    assert.matches("echo%s+http://127%.0%.0%.1:18080/base%s+%-> upstream 127%.0%.0%.1:18080", out)
    assert.matches("pool%s+http://backend:80%s+%-> upstream backend", out)
    assert.matches("routes %(2%)\n", out)
    assert.matches("echo%-api%s+hosts api%.example%.com%s+paths /api%s+methods GET,POST%s+"
      .. "%-> echo", out)
    assert.matches("pool%-all%s+paths ~/v%(%?<version>\\d%+%)/%s+%-> pool", out)
    assert.matches("upstreams %(2%)\n", out)
    assert.matches("backend%s+round%-robin%s+127%.0%.0%.1:18081 w100, 127%.0%.0%.1:18082 w20",
      out)
    assert.matches("configuration OK\n$", out)
  end)

  it("names each upstream's algorithm and what it hashes on", function()
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write([[
_format_version: "3.0"
upstreams:
- name: lc
  algorithm: least-connections
  targets: [{ target: "127.0.0.1:9001" }]
- name: sticky
  algorithm: consistent-hashing
  hash_on: header
  hash_on_header: X-User
  hash_fallback: ip
  targets: [{ target: "127.0.0.1:9001" }, { target: "127.0.0.1:9002", weight: 0 }]
]])
    f:close()
    local out, rc = check(file)
    os.remove(file)
    assert.equal(0, rc, out)
    assert.matches("lc%s+least%-connections%s+127%.0%.0%.1:9001 w100\n", out)
    assert.matches("sticky%s+consistent%-hashing on header X%-User else ip%s+127%.0%.0%.1:9001 "
      .. "w100, 127%.0%.0%.1:9002 w0\n", out)
  end)

  it("loads a real Kong export", function()
    local out, rc = check(FIXTURES .. "/kong.yml")
    assert.equal(0, rc, out)
    assert.matches("services %(2%)", out)
    assert.matches("routes %(4%)", out)
    assert.matches("catalog%.upstream%s+round%-robin%s+127%.0%.0%.1:9101 w100, "
      .. "127%.0%.0%.1:9102 w50, 127%.0%.0%.1:9103 w0", out)
    assert.matches("configuration OK", out)
  end)

  it("passes the default config", function()
    local out, rc = check((ROOT ~= "" and ROOT .. "/" or "") .. "conf/sluice.yaml")
    assert.equal(0, rc, out)
    assert.matches("listen%s+0%.0%.0%.0:8000\n", out)
    assert.matches("example%s+http://127%.0%.0%.1:8080%s+%-> upstream 127%.0%.0%.1:8080", out)
    assert.matches("configuration OK", out)
  end)

  it("prints every error with file, line and path, and exits 1", function()
    local file = FIXTURES .. "/bad.yaml"
    local out, rc = check(file)
    assert.equal(1, rc)
    local f = plain(file)
    assert.matches(f .. ":5: services%[0%]%.retries: expected an integer, got string \"lots\"\n",
      out)
    assert.matches(f .. ":11: services%[0%]%.routes%[1%]%.paths%[0%]: expected a string "
      .. "starting with '/' or '~', got \"api\"\n", out)
    assert.matches(f .. ':13: services%[1%]%.name: duplicate service name "api"', out)
    assert.matches(f .. ":15: services%[1%]%.timeout: unknown field 'timeout'\n", out)
    assert.matches(f .. ':18: routes%[0%]%.service: no service named "missing"\n', out)
    assert.matches(f .. ":21: plugins%[0%]%.name: plugin 'no%-such%-plugin' not found %(looked in ",
      out)
    assert.not_matches("configuration OK", out)
    local _, lines = out:gsub("\n", "")
    assert.equal(6, lines)
  end)

  it("names the line and column of a YAML syntax error", function()
    local file = FIXTURES .. "/syntax.yaml"
    local out, rc = check(file)
    assert.equal(1, rc)
    assert.equal(file .. ":5:10: mapping values are not allowed in this context\n", out)
  end)

  it("reports hosts that do not resolve and regexes that do not compile", function()
    local file = FIXTURES .. "/unresolvable.yaml"
    local out, rc = check(file)
    assert.equal(1, rc)
    local f = plain(file)
    assert.matches(f .. ':7: services%[0%]%.host: cannot resolve "no%-such%-host%.invalid": ', out)
    assert.matches(f .. ':9: services%[0%]%.routes%[0%]%.paths%[0%]: invalid regex '
      .. '"/broken/%(\\d%+": missing closing parenthesis', out)
  end)

  it("says when the file cannot be read", function()
    local out, rc = check("/nonexistent/sluice.yaml")
    assert.equal(1, rc)
    assert.equal("/nonexistent/sluice.yaml: cannot read the file: No such file or directory\n",
      out)
  end)
end)
