-- circuit-breaker: the breaker's thresholds and what clients get while it is open.
local HEADER_NAME = require("sluice.schema").HEADER_NAME

local function check_body(v)
  local t = type(v)
  if t ~= "string" and t ~= "table" then
    return nil, "expected a string or a mapping (sent as JSON), got " .. t
  end
  return true
end

local function check_cache_part(v)
  if v == "method" or v == "host" or v == "path" or v == "query" then
    return true
  end
  if v:match("^header:[%w!#%$%%&'%*%+%-%.%^_`|~]+$") then
    return true
  end
  return nil, "expected one of method, host, path, query or header:NAME, got '" .. v .. "'"
end

return {
  name = "circuit-breaker",
  fields = {
    { config = {
        type = "record",
        fields = {
          { timeout = { type = "duration", default = 10000, between = { 0, 2147483646 },
                        description = "A call slower than this fails: the upstream's connect "
                          .. "and read timeouts become at most this long, and sluice's 504 "
                          .. "counts as a failure. 0 keeps the service's timeouts." } },
          { error_threshold_percentage = {
              type = "number", default = 50, between = { 1, 100 },
              description = "The breaker opens when at least this % of the requests in "
                .. "the window failed." } },
          { window = { type = "duration", default = 10000, between = { 10, 86400000 },
                       description = "The rolling window failures are counted over." } },
          { window_buckets = { type = "integer", default = 10, between = { 1, 100 },
                               description = "How many buckets the window rolls by: every "
                                 .. "window / window_buckets ms the oldest is dropped." } },
          { volume_threshold = { type = "integer", default = 10, between = { 1, 1000000 },
                                 description = "The fewest requests in the window before the "
                                   .. "breaker may open." } },
          { reset_timeout = { type = "duration", default = 30000, between = { 1, 86400000 },
                              description = "How long the breaker stays open before it lets "
                                .. "one probe request through (half-open)." } },
          { fallback = {
              type = "record",
              description = "What clients get while the breaker is open, instead of "
                .. "503 {\"error\":\"Service temporarily unavailable\",\"service\":NAME}.",
              fields = {
                { status = { type = "integer", default = 200, between = { 100, 599 },
                             description = "The status of the static fallback." } },
                { body = { type = "any", custom = check_body,
                           description = "The static fallback's body: a string, or a "
                             .. "mapping sent as JSON." } },
                { headers = { type = "map", default = {},
                              keys = { type = "string", match = HEADER_NAME },
                              values = { type = "string" },
                              description = "Headers of the static fallback." } },
                { cached = { type = "boolean", default = false,
                             description = "Serve the last 2xx response for the request's "
                               .. "cache key, with X-Sluice-Fallback: cached." } },
                { cache_key = { type = "array", default = { "method", "path", "query" },
                                len_min = 1,
                                elements = { type = "string", custom = check_cache_part },
                                description = "What a cached response is keyed by: method, "
                                  .. "host, path, query, header:NAME." } },
                { cache_ttl = { type = "duration", default = 300000, between = { 0, 2147483646 },
                                description = "How long a cached response may be served; "
                                  .. "0 = until evicted." } },
                { max_body_size = { type = "size", default = 65536,
                                    between = { 1, 16 * 1024 * 1024 },
                                    description = "Responses with a larger body are not "
                                      .. "cached." } },
              },
              check = function(f)
                if f.body == nil and not f.cached then
                  return nil, "a fallback needs a 'body', 'cached: true', or both"
                end
                return true
              end,
            } },
        },
        check = function(c)
          if c.window_buckets > c.window then
            return nil, "window_buckets (" .. c.window_buckets .. ") must not exceed "
              .. "window (" .. c.window .. " ms): a bucket is at least 1 ms", "window_buckets"
          end
          return true
        end,
      } },
  },
}
