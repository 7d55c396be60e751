-- http-log: where the request log entries are POSTed, how they are batched and retried (Kong's).
local log_entry = require("sluice.log_entry")
local queue = require("sluice.queue")

local HEADER_NAME = require("sluice.schema").HEADER_NAME
local RESERVED_HEADERS = { host = "Host", ["content-length"] = "Content-Length",
                           ["content-type"] = "Content-Type" }

-- An endpoint sluice.http can reach: http:// with a host (https is refused
-- with why; sluice.http has no TLS yet).
local function check_endpoint(url)
  local scheme = url:match("^(%a[%w+.-]*)://")
  if not scheme then
    return nil, "expected an http:// URL, got '" .. url .. "'"
  end
  scheme = scheme:lower()
  if scheme == "https" then
    return nil, "https endpoints are not supported yet (sluice.http has no TLS): use an "
      .. "http:// endpoint, or a local forwarder that adds TLS"
  end
  if scheme ~= "http" then
    return nil, "expected an http:// URL, got scheme '" .. scheme .. "'"
  end
  local authority = url:match("^%a[%w+.-]*://([^/?#]*)")
  local hostport = authority:gsub("^.*@", "")
  if hostport == "" or hostport:match("^:") then
    return nil, "the URL has no host: '" .. url .. "'"
  end
  local port = hostport:match("^%[.*%]:(%d+)$") or hostport:match("^[^:%[]+:(%d+)$")
  if port and (tonumber(port) < 1 or tonumber(port) > 65535) then
    return nil, "invalid port " .. port .. " in '" .. url .. "'"
  end
  return true
end

local function check_header_name(name)
  local reserved = RESERVED_HEADERS[name:lower()]
  if reserved then
    return nil, "cannot contain '" .. reserved .. "' header"
  end
  return true
end

return {
  name = "http-log",
  fields = {
    { config = {
        type = "record",
        fields = {
          { http_endpoint = { type = "string", required = true, custom = check_endpoint,
                              description = "Where entries are sent: an http:// URL (user:"
                                .. "password@ in it is sent as basic authentication)." } },
          { method = { type = "string", default = "POST", one_of = { "POST", "PUT", "PATCH" },
                       description = "The HTTP method of each request to the endpoint." } },
          { content_type = { type = "string", default = "application/json",
                             one_of = { "application/json", "application/json; charset=utf-8" },
                             description = "The Content-Type sent with each batch." } },
          { timeout = { type = "number", default = 10000, gt = 0,
                        description = "Milliseconds a request to the endpoint may take, "
                          .. "connecting included." } },
          { keepalive = { type = "number", default = 60000, gt = 0,
                          description = "Kong's idle keep-alive (ms). sluice.http keeps "
                            .. "connections to the endpoint alive on its own (30 s idle)." } },
          { headers = { type = "map", default = {},
                        keys = { type = "string", match = HEADER_NAME, custom = check_header_name },
                        values = { type = "string" },
                        description = "Headers sent with each request to the endpoint "
                          .. "(an API token, say). Not Host, Content-Length or Content-Type." } },
          { queue = queue.schema() },
          { custom_fields_by_lua = log_entry.custom_fields_schema() },
          { redact = log_entry.redact_schema() },
          { query_values = { type = "boolean", default = false,
                             description = "Keep the values of query arguments in "
                               .. "request.querystring (credential names stay redacted). "
                               .. "Off: only the argument names are logged." } },
        },
        shorthand_fields = {
          -- Kong 3.x's deprecated fields, mapped onto the queue as Kong maps them.
          { queue_size = { type = "integer",
                           description = "Deprecated (Kong): queue.max_batch_size.",
                           func = function(v)
                             return { queue = { max_batch_size = v } }
                           end } },
          { flush_timeout = { type = "number",
                              description = "Deprecated (Kong): queue.max_coalescing_delay.",
                              func = function(v)
                                return { queue = { max_coalescing_delay = v } }
                              end } },
          { retry_count = { type = "integer",
                            description = "Deprecated (Kong), ignored: use "
                              .. "queue.max_retry_time.",
                            func = function()
                              return {}
                            end } },
        },
        check = function(conf)
          local userinfo = conf.http_endpoint:match("^%a[%w+.-]*://([^/?#@]*)@")
          if userinfo then
            for name in pairs(conf.headers) do
              if name:lower() == "authorization" then
                return nil, "specifying both an 'Authorization' header and user info in "
                  .. "'http_endpoint' is not allowed"
              end
            end
          end
          return true
        end,
      } },
  },
}
