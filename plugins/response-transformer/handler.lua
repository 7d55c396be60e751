-- response-transformer: Kong's plugin: changes response headers and JSON bodies, also gzipped ones.
local transform = require("sluice.plugins.response-transformer.transform")
local inflate = require("sluice.plugins.response-transformer.inflate")

local sluice = sluice

local ipairs = ipairs
local str_lower = string.lower
local str_match = string.match

local compile = transform.compile
local is_json = transform.is_json

-- How this response's body is transformed (sluice.ctx.plugin.body).
local PLAIN, INFLATE = 1, 2
local INFLATABLE = { gzip = true, ["x-gzip"] = true, deflate = true }

local ResponseTransformer = {
  PRIORITY = 800, -- Kong's: right after request-transformer (801)
  VERSION = "1.0.0",
}

function ResponseTransformer.uses_phase(conf, phase)
  local c = compile(conf)
  if phase == "body_filter" then
    return c.json ~= nil
  elseif phase == "header_filter" then
    return c.json ~= nil or c.headers ~= nil
  end
  return false
end

function ResponseTransformer.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    compile(conf)
  end
end

-- Whether the response has a body at all (HEAD, 1xx, 204 and 304 do not).
local function has_body()
  local status = sluice.response.get_status()
  return status >= 200 and status ~= 204 and status ~= 304
    and sluice.request.get_method() ~= "HEAD"
end

function ResponseTransformer.header_filter(_, conf)
  local c = compile(conf)
  if c.headers then
    transform.headers(c.headers)
  end
  if not c.json or not is_json(sluice.response.get_header("Content-Type")) or not has_body() then
    return
  end
  local mode = PLAIN
  local encoding = sluice.response.get_header("Content-Encoding")
  if encoding then
    encoding = str_lower(str_match(encoding, "^%s*(.-)%s*$"))
    if INFLATABLE[encoding] then
      local z, err = inflate.new()
      if not z then
        sluice.log.warn("a ", encoding, " body is passed on as it is: ", err)
        return
      end
      sluice.ctx.plugin.inflater = z
      -- The client gets the body inflated; sluice frames it (chunked).
      sluice.response.clear_header("Content-Encoding")
      mode = INFLATE
    elseif encoding ~= "identity" and encoding ~= "" then
      return -- br, compress, ...: passed on untouched
    end
  end
  sluice.ctx.plugin.body = mode
end

function ResponseTransformer.body_filter(_, conf)
  local pctx = sluice.ctx.plugin
  local mode = pctx.body
  if not mode then
    return
  end
  if mode == INFLATE then
    local z = pctx.inflater
    local chunk, eof = sluice.response.get_chunk()
    local out, err = z:feed(chunk)
    if not out then
      z:close()
      pctx.body = nil
      error("could not inflate the upstream's body: " .. err, 0)
    end
    if eof then
      if not z:finish() then
        sluice.log.warn("the upstream's compressed body ended early")
      end
      z:close()
    end
    sluice.response.set_chunk(out)
  end
  local body = sluice.response.get_raw_body()
  if body then
    local new = transform.json(compile(conf).json, body)
    if new then
      sluice.response.set_raw_body(new)
    end
  end
end

return ResponseTransformer
