-- proxy-cache: Kong's fields for caching upstream responses in a shared dict.
local HEADER_NAME = require("sluice.schema").HEADER_NAME
local METHODS = { "GET", "HEAD", "POST", "PATCH", "PUT" }

-- "type/subtype", "type/*" or "*/*", with optional parameters.
local function check_content_type(v)
  if v:match("^[%w!#%$&%^_%.%+%-]+/[%w!#%$&%^_%.%+%-%*]+%s*;?.*$") or v == "*/*" then
    return true
  end
  return nil, "expected a media type like 'application/json' or 'text/*', got '" .. v .. "'"
end

return {
  name = "proxy-cache",
  fields = {
    { config = {
        type = "record",
        fields = {
          { response_code = {
              type = "array", default = { 200, 301, 404 }, len_min = 1,
              elements = { type = "integer", between = { 100, 900 } },
              description = "Upstream statuses that are cached." } },
          { request_method = {
              type = "array", default = { "GET", "HEAD" }, len_min = 1,
              elements = { type = "string", one_of = METHODS },
              description = "Request methods whose responses are cached." } },
          { content_type = {
              type = "array", default = { "text/plain", "application/json" }, len_min = 1,
              elements = { type = "string", custom = check_content_type },
              description = "Response media types that are cached ('type/*' and '*/*' "
                .. "match any subtype; an entry with parameters must match them too)." } },
          { cache_ttl = { type = "integer", default = 300, gt = 0,
                          description = "Seconds a response is served from the cache." } },
          { strategy = { type = "string", default = "memory", one_of = { "memory" },
                         description = "Where responses are kept: a shared dict every "
                           .. "worker sees." } },
          { cache_control = {
              type = "boolean", default = false,
              description = "Honour Cache-Control and Expires (RFC 9111): the response's "
                .. "s-maxage, max-age and Expires set its TTL, no-cache is not stored, and "
                .. "the request's no-cache, no-store, max-age and only-if-cached apply." } },
          { ignore_uri_case = { type = "boolean", default = false,
                                description = "Paths differing only in case share an entry." } },
          { storage_ttl = {
              type = "integer", gt = 0,
              description = "Seconds an entry is kept in the dict (at least its TTL); an "
                .. "entry past its TTL is fetched again (Refresh)." } },
          { vary_query_params = {
              type = "array", elements = { type = "string", len_min = 1 },
              description = "Only these query arguments are part of the key (default: all "
                .. "of them, in any order)." } },
          { vary_headers = {
              type = "array", default = {}, elements = { type = "string", match = HEADER_NAME },
              description = "Request headers whose values are part of the key." } },
          { response_headers = {
              type = "record", default = {},
              description = "Which of the cache's own headers the client gets.",
              fields = {
                { age = { type = "boolean", default = true,
                          description = "Age: seconds since the response was stored." } },
                { ["X-Cache-Status"] = { type = "boolean", default = true,
                                         description = "Miss, Hit, Refresh or Bypass." } },
                { ["X-Cache-Key"] = { type = "boolean", default = true,
                                      description = "The entry's key." } },
              } } },
          { memory = {
              type = "record", default = {},
              description = "The memory strategy's settings.",
              fields = {
                { dictionary_name = {
                    type = "string", default = "proxy_cache", match = "^[%w_%-]+$",
                    description = "The shared dict responses are kept in; created (16m) "
                      .. "unless server.shared_dicts sizes it. It evicts the least recently "
                      .. "used entries when full." } },
              } } },
          { cache_authorized = {
              type = "boolean", default = false,
              description = "Cache responses to requests that carry Authorization (keyed by "
                .. "the authenticated consumer too); by default they bypass the cache." } },
          { max_body_size = {
              type = "size", default = 1024 * 1024, between = { 0, 2 ^ 31 },
              description = "Larger response bodies are not stored." } },
          { lock_timeout = {
              type = "number", default = 5, between = { 0, 60 },
              description = "Seconds a request waits for another one fetching the same "
                .. "entry (request coalescing) before it goes upstream itself; 0 turns "
                .. "coalescing off." } },
          { purge_method = {
              type = "string", match = "^[A-Z]+$",
              description = "A request with this method (e.g. PURGE) deletes the entry its "
                .. "key names, or the one its X-Cache-Key header names; unset: no purging. "
                .. "Protect it (ip-restriction, key-auth)." } },
        },
        check = function(c)
          if c.storage_ttl and c.storage_ttl < c.cache_ttl then
            return nil, "storage_ttl must be at least cache_ttl", "storage_ttl"
          end
          if c.purge_method then
            for _, m in ipairs(c.request_method) do
              if m == c.purge_method then
                return nil, "purge_method may not be one of request_method", "purge_method"
              end
            end
          end
          return true
        end,
      } },
  },
}
