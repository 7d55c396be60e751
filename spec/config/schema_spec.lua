-- schema_spec.lua: the schema language: types, attributes, defaults, error paths and messages.
local schema = require("sluice.schema")

local function record(fields, extra)
  local s = { type = "record", fields = fields }
  for k, v in pairs(extra or {}) do
    s[k] = v
  end
  return s
end

-- Validates and returns the messages as "path: message" strings.
local function messages(s, value)
  local out, errors = schema.validate(s, value)
  assert.is_nil(out)
  local list = {}
  for i, e in ipairs(errors) do
    list[i] = (e.path ~= "" and (e.path .. ": ") or "") .. e.message
  end
  return list
end

local function message(s, value)
  local list = messages(s, value)
  assert.equal(1, #list)
  return list[1]
end

describe("sluice.schema", function()
  describe("types", function()
    local s = record({
      { s = { type = "string" } },
      { i = { type = "integer" } },
      { n = { type = "number" } },
      { b = { type = "boolean" } },
      { a = { type = "array", elements = { type = "string" } } },
      { m = { type = "map", values = { type = "integer" } } },
      { r = record({ { x = { type = "integer" } } }) },
    })

    it("accepts values of the declared types", function()
      local v = { s = "x", i = 3, n = 1.5, b = false, a = { "p", "q" }, m = { k = 1 },
                  r = { x = 2 } }
      assert.same(v, schema.validate(s, v))
    end)

    it("names the expected type and what it got", function()
      assert.equal("s: expected a string, got number 12", message(s, { s = 12 }))
      assert.equal('i: expected an integer, got string "abc"', message(s, { i = "abc" }))
      assert.equal("i: expected an integer, got number 1.5", message(s, { i = 1.5 }))
      assert.equal("n: expected a number, got boolean true", message(s, { n = true }))
      assert.equal('b: expected a boolean, got string "yes"', message(s, { b = "yes" }))
      assert.equal("a: expected a list, got a mapping", message(s, { a = { k = "v" } }))
      assert.equal("m: expected a mapping, got a list", message(s, { m = { 1, 2 } }))
      assert.equal("r: expected a mapping, got string \"x\"", message(s, { r = "x" }))
    end)

    it("accepts an empty table as an empty list or mapping", function()
      assert.same({ a = {}, m = {}, r = {} }, schema.validate(s, { a = {}, m = {}, r = {} }))
    end)

    it("checks set elements for uniqueness", function()
      local set = record({ { tags = { type = "set", elements = { type = "string" } } } })
      assert.equal('tags[2]: duplicate value "a" (also at tags[0])',
        message(set, { tags = { "a", "b", "a" } }))
    end)

    it("validates map keys and values", function()
      local m = record({ { h = { type = "map", keys = { type = "string", match = "^%l+$" },
                                 values = { type = "integer" } } } })
      local list = messages(m, { h = { ok = 1, Bad = 2, bad = "x" } })
      table.sort(list)
      assert.same({
        'h.Bad: invalid value "Bad": must match the Lua pattern ^%l+$',
        'h.bad: expected an integer, got string "x"',
      }, list)
    end)

    it("accepts anything for type any", function()
      local a = record({ { x = { type = "any" } } })
      assert.same({ x = { 1, { y = 2 } } }, schema.validate(a, { x = { 1, { y = 2 } } }))
    end)
  end)

  describe("durations and sizes", function()
    it("parses durations into milliseconds", function()
      assert.equal(60000, schema.parse_duration(60000))
      assert.equal(500, schema.parse_duration("500ms"))
      assert.equal(60000, schema.parse_duration("60s"))
      assert.equal(60000, schema.parse_duration("1m"))
      assert.equal(7200000, schema.parse_duration("2h"))
      assert.equal(86400000, schema.parse_duration("1d"))
      assert.equal(90000, schema.parse_duration("1m30s"))
      assert.is_nil(schema.parse_duration("60"))
      assert.is_nil(schema.parse_duration("1.5s"))
      assert.is_nil(schema.parse_duration("5 minutes"))
      assert.is_nil(schema.parse_duration(-1))
    end)

    it("parses sizes into bytes, in powers of 1024", function()
      assert.equal(512, schema.parse_size(512))
      assert.equal(512, schema.parse_size("512"))
      assert.equal(8192, schema.parse_size("8k"))
      assert.equal(8192, schema.parse_size("8K"))
      assert.equal(1048576, schema.parse_size("1m"))
      assert.equal(1073741824, schema.parse_size("1g"))
      assert.is_nil(schema.parse_size("1t"))
      assert.is_nil(schema.parse_size("1.5k"))
    end)

    it("normalizes duration and size fields and checks their bounds", function()
      local s = record({
        { t = { type = "duration", default = "1m", between = { 1, 120000 } } },
        { z = { type = "size", default = "8k" } },
      })
      assert.same({ t = 60000, z = 8192 }, schema.validate(s, {}))
      assert.same({ t = 1500, z = 100 }, schema.validate(s, { t = 1500, z = 100 }))
      assert.equal("t: value should be between 1 and 120000 (milliseconds)",
        message(s, { t = "3m" }))
      assert.matches('^t: expected a duration .*, got string "soon"$', message(s, { t = "soon" }))
      assert.matches('^z: expected a size .*, got string "big"$', message(s, { z = "big" }))
    end)
  end)

  describe("records", function()
    it("fills defaults, deep-copied", function()
      local default = { "a" }
      local s = record({ { list = { type = "array", elements = { type = "string" },
                                    default = default } } })
      local one = schema.validate(s, {})
      local two = schema.validate(s, {})
      assert.same({ list = { "a" } }, one)
      assert.are_not.equal(one.list, two.list)
      assert.are_not.equal(default, one.list)
    end)

    it("fills the defaults of a record given by default", function()
      local s = record({ { server = record({ { port = { type = "integer", default = 80 } } },
                                           { default = {} }) } })
      assert.same({ server = { port = 80 } }, schema.validate(s, {}))
    end)

    it("reports required fields and unknown fields", function()
      local s = record({ { name = { type = "string", required = true } },
                         { timeout = { type = "integer" } } })
      assert.same({ "name: required field missing", "nmae: unknown field 'nmae' (did you mean "
        .. "'name'?)" }, messages(s, { nmae = "x" }))
      assert.equal("extra: unknown field 'extra'", message(s, { name = "x", extra = 1 }))
    end)

    it("treats null as absent, unless the field is nullable", function()
      local s = record({ { a = { type = "integer", default = 5 } },
                         { b = { type = "string", nullable = true } },
                         { c = { type = "string", required = true } } })
      local out = schema.validate(s, { a = schema.null, b = schema.null, c = "x" })
      assert.same({ a = 5, b = schema.null, c = "x" }, out)
      assert.equal("c: required field missing", message(s, { c = schema.null }))
    end)

    it("runs entity checks", function()
      local s = record({ { a = { type = "string" } }, { b = { type = "string" } } }, {
        entity_checks = { { at_least_one_of = { "a", "b" } } },
      })
      assert.equal("at least one of these fields must be non-empty: 'a', 'b'", message(s, {}))
      local x = record({ { a = { type = "string" } }, { b = { type = "string" } } }, {
        entity_checks = { { mutually_exclusive = { "a", "b" } } },
      })
      assert.equal("only one or none of these fields must be set: 'a', 'b'",
        message(x, { a = "1", b = "2" }))
    end)

    it("runs check once the fields are valid, at the path it names", function()
      local s = record({ { min = { type = "integer" } }, { max = { type = "integer" } } }, {
        check = function(r)
          if r.min and r.max and r.min > r.max then
            return nil, "must not be below min", "max"
          end
          return true
        end,
      })
      assert.same({ min = 1, max = 2 }, schema.validate(s, { min = 1, max = 2 }))
      assert.equal("max: must not be below min", message(s, { min = 3, max = 2 }))
      -- Not run while a field is invalid.
      assert.equal('min: expected an integer, got string "x"', message(s, { min = "x", max = 2 }))
    end)

    it("expands shorthand fields and refuses them next to what they set", function()
      local s = record({ { host = { type = "string" } }, { port = { type = "integer" } } }, {
        shorthand_fields = { { addr = { type = "string", func = function(v)
          local host, port = v:match("^(.*):(%d+)$")
          if not host then
            return nil, "expected host:port"
          end
          return { host = host, port = tonumber(port) }
        end } } },
      })
      assert.same({ host = "h", port = 8 }, schema.validate(s, { addr = "h:8" }))
      assert.equal("addr: expected host:port", message(s, { addr = "h" }))
      assert.equal("addr: cannot be combined with 'host': give one or the other",
        message(s, { addr = "h:8", host = "x" }))
    end)
  end)

  describe("attributes", function()
    local function one(def, value)
      local s = record({ { f = def } })
      return schema.validate(s, { f = value })
    end

    local function err(def, value)
      return message(record({ { f = def } }), { f = value })
    end

    it("one_of", function()
      assert.same({ f = "v1" }, one({ type = "string", one_of = { "v0", "v1" } }, "v1"))
      assert.equal('f: expected one of: v0, v1, got "v2"',
        err({ type = "string", one_of = { "v0", "v1" } }, "v2"))
    end)

    it("between and gt", function()
      assert.equal("f: value should be between 1 and 10",
        err({ type = "integer", between = { 1, 10 } }, 11))
      assert.equal("f: value must be greater than 0", err({ type = "number", gt = 0 }, 0))
    end)

    it("len_min and len_max, on strings and lists", function()
      assert.equal("f: length must be at least 2", err({ type = "string", len_min = 2 }, "a"))
      assert.equal("f: length must be at most 1", err({ type = "string", len_max = 1 }, "ab"))
      assert.equal("f: number of entries must be at least 1",
        err({ type = "array", elements = { type = "string" }, len_min = 1 }, {}))
    end)

    it("match, match_none, match_any, starts_with", function()
      assert.equal('f: invalid value "a b": must match the Lua pattern ^%S+$',
        err({ type = "string", match = "^%S+$" }, "a b"))
      assert.equal("f: must not have empty segments",
        err({ type = "string", match_none = { { pattern = "//", err = "must not have empty "
          .. "segments" } } }, "/a//b"))
      assert.equal("f: needs a digit or a dot", err({ type = "string", match_any = {
        patterns = { "%d", "%." }, err = "needs a digit or a dot" } }, "abc"))
      assert.equal("f: should start with: /", err({ type = "string", starts_with = "/" }, "x"))
    end)

    it("uuid", function()
      local def = { type = "string", uuid = true }
      assert.same({ f = "0f9a7c4e-1b2d-4e5f-8a9b-0c1d2e3f4a5b" },
        one(def, "0f9a7c4e-1b2d-4e5f-8a9b-0c1d2e3f4a5b"))
      assert.equal('f: expected a UUID, got "nope"', err(def, "nope"))
    end)

    it("custom, and a custom that raises", function()
      local def = { type = "integer", custom = function(v)
        if v % 2 == 1 then
          return nil, "must be even"
        end
        return true
      end }
      assert.same({ f = 2 }, one(def, 2))
      assert.equal("f: must be even", err(def, 3))
      assert.matches("^f: custom validation failed: .*boom",
        err({ type = "string", custom = function() error("boom") end }, "x"))
    end)

    it("normalize runs before the other attributes", function()
      local def = { type = "string", normalize = string.lower, one_of = { "get" } }
      assert.same({ f = "get" }, one(def, "GET"))
    end)
  end)

  describe("paths and collecting errors", function()
    local s = record({
      { services = { type = "array", elements = record({
        { name = { type = "string", required = true } },
        { routes = { type = "array", elements = record({
          { paths = { type = "array", elements = { type = "string", starts_with = "/" } } },
        }) } },
      }) } },
    })

    it("shows 0-based indices and keeps the Lua keys", function()
      local out, errors = schema.validate(s, {
        services = {
          { name = "a", routes = { { paths = { "/ok" } }, { paths = { "/", "/", 3 } } } },
        },
      })
      assert.is_nil(out)
      assert.equal(1, #errors)
      assert.equal("services[0].routes[1].paths[2]", errors[1].path)
      assert.equal("expected a string, got number 3", errors[1].message)
      assert.same({ "services", 1, "routes", 2, "paths", 3 }, errors[1].keys)
    end)

    it("reports every error, not the first", function()
      local list = messages(s, {
        services = { { routes = { { paths = { "x" } } } }, { name = 1 }, "bad" },
      })
      assert.same({
        "services[0].name: required field missing",
        "services[0].routes[0].paths[0]: should start with: /",
        "services[1].name: expected a string, got number 1",
        'services[2]: expected a mapping, got string "bad"',
      }, list)
    end)

    it("returns what it could build next to the errors", function()
      local out, errors, partial = schema.validate(s, { services = { { name = "a" }, 7 } })
      assert.is_nil(out)
      assert.equal(1, #errors)
      assert.equal("a", partial.services[1].name)
      assert.is_false(partial.services[2])
    end)

    it("quotes odd keys in paths", function()
      local m = { type = "map", values = { type = "integer" } }
      assert.equal('["a b"]: expected an integer, got string "x"', message(m, { ["a b"] = "x" }))
    end)

    it("prefixes paths and keys when asked", function()
      local _, errors = schema.validate({ type = "integer" }, "x", "plugins[1].config",
        { "plugins", 2, "config" })
      assert.equal("plugins[1].config", errors[1].path)
      assert.same({ "plugins", 2, "config" }, errors[1].keys)
    end)
  end)

  describe("schema definitions", function()
    it("raises on malformed schemas, naming the place", function()
      assert.has_error(function()
        schema.validate(record({ { x = { type = "string", requird = true } } }), {})
      end, "invalid schema at x: unknown attribute 'requird' for type string")
      assert.has_error(function()
        schema.validate({ type = "strng" }, "x")
      end, 'invalid schema at the root: unknown type string "strng"')
      assert.has_error(function()
        schema.validate({ type = "array" }, {})
      end, "invalid schema at the root: type array needs 'elements'")
      assert.has_error(function()
        schema.validate(record({ { a = { type = "string" }, b = { type = "string" } } }), {})
      end)
    end)
  end)
end)
