-- file-log: the file each request's log entry is appended to, as a JSON line (Kong's).
local log_entry = require("sluice.log_entry")

return {
  name = "file-log",
  fields = {
    { config = {
        type = "record",
        fields = {
          { path = { type = "string", required = true, match = "^[^*&%%\\`]+$",
                     description = "The file entries are appended to, one JSON line per "
                       .. "request; created (mode 0644) when missing. Relative paths are "
                       .. "relative to the directory sluice starts in." } },
          { reopen = { type = "boolean", default = false,
                       description = "Close and reopen the file for every entry (Kong's). "
                         .. "Off, it is reopened after SIGUSR1 (log rotation)." } },
          { custom_fields_by_lua = log_entry.custom_fields_schema() },
          { redact = log_entry.redact_schema() },
          { query_values = { type = "boolean", default = false,
                             description = "Keep the values of query arguments in "
                               .. "request.querystring (credential names stay redacted). "
                               .. "Off: only the argument names are logged." } },
        },
      } },
  },
}
