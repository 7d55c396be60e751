-- key-auth: where requests carry their API key, and what happens without one (Kong's fields).
local KEY_NAME = "^[%w_-]+$"

return {
  name = "key-auth",
  fields = {
    { config = {
        type = "record",
        fields = {
          { key_names = {
              type = "array", default = { "apikey" }, len_min = 1,
              elements = { type = "string", match = KEY_NAME },
              description = "Names the key is looked for under, in order: a header (any "
                .. "case; '_' and '-' are the same), a query argument, a body field "
                .. "(exact name). Letters, digits, '_' and '-' only." } },
          { key_in_header = { type = "boolean", default = true,
                              description = "Look for the key in the request headers." } },
          { key_in_query = { type = "boolean", default = true,
                             description = "Look for the key in the query string." } },
          { key_in_body = { type = "boolean", default = false,
                            description = "Look for the key in a JSON, form or multipart "
                              .. "body (read only when the headers and query have none)." } },
          { hide_credentials = { type = "boolean", default = false,
                                 description = "Remove the key from the header, query or body "
                                   .. "before proxying." } },
          { anonymous = { type = "string", len_min = 1,
                          description = "A consumer (id or username) to let the request in "
                            .. "as when it has no valid key, instead of a 401." } },
          { run_on_preflight = { type = "boolean", default = true,
                                 description = "Authenticate OPTIONS requests too; false lets "
                                   .. "CORS preflights through without a key." } },
          { realm = { type = "string", match = '^[^"\\%c]*$',
                      description = "The realm of the 401's challenge: WWW-Authenticate: "
                        .. "Key realm=\"REALM\" (just Key when unset, as Kong)." } },
        },
      } },
  },
}
