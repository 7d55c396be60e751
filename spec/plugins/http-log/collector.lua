-- collector.lua: a real HTTP collector (nginx on 127.0.0.1) for the log and tracing specs.
--
-- Every request under /c/ is recorded whole (method, uri, headers, body) as one
-- JSON line, then answered: /c/failN/... answers 500 to its first N requests,
-- /c/slow/... waits a second first; anything else answers 200.
local helpers = require("spec.helpers")
local cjson = require("cjson.safe")

local _M = {}

local Collector = {}
Collector.__index = Collector

-- Every request received so far at uri (all when nil), oldest first:
-- { method, uri, headers, body, status }.
function Collector:requests(uri)
  local out = {}
  -- Complete lines only: nginx may be writing the last one right now.
  for line in (helpers.read_file(self.dir .. "/collected.log") or ""):gmatch("([^\n]*)\n") do
    local r = assert(cjson.decode(line))
    if uri == nil or r.uri == uri then
      out[#out + 1] = r
    end
  end
  return out
end

-- Waits (running the event loop, so timers fire) until pred(requests at
-- uri) is true; returns them.
function Collector:wait(uri, pred, seconds)
  local deadline = sluice.now() + (seconds or 10)
  while true do
    local reqs = self:requests(uri)
    if pred(reqs) then
      return reqs
    end
    if sluice.now() > deadline then
      return reqs, "timed out"
    end
    sluice.sleep(0.05)
  end
end

function _M.start()
  local h = helpers.start_upstream({
    http = [[
  client_body_buffer_size 16m;
  lua_shared_dict collector 1m;]],
    locations = [[
    location /c/ {
      content_by_lua_block {
        ngx.req.read_body()
        local uri = ngx.var.uri
        local n = ngx.shared.collector:incr(uri, 1, 0)
        local fail = tonumber(uri:match("/fail(%d+)")) or 0
        local status = n <= fail and 500 or 200
        if uri:find("/slow", 1, true) then ngx.sleep(1) end
        local f = io.open(ngx.config.prefix() .. "/collected.log", "a")
        f:write(require("cjson").encode({ method = ngx.req.get_method(), uri = uri,
          headers = ngx.req.get_headers(100), body = ngx.req.get_body_data() or "",
          status = status }), "\n")
        f:close()
        ngx.status = status
        ngx.say(status == 200 and "ok" or "failed")
      }
    }]],
  })
  return setmetatable({ port = h.port, dir = h.dir, handle = h,
                        url = "http://127.0.0.1:" .. h.port }, Collector)
end

return _M
