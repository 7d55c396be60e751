-- request-size-limiting: refuses request bodies over a size, before reading them when it can.
--
-- A Content-Length over the limit is refused at once, without reading the
-- body. Any other body is limited by the C core as it streams
-- (sluice.request.set_max_body_size): a chunked upload is cut with 413 as soon
-- as it passes the limit, also while it is being sent upstream, so a large
-- body never has to sit in memory to be measured.
local sluice = sluice

local str_lower = string.lower
local str_find = string.find
local setmetatable = setmetatable

local UNITS = { megabytes = 1048576, kilobytes = 1024, bytes = 1 }
local TOO_LARGE = { message = "Request size limit exceeded" }
local LENGTH_REQUIRED = { message = "A valid Content-Length header is required" }

local RequestSizeLimiting = {
  PRIORITY = 951, -- Kong's: after ip-restriction (990), before rate limiting (910)
  VERSION = "1.0.0",
}

-- Per worker: config table -> its limit in bytes, computed once per config.
local limits = setmetatable({}, { __mode = "k" })

local function limit_of(conf)
  local bytes = limits[conf]
  if not bytes then
    bytes = conf.allowed_payload_size * UNITS[conf.size_unit]
    limits[conf] = bytes
  end
  return bytes
end

-- Kong answers a client waiting for "100 Continue" with 417 instead of 413.
local function refuse()
  local expect = sluice.request.get_header("expect")
  if expect and str_find(str_lower(expect), "^%s*100%-continue%s*$") then
    return sluice.response.exit(417, TOO_LARGE)
  end
  return sluice.response.exit(413, TOO_LARGE)
end

function RequestSizeLimiting.access(_, conf)
  local cl = sluice.request.get_header("content-length")
  if not cl then
    local te = sluice.request.get_header("transfer-encoding")
    -- As Kong: a chunked body has no Content-Length and is measured instead.
    if conf.require_content_length and not te then
      return sluice.response.exit(411, LENGTH_REQUIRED)
    end
    if not te then
      return -- no body
    end
  end
  -- The C core refuses a Content-Length over the limit, or cuts a chunked
  -- body at it; refusing here answers as Kong does (417 for 100-continue)
  -- and runs the rest of the chain's filters on the answer.
  if not sluice.request.set_max_body_size(limit_of(conf)) then
    return refuse()
  end
end

return RequestSizeLimiting
