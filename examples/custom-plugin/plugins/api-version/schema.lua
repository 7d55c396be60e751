-- api-version: which API version a request wants, and where that version lives upstream.
return {
  name = "api-version",
  fields = {
    { config = {
        type = "record",
        fields = {
          { header = { type = "string", default = "Accept-Version",
                       description = "Request header that names the version." } },
          { query_arg = { type = "string", default = "version",
                          description = "Query argument that names the version when the "
                            .. "header is absent." } },
          { versions = { type = "map", required = true, len_min = 1,
                         keys = { type = "string", match = "^[%w%.%-_]+$" },
                         values = { type = "string", match = "^/" },
                         description = "Version -> upstream path prefix, e.g. "
                           .. "{ v1: /legacy, v2: /api/v2 }." } },
          { default = { type = "string",
                        description = "Version used when the request names none." } },
          { reject_unknown = { type = "boolean", default = true,
                               description = "Answer 400 to a version not in `versions` "
                                 .. "(else use the default)." } },
        },
        check = function(c)
          if c.default and not c.versions[c.default] then
            return nil, "the default version '" .. c.default .. "' is not in versions",
              "default"
          end
          return true
        end,
      } },
  },
}
