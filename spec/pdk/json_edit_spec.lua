-- json_edit_spec.lua: sluice.json_edit: edits keep every byte they do not touch, and the output is
-- valid JSON that means what the edits say.
local json_edit = require("sluice.json_edit")
local cjson = require("cjson.safe")

local function edit(text, fn)
  local doc = assert(json_edit.parse(text))
  fn(doc)
  local out = json_edit.encode(doc)
  assert(cjson.decode(out), "invalid JSON: " .. out)
  return out
end

describe("sluice.json_edit", function()
  it("parses objects only", function()
    for _, s in ipairs({ "[1]", '"s"', "1", "{", '{"a":}', "", "null", '{"a":1}x' }) do
      assert.is_nil(json_edit.parse(s), s)
    end
    assert.equal(0, json_edit.parse("  { }  ").n)
  end)

  it("keeps values byte for byte: big numbers, empty arrays, escapes, nested text", function()
    local text = '{ "id" : 12345678901234567 , "e":[ ], "s":"a\\"b\\/c\\u00e9",'
      .. ' "n":{"x":[1,{"y":"}]"}]}, "f":-1.50e+3, "t":true, "z":null }'
    assert.equal('{"id":12345678901234567,"e":[ ],"s":"a\\"b\\/c\\u00e9",'
      .. '"n":{"x":[1,{"y":"}]"}]},"f":-1.50e+3,"t":true,"z":null}', edit(text, function() end))
  end)

  it("removes, renames, sets and appends at paths", function()
    local out = edit('{"a":{"b":1,"c":[2]},"d":"x","e":[]}', function(doc)
      assert.is_true(json_edit.remove(doc, { "a", "b" }))
      assert.is_false(json_edit.remove(doc, { "nope" }))
      assert.is_true(json_edit.rename(doc, { "d" }, "dd"))
      assert.is_false(json_edit.set(doc, { "missing" }, "1", "replace"))
      assert.is_true(json_edit.set(doc, { "dd" }, json_edit.string("y"), "replace"))
      assert.is_false(json_edit.set(doc, { "dd" }, "1", "add"))
      assert.is_true(json_edit.set(doc, { "new", "deep" }, "true", "add"))
      assert.is_true(json_edit.append(doc, { "a", "c" }, "3"))
      assert.is_true(json_edit.append(doc, { "e" }, "4"))
      assert.is_true(json_edit.append(doc, { "dd" }, "5"))
      assert.is_true(json_edit.append(doc, { "fresh" }, "6"))
      assert.is_false(json_edit.set(doc, { "dd", "x" }, "1", "add")) -- dd is not an object
    end)
    assert.equal('{"a":{"c":[2,3]},"dd":["y",5],"e":[4],"new":{"deep":true},"fresh":[6]}', out)
  end)

  it("renames over an existing key, and uses the last of duplicate keys", function()
    assert.equal('{"b":1}', edit('{"a":1,"b":2}', function(doc)
      json_edit.rename(doc, { "a" }, "b")
    end))
    local doc = assert(json_edit.parse('{"k":1,"k":2}'))
    assert.equal("2", json_edit.get(doc, { "k" }))
    json_edit.remove(doc, { "k" })
    assert.equal("{}", json_edit.encode(doc))
  end)

  it("matches escaped keys by their decoded text", function()
    assert.equal('{}', edit('{"\\u0061":1}', function(doc)
      assert.is_true(json_edit.remove(doc, { "a" }))
    end))
  end)

  it("encodes strings with JSON's escapes", function()
    local s = json_edit.string('q"\\\n\t\1/é')
    assert.equal('"q\\"\\\\\\n\\t\\u0001/é"', s)
    assert.equal('q"\\\n\t\1/é', cjson.decode(s))
  end)
end)
