-- correlation-id: gives every request an id in a header, upstream, in the access log and
-- optionally back to the client.
--
-- uuid ids come from sluice.crypto.random_bytes (OpenSSL's CSPRNG), drawn
-- 1 KiB at a time: one C call per 64 ids, no seeding to get wrong across
-- forked workers (the pool starts empty in each worker), and ids that no
-- other tenant can predict. Each id is then 16 bytes formatted through a
-- 256-entry hex table: no closure, no string.format per request.
local sluice = sluice

local bit = require("bit")
local band = bit.band
local bor = bit.bor
local str_byte = string.byte
local str_format = string.format
local tostring = tostring

local POOL_IDS = 64
local HEX = {}
for i = 0, 255 do
  HEX[i] = str_format("%02x", i)
end

local CorrelationId = {
  PRIORITY = 100001, -- Kong's: before everything but pre-function, so others log the id
  VERSION = "1.0.0",
}

-- Per worker: random bytes not used yet, and where the next id starts in them.
local pool, pool_at = "", 1
-- Per worker: uuid#counter's UUID and counter, made in init_worker.
local worker_uuid, counter = nil, 0

-- A version 4 UUID (RFC 4122), lower-case, from the pool.
local function uuid()
  if pool_at > #pool then
    pool = sluice.crypto.random_bytes(16 * POOL_IDS)
    pool_at = 1
  end
  local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16 =
    str_byte(pool, pool_at, pool_at + 15)
  pool_at = pool_at + 16
  b7 = bor(band(b7, 0x0f), 0x40) -- version 4
  b9 = bor(band(b9, 0x3f), 0x80) -- variant 10
  return HEX[b1] .. HEX[b2] .. HEX[b3] .. HEX[b4] .. "-" .. HEX[b5] .. HEX[b6] .. "-"
    .. HEX[b7] .. HEX[b8] .. "-" .. HEX[b9] .. HEX[b10] .. "-" .. HEX[b11] .. HEX[b12]
    .. HEX[b13] .. HEX[b14] .. HEX[b15] .. HEX[b16]
end

local function uuid_counter()
  counter = counter + 1
  return worker_uuid .. "#" .. counter
end

-- Kong's tracker: nginx's $server_addr-$server_port-$pid-$connection-
-- $connection_requests-$now (seconds, 3 decimals).
local pid = "0"
local function tracker()
  local addr, port, conn, requests = sluice.client.get_connection()
  return str_format("%s-%d-%s-%d-%d-%.3f", addr, port, pid, conn, requests, sluice.now())
end

local GENERATORS = { uuid = uuid, ["uuid#counter"] = uuid_counter, tracker = tracker }

function CorrelationId.init_worker()
  pool, pool_at = "", 1
  worker_uuid, counter = uuid(), 0
  pid = tostring(sluice.worker.pid())
end

function CorrelationId.uses_phase(conf, phase)
  if phase == "header_filter" then
    return conf.echo_downstream
  end
  return true
end

function CorrelationId.access(_, conf)
  local id = sluice.request.get_header(conf.header_name)
  if not id or id == "" then
    id = GENERATORS[conf.generator]()
    sluice.service.request.set_header(conf.header_name, id)
  end
  sluice.log.set_serialize_value("correlation_id", id)
  if conf.echo_downstream then
    sluice.ctx.plugin.id = id
  end
end

function CorrelationId.header_filter(_, conf)
  -- A request answered before access ran here (an earlier plugin's exit)
  -- still gets an id, as in Kong.
  local id = sluice.ctx.plugin.id or sluice.request.get_header(conf.header_name)
  if not id or id == "" then
    id = GENERATORS[conf.generator]()
  end
  sluice.response.set_header(conf.header_name, id)
end

return CorrelationId
