-- http-log: sends each request's log entry as JSON to an HTTP endpoint, batched from a timer.
--
-- The log phase only encodes the entry and appends it to a bounded queue
-- (lua/sluice/queue.lua); a timer run sends the batches with sluice.http
-- and retries them with exponential backoff. One queue per worker and
-- plugin instance: requests never wait for the endpoint.
local log_entry = require("sluice.log_entry")
local queue = require("sluice.queue")

local sluice = sluice

local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local tbl_concat = table.concat

local HttpLog = {
  PRIORITY = 12, -- Kong's: among the last to log
  VERSION = "1.0.0",
}

-- Per config, made once per worker: conf -> { queue =, url =, headers = }.
local state = setmetatable({}, { __mode = "k" })

-- The endpoint without user info, and the Authorization header user info makes.
local function endpoint(conf)
  local scheme, userinfo, rest = conf.http_endpoint:match("^(%a[%w+.-]*://)([^/?#@]*)@(.*)$")
  if not scheme then
    return conf.http_endpoint, nil
  end
  local user, pass = userinfo:match("^([^:]*):?(.*)$")
  local unescape = function(s)
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end
  return scheme .. rest,
    "Basic " .. sluice.crypto.base64_encode(unescape(user) .. ":" .. unescape(pass))
end

-- Sends one batch: a JSON object alone, an array for several.
local function sender(st, conf)
  return function(entries, n)
    local body = n == 1 and conf.queue.max_batch_size == 1 and entries[1]
      or "[" .. tbl_concat(entries, ",", 1, n) .. "]"
    return queue.post({ method = conf.method, url = st.url, headers = st.headers, body = body,
                        timeout = conf.timeout / 1000 }, "request")
  end
end

local function setup(conf)
  local st = state[conf]
  if st then
    return st
  end
  local url, auth = endpoint(conf)
  local headers = { ["Content-Type"] = conf.content_type }
  for name, value in pairs(conf.headers) do
    headers[name] = value
  end
  if auth then
    headers.Authorization = auth
  end
  st = { url = url, headers = headers }
  st.queue = queue.new({ name = "http-log", handler = sender(st, conf) }, conf.queue)
  log_entry.compile(conf)
  state[conf] = st
  return st
end

function HttpLog.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    setup(conf)
  end
end

function HttpLog.log(_, conf)
  local st = state[conf] or setup(conf)
  local json, err = sluice.json.encode(log_entry.build(conf))
  if not json then
    sluice.log.err("could not encode the log entry: ", err)
    return
  end
  st.queue:add(json)
end

return HttpLog
