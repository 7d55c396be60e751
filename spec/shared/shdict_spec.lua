-- shdict_spec.lua: sluice.shared, the Lua API of shared dicts, run inside sluice's LuaJIT.
--
-- The dicts are created in this process with sl_ffi_shdict_open; what crosses
-- processes (atomic incr, a worker killed holding the lock) is tested in C, in
-- spec/core/shdict.c.
local ffi = require("ffi")
local shared = require("sluice.shared")
local socket = require("socket")

local C = ffi.C

local function open(name, size)
  local out = ffi.new("sl_shdict_t *[1]")
  local err = ffi.new("const char *[1]")
  local rc = C.sl_ffi_shdict_open(name, #name, size, out, err)
  assert(rc == 0, rc ~= 0 and ffi.string(err[0]))
  return shared[name]
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function block(text, path)
  local first = assert(text:find("/* BEGIN shdict */", 1, true), "no BEGIN marker in " .. path)
  local _, last = text:find("/* END shdict */", first, true)
  assert(last, "no END marker in " .. path)
  return text:sub(first, last)
end

-- Calls fn and returns the message of the error it raises.
local function error_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return err
end

describe("sluice.shared", function()
  local d

  setup(function()
    d = open("spec_dict", 1024 * 1024)
  end)

  before_each(function()
    d:flush_all()
    d:flush_expired()
  end)

  it("declares exactly the shdict block of core/sl_ffi.h", function()
    local lua_path = assert(package.searchpath("sluice.shared", package.path))
    local header_path = lua_path:gsub("lua/sluice/shared%.lua$", "core/sl_ffi.h")
    assert.equal(block(read_file(header_path), header_path), block(read_file(lua_path), lua_path))
  end)

  describe("lookup", function()
    it("finds a dict by name, as the same object every time", function()
      assert.is_table(shared.spec_dict)
      assert.equal(d, shared.spec_dict)
      assert.equal("spec_dict", d.name)
    end)

    it("has nil for a name that is not a dict", function()
      assert.is_nil(shared.no_such_dict)
      assert.is_nil(shared[1])
    end)
  end)

  describe("get and set", function()
    it("stores strings, numbers and booleans", function()
      assert.same({ true, nil, false }, { d:set("s", "hello") })
      assert.equal("hello", d:get("s"))
      d:set("n", 1.25)
      assert.equal(1.25, d:get("n"))
      d:set("t", true)
      d:set("f", false)
      assert.is_true(d:get("t"))
      assert.is_false(d:get("f"))
      d:set("bin", "a\0b\255")
      assert.equal("a\0b\255", d:get("bin"))
      d:set("empty", "")
      assert.equal("", d:get("empty"))
    end)

    it("returns nil for a missing key, and flags only when set", function()
      assert.equal(0, select("#", d:get("missing")) - 1)
      assert.is_nil(d:get("missing"))
      d:set("k", "v")
      assert.equal(1, select("#", d:get("k")))
      d:set("k", "v", 0, 42)
      assert.same({ "v", 42 }, { d:get("k") })
      d:set("k", "v", 0, 4294967295)
      assert.same({ "v", 4294967295 }, { d:get("k") })
    end)

    it("turns number keys into strings", function()
      d:set(10, "ten")
      assert.equal("ten", d:get("10"))
      assert.equal("ten", d:get(10))
    end)

    it("deletes with nil and with delete", function()
      d:set("k", "v")
      assert.is_true((d:set("k", nil)))
      assert.is_nil(d:get("k"))
      d:set("k", "v")
      assert.is_true((d:delete("k")))
      assert.is_nil(d:get("k"))
      assert.is_true((d:delete("never-there")))
    end)

    it("copies values bigger than its buffer", function()
      local big = string.rep("0123456789abcdef", 8192) -- 128 KiB
      d:set("big", big)
      assert.equal(big, d:get("big"))
      local huge = string.rep("x", 3 * 1024 * 1024)
      local bigger = open("spec_bigger", 8 * 1024 * 1024)
      assert.is_true((bigger:set("huge", huge)))
      assert.equal(huge, bigger:get("huge"))
      assert.equal(big, d:get("big"))
    end)

    it("reports empty and too long keys as errors", function()
      assert.same({ nil, "empty key", false }, { d:set("", "v") })
      assert.same({ nil, "empty key" }, { d:get("") })
      local long = string.rep("k", 65536)
      assert.same({ nil, "key too long" }, { d:get(long) })
      assert.is_true((d:set(long:sub(2), "v")))
      assert.equal("v", d:get(long:sub(2)))
    end)
  end)

  describe("add, replace, safe_add", function()
    it("adds only a missing key", function()
      assert.is_true((d:add("k", "v1")))
      assert.same({ nil, "exists", false }, { d:add("k", "v2") })
      assert.same({ nil, "exists", false }, { d:safe_add("k", "v2") })
      assert.equal("v1", d:get("k"))
      assert.same({ nil, "attempt to add or replace nil values", false }, { d:add("x", nil) })
    end)

    it("replaces only an existing key", function()
      assert.same({ nil, "not found", false }, { d:replace("k", "v") })
      d:set("k", "v1", 0, 3)
      assert.is_true((d:replace("k", "v2")))
      assert.same({ "v2" }, { d:get("k") })
    end)

    it("treats an expired key as missing", function()
      d:set("k", "old", 0.01)
      socket.sleep(0.03)
      assert.same({ nil, "not found", false }, { d:replace("k", "v") })
      assert.is_true((d:add("k", "new")))
      assert.equal("new", d:get("k"))
    end)
  end)

  describe("incr", function()
    it("adds to a number atomically and returns the new value", function()
      d:set("n", 10)
      assert.same({ 11, nil, false }, { d:incr("n", 1) })
      assert.equal(10.5, (d:incr("n", -0.5)))
      assert.equal(10.5, d:get("n"))
    end)

    it("fails on a missing key unless given init", function()
      assert.same({ nil, "not found", false }, { d:incr("n", 1) })
      assert.same({ 6, nil, false }, { d:incr("n", 1, 5) })
      assert.equal(7, (d:incr("n", 1, 100))) -- init is ignored once the key exists
      assert.equal(0, d:ttl("n"))
    end)

    it("gives a created key init_ttl, and keeps an existing key's ttl", function()
      assert.equal(1, (d:incr("n", 1, 0, 10)))
      local ttl = d:ttl("n")
      assert.is_true(ttl > 9 and ttl <= 10)
      d:incr("n", 1, 0, 100)
      assert.is_true(d:ttl("n") <= 10)
    end)

    it("refuses a value that is not a number", function()
      d:set("s", "12")
      assert.same({ nil, "not a number", false }, { d:incr("s", 1) })
    end)
  end)

  describe("expiry", function()
    it("hides an expired key from get and ttl, not from get_stale", function()
      d:set("k", "v", 0.02, 5)
      assert.equal("v", d:get("k"))
      assert.same({ "v", 5, false }, { d:get_stale("k") })
      socket.sleep(0.04)
      assert.is_nil(d:get("k"))
      assert.same({ nil, "not found" }, { d:ttl("k") })
      assert.same({ "v", 5, true }, { d:get_stale("k") })
      d:set("plain", 1)
      assert.same({ 1, nil, false }, { d:get_stale("plain") })
      assert.is_nil(d:get_stale("missing"))
    end)

    it("reports the time left with ttl and changes it with expire", function()
      d:set("k", "v", 5)
      local ttl = d:ttl("k")
      assert.is_true(ttl > 4.9 and ttl <= 5)
      assert.is_true(d:expire("k", 0))
      assert.equal(0, d:ttl("k"))
      assert.is_true(d:expire("k", 0.01))
      socket.sleep(0.03)
      assert.is_nil(d:get("k"))
      assert.same({ nil, "not found" }, { d:expire("k", 10) })
    end)
  end)

  describe("get_keys", function()
    it("lists unexpired keys, most recently used first", function()
      d:set("a", 1)
      d:set("b", 2)
      d:set("c", 3, 0.01)
      d:get("a")
      assert.same({ "a", "c", "b" }, d:get_keys())
      assert.same({ "a" }, d:get_keys(1))
      socket.sleep(0.03)
      assert.same({ "a", "b" }, d:get_keys(0))
    end)

    it("returns at most 1024 keys by default and all with 0", function()
      for i = 1, 1500 do
        d:set("key" .. i, i)
      end
      assert.equal(1024, #d:get_keys())
      local all = d:get_keys(0)
      assert.equal(1500, #all)
      local seen = {}
      for _, k in ipairs(all) do
        seen[k] = true
      end
      assert.is_true(seen.key1 and seen.key1500)
    end)
  end)

  describe("flush_all and flush_expired", function()
    it("expires everything, then frees what expired", function()
      local free = d:free_space()
      for i = 1, 10 do
        d:set("k" .. i, string.rep("v", 100), i <= 4 and 0.01 or 0)
      end
      assert.is_true(d:free_space() < free)
      socket.sleep(0.03)
      assert.equal(2, d:flush_expired(2))
      assert.equal(2, d:flush_expired())
      assert.equal(0, d:flush_expired())
      assert.is_true(d:flush_all())
      assert.is_nil(d:get("k5"))
      assert.same({}, d:get_keys(0))
      assert.equal(6, d:flush_expired(0))
      assert.equal(free, d:free_space())
    end)
  end)

  describe("a full dict", function()
    local small

    setup(function()
      small = open("spec_small", 32 * 1024)
    end)

    it("evicts the least recently used entries and says so", function()
      local value = string.rep("v", 1000)
      small:set("keep", value)
      local forced_at
      for i = 1, 100 do
        local ok, err, forcible = small:set("k" .. i, value)
        assert.is_true(ok, err)
        small:get("keep")
        if forcible then
          forced_at = i
          break
        end
      end
      assert.is_number(forced_at)
      assert.equal(value, small:get("keep"))
      assert.is_nil(small:get("k1"))
      assert.equal(value, small:get("k2"))
    end)

    it("never evicts with safe_set", function()
      local value = string.rep("w", 1000)
      assert.same({ nil, "no memory", false }, { small:safe_set("new", value) })
      assert.is_nil(small:get("new"))
      assert.same({ nil, "no memory", false }, { small:set("huge", string.rep("x", 40000)) })
    end)

    it("reports its capacity and free space", function()
      assert.equal(32 * 1024, small:capacity())
      assert.is_true(small:free_space() < 2048)
      assert.equal(1024 * 1024, d:capacity())
    end)
  end)

  describe("misuse", function()
    it("raises for a call with '.' instead of ':'", function()
      assert.matches("calling 'get' on bad self %(shared dict expected, got string%)",
                     error_of(function() d.get("k") end))
      assert.matches("calling 'set' on bad self", error_of(function() d.set("k", "v") end))
    end)

    it("raises for bad argument types, pointing at the caller", function()
      local err = error_of(function() d:set(nil, "v") end)
      assert.matches("^[^:]*shdict_spec%.lua:%d+: bad argument #1 to 'set' %(string expected, "
                     .. "got nil%)$", err)
      assert.matches("shdict_spec%.lua:%d+: bad argument #1 to 'get' %(string expected, "
                     .. "got table%)", error_of(function() d:get({}) end))
      assert.matches("shdict_spec%.lua:%d+: bad argument #2 to 'safe_set' %(string, number, "
                     .. "boolean or nil expected, got table%)",
                     error_of(function() d:safe_set("k", {}) end))
      assert.matches("bad argument #3 to 'add' %(number expected, got string%)",
                     error_of(function() d:add("k", 1, "soon") end))
      assert.matches("bad argument #3 to 'set' %(seconds must be >= 0%)",
                     error_of(function() d:set("k", 1, -1) end))
      assert.matches("shdict_spec%.lua:%d+: bad argument #4 to 'replace' %(flags must be",
                     error_of(function() d:replace("k", 1, 0, 1.5) end))
      assert.matches("bad argument #2 to 'incr' %(number expected, got nil%)",
                     error_of(function() d:incr("k") end))
      assert.matches("bad argument #4 to 'incr' %(init_ttl needs init%)",
                     error_of(function() d:incr("k", 1, nil, 10) end))
      assert.matches("bad argument #4 to 'incr' %(seconds must be >= 0%)",
                     error_of(function() d:incr("k", 1, 0, -1) end))
      assert.matches("bad argument #2 to 'expire' %(number expected, got nil%)",
                     error_of(function() d:expire("k") end))
      assert.matches("bad argument #1 to 'get_keys' %(count must be an integer >= 0%)",
                     error_of(function() d:get_keys(-1) end))
      assert.matches("bad argument #1 to 'flush_expired' %(number expected, got boolean%)",
                     error_of(function() d:flush_expired(true) end))
      assert.matches("bad argument #1 to 'delete' %(string expected, got nil%)",
                     error_of(function() d:delete() end))
    end)
  end)
end)
