-- exposition.lua: a strict parser for the Prometheus text format 0.0.4, for the specs.
--
-- parse(text) checks every line and returns the families
-- { [name] = { type =, help =, samples = { { name =, labels = {}, value = } } } },
-- or raises naming the line that breaks the format. Beyond the grammar it
-- checks what a Prometheus server would refuse or misread: a sample before
-- its family's TYPE, a family split in two, a series twice, a histogram
-- without +Inf or whose buckets are not cumulative, or whose +Inf differs
-- from its _count.
local str_byte = string.byte
local str_sub = string.sub
local tbl_concat = table.concat
local tbl_sort = table.sort

local NAME = "^[%a_:][%w_:]*"
local LABEL = "^[%a_][%w_]*"
local TYPES = { counter = true, gauge = true, histogram = true, summary = true, untyped = true }

local _M = {}

local function fail(n, line, why)
  error(("line %d: %s: %q"):format(n, why, line), 0)
end

-- The value of a sample: a Go float (ParseFloat), as the format allows.
local function number(s)
  if s == "+Inf" or s == "Inf" then
    return math.huge
  elseif s == "-Inf" then
    return -math.huge
  elseif s == "NaN" then
    return 0 / 0
  end
  if not s:match("^[-+]?%d*%.?%d+$") and not s:match("^[-+]?%d+%.?%d*$")
    and not s:match("^[-+]?%d*%.?%d+[eE][-+]?%d+$") then
    return nil
  end
  return tonumber(s)
end

-- Parses `{a="x",b="y"}` at position i of line; returns the labels and the
-- position after the closing brace.
local function parse_labels(line, i, n)
  local labels = {}
  i = i + 1
  if str_sub(line, i, i) == "}" then
    return labels, i + 1
  end
  while true do
    local name = line:match(LABEL, i)
    if not name then
      fail(n, line, "bad label name")
    end
    i = i + #name
    if str_sub(line, i, i + 1) ~= '="' then
      fail(n, line, "expected =\" after label " .. name)
    end
    i = i + 2
    local parts = {}
    while true do
      local c = str_sub(line, i, i)
      if c == "" then
        fail(n, line, "unterminated label value")
      elseif c == "\\" then
        local e = str_sub(line, i + 1, i + 1)
        if e == "n" then
          parts[#parts + 1] = "\n"
        elseif e == "\\" or e == '"' then
          parts[#parts + 1] = e
        else
          fail(n, line, "bad escape \\" .. e)
        end
        i = i + 2
      elseif c == '"' then
        i = i + 1
        break
      else
        parts[#parts + 1] = c
        i = i + 1
      end
    end
    if labels[name] then
      fail(n, line, "label " .. name .. " twice")
    end
    labels[name] = tbl_concat(parts)
    local c = str_sub(line, i, i)
    if c == "}" then
      return labels, i + 1
    elseif c ~= "," then
      fail(n, line, "expected , or } after a label")
    end
    i = i + 1
  end
end

local function series_key(name, labels)
  local keys = {}
  for k in pairs(labels) do
    keys[#keys + 1] = k
  end
  tbl_sort(keys)
  local parts = { name }
  for _, k in ipairs(keys) do
    parts[#parts + 1] = k .. "=" .. labels[k]
  end
  return tbl_concat(parts, "\0")
end

-- The family a sample name belongs to, given the families typed so far.
local function family_of(families, name)
  if families[name] then
    return name
  end
  for _, suffix in ipairs({ "_bucket", "_sum", "_count" }) do
    local base = name:sub(-#suffix) == suffix and name:sub(1, -#suffix - 1)
    if base and families[base] and families[base].type == "histogram" then
      return base, suffix
    end
  end
  return nil
end

local function check_histograms(families)
  for fname, f in pairs(families) do
    if f.type == "histogram" then
      -- Group by the labels other than le.
      local groups = {}
      for _, s in ipairs(f.samples) do
        local rest = {}
        for k, v in pairs(s.labels) do
          if k ~= "le" then
            rest[k] = v
          end
        end
        local key = series_key("", rest)
        local g = groups[key] or { buckets = {} }
        groups[key] = g
        if s.name == fname .. "_bucket" then
          assert(s.labels.le, fname .. "_bucket without le")
          local le = assert(number(s.labels.le), "bad le " .. s.labels.le)
          g.buckets[#g.buckets + 1] = { le = le, value = s.value }
        elseif s.name == fname .. "_count" then
          g.count = s.value
        elseif s.name == fname .. "_sum" then
          g.sum = s.value
        end
      end
      for key, g in pairs(groups) do
        local where = fname .. " " .. key:gsub("%z", " ")
        assert(g.count and g.sum, where .. ": no _count or _sum")
        local last = g.buckets[#g.buckets]
        assert(last and last.le == math.huge, where .. ": no +Inf bucket last")
        assert(last.value == g.count, where .. ": +Inf bucket differs from _count")
        for i = 2, #g.buckets do
          assert(g.buckets[i].le > g.buckets[i - 1].le, where .. ": le not increasing")
          assert(g.buckets[i].value >= g.buckets[i - 1].value, where .. ": not cumulative")
        end
      end
    end
  end
end

function _M.parse(text)
  assert(type(text) == "string" and #text > 0, "empty exposition")
  assert(str_byte(text, #text) == 10, "the text does not end with a newline")
  local families, seen, closed = {}, {}, {}
  local current
  local n = 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    if line == "" then
      fail(n, line, "empty line")
    elseif str_sub(line, 1, 1) == "#" then
      local kind, name, rest = line:match("^# (%u+) ([^ ]+) ?(.*)$")
      if kind == "HELP" or kind == "TYPE" then
        if not name:match(NAME .. "$") then
          fail(n, line, "bad metric name")
        end
        if closed[name] then
          fail(n, line, "family " .. name .. " appears twice")
        end
        if current and current ~= name then
          closed[current] = true
        end
        current = name
        local f = families[name] or { samples = {} }
        families[name] = f
        if kind == "TYPE" then
          if f.type or not TYPES[rest] then
            fail(n, line, "TYPE twice or unknown")
          end
          if #f.samples > 0 then
            fail(n, line, "TYPE after samples")
          end
          f.type = rest
        else
          if f.help then
            fail(n, line, "HELP twice")
          end
          f.help = rest
        end
      end
    else
      local name = line:match(NAME)
      if not name then
        fail(n, line, "bad metric name")
      end
      local i = #name + 1
      local labels = {}
      if str_sub(line, i, i) == "{" then
        labels, i = parse_labels(line, i, n)
      end
      local value, ts = str_sub(line, i):match("^ ([^ ]+) ?(%-?%d*)$")
      if not value or not number(value) then
        fail(n, line, "bad value")
      end
      local fname = family_of(families, name)
      if not fname or not families[fname].type then
        fail(n, line, "sample before its family's TYPE")
      end
      if fname ~= current then
        fail(n, line, "sample outside its family's block")
      end
      local key = series_key(name, labels)
      if seen[key] then
        fail(n, line, "series twice")
      end
      seen[key] = true
      local f = families[fname]
      f.samples[#f.samples + 1] = { name = name, labels = labels, value = number(value),
                                    timestamp = ts ~= "" and tonumber(ts) or nil }
    end
  end
  check_histograms(families)
  return families
end

-- The value of the sample `name` whose labels are exactly `labels`, or nil.
function _M.value(families, name, labels)
  local key = series_key(name, labels or {})
  for _, f in pairs(families) do
    for _, s in ipairs(f.samples) do
      if s.name == name and series_key(s.name, s.labels) == key then
        return s.value
      end
    end
  end
  return nil
end

-- Every sample named `name`.
function _M.samples(families, name)
  local out = {}
  for _, f in pairs(families) do
    for _, s in ipairs(f.samples) do
      if s.name == name then
        out[#out + 1] = s
      end
    end
  end
  return out
end

return _M
