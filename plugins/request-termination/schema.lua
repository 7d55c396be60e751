-- request-termination: Kong's fields: answer every request with a fixed response.
return {
  name = "request-termination",
  fields = {
    { config = {
        type = "record",
        fields = {
          { status_code = { type = "integer", default = 503, between = { 100, 599 },
                            description = "The status to answer with." } },
          { message = { type = "string",
                        description = "Sent as {\"message\": ...} JSON (when body is unset)." } },
          { body = { type = "string", description = "A raw body, sent as is." } },
          { content_type = { type = "string",
                             description = "Content-Type of `body` (default: JSON)." } },
          { echo = { type = "boolean", default = false,
                     description = "Answer with the request itself, as JSON." } },
          { trigger = { type = "string",
                        description = "Only terminate when this header or query argument "
                          .. "is present." } },
        },
        check = function(c)
          if c.message and c.body then
            return nil, "set either 'message' or 'body', not both", "body"
          end
          return true
        end,
      } },
  },
}
