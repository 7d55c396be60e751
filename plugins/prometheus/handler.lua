-- prometheus: Kong's metrics, counted by the C core in shared memory, served on a route.
--
-- Nothing here runs per proxied request: the core counts every request in C
-- when the config enables any prometheus instance (core/metrics.c). An
-- instance with serve_metrics answers its route's requests with the text the
-- core renders from every worker's counters.
local ffi = require("ffi")
local base = require("sluice.ffi")

local sluice = sluice
local C = ffi.C
local ffi_new = ffi.new
local ffi_string = ffi.string
local math_floor = math.floor
local tonumber = tonumber

local OK = base.OK
local AGAIN = base.AGAIN
local DECLINED = base.DECLINED
local CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
local FIRST_BUFFER = 64 * 1024

local Prometheus = {
  PRIORITY = 13, -- Kong's
  VERSION = "0.1.0",
}

-- The render buffer, kept between scrapes and grown when the text outgrows it.
local buf, cap = nil, 0
local len = ffi_new("size_t[1]")

-- Returns the exposition text, or nil and why.
local function render()
  for _ = 1, 5 do
    local rc = C.sl_ffi_metrics_render(buf, cap, len)
    if rc == OK then
      return ffi_string(buf, len[0])
    elseif rc == DECLINED then
      return nil, "no metrics are collected in this process"
    elseif rc ~= AGAIN then
      return nil, "out of memory"
    end
    -- A quarter more than asked, as counters may appear before the next try.
    local need = tonumber(len[0])
    cap = math_floor(need + need / 4) + FIRST_BUFFER
    buf = ffi_new("char[?]", cap)
  end
  return nil, "the metrics kept growing while they were rendered"
end

Prometheus.render = render

function Prometheus.uses_phase(conf, phase)
  return phase == "access" and conf.serve_metrics
end

function Prometheus.access(_, conf)
  if not conf.serve_metrics then
    return
  end
  local method = sluice.request.get_method()
  if method ~= "GET" and method ~= "HEAD" then
    return sluice.response.exit(405, { message = "Method not allowed" }, { Allow = "GET, HEAD" })
  end
  local text, err = render()
  if not text then
    sluice.log.err("cannot render the metrics: ", err)
    return sluice.response.exit(500, { message = "An unexpected error occurred" })
  end
  return sluice.response.exit(200, text, { ["Content-Type"] = CONTENT_TYPE })
end

return Prometheus
