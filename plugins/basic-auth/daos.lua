-- basic-auth's credentials: basicauth_credentials, as Kong declares them; passwords are
-- hashed once, at load (see password.lua for the formats).
local password = require("sluice.plugins.basic-auth.password")

local str_find = string.find

return {
  basicauth_credentials = {
    fields = {
      { username = { type = "string", required = true, unique = true, len_min = 1,
                     description = "The username clients send. Case-sensitive; no ':' "
                       .. "(Basic authentication splits at the first one)." } },
      { password = { type = "string", required = true,
                     description = "A plain password (hashed at load with "
                       .. "PBKDF2-HMAC-SHA256), a $pbkdf2-sha256$i=N$SALT$HASH string, or "
                       .. "Kong's 40-hex sha1 hash." } },
    },
    check = function(cred)
      if str_find(cred.username, ":", 1, true) then
        return nil, "a basic-auth username cannot hold ':' (Basic authentication sends "
          .. "user:password and splits at the first ':')"
      end
      return true
    end,
    transform = function(cred)
      local stored, err = password.normalize(cred.password)
      if not stored then
        return nil, err
      end
      cred.password = stored
      return cred
    end,
  },
}
