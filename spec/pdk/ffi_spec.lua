-- ffi_spec.lua: core/sl_ffi.h and the Lua ffi.cdef copies of it cannot drift apart.
--
-- Each area of the header sits between `/* BEGIN name */` and `/* END name */`;
-- one Lua module under lua/ embeds the same block in a long string and hands
-- it to ffi.cdef. Compared without comments, without SL_EXPORT and with
-- whitespace collapsed, the two must be equal. Then every function and
-- variable the blocks declare must resolve through ffi.C in this very binary
-- (`sluice test` runs inside sluice), which proves the export is linked.
local ffi = require("ffi")

local fmt = string.format

-- The repository root, from this file's path.
local ROOT = debug.getinfo(1, "S").source:match("^@(.*)spec/pdk/[^/]+$") or ""
if ROOT == "" then
  ROOT = "."
else
  ROOT = ROOT:gsub("/$", "")
end

local HEADER = ROOT .. "/core/sl_ffi.h"
local C_KEYWORDS = { ["if"] = true, ["while"] = true, ["for"] = true, ["switch"] = true,
                     ["return"] = true, ["sizeof"] = true }

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function lines_of(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for line in p:lines() do
    out[#out + 1] = line
  end
  p:close()
  table.sort(out)
  return out
end

-- Drops comments and the SL_EXPORT token, and collapses whitespace, so that
-- only the declarations themselves are compared.
local function normalize(s)
  s = s:gsub("/%*.-%*/", " ")
  s = s:gsub("//[^\n]*", " ")
  s = s:gsub("%f[%w_]SL_EXPORT%f[^%w_]", " ")
  s = s:gsub("%s+", " ")
  s = s:gsub(" ?([%(%)%[%]{}%*,;=]) ?", "%1")
  return (s:gsub("^ ", ""):gsub(" $", ""))
end

-- The BEGIN/END blocks of C text: { name = body }, plus the names in order.
local function blocks_of(text)
  local blocks, order = {}, {}
  for name, body in text:gmatch("/%* BEGIN ([%w_%-]+) %*/(.-)/%* END %1 %*/") do
    assert(not blocks[name], "block '" .. name .. "' appears twice")
    blocks[name] = body
    order[#order + 1] = name
  end
  return blocks, order
end

-- The long strings ([[...]], [==[...]==]) of a Lua source, comments excluded.
local function long_strings(src)
  local out = {}
  local pos = 1
  while true do
    local s, e, eq = src:find("%[(=*)%[", pos)
    if not s then
      break
    end
    local close = "]" .. eq .. "]"
    local cs, ce = src:find(close, e + 1, true)
    if not cs then
      break
    end
    if src:sub(s - 2, s - 1) ~= "--" then
      out[#out + 1] = src:sub(e + 1, cs - 1)
    end
    pos = ce + 1
  end
  return out
end

-- Every function and extern variable a block declares.
local function declared_names(block)
  local text = normalize(block)
  local names, seen = {}, {}
  local function add(name)
    if not seen[name] and not C_KEYWORDS[name] then
      seen[name] = true
      names[#names + 1] = name
    end
  end
  -- Only prototypes have parentheses here (no function-pointer types).
  for name in text:gmatch("([%a_][%w_]*)%(") do
    add(name)
  end
  for decl in text:gmatch("extern ([^;]+);") do
    add(decl:match("([%a_][%w_]*)$"))
  end
  return names
end

-- The module name of a file under lua/ (lua/sluice/ffi.lua -> sluice.ffi).
local function module_of(path)
  return path:match("/lua/(.+)%.lua$"):gsub("/init$", ""):gsub("/", ".")
end

describe("ffi: core/sl_ffi.h and the Lua cdefs", function()
  local header_blocks, header_order = blocks_of(read(HEADER))
  -- name -> { { file =, body = }, ... }: the Lua copies of each block.
  local copies = {}
  for _, file in ipairs(lines_of(fmt("find '%s/lua' -name '*.lua'", ROOT))) do
    for _, str in ipairs(long_strings(read(file))) do
      local blocks = blocks_of(str)
      for name, body in pairs(blocks) do
        copies[name] = copies[name] or {}
        table.insert(copies[name], { file = file, body = body })
      end
    end
  end

  it("the header has BEGIN/END blocks", function()
    assert.is_true(#header_order > 0, "no /* BEGIN name */ block in " .. HEADER)
  end)

  for _, name in ipairs(header_order) do
    describe("block '" .. name .. "'", function()
      it("has exactly one copy in a Lua long string", function()
        local found = copies[name] or {}
        local files = {}
        for i, c in ipairs(found) do
          files[i] = c.file
        end
        assert.equals(1, #found, fmt("block '%s' of core/sl_ffi.h is in %d Lua files (%s)", name,
          #found, table.concat(files, ", ")))
      end)

      it("declares the same as the header", function()
        local want = normalize(header_blocks[name])
        for _, c in ipairs(copies[name] or {}) do
          local got = normalize(c.body)
          if got ~= want then
            -- Point at the first declaration that differs.
            local i = 1
            while i <= #want and want:byte(i) == got:byte(i) do
              i = i + 1
            end
            local from = math.max(1, i - 60)
            assert.is_true(false, fmt("%s: block '%s' differs from core/sl_ffi.h at\n"
              .. "  header: ...%s\n  lua:    ...%s", c.file, name, want:sub(from, i + 60),
              got:sub(from, i + 60)))
          end
        end
      end)

      it("declares only symbols ffi.C finds in this binary", function()
        local copy = (copies[name] or {})[1]
        assert.is_table(copy, "no Lua copy of block '" .. name .. "'")
        -- Loading the module runs its ffi.cdef, as the runtime does.
        local ok, err = pcall(require, module_of(copy.file))
        assert.is_true(ok, fmt("require('%s') failed: %s", module_of(copy.file), tostring(err)))
        local names = declared_names(header_blocks[name])
        assert.is_true(#names > 0, "block '" .. name .. "' declares nothing")
        local missing = {}
        for _, sym in ipairs(names) do
          local found, why = pcall(function()
            return ffi.C[sym]
          end)
          if not found then
            missing[#missing + 1] = sym .. ": " .. tostring(why)
          end
        end
        assert.equals("", table.concat(missing, "\n"))
      end)
    end)
  end

  it("every Lua copy of a block has its block in the header", function()
    local stale = {}
    for name, list in pairs(copies) do
      if not header_blocks[name] then
        for _, c in ipairs(list) do
          stale[#stale + 1] = fmt("%s: block '%s'", c.file, name)
        end
      end
    end
    table.sort(stale)
    assert.equals("", table.concat(stale, "\n"))
  end)

  it("every exported sl_ffi_* definition in core/ is declared in the header", function()
    local declared = {}
    for _, name in ipairs(header_order) do
      for _, sym in ipairs(declared_names(header_blocks[name])) do
        declared[sym] = true
      end
    end
    local undeclared = {}
    for _, file in ipairs(lines_of(fmt("find '%s/core' -name '*.c'", ROOT))) do
      local src = read(file)
      for sym in src:gmatch("SL_EXPORT[^;{(]-%f[%w_](sl_ffi_[%w_]+)%s*[%(;]") do
        if not declared[sym] then
          undeclared[#undeclared + 1] = file:match("core/.*$") .. ": " .. sym
        end
      end
    end
    assert.equals("", table.concat(undeclared, "\n"))
  end)
end)

describe("ffi: the checker itself", function()
  it("ignores comments, SL_EXPORT and line breaks", function()
    assert.equals(normalize("int f(int a, int b);"), normalize([[
/* f adds */
SL_EXPORT int f(int a,
                int b); // done
]]))
  end)

  it("still sees a changed type or a missing parameter", function()
    assert.not_equals(normalize("int f(int a, int b);"), normalize("int f(int a, long b);"))
    assert.not_equals(normalize("int f(int a, int b);"), normalize("int f(int a);"))
    assert.not_equals(normalize("int f(const char *s);"), normalize("int f(const char **s);"))
  end)

  it("finds prototypes and extern variables", function()
    assert.same({ "sl_ffi_a", "sl_ffi_b", "sl_ffi_v" }, declared_names([[
SL_EXPORT int sl_ffi_a(int x);
SL_EXPORT void sl_ffi_b(const char *s,
                        size_t n);
typedef struct { int x; } t;
SL_EXPORT extern t sl_ffi_v;
]]))
  end)

  it("finds blocks only inside Lua long strings", function()
    local src = "-- /* BEGIN x */ /* END x */\nlocal a = [==[\n/* BEGIN y */ int f(void);\n"
      .. "/* END y */\n]==]\n--[[ /* BEGIN z */ /* END z */ ]]\n"
    local found = {}
    for _, str in ipairs(long_strings(src)) do
      for name in pairs(blocks_of(str)) do
        found[#found + 1] = name
      end
    end
    assert.same({ "y" }, found)
  end)
end)
