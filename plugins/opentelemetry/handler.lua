-- opentelemetry: a span per request, a child span per upstream try and per compose
-- backend, W3C propagation upstream, exported as OTLP/HTTP JSON in batches.
--
-- access continues the incoming trace (or starts one, lua/sluice/tracing.lua)
-- and sends `traceparent` upstream naming the span of the try that will
-- answer; log builds the spans and appends them, JSON-encoded, to a bounded
-- per-worker queue (lua/sluice/queue.lua) that a timer run exports. Requests
-- never wait for the collector.
local queue = require("sluice.queue")
local tracing = require("sluice.tracing")

local sluice = sluice

local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local tbl_concat = table.concat
local tbl_sort = table.sort
local tostring = tostring
local type = type
local math_floor = math.floor
local str_format = string.format

local KIND_SERVER, KIND_CLIENT = tracing.KIND_SERVER, tracing.KIND_CLIENT
local STATUS_ERROR = 2
local unix_nano = tracing.unix_nano

local OpenTelemetry = {
  PRIORITY = 14, -- Kong's
  VERSION = "1.0.0",
}

-- Per config, made once per worker: conf -> { queue =, url =, headers =,
-- inject = bool, clear = { names } }.
local state = setmetatable({}, { __mode = "k" })

-- JSON of one attribute value, OTLP's AnyValue.
local function any_value(v)
  local t = type(v)
  if t == "number" then
    if v == math_floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
      return str_format('{"intValue":"%d"}', v)
    end
    return '{"doubleValue":' .. sluice.json.encode(v) .. "}"
  elseif t == "boolean" then
    return '{"boolValue":' .. (v and "true" or "false") .. "}"
  end
  return '{"stringValue":' .. sluice.json.encode(tostring(v)) .. "}"
end

local function attributes_json(attrs)
  local keys = {}
  for k in pairs(attrs) do
    keys[#keys + 1] = k
  end
  tbl_sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do
    parts[i] = '{"key":' .. sluice.json.encode(k) .. ',"value":' .. any_value(attrs[k]) .. "}"
  end
  return "[" .. tbl_concat(parts, ",") .. "]"
end

-- One span as OTLP JSON: ids in hex, times as unix nanoseconds in strings.
local function span_json(tr, s)
  local parts = {
    '{"traceId":"', tr.trace_id, '","spanId":"', s.span_id, '"',
    s.parent_id and (',"parentSpanId":"' .. s.parent_id .. '"') or "",
    tr.tracestate and (',"traceState":' .. sluice.json.encode(tr.tracestate)) or "",
    ',"name":', sluice.json.encode(s.name),
    ',"kind":', s.kind,
    ',"startTimeUnixNano":"', unix_nano(s.start), '"',
    ',"endTimeUnixNano":"', unix_nano(s.finish or s.start), '"',
    ',"attributes":', attributes_json(s.attributes),
    s.error and (',"status":{"code":' .. STATUS_ERROR .. ',"message":'
      .. sluice.json.encode(s.error) .. "}") or "",
    "}",
  }
  return tbl_concat(parts)
end

-- The export body around a batch of span JSON strings.
local function exporter(st, conf)
  return function(spans, n)
    local body = st.prefix .. tbl_concat(spans, ",", 1, n) .. st.suffix
    return queue.post({ method = "POST", url = st.url, headers = st.headers, body = body,
      timeout = (conf.connect_timeout + conf.send_timeout + conf.read_timeout) / 1000 }, "export")
  end
end

local function setup(conf)
  local st = state[conf]
  if st then
    return st
  end
  local resource = {
    ["service.name"] = "sluice",
    ["service.version"] = sluice.version,
    ["service.instance.id"] = sluice.node.get_id(),
    ["host.name"] = sluice.node.get_hostname(),
  }
  for k, v in pairs(conf.resource_attributes) do
    resource[k] = v
  end
  local headers = { ["Content-Type"] = "application/json" }
  for k, v in pairs(conf.headers) do
    headers[k] = v
  end
  local p = conf.propagation
  local inject = #p.inject > 0 and conf.header_type ~= "ignore"
  st = {
    url = conf.traces_endpoint,
    headers = headers,
    inject = inject,
    extract = #p.extract > 0 and conf.header_type ~= "ignore",
    clear = p.clear,
    prefix = '{"resourceSpans":[{"resource":{"attributes":' .. attributes_json(resource)
      .. '},"scopeSpans":[{"scope":{"name":"sluice","version":"' .. sluice.version
      .. '"},"spans":[',
    suffix = "]}]}]}",
  }
  st.queue = queue.new({ name = "opentelemetry", handler = exporter(st, conf) }, conf.queue)
  state[conf] = st
  return st
end

function OpenTelemetry.configure(_, configs)
  configs = configs or {}
  local rate, extract = 0, false
  for _, conf in ipairs(configs) do
    local st = setup(conf)
    rate = math.max(rate, conf.sampling_rate or 1)
    extract = extract or st.extract
  end
  tracing.enabled = #configs > 0
  tracing.extract = extract
  tracing.sampling_rate = rate
end

function OpenTelemetry.access(_, conf)
  local st = state[conf] or setup(conf)
  local tr = tracing.current()
  for _, name in ipairs(st.clear) do
    sluice.service.request.clear_header(name)
  end
  if st.inject then
    -- The span of the try that answers, named before any try: the upstream
    -- sees it as its parent (earlier, failed tries get ids of their own).
    tr.upstream_span_id = tracing.new_span_id()
    sluice.service.request.set_header("traceparent", tracing.traceparent(tr, tr.upstream_span_id))
    if tr.tracestate then
      sluice.service.request.set_header("tracestate", tr.tracestate)
    else
      sluice.service.request.clear_header("tracestate")
    end
  end
end

-- header_filter runs only for an instance that returns the trace id.
function OpenTelemetry.uses_phase(conf, phase)
  if phase == "header_filter" then
    return conf.http_response_header_for_traceid ~= nil
  end
  return true
end

function OpenTelemetry.header_filter(_, conf)
  local name = conf.http_response_header_for_traceid
  if name then
    sluice.response.set_header(name, tracing.current().trace_id)
  end
end

-- The request's span and its children, JSON-encoded, onto the queue.
function OpenTelemetry.log(_, conf)
  local st = state[conf] or setup(conf)
  local tr = tracing.current()
  if not tr or not tr.sampled then
    return
  end
  local tries, ntries, now = tracing.tries()
  local route = sluice.router.get_route()
  local service = sluice.router.get_service()
  local status = sluice.response.get_status()
  local host = sluice.request.get_host()
  local port = sluice.request.get_port()
  local path = sluice.request.get_raw_path()
  local attrs = {
    ["http.method"] = sluice.request.get_method(),
    ["http.scheme"] = "http",
    ["http.host"] = host,
    ["http.target"] = path,
    ["http.url"] = "http://" .. (host ~= "" and host or "localhost")
      .. (port ~= 80 and (":" .. port) or "") .. path,
    ["http.flavor"] = sluice.request.get_http_version() == 1 and "1.0" or "1.1",
    ["http.status_code"] = status,
    ["http.client_ip"] = sluice.client.get_forwarded_ip(),
    ["net.peer.ip"] = sluice.client.get_ip(),
    ["net.peer.port"] = sluice.client.get_port(),
  }
  if route then
    attrs["sluice.route.id"] = route.id
    attrs["sluice.route.name"] = route.name
    if type(route.paths) == "table" and #route.paths == 1 then
      attrs["http.route"] = route.paths[1]
    end
  end
  if service then
    attrs["sluice.service.id"] = service.id
    attrs["sluice.service.name"] = service.name
  end
  local consumer = sluice.client.get_consumer()
  if consumer and consumer.username then
    attrs["sluice.consumer"] = consumer.username
  end
  local root = { name = "sluice", kind = KIND_SERVER, span_id = tr.span_id,
                 parent_id = tr.parent_id, start = sluice.request.get_start_time() / 1000,
                 finish = now or sluice.now(), attributes = attrs }
  if status >= 500 then
    root.error = "status " .. status
  end
  local q = st.queue
  q:add(span_json(tr, root))

  for i, t in ipairs(tries) do
    local last = i == ntries
    local a = { ["net.peer.ip"] = t.ip, ["net.peer.port"] = t.port, ["try_count"] = i }
    if t.status > 0 then
      a["http.status_code"] = t.status
    end
    local span = {
      name = "sluice.balancer", kind = KIND_CLIENT, parent_id = tr.span_id,
      span_id = (last and tr.upstream_span_id) or tracing.new_span_id(),
      start = t.start, finish = t.finish, attributes = a,
    }
    if t.failure then
      span.error = t.failure
    elseif t.status >= 500 then
      span.error = "status " .. t.status
    end
    q:add(span_json(tr, span))
  end
  for _, s in ipairs(tr.spans) do
    s.parent_id = s.parent_id or tr.span_id
    s.finish = s.finish or now
    q:add(span_json(tr, s))
  end
end

return OpenTelemetry
