-- pdk_spec.lua: the `sluice` global outside a request: every request-bound function
-- refuses to run, bad arguments are named, and docs/pdk.md covers every function.
--
-- What the functions do inside a request is specified through the real binary
-- in spec/integration/plugins_spec.lua.
require("sluice.pdk")

local fmt = string.format

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)spec/pdk/[^/]+$") or ""
if ROOT == "" then
  ROOT = "."
else
  ROOT = ROOT:gsub("/$", "")
end

local NO_REQUEST = "is not allowed in phase (no request)"

-- Every function that needs a request, with valid arguments.
local REQUEST_BOUND = {
  { "request.get_method" }, { "request.get_scheme" }, { "request.get_host" },
  { "request.get_port" }, { "request.get_path" }, { "request.get_raw_path" },
  { "request.get_raw_query" }, { "request.get_path_with_query" }, { "request.get_query" },
  { "request.get_query_arg", "a" }, { "request.get_header", "a" }, { "request.get_headers" },
  { "request.get_raw_body" }, { "request.get_body" }, { "request.get_start_time" },
  { "request.get_uri_captures" },
  { "client.get_ip" }, { "client.get_port" }, { "client.get_forwarded_ip" },
  { "client.get_forwarded_port" },
  { "response.get_status" }, { "response.set_status", 200 }, { "response.get_header", "a" },
  { "response.get_headers" }, { "response.set_header", "a", "b" },
  { "response.add_header", "a", "b" }, { "response.clear_header", "a" },
  { "response.set_headers", { a = "b" } }, { "response.exit", 200 },
  { "response.error", 500 },
  { "service.request.set_method", "GET" }, { "service.request.set_path", "/" },
  { "service.request.set_raw_query", "a=1" }, { "service.request.set_query", { a = "1" } },
  { "service.request.set_header", "a", "b" }, { "service.request.add_header", "a", "b" },
  { "service.request.clear_header", "a" }, { "service.request.set_headers", { a = "b" } },
  { "service.response.get_status" }, { "service.response.get_header", "a" },
  { "service.response.get_headers" },
  { "service.request.set_raw_body", "x" }, { "service.request.set_body", { a = "1" } },
  { "service.request.enable_buffering" }, { "service.response.get_raw_body" },
  { "service.response.get_body" },
  { "response.get_raw_body" }, { "response.set_raw_body", "x" }, { "response.get_chunk" },
  { "response.set_chunk", "x" },
  { "log.serialize" },
}

-- Functions that are another one, or call it first, and report errors under
-- its name.
local REPORTED_AS = {
  ["response.error"] = "response.exit",
  ["service.response.get_header"] = "response.get_header",
  ["service.response.get_headers"] = "response.get_headers",
}

-- Calls sluice.<path>(...) and returns pcall's results.
local function call(path, ...)
  local fn = sluice
  for part in path:gmatch("[^%.]+") do
    fn = fn[part]
  end
  assert.is_function(fn, "sluice." .. path)
  return pcall(fn, ...)
end

describe("pdk: outside a request", function()
  for _, case in ipairs(REQUEST_BOUND) do
    local path = case[1]
    it("sluice." .. path .. " raises an error naming it", function()
      local ok, err = call(path, unpack(case, 2))
      assert.is_false(ok)
      local name = "sluice." .. (REPORTED_AS[path] or path)
      assert.matches((name .. " " .. NO_REQUEST):gsub("%p", "%%%0"), tostring(err))
    end)
  end

  it("sluice.ctx.shared and sluice.ctx.plugin are nil", function()
    assert.is_nil(sluice.ctx.shared)
    assert.is_nil(sluice.ctx.plugin)
  end)

  it("sluice.node and sluice.version work anywhere", function()
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", sluice.node.get_id())
    assert.equals(sluice.node.get_id(), sluice.node.get_id())
    assert.is_string(sluice.node.get_hostname())
    assert.is_number(sluice.node.get_worker_id())
    assert.is_number(sluice.node.get_memory_stats().lua_kb)
    assert.matches("^%d+%.%d+%.%d+$", sluice.version)
  end)

  it("sluice.json is cjson.safe: errors are returned, not raised", function()
    assert.same({ a = 1 }, sluice.json.decode('{"a":1}'))
    local v, err = sluice.json.decode("{nope")
    assert.is_nil(v)
    assert.is_string(err)
  end)
end)

describe("pdk: bad arguments are raised before the phase is checked", function()
  local cases = {
    { "request.get_header", { nil },
      "bad argument #1 to 'get_header' (string expected, got nil)" },
    { "request.get_query_arg", { 1 },
      "bad argument #1 to 'get_query_arg' (string expected, got number)" },
    { "response.exit", { "200" },
      "bad argument #1 to 'exit' (status code (100-999) expected, got string)" },
    { "response.exit", { 200, nil, "x" },
      "bad argument #3 to 'exit' (table expected, got string)" },
    { "response.set_status", { 99 },
      "bad argument #1 to 'set_status' (status code (100-999) expected, got number)" },
    { "response.set_headers", { "x" },
      "bad argument #1 to 'set_headers' (table expected, got string)" },
    { "service.request.set_method", { "get" },
      "bad argument #1 to 'set_method' (invalid method 'get')" },
    { "service.request.set_path", { "x" },
      "bad argument #1 to 'set_path' (path must start with '/')" },
    { "service.request.set_path", { "/a b" },
      "bad argument #1 to 'set_path' (path cannot hold spaces, '?' or '#')" },
    { "service.request.set_raw_query", { "a b" },
      "bad argument #1 to 'set_raw_query' (query cannot hold spaces or '#')" },
    { "service.request.set_query", { "a=1" },
      "bad argument #1 to 'set_query' (table expected, got string)" },
    { "sleep", { -1 }, "bad argument #1 to 'sleep' (non-negative number expected, got number)" },
    { "client.authenticate", {},
      "bad argument #1 to 'authenticate' (a consumer or a credential expected, got neither)" },
    { "client.authenticate", { "alice" },
      "bad argument #1 to 'authenticate' (table or nil expected, got string)" },
    { "client.load_consumer", { "alice" },
      "bad argument #1 to 'load_consumer' (consumer ids are UUIDs; pass true as argument #2 "
        .. "to look up a username)" },
    { "client.load_consumer", { nil, true },
      "bad argument #1 to 'load_consumer' (string expected, got nil)" },
    { "service.set_upstream", { 7 },
      "bad argument #1 to 'set_upstream' (string expected, got number)" },
    { "service.set_target", { "127.0.0.1", 65536 },
      "bad argument #2 to 'set_target' (integer from 1 to 65535 expected, got 65536)" },
    { "service.set_timeouts", { 1, "2", 3 },
      "bad argument #2 to 'set_timeouts' (integer from 1 to 2147483646 expected, got string)" },
    { "service.set_retries", { 0.5 },
      "bad argument #1 to 'set_retries' (integer from 0 to 32767 expected, got 0.5)" },
    { "service.request.set_raw_body", { 1 },
      "bad argument #1 to 'set_raw_body' (string expected, got number)" },
    { "service.request.set_body", { "a=1" },
      "bad argument #1 to 'set_body' (table expected, got string)" },
    { "service.request.set_body", { {}, 1 },
      "bad argument #2 to 'set_body' (string expected, got number)" },
    { "response.set_chunk", { nil },
      "bad argument #1 to 'set_chunk' (string expected, got nil)" },
    { "response.set_raw_body", { {} },
      "bad argument #1 to 'set_raw_body' (string expected, got table)" },
  }
  for _, case in ipairs(cases) do
    local path, args, message = case[1], case[2], case[3]
    it(fmt("sluice.%s: %s", path, message), function()
      local ok, err = call(path, unpack(args, 1, 3))
      assert.is_false(ok)
      assert.matches(message:gsub("%p", "%%%0"), tostring(err))
    end)
  end
end)

describe("pdk: docs/pdk.md", function()
  local f = assert(io.open(ROOT .. "/docs/pdk.md", "r"))
  local doc = f:read("*a")
  f:close()

  -- Every function reachable from the global, by its full name (sluice.json
  -- is cjson's module and is documented as such; names starting with "_" are
  -- private).
  local names = {}
  local function walk(t, prefix, seen)
    seen[t] = true
    for k, v in pairs(t) do
      local name = prefix .. "." .. k
      if type(k) == "string" and k:sub(1, 1) == "_" then -- luacheck: ignore 542
        -- private, for the module's own specs
      elseif type(v) == "function" then
        names[#names + 1] = name
      elseif type(v) == "table" and not seen[v] and name ~= "sluice.json" then
        walk(v, name, seen)
      end
    end
    -- sluice.ctx is a proxy: its fields come from __index.
  end
  walk(sluice, "sluice", {})
  table.sort(names)

  it("documents every function of the sluice global", function()
    assert.is_true(#names > 40, #names .. " functions found")
    local missing = {}
    for _, name in ipairs(names) do
      if not doc:find("`" .. name .. "(", 1, true) then
        missing[#missing + 1] = name
      end
    end
    assert.equals("", table.concat(missing, "\n"))
  end)
end)
