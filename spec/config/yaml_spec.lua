-- yaml_spec.lua: the YAML loader (core/yaml.c) as Lua sees it: values, lines and errors.
local yaml = require("sluice.yaml")

local null = yaml.null

local function load(s)
  return yaml.load_string(s, "t.yaml")
end

describe("sluice.yaml", function()
  describe("scalars", function()
    it("resolves plain scalars by the YAML 1.2 core schema", function()
      local doc = assert(load([[
null1: ~
null2: null
null3: NULL
null4:
t1: true
t2: True
f1: FALSE
dec: 42
neg: -7
plus: +3
hex: 0x1F
oct: 0o17
leading_zero: 017
float: 1.5
exp: 1e3
dot: .5
inf: .inf
ninf: -.Inf
yes: yes
on: on
version: 1.2.3
]]))
      for _, k in ipairs({ "null1", "null2", "null3", "null4" }) do
        assert.equal(null, doc[k])
      end
      assert.is_true(doc.t1)
      assert.is_true(doc.t2)
      assert.is_false(doc.f1)
      assert.equal(42, doc.dec)
      assert.equal(-7, doc.neg)
      assert.equal(3, doc.plus)
      assert.equal(31, doc.hex)
      assert.equal(15, doc.oct)
      assert.equal(17, doc.leading_zero)
      assert.equal(1.5, doc.float)
      assert.equal(1000, doc.exp)
      assert.equal(0.5, doc.dot)
      assert.equal(math.huge, doc.inf)
      assert.equal(-math.huge, doc.ninf)
      -- YAML 1.1's booleans are strings in 1.2.
      assert.equal("yes", doc.yes)
      assert.equal("on", doc.on)
      assert.equal("1.2.3", doc.version)
    end)

    it("reads .nan as NaN", function()
      local doc = assert(load("x: .nan\n"))
      assert.is_true(doc.x ~= doc.x)
    end)

    it("keeps quoted and block scalars as strings", function()
      local doc = assert(load([[
a: "42"
b: 'true'
c: "~"
d: |
  80
e: !!str 7
]]))
      assert.equal("42", doc.a)
      assert.equal("true", doc.b)
      assert.equal("~", doc.c)
      assert.equal("80\n", doc.d)
      assert.equal("7", doc.e)
    end)

    it("tells a null apart from an absent key", function()
      local doc = assert(load("present: ~\n"))
      assert.equal(null, doc.present)
      assert.is_nil(doc.absent)
    end)

    it("uses string keys for mappings and 1-based arrays for sequences", function()
      local doc = assert(load("80: a\nlist: [x, y]\n"))
      assert.equal("a", doc["80"])
      assert.same({ "x", "y" }, doc.list)
    end)
  end)

  describe("anchors and merge keys", function()
    it("resolves aliases to the anchored value", function()
      local doc = assert(load([[
base: &base {x: 1, y: 2}
copy: *base
name: &n hello
again: *n
]]))
      assert.equal(doc.base, doc.copy)
      assert.equal("hello", doc.again)
    end)

    it("merges mappings, the mapping's own keys first, then earlier sources", function()
      local doc = assert(load([[
a: &a {x: 1, y: 1}
b: &b {y: 2, z: 2}
one:
  <<: *a
  y: 10
many:
  <<: [*a, *b]
]]))
      assert.same({ x = 1, y = 10 }, doc.one)
      assert.same({ x = 1, y = 1, z = 2 }, doc.many)
    end)

    it("refuses recursive and unknown aliases", function()
      local doc, err = load("a: &x [1, *x]\n")
      assert.is_nil(doc)
      assert.matches("t.yaml:1:11: alias %*x refers to a collection that contains it", err)
      doc, err = load("a: *nowhere\n")
      assert.is_nil(doc)
      assert.matches("t.yaml:1:4: unknown anchor 'nowhere'", err, 1, true)
    end)

    it("refuses a merge key that is not a mapping", function()
      local _, err = load("a:\n  <<: 1\n")
      assert.matches("t.yaml:2:3: a merge key", err, 1, true)
    end)
  end)

  describe("lines", function()
    it("maps every table to the lines of its keys and of itself", function()
      local doc, lines = assert(load([[
# comment
services:
- name: a
  routes:
  - paths:
    - /x
    - /y
]]))
      assert.equal(2, lines[doc].services)
      local s = doc.services[1]
      assert.equal(3, lines[doc.services][1])
      assert.equal(3, lines[s]["@"])
      assert.equal(4, lines[s].routes)
      assert.equal(7, lines[s.routes[1].paths][2])
    end)

    it("gives merged keys the line of their source", function()
      local doc, lines = assert(load("a: &a\n  x: 1\nb:\n  <<: *a\n  y: 2\n"))
      assert.equal(2, lines[doc.b].x)
      assert.equal(5, lines[doc.b].y)
    end)

    it("is weak-keyed", function()
      local _, lines = assert(load("a: 1\n"))
      assert.equal("k", getmetatable(lines).__mode)
    end)
  end)

  describe("errors", function()
    it("names the file, line and column of syntax errors", function()
      local doc, err = load("a: 1\nb: [1, 2\n")
      assert.is_nil(doc)
      assert.matches("^t%.yaml:3:1: did not find expected ',' or ']'", err)
    end)

    it("refuses duplicate keys, naming both lines", function()
      local _, err = load("a: 1\nb: 2\na: 3\n")
      assert.equal("t.yaml:3:1: duplicate key 'a' (first at line 1)", err)
    end)

    it("refuses non-scalar keys", function()
      local _, err = load("? [a, b]\n: 1\n")
      assert.matches("t.yaml:1:3: mapping keys must be scalars", err, 1, true)
    end)

    it("refuses more than one document", function()
      local _, err = load("a: 1\n---\nb: 2\n")
      assert.matches("t.yaml:2:1: a second document starts here", err, 1, true)
    end)

    it("refuses documents nested deeper than 64 levels", function()
      assert.is_table(load(string.rep("[", 64) .. string.rep("]", 64)))
      local _, err = load(string.rep("[", 65) .. string.rep("]", 65))
      assert.matches("nested deeper than 64 levels", err, 1, true)
    end)

    it("refuses tags it does not know and values that do not fit their tag", function()
      local _, err = load("a: !custom x\n")
      assert.matches("unsupported tag '!custom'", err, 1, true)
      _, err = load("a: !!int abc\n")
      assert.matches("'abc' is not a valid !!int", err, 1, true)
    end)

    it("returns null for an empty document", function()
      assert.equal(null, (load("")))
      assert.equal(null, (load("# only a comment\n")))
    end)
  end)

  describe("load_file", function()
    it("names the file when it cannot be read", function()
      local doc, err = yaml.load_file("/nonexistent/sluice.yaml")
      assert.is_nil(doc)
      assert.equal("/nonexistent/sluice.yaml: cannot read the file: No such file or directory",
        err)
    end)

    it("refuses files over 64 MiB before reading them", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:seek("set", 64 * 1024 * 1024)
      f:write("x")
      f:close()
      local doc, err = yaml.load_file(path)
      os.remove(path)
      assert.is_nil(doc)
      assert.equal(path .. ": the file is larger than 64 MiB", err)
    end)

    it("loads a file with lines", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write("a:\n  b: 1\n")
      f:close()
      local doc, lines = yaml.load_file(path)
      os.remove(path)
      assert.same({ a = { b = 1 } }, doc)
      assert.equal(2, lines[doc.a].b)
    end)
  end)
end)
