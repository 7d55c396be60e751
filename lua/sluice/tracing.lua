-- tracing.lua: the W3C trace of the current request, shared by the opentelemetry
-- plugin and by plugins that make calls of their own (compose's backends).
--
-- The opentelemetry plugin turns it on (configure) and exports it (log). A
-- plugin that calls another service records that call as a child span and
-- propagates the trace to it, at no cost when tracing is off:
--
--   local tracing = require("sluice.tracing")
--   local span = tracing.start_span("compose users", opts) -- nil when off
--   local res, err = sluice.http.request(opts)            -- carries traceparent
--   tracing.finish_span(span, res and res.status, err)
--
-- The trace of a request is made on first use, from the request's
-- `traceparent` (and `tracestate`) when extraction is on and the header is
-- valid (same trace id, the caller's span as parent, its sampled flag), else
-- a new trace id sampled at the configured rate. It lives as long as the
-- request (keyed by its sluice.ctx.shared table).

local ffi = require("ffi")
local base = require("sluice.ffi")

local sluice = sluice

local C = ffi.C
local math_floor = math.floor
local math_random = math.random
local setmetatable = setmetatable
local str_find = string.find
local str_format = string.format
local str_match = string.match
local tonumber = tonumber
local tostring = tostring
local type = type

local KIND_SERVER, KIND_CLIENT = 2, 3
local ZERO_TRACE = string.rep("0", 32)
local ZERO_SPAN = string.rep("0", 16)

local _M = {
  KIND_SERVER = KIND_SERVER,
  KIND_CLIENT = KIND_CLIENT,
  -- Set by the opentelemetry plugin's configure: is any instance in use,
  -- does one continue incoming traces, at what rate are new ones sampled.
  enabled = false,
  extract = true,
  sampling_rate = 1,
}

-- sluice.ctx.shared of a request -> its trace: { trace_id = 32 hex, span_id =
-- the request's (SERVER) span, parent_id = the caller's span | nil, sampled =
-- bool, tracestate = string | nil, spans = { child spans, see start_span } }.
local traces = setmetatable({}, { __mode = "k" })

local function random_hex(bytes)
  return sluice.crypto.hex(sluice.crypto.random_bytes(bytes))
end
_M.random_hex = random_hex

-- A new span id (16 hex digits, never all zeros).
function _M.new_span_id()
  local id = random_hex(8)
  if id == ZERO_SPAN then
    return random_hex(8)
  end
  return id
end

local function is_lower_hex(s)
  return not str_find(s, "[^0-9a-f]")
end

-- The parts of a W3C traceparent: trace id, parent span id, sampled; nil
-- when the header is not valid (wrong lengths, upper case, all-zero ids,
-- version ff).
function _M.parse_traceparent(v)
  if type(v) ~= "string" then
    return nil
  end
  local version, trace_id, parent_id, flags = str_match(v, "^(%x%x)%-(%x+)%-(%x+)%-(%x%x)")
  if not version or version == "ff" or #trace_id ~= 32 or #parent_id ~= 16
      or not is_lower_hex(version .. trace_id .. parent_id .. flags)
      or trace_id == ZERO_TRACE or parent_id == ZERO_SPAN then
    return nil
  end
  -- Version 00 has exactly these four fields; later versions may add more.
  if version == "00" and #v ~= 55 then
    return nil
  end
  local f = tonumber(flags, 16)
  return trace_id, parent_id, f % 2 == 1
end

-- The trace of the current request, made on first use; nil outside a
-- request.
function _M.current()
  local shared = sluice.ctx.shared
  if not shared then
    return nil
  end
  local tr = traces[shared]
  if tr then
    return tr
  end
  tr = { span_id = _M.new_span_id(), spans = {} }
  local trace_id, parent_id, sampled
  if _M.extract then
    trace_id, parent_id, sampled = _M.parse_traceparent(sluice.request.get_header("traceparent"))
  end
  if trace_id then
    tr.trace_id, tr.parent_id, tr.sampled = trace_id, parent_id, sampled
    local ts = sluice.request.get_header("tracestate")
    if type(ts) == "string" and #ts <= 512 and not str_find(ts, "[%c]") then
      tr.tracestate = ts
    end
  else
    tr.trace_id = random_hex(16)
    local rate = _M.sampling_rate
    tr.sampled = rate >= 1 or (rate > 0 and math_random() < rate)
  end
  traces[shared] = tr
  return tr
end

-- The traceparent header naming span_id as the parent, in trace tr.
function _M.traceparent(tr, span_id)
  return "00-" .. tr.trace_id .. "-" .. span_id .. (tr.sampled and "-01" or "-00")
end

-- Starts a CLIENT span for a call the current request makes with
-- sluice.http.request (a compose backend): { name, kind, span_id, start
-- (seconds), finish, error, attributes = { http.method, http.url (without the
-- query) } }. Sets traceparent (and tracestate) in opts.headers, so the
-- called service continues the trace with this span as its parent. Returns
-- nil when tracing is off or outside a request; an unsampled trace still
-- propagates (flag 00) and records nothing.
function _M.start_span(name, opts)
  if not _M.enabled then
    return nil
  end
  local tr = _M.current()
  if not tr then
    return nil
  end
  local url = type(opts.url) == "string" and str_match(opts.url, "^[^?#]*") or nil
  local span = { name = name, kind = KIND_CLIENT, span_id = _M.new_span_id(),
                 start = sluice.now(),
                 attributes = { ["http.method"] = opts.method or "GET", ["http.url"] = url } }
  opts.headers = opts.headers or {}
  opts.headers.traceparent = _M.traceparent(tr, span.span_id)
  opts.headers.tracestate = tr.tracestate
  if tr.sampled then
    tr.spans[#tr.spans + 1] = span
  end
  return span
end

-- Ends a span start_span made: status is the HTTP status of the answer (an
-- error span for none or >= 500), err why the call failed. Accepts nil.
function _M.finish_span(span, status, err)
  if not span then
    return
  end
  span.finish = sluice.now()
  if status then
    span.attributes["http.status_code"] = status
  end
  if err or not status or status >= 500 then
    span.error = err and tostring(err) or ("answered " .. tostring(status))
  end
end

-- The upstream tries of the current request, from C (header_filter and
-- log): a list of { start, finish, header, status, failure (reason or nil),
-- ip, port }, the number of tries, and the time of the response head.
local FAILURES = { "connect", "connect timeout", "write", "reset", "write timeout",
                   "read timeout", "invalid response", "status" }
local info = ffi.new("sl_ffi_log_info_t")
local path_buf = ffi.new("char[?]", 1)
local path_len = ffi.new("size_t[1]")

function _M.tries()
  local r = C.sl_ffi_current.r
  if r == nil or C.sl_ffi_log_info(r, info, path_buf, 0, path_len, base.err) ~= 0 then
    return {}, 0
  end
  local out = {}
  for i = 0, info.nattempts - 1 do
    local a = info.attempts[i]
    local finish = a.finish > 0 and a.finish or (a.header > 0 and a.header or info.now)
    out[i + 1] = { start = a.start, finish = finish, header = a.header, status = a.status,
                   failure = a.failure > 0 and FAILURES[a.failure] or nil,
                   ip = ffi.string(a.ip), port = a.port }
  end
  return out, info.tries, info.now
end

-- Nanoseconds since the epoch as a decimal string (OTLP JSON's fixed64).
function _M.unix_nano(t)
  local s = math_floor(t)
  local ns = math_floor((t - s) * 1e9 + 0.5)
  if ns >= 1000000000 then
    s, ns = s + 1, ns - 1000000000
  end
  return str_format("%d%09d", s, ns)
end

-- For specs: forget what configure set.
function _M.reset()
  _M.enabled, _M.extract, _M.sampling_rate = false, true, 1
end

return _M
