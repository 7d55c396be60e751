-- correlation-id: the header that carries a request's id, and how missing ids are made.
local HEADER_NAME = require("sluice.schema").HEADER_NAME

return {
  name = "correlation-id",
  fields = {
    { config = {
        type = "record",
        fields = {
          { header_name = {
              type = "string", default = "Kong-Request-ID", match = HEADER_NAME,
              description = "The request header that carries the id: kept when the client "
                .. "sends one, else set to a new id before proxying." } },
          { generator = {
              type = "string", default = "uuid#counter",
              one_of = { "uuid", "uuid#counter", "tracker" },
              description = "How a new id is made: uuid (a random UUID), uuid#counter "
                .. "(this worker's UUID, '#' and its request counter) or tracker "
                .. "(server address, port, pid, connection, request on it, time)." } },
          { echo_downstream = {
              type = "boolean", default = false,
              description = "Also send the id back to the client, in the same header." } },
        },
      } },
  },
}
