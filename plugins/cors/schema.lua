-- cors: Kong's fields and defaults; origins that are regexes are compiled to be checked.
local policy = require("sluice.plugins.cors.policy")
local regex = require("sluice.plugins.cors.regex")

local str_find = string.find
local str_format = string.format

local TOKEN = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"
local METHODS = { "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT" }

local function check_origin(v)
  if not policy.is_regex(v) then
    return true
  end
  local re, err = regex.compile(v)
  if not re then
    return nil, str_format("'%s' is not a valid regex: %s", v, err)
  end
  return true
end

-- A header name, or several separated by commas ("Content-Type, X-Id"),
-- as Kong users sometimes write them: each piece must be a header name.
local function check_header_names(v)
  local at = 1
  while at <= #v do
    local from, to = str_find(v, "[^,]+", at)
    if not from then
      break
    end
    local name = v:sub(from, to):match("^[ \t]*(.-)[ \t]*$")
    if not str_find(name, TOKEN) then
      return nil, str_format("'%s' is not a header name", name)
    end
    at = to + 1
  end
  if not str_find(v, "[^, \t]") then
    return nil, "expected a header name, got an empty one"
  end
  return true
end

local function header_list(description)
  return { type = "array", elements = { type = "string", custom = check_header_names },
           description = description }
end

return {
  name = "cors",
  fields = {
    { config = {
        type = "record",
        fields = {
          { origins = {
              type = "array",
              elements = { type = "string", len_min = 1, custom = check_origin },
              description = "Allowed origins: exact origins (\"https://app.example.com\"), "
                .. "\"*\" for any, or PCRE regexes (an entry with a character other than "
                .. "letters, digits and .:/-) matched against the whole origin, or against "
                .. "its host when the regex has no ':'. Unset or empty: any origin." } },
          { methods = {
              type = "array", default = METHODS,
              elements = { type = "string", one_of = METHODS },
              description = "The Access-Control-Allow-Methods of a preflight's answer." } },
          { headers = header_list("The Access-Control-Allow-Headers of a preflight's answer. "
              .. "Unset or empty: the preflight's Access-Control-Request-Headers, echoed.") },
          { exposed_headers = header_list("The Access-Control-Expose-Headers of actual "
              .. "requests' answers: response headers the page's script may read.") },
          { credentials = { type = "boolean", default = false,
                            description = "Send Access-Control-Allow-Credentials: true, so "
                              .. "the browser sends cookies and lets the script read the "
                              .. "answer; with origins \"*\" the request's Origin is "
                              .. "echoed instead of \"*\"." } },
          { max_age = { type = "number", between = { 0, 2147483647 },
                        description = "The Access-Control-Max-Age of a preflight's answer: "
                          .. "how many seconds the browser may cache it. Unset: not sent." } },
          { preflight_continue = { type = "boolean", default = false,
                                   description = "Send preflights to the upstream, which "
                                     .. "answers them itself, instead of answering them." } },
          { private_network = { type = "boolean", default = false,
                                description = "Answer a preflight that carries "
                                  .. "Access-Control-Request-Private-Network: true with "
                                  .. "Access-Control-Allow-Private-Network: true." } },
          { allow_origin_absent = { type = "boolean", default = true,
                                    description = "Add the CORS headers to answers of requests "
                                      .. "without an Origin too (\"*\", or the one configured "
                                      .. "origin); false leaves those answers untouched." } },
        },
      } },
  },
}
