-- compose: one client request, several upstream calls, one merged JSON answer.
local IDENT = "^[%a_][%w_%-]*$"
local HEADER_NAME = require("sluice.schema").HEADER_NAME
local METHODS = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }

-- Checked once here so that a bad template fails the config load, with its path;
-- the handler compiles the same strings again at configure time.
local function check_template(v)
  local template = require("sluice.template")
  local ok, err = template.compile(v, { backends = true })
  if not ok then
    return nil, err
  end
  return true
end

local function check_url(v)
  if not v:match("^http://[^/?#]+[^?#]*$") then
    return nil, "expected an http:// URL without a query (https is not supported yet), got '"
      .. v .. "'"
  end
  return true
end

local backend = {
  type = "record",
  fields = {
    { name = { type = "string", required = true, match = IDENT,
               description = "The backend's name: its key in _meta, its default key in the "
                 .. "merged answer, and backends.NAME in later templates." } },
    { url = { type = "string", custom = check_url,
              description = "Where to call: http://HOST[:PORT][/base path]." } },
    { service = { type = "string", len_min = 1,
                  description = "Or the name of a service of this config, whose protocol, "
                    .. "host, port and path are used (not a load-balanced one)." } },
    { method = { type = "string", default = "GET", one_of = METHODS,
                 description = "The method of the call." } },
    { path = { type = "string", custom = check_template,
               description = "A template appended to the URL's path, e.g. "
                 .. "/users/$(uri_captures.id)/orders." } },
    { query = { type = "string", custom = check_template,
                description = "A template for the call's query string (without '?')." } },
    { headers = { type = "map", default = {},
                  keys = { type = "string", match = HEADER_NAME },
                  values = { type = "string", custom = check_template },
                  description = "Headers to send, as templates." } },
    { forward_headers = {
        type = "array", default = { "Authorization" },
        elements = { type = "string", match = HEADER_NAME },
        description = "The client's headers sent on as they are." } },
    { body = { type = "string", custom = check_template,
               description = "A template for the call's body (with Content-Type: "
                 .. "application/json unless headers set one)." } },
    { timeout = { type = "duration", default = 5000, between = { 1, 600000 },
                  description = "How long the call may take, connect to last byte." } },
    { required = { type = "boolean", default = false,
                   description = "When this backend fails the client gets 502 instead of a "
                     .. "partial answer." } },
    { target = { type = "string", match = "^[^%.]+[%.%w_%-]*$",
                 description = "A dotted path (data.user) to the part of the answer kept." } },
    { allow = { type = "array", elements = { type = "string", len_min = 1 },
                description = "Only these fields are kept (of each element, for a list)." } },
    { deny = { type = "array", elements = { type = "string", len_min = 1 },
               description = "These fields are dropped (of each element, for a list)." } },
    { mapping = { type = "map", keys = { type = "string", len_min = 1 },
                  values = { type = "string", len_min = 1 },
                  description = "Fields renamed, old name to new (of each element, for a "
                    .. "list)." } },
    { group = { type = "string", len_min = 1,
                description = "Nest the answer under this key; without it an object's fields "
                  .. "are merged at the top and anything else goes under the backend's name." } },
    { default = { type = "any",
                  description = "What the merged answer holds for this backend when it "
                    .. "fails (not required); without it, nothing." } },
  },
  entity_checks = { { only_one_of = { "url", "service" } } },
  check = function(b)
    if b.allow and b.deny then
      return nil, "give 'allow' or 'deny', not both"
    end
    return true
  end,
}

return {
  name = "compose",
  fields = {
    { config = {
        type = "record",
        fields = {
          { backends = { type = "array", elements = backend, len_min = 1, len_max = 32,
                         required = true,
                         description = "The calls, in the order their answers are merged." } },
          { sequential = {
              type = "boolean", default = false,
              description = "Call the backends one after the other, so that a later one's "
                .. "templates can use an earlier one's answer ($(backends.user.body.id)); "
                .. "by default they are all called at once." } },
          { meta = { type = "boolean", default = true,
                     description = "Add _meta (composed_at, partial, each backend's status "
                       .. "and latency) to the answer." } },
          { status = { type = "integer", default = 200, between = { 200, 299 },
                       description = "The status of a composed answer." } },
        },
        check = function(c)
          local seen = {}
          for i, b in ipairs(c.backends) do
            local at = "backends[" .. (i - 1) .. "]"
            if seen[b.name] then
              return nil, "duplicate backend name '" .. b.name .. "'", at .. ".name"
            end
            seen[b.name] = true
            if not c.sequential then
              for _, f in ipairs({ "path", "query", "body" }) do
                if b[f] and b[f]:find("backends", 1, true) then
                  return nil, "backends.NAME can only be used with sequential: true", at .. "."
                    .. f
                end
              end
            end
          end
          return true
        end,
      } },
  },
}
