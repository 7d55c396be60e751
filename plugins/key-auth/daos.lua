-- key-auth's credentials: keyauth_credentials, as Kong declares them.
local os_time = os.time

return {
  keyauth_credentials = {
    fields = {
      { key = { type = "string", required = true, unique = true, len_min = 1,
                description = "The API key. Kong can generate one; a declarative file must "
                  .. "say it." } },
      { ttl = { type = "integer", between = { 1, 100000000 },
                description = "Seconds the key stays valid, from created_at (or from when the "
                  .. "config was loaded, when it has none)." } },
    },
    -- A key with a ttl and no created_at starts when the config loads: each
    -- load (a reload too) starts it again. created_at fixes its end.
    transform = function(cred)
      if cred.ttl and not cred.created_at then
        cred.created_at = os_time()
      end
      return cred
    end,
  },
}
