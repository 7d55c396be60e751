-- server.lua: a real RFC 7662 introspection endpoint (nginx on 127.0.0.1) for the
-- oauth2-introspection specs: the spec says what it answers per token, and
-- reads every request it got.
--
--   local server = require("spec.plugins.oauth2-introspection.server")
--   local as = server.start()
--   as:answer({ tok1 = { body = { active = true, scope = "read" } },
--               slow = { delay = 0.5, body = { active = true } },
--               down = { status = 500, body = "boom" } })
--   ... as.url is the endpoint; as:requests("tok1") what it received for tok1.
--
-- A token with no answer gets {"active": false}.
local helpers = require("spec.helpers")
local cjson = require("cjson")

local S = {}
S.__index = S

local _M = {}

local LOCATION = [[
    location = /introspect {
      content_by_lua_block {
        ngx.req.read_body()
        local cjson = require "cjson"
        local prefix = ngx.config.prefix()
        local body = ngx.req.get_body_data() or ""
        local args = ngx.decode_args(body)
        local token = type(args.token) == "string" and args.token or ""
        local f = io.open(prefix .. "/requests.log", "a")
        f:write(cjson.encode({ method = ngx.req.get_method(), uri = ngx.var.request_uri,
          headers = ngx.req.get_headers(100), body = body, args = args, token = token }), "\n")
        f:close()
        f = io.open(prefix .. "/answers.json")
        local answers = f and cjson.decode(f:read("*a")) or {}
        if f then f:close() end
        local a = answers[token] or { body = { active = false } }
        if a.delay then ngx.sleep(a.delay) end
        ngx.status = a.status or 200
        if type(a.body) == "table" then
          ngx.header["Content-Type"] = "application/json"
          ngx.print(cjson.encode(a.body))
        else
          ngx.header["Content-Type"] = "text/html"
          ngx.print(a.body or "")
        end
      }
    }
]]

function _M.start()
  local handle = helpers.start_upstream({ locations = LOCATION })
  local s = setmetatable({ handle = handle, port = handle.port,
                           url = "http://127.0.0.1:" .. handle.port .. "/introspect" }, S)
  s:answer({})
  return s
end

-- Replaces every answer: token -> { status = 200, body = table (JSON) or
-- string, delay = seconds }. Written whole and renamed into place, so the
-- server never reads half a file.
function S:answer(answers)
  local path = self.handle.dir .. "/answers.json"
  helpers.write_file(path .. ".tmp", cjson.encode(answers))
  assert(os.rename(path .. ".tmp", path))
end

-- The requests it received (for token only, when given), oldest first:
-- { method, uri, headers (lower-case names), body, args (the decoded form), token }.
function S:requests(token)
  local out = {}
  local text = helpers.read_file(self.handle.dir .. "/requests.log") or ""
  for line in text:gmatch("[^\n]+") do
    local r = cjson.decode(line)
    if token == nil or r.token == token then
      out[#out + 1] = r
    end
  end
  return out
end

return _M
