-- basic-auth: what happens without valid credentials, and what the upstream sees (Kong's fields).
return {
  name = "basic-auth",
  fields = {
    { config = {
        type = "record",
        fields = {
          { anonymous = { type = "string", len_min = 1,
                          description = "A consumer (id or username) to let the request in "
                            .. "as when its credentials are missing or wrong, instead of a "
                            .. "401." } },
          { hide_credentials = { type = "boolean", default = false,
                                 description = "Remove the Authorization (or "
                                   .. "Proxy-Authorization) header that was read before "
                                   .. "proxying." } },
          { realm = { type = "string", default = "service", match = '^[^"\\%c]*$',
                      description = "The realm of the 401's challenge: WWW-Authenticate: "
                        .. "Basic realm=\"REALM\"." } },
          { run_on_preflight = { type = "boolean", default = true,
                                 description = "Authenticate OPTIONS requests too; false lets "
                                   .. "CORS preflights through without credentials." } },
        },
      } },
  },
}
