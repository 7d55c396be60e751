-- opentelemetry: where spans are exported (OTLP/HTTP JSON), how they are batched, W3C propagation.
local queue = require("sluice.queue")

local HEADER_NAME = require("sluice.schema").HEADER_NAME
local FORMATS = { "w3c", "b3", "b3-single", "jaeger", "ot", "aws", "gcp", "datadog", "instana" }

local function check_endpoint(url)
  local scheme = url:match("^(%a[%w+.-]*)://")
  scheme = scheme and scheme:lower()
  if scheme == "https" then
    return nil, "https endpoints are not supported yet (sluice.http has no TLS): use an "
      .. "http:// collector (an OpenTelemetry Collector next to sluice, say)"
  end
  if scheme ~= "http" or not url:match("^%a[%w+.-]*://[^/?#:]") then
    return nil, "expected an http:// URL, got '" .. url .. "'"
  end
  return true
end

-- Only W3C Trace Context is implemented: other formats are refused by name.
local function only_w3c(v)
  if v ~= "w3c" and v ~= "preserve" then
    return nil, "propagation format '" .. v .. "' is not supported yet (only w3c)"
  end
  return true
end

local function check_resource_attributes(map)
  for k, v in pairs(map) do
    if v == "" then
      return nil, "resource attribute '" .. k .. "': required field missing"
    end
  end
  return true
end

return {
  name = "opentelemetry",
  fields = {
    { config = {
        type = "record",
        fields = {
          { traces_endpoint = { type = "string", custom = check_endpoint,
                                description = "The OTLP/HTTP traces URL of the collector, "
                                  .. "e.g. http://127.0.0.1:4318/v1/traces (Kong's `endpoint`, "
                                  .. "also accepted)." } },
          { logs_endpoint = { type = "string",
                              custom = function()
                                return nil, "exporting logs is not supported yet (traces only)"
                              end,
                              description = "Kong's OTLP logs URL: not supported yet." } },
          { headers = { type = "map", default = {},
                        keys = { type = "string", match = HEADER_NAME },
                        values = { type = "string" },
                        description = "Headers sent with each export (an APM token, say)." } },
          { resource_attributes = { type = "map", default = {},
                                    keys = { type = "string", len_min = 1 },
                                    values = { type = "string" },
                                    custom = check_resource_attributes,
                                    description = "Resource attributes of every span, over "
                                      .. "the defaults service.name (sluice), service.version, "
                                      .. "service.instance.id and host.name." } },
          { queue = queue.schema({ max_batch_size = 200 }) },
          { connect_timeout = { type = "integer", default = 1000, between = { 1, 2147483646 },
                                description = "Milliseconds to connect to the collector." } },
          { send_timeout = { type = "integer", default = 5000, between = { 1, 2147483646 },
                             description = "Milliseconds to send an export." } },
          { read_timeout = { type = "integer", default = 5000, between = { 1, 2147483646 },
                             description = "Milliseconds to read the collector's answer. "
                               .. "An export may take the three timeouts together." } },
          { http_response_header_for_traceid = {
              type = "string", match = HEADER_NAME,
              description = "A response header the client gets the trace id in." } },
          { header_type = { type = "string", default = "preserve",
                            one_of = { "preserve", "ignore", "w3c", "b3", "b3-single", "jaeger",
                                       "ot", "aws", "gcp", "datadog" },
                            custom = function(v)
                              if v == "preserve" or v == "ignore" or v == "w3c" then
                                return true
                              end
                              return only_w3c(v)
                            end,
                            description = "Deprecated (Kong): use propagation. preserve and "
                              .. "w3c propagate W3C headers; ignore does not read incoming "
                              .. "ones." } },
          { sampling_rate = { type = "number", between = { 0, 1 },
                              description = "The share of new traces that are sampled "
                                .. "(exported, and propagated with the sampled flag). An "
                                .. "incoming traceparent's flag decides for its trace. "
                                .. "Unset: 1." } },
          { propagation = {
              type = "record",
              default = {},
              description = "How trace context is read from requests and sent upstream.",
              fields = {
                { extract = { type = "array", default = { "w3c" },
                              elements = { type = "string", one_of = FORMATS, custom = only_w3c },
                              description = "Formats read from incoming requests; [] starts "
                                .. "a new trace for every request." } },
                { inject = { type = "array", default = { "preserve" },
                             elements = { type = "string",
                                          one_of = { "preserve", "w3c",
                                                     "b3", "b3-single", "jaeger", "ot", "aws",
                                                     "gcp", "datadog", "instana" },
                                          custom = only_w3c },
                             description = "Formats sent upstream: preserve (the incoming "
                               .. "format, else default_format) or w3c; [] sends none." } },
                { clear = { type = "array", default = {},
                            elements = { type = "string", match = HEADER_NAME },
                            description = "Request headers removed before proxying." } },
                { default_format = { type = "string", default = "w3c", one_of = FORMATS,
                                     custom = only_w3c,
                                     description = "The format injected when the request "
                                       .. "brought none." } },
              },
            } },
        },
        shorthand_fields = {
          { endpoint = { type = "string",
                         description = "Deprecated (Kong): traces_endpoint.",
                         func = function(v)
                           return { traces_endpoint = v }
                         end } },
          { batch_span_count = { type = "integer",
                                 description = "Deprecated (Kong): queue.max_batch_size.",
                                 func = function(v)
                                   return { queue = { max_batch_size = v } }
                                 end } },
          { batch_flush_delay = { type = "integer",
                                  description = "Deprecated (Kong): queue.max_coalescing_delay.",
                                  func = function(v)
                                    return { queue = { max_coalescing_delay = v } }
                                  end } },
        },
        check = function(conf)
          if not conf.traces_endpoint then
            return nil, "traces_endpoint (or Kong's endpoint) is required"
          end
          if #conf.propagation.inject > 1 then
            for _, v in ipairs(conf.propagation.inject) do
              if v == "preserve" then
                return nil, "propagation.inject: if \"preserve\" is specified, it must be the "
                  .. "only value in the list"
              end
            end
          end
          return true
        end,
      } },
  },
}
