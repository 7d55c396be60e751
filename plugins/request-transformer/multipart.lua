-- multipart.lua: a multipart/form-data body as raw parts by name, for request-transformer.
--
-- A part is kept as the bytes between two delimiters, so a file part keeps
-- its filename, its Content-Type and its content exactly; only the parts an
-- operation names are touched. Parts made here are simple fields
-- (`Content-Disposition: form-data; name="NAME"`).
--
-- body = { n =, [i] = { name =, raw = } }.

local str_find = string.find
local str_gsub = string.gsub
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub
local tbl_concat = table.concat

local _M = {}

-- The boundary of a multipart Content-Type value, or nil.
function _M.boundary(content_type)
  local b = str_match(content_type, ';%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="([^"]+)"')
    or str_match(content_type, ";%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
  return b
end

local function part_name(raw)
  local head_end = str_find(raw, "\r\n\r\n", 1, true)
  local head = head_end and str_sub(raw, 1, head_end) or raw
  for line in head:gmatch("[^\r\n]+") do
    if str_find(str_lower(line), "^content%-disposition:") then
      return str_match(line, ';%s*[Nn][Aa][Mm][Ee]="([^"]*)"')
        or str_match(line, ";%s*[Nn][Aa][Mm][Ee]=([^;%s]+)")
    end
  end
  return nil
end

-- The parts of body, or nil when it is not a multipart body with this
-- boundary (no closing delimiter, a part without a name).
function _M.parse(body, boundary)
  local delim = "--" .. boundary
  local at = str_find(body, delim, 1, true)
  if not at or (at > 1 and str_sub(body, at - 2, at - 1) ~= "\r\n") then
    return nil
  end
  local parts = { n = 0 }
  local sep = "\r\n" .. delim
  local pos = at + #delim
  while true do
    if str_sub(body, pos, pos + 1) == "--" then
      return parts -- the closing delimiter; an epilogue is dropped
    end
    if str_sub(body, pos, pos + 1) ~= "\r\n" then
      return nil
    end
    local nxt = str_find(body, sep, pos + 2, true)
    if not nxt then
      return nil
    end
    local raw = str_sub(body, pos + 2, nxt - 1)
    local name = part_name(raw)
    if not name then
      return nil
    end
    parts.n = parts.n + 1
    parts[parts.n] = { name = name, raw = raw }
    pos = nxt + #sep
  end
end

function _M.find(parts, name)
  for i = 1, parts.n do
    if parts[i].name == name then
      return parts[i], i
    end
  end
  return nil
end

-- Removes every part called name; returns whether there was one.
function _M.remove(parts, name)
  local j, removed = 0, false
  for i = 1, parts.n do
    local p = parts[i]
    if p.name == name then
      removed = true
    else
      j = j + 1
      parts[j] = p
    end
  end
  for i = j + 1, parts.n do
    parts[i] = nil
  end
  parts.n = j
  return removed
end

local function quote(name)
  return (str_gsub(name, '[\r\n"]', { ["\r"] = "%0D", ["\n"] = "%0A", ['"'] = "%22" }))
end

local function simple(name, value)
  return { name = name,
           raw = 'Content-Disposition: form-data; name="' .. quote(name) .. '"\r\n\r\n' .. value }
end

-- Appends a simple field part.
function _M.add(parts, name, value)
  parts.n = parts.n + 1
  parts[parts.n] = simple(name, value)
end

-- Renames every part called old (its headers and content kept).
function _M.rename(parts, old, new)
  local renamed = false
  for i = 1, parts.n do
    local p = parts[i]
    if p.name == old then
      local raw = p.raw
      local head_end = str_find(raw, "\r\n\r\n", 1, true) or #raw
      local head, with = str_sub(raw, 1, head_end - 1), '%1"' .. str_gsub(quote(new), "%%", "%%%%")
        .. '"'
      local replaced
      head, replaced = str_gsub(head, '(;%s*[Nn][Aa][Mm][Ee]=)"[^"]*"', with, 1)
      if replaced == 0 then
        head = str_gsub(head, "(;%s*[Nn][Aa][Mm][Ee]=)[^;%s]+", with, 1)
      end
      p.raw = head .. str_sub(raw, head_end)
      p.name = new
      renamed = true
    end
  end
  return renamed
end

function _M.encode(parts, boundary)
  local out = {}
  for i = 1, parts.n do
    out[i] = "--" .. boundary .. "\r\n" .. parts[i].raw .. "\r\n"
  end
  out[parts.n + 1] = "--" .. boundary .. "--\r\n"
  return tbl_concat(out)
end

return _M
