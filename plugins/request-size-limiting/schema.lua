-- request-size-limiting: the largest request body a route accepts, in Kong's fields.
return {
  name = "request-size-limiting",
  fields = {
    { config = {
        type = "record",
        fields = {
          { allowed_payload_size = {
              type = "integer", default = 128, between = { 0, 1024 * 1024 * 1024 },
              description = "The largest request body allowed, in size_unit; a larger one "
                .. "gets 413." } },
          { size_unit = {
              type = "string", default = "megabytes",
              one_of = { "megabytes", "kilobytes", "bytes" },
              description = "The unit of allowed_payload_size: megabytes (2^20 bytes), "
                .. "kilobytes (2^10 bytes) or bytes." } },
          { require_content_length = {
              type = "boolean", default = false,
              description = "Refuse requests that send neither a Content-Length nor a chunked "
                .. "body, with 411." } },
        },
        check = function(c)
          local mult = c.size_unit == "megabytes" and 1048576
            or c.size_unit == "kilobytes" and 1024 or 1
          if c.allowed_payload_size * mult > 1e15 then
            return nil, "allowed_payload_size is at most 10^15 bytes", "allowed_payload_size"
          end
          return true
        end,
      } },
  },
}
