-- config.lua: the declarative config: Kong's format plus `server:`, validated, defaulted, compiled.
--
-- config.load(path) reads the YAML file and returns the normalized config the
-- C core compiles (core/config.c), or nil and the errors as text, one per
-- line, each "FILE:LINE: PATH: MESSAGE". The normalized shape:
--
--   {
--     file = "conf/sluice.yaml", format_version = "3.0",
--     server = { listen = { { text = "0.0.0.0:8000", addr = "0.0.0.0", port = 8000,
--                             family = 4, reuseport = false, backlog = 511, where = "..." } },
--                workers = "auto" | n, pid_file = "sluice.pid", ..., (durations in ms,
--                sizes in bytes, as named in docs/configuration.md)
--                trusted_ips = { { addr = "10.0.0.0", prefix = 8, family = 4, where = "..." } } },
--     services = { { name =, protocol =, host =, port =, path =, retries =, connect_timeout =,
--                    write_timeout =, read_timeout =, upstream = index into upstreams | nil,
--                    where = "FILE:LINE: services[0].url" } },   -- enabled services only
--     routes = { { name =, hosts =, paths = { { value = "/api", regex = false, where = } },
--                  methods =, headers = { { name =, values = } }, protocols =, regex_priority =,
--                  strip_path =, preserve_host =, path_handling =, https_redirect_status_code =,
--                  service = index into services, where = } },    -- in file order
--     upstreams = { { name =, algorithm =, host_header =, slots =,
--                     hash_on =, hash_fallback = "none" | "ip" | ...,
--                     hash_on_name =, hash_fallback_name = (the header, cookie, query
--                     argument or capture each one reads, or nil), hash_on_cookie_path =,
--                     targets = { { host =, port =, weight =, where = } } } },
--     consumers = { { id =, username =, custom_id =, tags =, where =,
--                     keyauth_credentials = { credential, ... }, acls = ..., ... } },
--     credentials = { keyauth_credentials = { plugin = "key-auth", unique = { "key" } } },
--                   -- the collections whose plugin declared them (daos.lua)
--   }
--
-- `where` strings ("FILE:LINE: PATH") let the C side report what only it can
-- check (DNS, PCRE2) at the right place.

local bit = require("bit")
local crypto = require("sluice.crypto")
local schema = require("sluice.schema")
local yaml = require("sluice.yaml")
local plugins = require("sluice.plugins")

local ipairs = ipairs
local next = next
local pairs = pairs
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local pcall = pcall
local type = type
local str_find = string.find
local str_gmatch = string.gmatch
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub
local tbl_concat = table.concat
local tbl_sort = table.sort
local math_floor = math.floor
local math_huge = math.huge

local NULL = schema.null
local quote = schema.quote
local describe = schema.describe

local FORMAT_VERSIONS = { "1.1", "2.1", "3.0" }
local INT32_MAX = 2147483647
local DEFAULT_BACKLOG = 511
local DEFAULT_TARGET_PORT = 8000
local NAME_CHARS = "^[%w%.%-_~\128-\255]+$"
local TOKEN = schema.HEADER_NAME
-- Kong 3's test for paths of older formats: anything else was a regex then.
local PLAIN_PATH = "^[%w%.%-_~/%%]*$"

-- The namespace of the ids sluice derives for consumers that have none.
local CONSUMER_NAMESPACE = "\x9b\x3e\x51\x0c\x7a\x24\x4f\x1d\x8c\x55\x2e\x6a\x90\x17\xd3\x4b"

local _M = {}

-- Kong gives declarative entities without an id one derived from what
-- identifies them; a consumer's comes from its username (else its custom_id),
-- so it is the same on every load and every node: a name-based UUID (version
-- 5, RFC 4122) in sluice's own namespace.
local function derived_id_in(namespace, name)
  local h = crypto.hex(crypto.sha1(namespace .. name))
  local variant = bit.bor(bit.band(tonumber(str_sub(h, 17, 17), 16), 3), 8)
  return str_sub(h, 1, 8) .. "-" .. str_sub(h, 9, 12) .. "-5" .. str_sub(h, 14, 16) .. "-"
    .. string.format("%x", variant) .. str_sub(h, 18, 20) .. "-" .. str_sub(h, 21, 32)
end

local function derived_id(name)
  return derived_id_in(CONSUMER_NAMESPACE, name)
end

local function consumer_id(username, custom_id)
  return derived_id(username and ("username:" .. username) or ("custom_id:" .. custom_id))
end
_M.consumer_id = consumer_id

-- Address helpers --------------------------------------------------------------

local function is_ipv4(s)
  local a, b, c, d = str_match(s, "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
  return a ~= nil and tonumber(a) <= 255 and tonumber(b) <= 255 and tonumber(c) <= 255
    and tonumber(d) <= 255
end

-- Counts the 16-bit groups of one side of an IPv6 address; nil if malformed.
-- A dotted IPv4 tail counts two and is allowed last only when last_ok.
local function ipv6_groups(part, last_ok)
  if part == "" then
    return 0
  end
  local n, groups = 0, {}
  for g in str_gmatch(part .. ":", "([^:]*):") do
    groups[#groups + 1] = g
  end
  for i, g in ipairs(groups) do
    if str_find(g, "^%x%x?%x?%x?$") then
      n = n + 1
    elseif i == #groups and last_ok and is_ipv4(g) then
      n = n + 2
    else
      return nil
    end
  end
  return n
end

local function is_ipv6(s)
  if type(s) ~= "string" or not str_find(s, "^[%x:%.]+$") or not str_find(s, ":", 1, true) then
    return false
  end
  local at = str_find(s, "::", 1, true)
  if not at then
    return ipv6_groups(s, true) == 8
  end
  if str_find(s, "::", at + 1, true) then
    return false
  end
  local head = ipv6_groups(str_sub(s, 1, at - 1), false)
  local tail = ipv6_groups(str_sub(s, at + 2), true)
  return head ~= nil and tail ~= nil and head + tail <= 7
end

local function is_hostname(s)
  if #s == 0 or #s > 253 then
    return false
  end
  for label in str_gmatch(s .. ".", "([^.]*)%.") do
    if #label == 0 or #label > 63 or not str_find(label, "^[%w_][%w_%-]*$")
        or str_sub(label, -1) == "-" then
      return false
    end
  end
  return true
end

local function check_host(s)
  if is_ipv4(s) or is_ipv6(s) or is_hostname(s) then
    return true
  end
  return nil, "invalid host " .. quote(s) .. ": expected a hostname or an IP address"
end

-- Splits "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address.
-- Returns host, port (nil when absent) or nil, err.
local function split_host_port(s)
  local host, port
  if str_sub(s, 1, 1) == "[" then
    host, port = str_match(s, "^%[([^%]]*)%]:(%d+)$")
    if not host then
      host = str_match(s, "^%[([^%]]*)%]$")
    end
    if not host or not is_ipv6(host) then
      return nil, "invalid address " .. quote(s)
    end
  elseif is_ipv6(s) then
    host = s
  else
    host, port = str_match(s, "^([^:]*):(%d+)$")
    if not host then
      if str_find(s, ":", 1, true) then
        return nil, "invalid port in " .. quote(s)
      end
      host = s
    end
  end
  if port then
    port = tonumber(port)
    if port < 1 or port > 65535 then
      return nil, "invalid port in " .. quote(s) .. ": ports are 1 to 65535"
    end
  end
  return host, port
end

-- Parses "ADDR:PORT [reuseport|no_reuseport] [backlog=N]". SO_REUSEPORT is on by
-- default: each worker gets its own socket and the kernel spreads connections.
-- Returns a listen table or nil, err.
local function parse_listen(s)
  local words = {}
  for w in str_gmatch(s, "%S+") do
    words[#words + 1] = w
  end
  if #words == 0 then
    return nil, "expected \"ADDRESS:PORT [reuseport] [backlog=N]\", got an empty string"
  end
  local host, port = split_host_port(words[1])
  if not host then
    return nil, port
  end
  local family = is_ipv4(host) and 4 or is_ipv6(host) and 6 or nil
  if not family then
    return nil, "invalid listen address " .. quote(words[1])
      .. ": expected an IP address and a port, like \"0.0.0.0:8000\" or \"[::]:8000\""
  end
  if not port then
    return nil, "listen address " .. quote(words[1]) .. " needs a port, like \"0.0.0.0:8000\""
  end
  local l = { text = words[1], addr = host, port = port, family = family, reuseport = true,
              backlog = DEFAULT_BACKLOG }
  for i = 2, #words do
    local w = words[i]
    local backlog = str_match(w, "^backlog=(%d+)$")
    if w == "reuseport" then
      l.reuseport = true
    elseif w == "no_reuseport" then
      l.reuseport = false
    elseif backlog then
      l.backlog = tonumber(backlog)
      if l.backlog < 1 or l.backlog > 65535 then
        return nil, "backlog must be between 1 and 65535"
      end
    elseif w == "ssl" or w == "http2" or w == "proxy_protocol" or w == "deferred"
        or w == "bind" or str_find(w, "^ipv6only=") or str_find(w, "^so_keepalive=") then
      return nil, "listen option '" .. w .. "' is not supported yet"
    else
      return nil, "unknown listen option '" .. w .. "' (known: reuseport, no_reuseport, backlog=N)"
    end
  end
  return l
end

-- Parses an address or a CIDR block into { addr, prefix, family }.
local function parse_cidr(s)
  local addr, prefix = str_match(s, "^([^/]+)/(%d+)$")
  if not addr then
    addr = s
  end
  local family = is_ipv4(addr) and 4 or is_ipv6(addr) and 6 or nil
  if not family then
    return nil, "invalid address " .. quote(s) .. ": expected an IP address or a CIDR block"
  end
  local max = family == 4 and 32 or 128
  prefix = prefix and tonumber(prefix) or max
  if prefix > max then
    return nil, "invalid prefix length in " .. quote(s) .. ": at most " .. max
  end
  return { addr = addr, prefix = prefix, family = family }
end

-- Parses a service url into the fields it stands for.
local function parse_url(u)
  local scheme, rest = str_match(u, "^(%a[%w%+%.%-]*)://(.*)$")
  if not scheme then
    return nil, "invalid url " .. quote(u) .. ": expected scheme://host[:port][/path]"
  end
  scheme = str_lower(scheme)
  local authority, path = str_match(rest, "^([^/%?#]*)(.*)$")
  if str_find(path, "[%?#]") then
    return nil, "invalid url " .. quote(u) .. ": a service url takes no query string or fragment"
  end
  if str_find(authority, "@", 1, true) then
    return nil, "invalid url " .. quote(u) .. ": user info is not supported"
  end
  local host, port = split_host_port(authority)
  if not host then
    return nil, "invalid url " .. quote(u) .. ": " .. port
  end
  if host == "" then
    return nil, "invalid url " .. quote(u) .. ": no host"
  end
  return {
    protocol = scheme,
    host = host,
    port = port or (scheme == "https" and 443 or 80),
    path = path ~= "" and path or NULL,
  }
end

-- Field validators -------------------------------------------------------------

local function check_name(s)
  if not str_find(s, NAME_CHARS) then
    return nil, "invalid name " .. quote(s) .. ": the only accepted ascii characters are "
      .. "alphanumerics or ., -, _, and ~"
  end
  return true
end

local function check_plain_path(p)
  if str_find(p, "//", 1, true) then
    return nil, "invalid path " .. quote(p) .. ": must not have empty segments"
  end
  local i = str_find(p, "%", 1, true)
  while i do
    if not str_find(p, "^%x%x", i + 1) then
      return nil, "invalid path " .. quote(p) .. ": '%' must start a %XX escape"
    end
    i = str_find(p, "%", i + 1, true)
  end
  return true
end

local function check_service_path(p)
  if str_sub(p, 1, 1) ~= "/" then
    return nil, "expected a string starting with '/', got " .. quote(p)
  end
  return check_plain_path(p)
end

local function check_route_path(p)
  local c = str_sub(p, 1, 1)
  if c == "~" then
    if #p == 1 then
      return nil, "empty regex: write the pattern after '~'"
    end
    return true
  elseif c ~= "/" then
    return nil, "expected a string starting with '/' or '~', got " .. quote(p)
  end
  return check_plain_path(p)
end

local function check_route_host(h)
  local host = h
  if str_sub(h, 1, 1) == "[" or str_find(h, ":", 1, true) then
    local err
    host, err = split_host_port(h)
    if not host then
      return nil, err
    end
  end
  local _, stars = host:gsub("%*", "")
  if stars > 1 then
    return nil, "invalid wildcard in " .. quote(h) .. ": must have at most one wildcard"
  elseif stars == 1 then
    if str_find(host, "^%*%.") then
      host = "x" .. str_sub(host, 2)
    elseif str_find(host, "%.%*$") then
      host = str_sub(host, 1, -2) .. "x"
    else
      return nil, "invalid wildcard in " .. quote(h)
        .. ": must be placed at leftmost or rightmost label"
    end
  end
  if not (is_ipv4(host) or is_ipv6(host) or is_hostname(host)) then
    return nil, "invalid host " .. quote(h) .. ": expected a hostname, a wildcard like "
      .. "\"*.example.com\" or \"example.*\", or an IP address, with an optional \":port\""
  end
  return true
end

local function check_method(m)
  if str_find(m, "%l") then
    return nil, "invalid method " .. quote(m) .. ": methods are upper-case, like \"GET\""
  end
  if not str_find(m, TOKEN) then
    return nil, "invalid method " .. quote(m)
  end
  return true
end

local ROUTE_PROTOCOLS = { http = true, https = true }

local function check_route_protocol(p)
  if ROUTE_PROTOCOLS[p] then
    return true
  end
  return nil, "protocol " .. quote(p) .. " is not supported: routes match http and https only"
end

local function check_service_protocol(p)
  if p == "http" then
    return true
  elseif p == "https" then
    return nil, "protocol 'https' is not supported yet: upstream TLS comes in a later release"
  elseif p == "grpc" or p == "grpcs" or p == "tcp" or p == "tls" or p == "tls_passthrough"
      or p == "udp" or p == "ws" or p == "wss" then
    return nil, "protocol '" .. p .. "' is not supported: sluice proxies http"
  end
  return nil, "expected one of: http, https, got " .. quote(p)
end

local function check_target(t)
  local host, port = split_host_port(t)
  if not host then
    return nil, port
  end
  return check_host(host)
end

local function check_workers(v)
  if v == "auto" or (type(v) == "number" and v >= 1 and v <= 1024 and v == math_floor(v)) then
    return true
  end
  return nil, "expected an integer from 1 to 1024 or \"auto\", got " .. describe(v)
end

-- A reference to another entity, as Kong's declarative format writes one:
-- the entity's `key` (its name, a consumer's username) or id, or a mapping
-- with one of them. `bare` says what a plain string stands for.
local function ref_checker(key, bare)
  local mapping = "expected " .. bare .. ", or a mapping with '" .. key .. "' or 'id'"
  return function(v)
    if type(v) == "string" then
      return #v > 0 or nil, "expected " .. bare
    end
    if type(v) == "table" then
      local n = 0
      for k, x in pairs(v) do
        if (k ~= key and k ~= "id") or type(x) ~= "string" then
          return nil, mapping
        end
        n = n + 1
      end
      if n == 1 then
        return true
      end
    end
    return nil, mapping .. ", got " .. describe(v)
  end
end

local check_ref = ref_checker("name", "a name")
local check_consumer_ref = ref_checker("username", "a username or an id")

-- A field that makes the config invalid whenever it is set, and says why.
local function unsupported(description, message)
  return { type = "any", description = description, custom = function() return nil, message end }
end

-- A collection that sluice does not have yet: an empty list is fine.
local function not_yet(description, message)
  return {
    type = "array",
    elements = { type = "any" },
    description = description,
    custom = function(v)
      if #v > 0 then
        return nil, message
      end
      return true
    end,
  }
end

-- Plugin instances: where they are nested decides their scope; top-level
-- ones name their route and/or service, or are global.
local function plugin_list(where)
  local fields = {
    { id = { type = "string", description = "Accepted for Kong compatibility." } },
    { name = { type = "string", required = true, match = "^[%w][%w%-_]*$",
               description = "The plugin: a folder in server.plugin_paths or plugins/." } },
    { instance_name = { type = "string", description = "A label for this instance." } },
    { config = { type = "any", default = {},
                 description = "The plugin's settings, checked against its schema.lua." } },
    { enabled = { type = "boolean", default = true,
                  description = "A disabled instance is left out of every chain." } },
    { priority = { type = "integer", between = { -2147483647, 2147483647 },
                   description = "Runs this instance at this priority instead of the "
                     .. "handler's PRIORITY (higher first)." } },
    { protocols = { type = "set", elements = { type = "string" },
                    description = "Accepted for Kong compatibility." } },
    { tags = { type = "array", elements = { type = "string" } } },
    { ordering = { type = "any", description = "Kong Enterprise ordering (not supported).",
                   custom = function()
                     return nil, "ordering is not supported: set 'priority' on the instance"
                   end } },
    { created_at = { type = "any" } },
    { updated_at = { type = "any" } },
  }
  -- A nested instance belongs to the entity it is nested under; the other
  -- scopes it may still name, as in Kong (a route's instance for one consumer).
  local msg = "a plugin nested under a " .. where .. " belongs to it: remove this field"
  if where == "top" or where == "consumer" then
    fields[#fields + 1] = { route = { type = "any", custom = check_ref,
                                      description = "The route's name, { name } or { id }." } }
    fields[#fields + 1] = { service = { type = "any", custom = check_ref,
                                        description = "The service's name, { name } or { id }." } }
  else
    fields[#fields + 1] = { route = unsupported("Only for top-level plugins.", msg) }
    fields[#fields + 1] = { service = unsupported("Only for top-level plugins.", msg) }
  end
  if where == "consumer" then
    fields[#fields + 1] = { consumer = unsupported("Only for plugins not nested in a consumer.",
                                                   msg) }
  else
    fields[#fields + 1] = { consumer = { type = "any", custom = check_consumer_ref,
                                         description = "The consumer's username or id, "
                                           .. "{ username } or { id }: this instance applies "
                                           .. "to that consumer's requests only." } }
  end
  return { type = "array", default = {}, description = "Plugins.",
           elements = { type = "record", fields = fields } }
end

-- Health checks: Kong's `healthchecks` block with Kong's defaults, plus
-- Envoy's outlier ejection under `outlier` (docs/upstreams.md#health-checks).
local function statuses(default, what)
  return { type = "array", default = default, len_max = 32,
           elements = { type = "integer", between = { 100, 999 } },
           description = what }
end

local function counter(what)
  return { type = "integer", default = 0, between = { 0, 255 }, description = what }
end

local function seconds(default, max, what)
  return { type = "number", default = default, between = { 0, max }, description = what }
end

-- Probe requests are built in a 4 KB buffer (core/health.c), with room for
-- the path (1 KB at most) and sluice's own headers.
local MAX_PROBE_HEADERS = 2048

local function check_probe_headers(headers)
  local size = 0
  for name, values in pairs(headers) do
    for _, v in ipairs(type(values) == "table" and values or {}) do
      size = size + #tostring(name) + #tostring(v) + 4
    end
  end
  if size > MAX_PROBE_HEADERS then
    return nil, "the probe headers take " .. size .. " bytes; at most " .. MAX_PROBE_HEADERS
      .. " are allowed"
  end
  return true
end

local HEALTHCHECKS = {
  type = "record",
  default = {},
  description = "Active and passive health checks and outlier ejection.",
  fields = {
    { active = { type = "record", default = {}, description = "Probes sluice sends itself.",
      fields = {
        { type = { type = "string", default = "http", one_of = { "http", "https", "tcp" },
                   custom = function(v)
                     return v ~= "https" or nil, "type https is not supported yet: "
                       .. "upstream TLS comes in a later release (use http or tcp)"
                   end,
                   description = "http: a GET of http_path; tcp: a connect." } },
        { http_path = { type = "string", default = "/", starts_with = "/", len_max = 1024,
                        match_none = { { pattern = "[%c ]", err = "must not contain spaces "
                                         .. "or control characters" } },
                        description = "The path probed." } },
        { timeout = seconds(1, 65535, "Seconds a probe may take.") },
        { concurrency = { type = "integer", default = 10, between = { 1, 65535 },
                          description = "Probes in flight at once, per upstream." } },
        { headers = { type = "map", custom = check_probe_headers,
                      keys = { type = "string", len_min = 1, match = "^[!#$%%&'*+.^_`|~%w-]+$" },
                      values = { type = "array", elements = {
                        type = "string",
                        match_none = { { pattern = "[\r\n%z]",
                                         err = "must not contain CR, LF or NUL" } } } },
                      description = "Headers sent with each probe." } },
        { https_verify_certificate = { type = "boolean", default = true,
                                       description = "Accepted; https probes do not exist yet." } },
        { https_sni = { type = "string",
                        description = "Accepted; https probes do not exist yet." } },
        { healthy = { type = "record", default = {}, fields = {
          { interval = seconds(0, 65535, "Seconds between probes of a healthy target; 0: none.") },
          { http_statuses = statuses({ 200, 302 }, "Statuses that count as a success.") },
          { successes = counter("Successes that make an unhealthy target healthy.") },
        } } },
        { unhealthy = { type = "record", default = {}, fields = {
          { interval = seconds(0, 65535, "Seconds between probes of an unhealthy target; "
            .. "0: none.") },
          { http_statuses = statuses({ 429, 404, 500, 501, 502, 503, 504, 505 },
                                     "Statuses that count as a failure.") },
          { http_failures = counter("Failed statuses that make a target unhealthy.") },
          { tcp_failures = counter("Connect or read errors that make a target unhealthy.") },
          { timeouts = counter("Timeouts that make a target unhealthy.") },
        } } },
      } } },
    { passive = { type = "record", default = {}, description = "Checks of real traffic.",
      fields = {
        { type = { type = "string", default = "http", one_of = { "http", "https", "tcp" },
                   description = "http: statuses count; tcp: only connect errors." } },
        { healthy = { type = "record", default = {}, fields = {
          { http_statuses = statuses({ 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300,
                                       301, 302, 303, 304, 305, 306, 307, 308 },
                                     "Statuses that count as a success.") },
          { successes = counter("Successes that make an unhealthy target healthy.") },
        } } },
        { unhealthy = { type = "record", default = {}, fields = {
          { http_statuses = statuses({ 429, 500, 503 }, "Statuses that count as a failure.") },
          { http_failures = counter("Failed statuses that make a target unhealthy.") },
          { tcp_failures = counter("Connect or read errors that make a target unhealthy.") },
          { timeouts = counter("Timeouts that make a target unhealthy.") },
        } } },
      } } },
    { outlier = { type = "record", default = {},
      description = "Envoy's outlier ejection, counted on real traffic.",
      fields = {
        { consecutive_5xx = counter("Consecutive 5xx answers (or connect errors) that eject.") },
        { consecutive_gateway_failure = counter("Consecutive 502, 503, 504 or connect errors "
          .. "that eject.") },
        { base_ejection_time = seconds(30, 86400, "Seconds of the first ejection; the n-th "
          .. "lasts n times this.") },
        { max_ejection_time = seconds(300, 86400, "Cap of the ejection time, in seconds.") },
        { max_ejection_percent = { type = "integer", default = 10, between = { 0, 100 },
                                   description = "Most targets ejected at once, in % "
                                     .. "(at least one)." } },
      } } },
    { threshold = { type = "number", default = 0, between = { 0, 100 },
                    description = "Below this % of healthy weight the upstream answers 503." } },
  },
}

local function lower(s)
  return str_lower(s)
end

-- Schemas ------------------------------------------------------------------------

local TAGS = { type = "set", elements = { type = "string", len_min = 1 },
               description = "Free-form labels; not used by sluice." }
local ID = { type = "string", uuid = true, description = "A UUID, as Kong exports it." }
local TIMESTAMP = { type = "integer", description = "Kong's timestamp; ignored." }

local function timeout(description)
  return { type = "duration", default = 60000, between = { 1, INT32_MAX },
           description = description }
end

local function server_duration(default, min, description)
  return { type = "duration", default = default, between = { min, INT32_MAX },
           description = description }
end

-- A DNS server: "IP", "IP:PORT" or "[IPv6]:PORT".
local function check_dns_server(s)
  local host, port = str_match(s, "^%[(.+)%]:(%d+)$")
  if not host then
    host, port = str_match(s, "^([%d.]+):(%d+)$")
  end
  host = host or s
  if not is_ipv4(host) and not is_ipv6(host) then
    return nil, "expected an IP address with an optional port (\"127.0.0.53\", "
      .. "\"10.0.0.2:5353\", \"[::1]:53\"), got '" .. s .. "'"
  end
  if port and (tonumber(port) < 1 or tonumber(port) > 65535) then
    return nil, "port out of range in '" .. s .. "'"
  end
  return true
end

local function server_size(default, min, description)
  return { type = "size", default = default, between = { min, INT32_MAX },
           description = description }
end

local server_schema = {
  type = "record",
  fields = {
    { listen = { type = "array", default = { "0.0.0.0:8000" }, len_min = 1,
                 elements = { type = "string", custom = function(s)
                   local l, err = parse_listen(s)
                   return l ~= nil or nil, err
                 end },
                 description = "Addresses to accept connections on: \"ADDR:PORT [reuseport] "
                   .. "[backlog=N]\"." } },
    { workers = { type = "any", default = "auto", custom = check_workers,
                  description = "Worker processes: a number, or \"auto\" for one per CPU." } },
    { pid_file = { type = "string", default = "sluice.pid", len_min = 1,
                   description = "Where the master writes its pid; relative to the "
                     .. "directory sluice starts in." } },
    { error_log = { type = "string", default = "stderr", len_min = 1,
                    description = "\"stderr\" or a file path." } },
    { log_level = { type = "string", default = "notice",
                    one_of = { "err", "warn", "notice", "info", "debug" },
                    description = "Least severe level written to the error log." } },
    { access_log = { type = "string", default = "stdout", len_min = 1,
                     description = "A file path, \"stdout\", \"stderr\" or \"off\"." } },
    { access_log_buffer = server_size("64k", 0, "Access log bytes buffered per worker.") },
    { max_request_line = server_size("8k", 64, "Longest request line (414 beyond).") },
    { max_header_size = server_size("32k", 256, "Largest request head (431 beyond).") },
    { max_headers = { type = "integer", default = 100, between = { 1, 10000 },
                      description = "Most request header lines (431 beyond)." } },
    { underscores_in_headers = {
        type = "boolean", default = false,
        description = "Keep request headers whose name holds '_' (nginx's setting); "
          .. "false drops them, so X_Consumer_ID cannot pose as X-Consumer-ID." } },
    { max_body_size = { type = "size", default = 0, between = { 0, 2 ^ 53 },
                        description = "Largest request body (413 beyond); 0 = unlimited." } },
    { client_body_buffer_size = server_size("1m", 0,
        "Largest request body sluice.request.get_raw_body reads whole; a larger body "
        .. "streams upstream untouched.") },
    { response_body_buffer_size = server_size("1m", 0,
        "Largest response body a plugin buffers whole (get_raw_body in body_filter, "
        .. "enable_buffering); a larger body streams.") },
    { client_header_timeout = server_duration("60s", 1, "Time to receive a request head.") },
    { client_body_timeout = server_duration("60s", 1, "Time between two body reads.") },
    { keepalive_timeout = server_duration("75s", 0,
        "Idle time of a client keep-alive connection; 0 closes it at once.") },
    { keepalive_requests = { type = "integer", default = 1000, between = { 1, INT32_MAX },
                             description = "Requests served on one client connection." } },
    { send_timeout = server_duration("60s", 1, "Time between two writes to a client.") },
    { shutdown_timeout = server_duration("10s", 0, "Graceful drain time on SIGTERM.") },
    { upstream_keepalive_pool_size = {
        type = "integer", default = 512, between = { 0, INT32_MAX },
        description = "Idle upstream connections kept per worker and target; 0 = none." } },
    { upstream_keepalive_max_requests = {
        type = "integer", default = 10000, between = { 0, INT32_MAX },
        description = "Requests sent on one upstream connection; 0 = unlimited." } },
    { upstream_keepalive_idle_timeout = server_duration("60s", 1,
        "Time an idle upstream connection is kept.") },
    { shared_dicts = { type = "map", default = {},
                       keys = { type = "string", match = "^[%w][%w%-_]*$" },
                       values = { type = "size", between = { 32768, 2 ^ 35 } },
                       description = "Shared-memory dictionaries seen by every worker: "
                         .. "name -> size (\"10m\"), as sluice.shared.NAME." } },
    { plugin_paths = { type = "array", default = {}, elements = { type = "string", len_min = 1 },
                       description = "Folders searched for plugins before the bundled "
                         .. "plugins/ folder; a plugin here replaces a bundled one." } },
    { trusted_ips = { type = "array", default = {},
                      elements = { type = "string", custom = function(s)
                        local c, err = parse_cidr(s)
                        return c ~= nil or nil, err
                      end },
                      description = "Addresses or CIDR blocks whose X-Forwarded-* are trusted." } },
    { dns_resolver = { type = "array", default = {},
                       elements = { type = "string", custom = check_dns_server },
                       description = "DNS servers (\"IP\", \"IP:PORT\", \"[IPv6]:PORT\"); "
                         .. "empty: those of /etc/resolv.conf." } },
    { dns_hostsfile = { type = "string", default = "/etc/hosts", len_min = 1,
                        description = "Hosts file read before asking DNS." } },
    { dns_valid_ttl = server_duration("0s", 0,
        "Overrides every record's TTL; 0 keeps each record's own.") },
    { dns_min_ttl = server_duration("1s", 1000,
        "Shortest time an answer is kept: a record's lower TTL counts as this.") },
    { dns_max_ttl = server_duration("1h", 1000,
        "Longest time an answer is kept before the name is asked for again.") },
    { dns_stale_ttl = server_duration("4s", 0,
        "How long an expired answer is still used while it is refreshed.") },
    { dns_not_found_ttl = server_duration("30s", 0,
        "How long a name that does not exist is remembered.") },
    { dns_error_ttl = server_duration("1s", 0,
        "How long a failed lookup (server error, timeout) is remembered.") },
  },
  check = function(s)
    if s.dns_min_ttl > s.dns_max_ttl then
      return nil, "must not be more than dns_max_ttl", "dns_min_ttl"
    end
    return true
  end,
}

local function route_fields(top_level)
  local fields = {
    { id = ID },
    { name = { type = "string", custom = check_name, description = "Unique route name." } },
    { protocols = { type = "set", default = { "http", "https" }, len_min = 1,
                    elements = { type = "string", custom = check_route_protocol },
                    description = "Listener protocols the route matches." } },
    { methods = { type = "set", elements = { type = "string", custom = check_method },
                  description = "HTTP methods, upper-case." } },
    { hosts = { type = "array",
                elements = { type = "string", normalize = lower, custom = check_route_host },
                description = "Host names, \"*.example.com\" or \"example.*\", with an "
                  .. "optional \":port\"." } },
    { paths = { type = "array", elements = { type = "string", custom = check_route_path },
                description = "Path prefixes (\"/api\") or regexes (\"~/users/\\d+$\")." } },
    { headers = { type = "map",
                  keys = { type = "string", match = TOKEN, normalize = lower,
                           custom = function(k)
                             if k == "host" then
                               return nil, "the Host header is matched with 'hosts', not 'headers'"
                             end
                             return true
                           end },
                  values = { type = "array", len_min = 1, elements = { type = "string",
                             normalize = function(v)
                               return str_sub(v, 1, 1) == "~" and v or str_lower(v)
                             end } },
                  description = "Header name -> values, one of which must match." } },
    { https_redirect_status_code = { type = "integer", default = 426,
                                     one_of = { 426, 301, 302, 307, 308 },
                                     description = "Status for http on https-only routes." } },
    { regex_priority = { type = "integer", default = 0, between = { -INT32_MAX, INT32_MAX },
                         description = "Order among regex routes; higher first." } },
    { strip_path = { type = "boolean", default = true,
                     description = "Remove the matched path prefix before proxying." } },
    { path_handling = { type = "string", default = "v0", one_of = { "v0", "v1" },
                        description = "How service and request paths are joined (Kong's)." } },
    { retry_non_idempotent = { type = "boolean", default = false,
                               description = "Beyond Kong: the service's retry_on also "
                                 .. "retries POST, PATCH and other non-idempotent methods." } },
    { preserve_host = { type = "boolean", default = false,
                        description = "Send the client's Host upstream." } },
    { request_buffering = { type = "boolean", default = true,
                            description = "Accepted for Kong compatibility; no effect yet." } },
    { response_buffering = { type = "boolean", default = true,
                             description = "Accepted for Kong compatibility; no effect yet." } },
    { tags = TAGS },
    { snis = unsupported("Stream routes (not supported).",
        "snis are not supported: TLS routing comes in a later release") },
    { sources = unsupported("Stream routes (not supported).",
        "sources are not supported: stream routes are not supported") },
    { destinations = unsupported("Stream routes (not supported).",
        "destinations are not supported: stream routes are not supported") },
    { expression = unsupported("Expression routes (not supported).",
        "expression routes are not supported: use hosts, paths, methods and headers") },
    { priority = unsupported("Expression routes (not supported).",
        "priority belongs to expression routes, which are not supported") },
    { plugins = plugin_list("route") },
    { created_at = TIMESTAMP },
    { updated_at = TIMESTAMP },
  }
  if top_level then
    fields[#fields + 1] = { service = { type = "any", custom = check_ref,
                                        description = "The service's name, { name } or { id }." } }
  else
    fields[#fields + 1] = { service = unsupported("Only for top-level routes.",
      "a route nested under a service belongs to that service: remove 'service'") }
  end
  return {
    type = "record",
    fields = fields,
    entity_checks = { { at_least_one_of = { "methods", "hosts", "headers", "paths" } } },
  }
end

local nested_route_schema = route_fields(false)
local route_schema = route_fields(true)

local service_schema = {
  type = "record",
  fields = {
    { id = ID },
    { name = { type = "string", custom = check_name, description = "Unique service name." } },
    { protocol = { type = "string", default = "http", custom = check_service_protocol,
                   description = "Protocol to the upstream: http." } },
    { host = { type = "string", custom = check_host,
               description = "Upstream host: a name, an address, or an upstream's name." } },
    { port = { type = "integer", default = 80, between = { 1, 65535 },
               description = "Upstream port." } },
    { path = { type = "string", custom = check_service_path,
               description = "Path prefixed to every proxied request." } },
    { retries = { type = "integer", default = 5, between = { 0, 32767 },
                  description = "Retries on connection failures." } },
    { retry_on = { type = "array", default = {},
                   elements = { type = "any", custom = function(v)
                     if v == "timeout" or (type(v) == "number" and v == math_floor(v)
                         and v >= 400 and v <= 599) then
                       return true
                     end
                     return nil, "expected a status code from 400 to 599 or \"timeout\", got "
                       .. (type(v) == "string" and quote(v) or tostring(v))
                   end },
                   description = "Beyond Kong: statuses (and \"timeout\") after which an "
                     .. "idempotent request is tried on another target." } },
    { retry_budget = { type = "number", default = 20, between = { 0, 100 },
                       description = "Beyond Kong: retry_on retries allowed per 100 requests "
                         .. "(per worker and upstream)." } },
    { connect_timeout = timeout("Time to connect to the upstream.") },
    { write_timeout = timeout("Time between two writes to the upstream.") },
    { read_timeout = timeout("Time between two reads from the upstream.") },
    { enabled = { type = "boolean", default = true,
                  description = "A disabled service and its routes are left out." } },
    { tags = TAGS },
    { routes = { type = "array", elements = nested_route_schema, default = {},
                 description = "Routes of this service." } },
    { plugins = plugin_list("service") },
    { tls_verify = unsupported("Upstream TLS (not supported yet).",
        "tls_verify is not supported yet: upstream TLS comes in a later release") },
    { tls_verify_depth = unsupported("Upstream TLS (not supported yet).",
        "tls_verify_depth is not supported yet: upstream TLS comes in a later release") },
    { ca_certificates = unsupported("Upstream TLS (not supported yet).",
        "ca_certificates is not supported yet: upstream TLS comes in a later release") },
    { client_certificate = unsupported("Upstream TLS (not supported yet).",
        "client_certificate is not supported yet: upstream TLS comes in a later release") },
    { created_at = TIMESTAMP },
    { updated_at = TIMESTAMP },
  },
  shorthand_fields = {
    { url = { type = "string", func = parse_url,
              description = "protocol://host[:port][/path], instead of the four fields." } },
  },
  check = function(s)
    if s.host == nil then
      return nil, "a service needs a 'url' or a 'host'", "host"
    end
    return true
  end,
}

local function target_fields(top_level)
  local fields = {
    { id = ID },
    { target = { type = "string", required = true, custom = check_target,
                 description = "\"host:port\" (port 8000 when absent)." } },
    { weight = { type = "integer", default = 100, between = { 0, 65535 },
                 description = "Share of the traffic; 0 disables the target." } },
    { tags = TAGS },
    { created_at = TIMESTAMP },
    { updated_at = TIMESTAMP },
  }
  if top_level then
    fields[#fields + 1] = {
      upstream = { type = "any", custom = check_ref,
                   description = "The upstream's name, { name } or { id }." },
    }
  end
  return { type = "record", fields = fields }
end

local HASH_SOURCES = { "none", "consumer", "ip", "header", "cookie", "path", "query_arg",
                       "uri_capture" }

local function hash_source(description)
  return { type = "string", default = "none", one_of = HASH_SOURCES, description = description }
end

local function check_token(what)
  return function(v)
    if not str_find(v, TOKEN) then
      return nil, "invalid " .. what .. " name " .. quote(v)
        .. ": expected letters, digits and !#$%&'*+-.^_`|~"
    end
    return true
  end
end

local function hash_name(description, custom)
  return { type = "string", len_min = 1, len_max = 256, custom = custom,
           description = description }
end

-- Which field names what to hash on, for each source that needs a name. A
-- fallback on a cookie uses hash_on_cookie, as in Kong.
local HASH_ON_NAME = { header = "hash_on_header", cookie = "hash_on_cookie",
                       query_arg = "hash_on_query_arg", uri_capture = "hash_on_uri_capture" }
local HASH_FALLBACK_NAME = { header = "hash_fallback_header", cookie = "hash_on_cookie",
                             query_arg = "hash_fallback_query_arg",
                             uri_capture = "hash_fallback_uri_capture" }

-- Kong's rules between the hashing fields (its upstream entity checks).
local function check_hashing(u)
  local on, fb = u.hash_on, u.hash_fallback
  local need = HASH_ON_NAME[on]
  if need and u[need] == nil then
    return nil, "hashing on '" .. on .. "' needs '" .. need .. "' to say which " .. on, "hash_on"
  end
  need = HASH_FALLBACK_NAME[fb]
  if need and u[need] == nil then
    return nil, "hashing on '" .. fb .. "' needs '" .. need .. "' to say which " .. fb,
      "hash_fallback"
  end
  if on == "none" and fb ~= "none" then
    return nil, "hash_fallback must be 'none' when hash_on is 'none'", "hash_fallback"
  end
  if on == "cookie" and fb ~= "none" then
    return nil, "hash_fallback must be 'none' when hash_on is 'cookie' (a request without "
      .. "the cookie is given one)", "hash_fallback"
  end
  if on == fb and on ~= "none" then
    if not HASH_ON_NAME[on] then
      return nil, "hash_fallback must differ from hash_on ('" .. on .. "')", "hash_fallback"
    end
    local a, b = u[HASH_ON_NAME[on]], u[HASH_FALLBACK_NAME[fb]]
    if on == "header" then
      a, b = str_lower(a), str_lower(b)
    end
    if a == b then
      return nil, HASH_FALLBACK_NAME[fb] .. " must differ from " .. HASH_ON_NAME[on]
        .. " (both " .. quote(u[HASH_ON_NAME[on]]) .. ")", HASH_FALLBACK_NAME[fb]
    end
  end
  return true
end

local function check_cookie_path(p)
  if str_sub(p, 1, 1) ~= "/" then
    return nil, "expected a path starting with '/', got " .. quote(p)
  end
  if str_find(p, "[%c ;,]") then
    return nil, "invalid cookie path " .. quote(p) .. ": no spaces, ';', ',' or control characters"
  end
  return true
end

local upstream_schema = {
  type = "record",
  fields = {
    { id = ID },
    { name = { type = "string", required = true,
               custom = function(v)
                 if not is_hostname(v) then
                   return nil, "invalid upstream name " .. quote(v) .. ": expected a hostname"
                 end
                 return true
               end,
               description = "Unique name; services use it as their host." } },
    { algorithm = { type = "string", default = "round-robin",
                    one_of = { "round-robin", "consistent-hashing", "least-connections",
                               "latency" },
                    description = "Load-balancing algorithm (see docs/upstreams.md)." } },
    { hash_on = hash_source("consistent-hashing: what the key is taken from.") },
    { hash_fallback = hash_source("consistent-hashing: where the key comes from when the "
      .. "request has no hash_on value.") },
    { hash_on_header = hash_name("The header hashed on (hash_on: header).",
                                 check_token("header")) },
    { hash_fallback_header = hash_name("The header hashed on (hash_fallback: header).",
                                       check_token("header")) },
    { hash_on_cookie = hash_name("The cookie hashed on (hash_on or hash_fallback: cookie); "
      .. "sluice sets it when the request has none.", check_token("cookie")) },
    { hash_on_cookie_path = { type = "string", default = "/", len_max = 1024,
                              custom = check_cookie_path,
                              description = "Path of the cookie sluice sets." } },
    { hash_on_query_arg = hash_name("The query argument hashed on (hash_on: query_arg).") },
    { hash_fallback_query_arg = hash_name("The query argument hashed on "
      .. "(hash_fallback: query_arg).") },
    { hash_on_uri_capture = hash_name("The named capture of the route's regex path hashed on "
      .. "(hash_on: uri_capture).") },
    { hash_fallback_uri_capture = hash_name("The named capture hashed on "
      .. "(hash_fallback: uri_capture).") },
    { slots = { type = "integer", default = 10000, between = { 10, 65536 },
                description = "consistent-hashing: points on the ring, shared out by weight." } },
    { healthchecks = HEALTHCHECKS },
    { host_header = { type = "string", custom = function(v)
                        local host, err = split_host_port(v)
                        if not host then
                          return nil, err
                        end
                        return check_host(host)
                      end,
                      description = "Host header sent upstream (unless preserve_host)." } },
    { client_certificate = unsupported("Upstream TLS (not supported yet).",
        "client_certificate is not supported yet: upstream TLS comes in a later release") },
    { use_srv_name = { type = "boolean", default = false,
                       custom = function(v)
                         return not v or nil, "use_srv_name is not supported yet"
                       end,
                       description = "SRV names (not supported yet)." } },
    { tags = TAGS },
    { targets = { type = "array", default = {}, elements = target_fields(false),
                  description = "Where the upstream sends requests." } },
    { created_at = TIMESTAMP },
    { updated_at = TIMESTAMP },
  },
  check = check_hashing,
}

-- Credentials belong to the auth plugins, in Kong's collections. The plugin
-- that owns a collection (CREDENTIAL_OWNERS) declares its entity schema in its
-- daos.lua; its credentials are checked with it and normalized. A collection
-- whose plugin is not available (hmac-auth, oauth2) is kept as written (a list
-- of mappings) on its consumer, so that Kong files still load.
local CREDENTIALS = { "keyauth_credentials", "basicauth_credentials", "hmacauth_credentials",
                      "jwt_secrets", "oauth2_credentials", "acls" }
local CREDENTIAL_OWNERS = {
  keyauth_credentials = "key-auth", basicauth_credentials = "basic-auth",
  hmacauth_credentials = "hmac-auth", jwt_secrets = "jwt", oauth2_credentials = "oauth2",
  acls = "acl",
}
-- The namespace of the ids sluice derives for credentials that have none.
local CREDENTIAL_NAMESPACE = "\x51\xc2\x0e\x8d\x3b\x7f\x46\x90\xa1\x6e\x24\xd9\x05\xbb\x73\x1c"

local function check_mapping(v)
  if type(v) ~= "table" or v[1] ~= nil then
    return nil, "expected a mapping, got " .. describe(v)
  end
  return true
end

local function credential_list(top_level)
  return {
    type = "array",
    default = {},
    elements = { type = "any", custom = function(v)
      local ok, err = check_mapping(v)
      if not ok then
        return nil, err
      end
      if top_level then
        if v.consumer == nil or v.consumer == NULL then
          return nil, "a top-level credential needs 'consumer: USERNAME' "
            .. "(or nest it under its consumer)"
        end
        return check_consumer_ref(v.consumer)
      end
      return true
    end },
    description = "Checked with the entity schema of the plugin that owns the collection "
      .. "(its daos.lua) when that plugin is available; kept as written otherwise.",
  }
end

local consumer_fields = {
  { id = { type = "string", uuid = true,
           description = "A UUID; generated from the username (or custom_id) when absent." } },
  { username = { type = "string", len_min = 1, description = "Unique username." } },
  { custom_id = { type = "string", len_min = 1,
                  description = "Unique id of the consumer in another system." } },
  { tags = TAGS },
  { plugins = plugin_list("consumer") },
  { groups = unsupported("Consumer groups (not supported).",
      "consumer groups are not supported yet") },
  { mtls_auth_credentials = not_yet("Not supported yet.",
      "mtls-auth credentials are not supported yet (TLS comes in a later release)") },
  { created_at = TIMESTAMP },
  { updated_at = TIMESTAMP },
}
for _, name in ipairs(CREDENTIALS) do
  consumer_fields[#consumer_fields + 1] = { [name] = credential_list(false) }
end

local consumer_schema = {
  type = "record",
  fields = consumer_fields,
  entity_checks = { { at_least_one_of = { "username", "custom_id" } } },
}

local document_fields = {
  { _format_version = { type = "string", required = true, one_of = FORMAT_VERSIONS,
                        description = "Kong's declarative format version." } },
  { _transform = { type = "boolean", description = "Accepted for Kong compatibility." } },
  { _comment = { type = "any", description = "Ignored." } },
  { _info = { type = "any", description = "Ignored." } },
  { _workspace = { type = "string", description = "Ignored." } },
  { server = { type = "record", fields = server_schema.fields, check = server_schema.check,
               default = {}, description = "sluice's own node settings." } },
  { services = { type = "array", elements = service_schema, default = {} } },
  { routes = { type = "array", elements = route_schema, default = {} } },
  { upstreams = { type = "array", elements = upstream_schema, default = {} } },
  { targets = { type = "array", elements = target_fields(true), default = {} } },
  { plugins = plugin_list("top") },
  { consumers = { type = "array", elements = consumer_schema, default = {},
                  description = "Consumers, with their plugins and credentials." } },
}
for _, name in ipairs(CREDENTIALS) do
  document_fields[#document_fields + 1] = { [name] = credential_list(true) }
end

local TLS = "(TLS comes in a later release)"
for _, c in ipairs({
  { "consumer_groups", "consumer groups are not supported yet" },
  { "mtls_auth_credentials", "mtls-auth credentials are not supported yet " .. TLS },
  { "certificates", "certificates are not supported yet " .. TLS },
  { "ca_certificates", "ca_certificates are not supported yet " .. TLS },
  { "snis", "snis are not supported yet " .. TLS },
  { "vaults", "vaults are not supported yet" },
  { "key_sets", "key sets are not supported yet" },
  { "keys", "keys are not supported yet" },
}) do
  document_fields[#document_fields + 1] = { [c[1]] = not_yet("Not supported yet.", c[2]) }
end

local document_schema = { type = "record", fields = document_fields }

_M.schemas = {
  document = document_schema,
  server = server_schema,
  service = service_schema,
  route = route_schema,
  upstream = upstream_schema,
  target = target_fields(true),
  consumer = consumer_schema,
}

-- Locating errors ----------------------------------------------------------------

-- Returns the 1-based line of the value at keys in doc, or of the closest
-- enclosing table that exists; nil without line information.
local function line_of(doc, lines, keys)
  if type(lines) ~= "table" or type(doc) ~= "table" then
    return nil
  end
  local node = doc
  local lt = lines[doc]
  local line = lt and lt["@"]
  for _, k in ipairs(keys) do
    lt = type(node) == "table" and lines[node]
    if not lt then
      break
    end
    if lt[k] == nil then
      line = lt["@"] or line
      break
    end
    line = lt[k]
    node = node[k]
  end
  return line
end

local function new_report(doc, lines, file)
  local r = { doc = doc, lines = lines, file = file or "<config>", errors = {} }

  function r.add(keys, message, path)
    r.errors[#r.errors + 1] = {
      path = path or schema.path_of(keys),
      message = message,
      keys = keys,
      line = line_of(r.doc, r.lines, keys),
    }
  end

  -- "services[0] at line 3", for messages that point at a second place.
  function r.describe(keys)
    local line = line_of(r.doc, r.lines, keys)
    return schema.path_of(keys) .. (line and (" at line " .. line) or "")
  end

  -- "FILE:LINE: PATH", for messages the C side adds.
  function r.where(keys)
    local line = line_of(r.doc, r.lines, keys)
    local path = schema.path_of(keys)
    local out = r.file
    if line then
      out = out .. ":" .. line
    end
    if path ~= "" then
      out = out .. ": " .. path
    end
    return out
  end

  function r.text()
    local list = r.errors
    for i, e in ipairs(list) do
      e.seq = i
    end
    tbl_sort(list, function(a, b)
      local la, lb = a.line or math_huge, b.line or math_huge
      if la ~= lb then
        return la < lb
      end
      return a.seq < b.seq
    end)
    local out = {}
    for i, e in ipairs(list) do
      local s = r.file
      if e.line then
        s = s .. ":" .. e.line
      end
      if e.path ~= "" then
        s = s .. ": " .. e.path
      end
      out[i] = s .. ": " .. e.message .. "\n"
    end
    return tbl_concat(out)
  end

  return r
end

local function copy_keys(keys, ...)
  local out = {}
  for i, k in ipairs(keys) do
    out[i] = k
  end
  for _, k in ipairs({ ... }) do
    out[#out + 1] = k
  end
  return out
end

-- Compiling ------------------------------------------------------------------------

-- Registers entry under its name in index; reports a duplicate naming both.
local function unique(r, index, name, keys, what)
  if name == nil then
    return
  end
  local key = str_lower(name)
  local first = index[key]
  if first then
    r.add(copy_keys(keys, "name"), "duplicate " .. what .. " name " .. quote(name)
      .. " (also " .. r.describe(first.keys) .. ")")
    return
  end
  index[key] = { keys = keys }
end

local function find_ref(ref, by_name, by_id)
  if type(ref) == "string" then
    return by_name[str_lower(ref)] or by_id[ref], ref
  end
  if ref.name then
    return by_name[str_lower(ref.name)], ref.name
  end
  return by_id[ref.id], ref.id
end

local function compile_route(r, route, keys, format)
  local out = {
    id = route.id,
    tags = route.tags,
    name = route.name,
    hosts = route.hosts or {},
    methods = route.methods or {},
    protocols = route.protocols,
    regex_priority = route.regex_priority,
    strip_path = route.strip_path,
    preserve_host = route.preserve_host,
    retry_non_idempotent = route.retry_non_idempotent,
    path_handling = route.path_handling,
    https_redirect_status_code = route.https_redirect_status_code,
    where = r.where(keys),
    paths = {},
    headers = {},
  }
  if not out.id then
    out.id = derived_id("route:" .. (route.name or str_match(out.where, ": (.*)$") or out.where))
  end
  for i, p in ipairs(route.paths or {}) do
    if p then
      local regex = str_sub(p, 1, 1) == "~"
      if not regex and format ~= "3.0" and not str_find(p, PLAIN_PATH) then
        -- Formats before 3.0 had no '~': Kong 3 reads such paths as regexes.
        regex, p = true, "~" .. p
      end
      out.paths[i] = { value = regex and str_sub(p, 2) or p, regex = regex,
                       where = r.where(copy_keys(keys, "paths", i)) }
    end
  end
  local names = {}
  for name in pairs(route.headers or {}) do
    names[#names + 1] = name
  end
  tbl_sort(names)
  for i, name in ipairs(names) do
    out.headers[i] = { name = name, values = route.headers[name] }
  end
  return out
end

-- The fields every credential has besides its plugin's own (daos.lua), as Kong
-- gives them to every entity that belongs to a consumer.
local CREDENTIAL_BASE_FIELDS = {
  { id = { type = "string", uuid = true,
           description = "A UUID; derived from the consumer and the credential when absent." } },
  { consumer = { type = "any", description = "The consumer (top-level credentials only)." } },
  { tags = TAGS },
  { created_at = TIMESTAMP },
}

-- Entity schemas of credential collections, by the daos table they came from.
local dao_schemas = setmetatable({}, { __mode = "k" })

-- The record a credential of a plugin's dao is checked with: the base fields,
-- then the dao's own, with its checks.
local function dao_schema(daos, kind)
  local dao = daos[kind]
  local cache = dao_schemas[daos]
  if not cache then
    cache = {}
    dao_schemas[daos] = cache
  end
  if not cache[kind] then
    local fields = {}
    for i, f in ipairs(CREDENTIAL_BASE_FIELDS) do
      fields[i] = f
    end
    for _, f in ipairs(dao.fields or {}) do
      fields[#fields + 1] = f
    end
    cache[kind] = { type = "record", fields = fields, check = dao.check,
                    entity_checks = dao.entity_checks, shorthand_fields = dao.shorthand_fields }
  end
  return cache[kind]
end

-- Checks and normalizes the credentials with the entity schema of the plugin
-- that owns their collection, and puts them on their consumers. A normalized
-- credential is its plugin's fields with their defaults, plus id, consumer =
-- { id = }, tags and created_at (Kong's shape); fields marked unique in the
-- dao may not repeat within the collection. dao.transform(credential) may
-- rewrite one at load (basic-auth hashes passwords): it returns the credential,
-- or nil and a message reported at the credential.
local function compile_credentials(r, pending, out)
  local seen = {} -- seen[kind][field][value] = keys of the first
  local counts = {} -- counts[consumer][kind]: how many so far, for derived ids
  local owners = {} -- owners[kind] = the plugin, or false when it is not available
  for _, p in ipairs(pending) do
    local kind, cred, consumer = p.kind, p.cred, p.consumer
    local plugin = owners[kind]
    if plugin == nil then
      plugin = plugins.load(CREDENTIAL_OWNERS[kind]) or false
      owners[kind] = plugin
    end
    local daos = plugin and plugin.daos
    if type(cred) ~= "table" then -- luacheck: ignore 542
      -- the document schema reported it
    elseif not (daos and daos[kind]) then
      consumer[kind][#consumer[kind] + 1] = cred
    else
      local s = dao_schema(daos, kind)
      if not out.credentials[kind] then
        local unique_fields = {}
        for _, f in ipairs(s.fields) do
          local name, def = next(f)
          if def.unique then
            unique_fields[#unique_fields + 1] = name
          end
        end
        out.credentials[kind] = { plugin = plugin.name, unique = unique_fields }
      end
      local ok, valid, errors = pcall(schema.validate, s, cred, schema.path_of(p.keys), p.keys)
      if not ok then
        r.add(p.keys, "plugin '" .. plugin.name .. "' has an invalid daos.lua: "
          .. tostring(valid))
        valid = nil
      end
      for _, e in ipairs(errors or {}) do
        r.add(e.keys, e.message, e.path)
      end
      local transform = daos[kind].transform
      if valid and transform then
        local transformed, err = transform(valid)
        if not transformed then
          r.add(p.keys, err)
        end
        valid = transformed
      end
      if valid then
        local of = counts[consumer] or {}
        counts[consumer] = of
        local n = (of[kind] or 0) + 1
        of[kind] = n
        if valid.id == nil then
          valid.id = derived_id_in(CREDENTIAL_NAMESPACE, kind .. ":" .. consumer.id .. ":" .. n)
        end
        valid.consumer = { id = consumer.id }
        local clean = true
        for _, f in ipairs(s.fields) do
          local name, def = next(f)
          local v = valid[name]
          if def.unique and v ~= nil then
            local by_field = seen[kind] or {}
            seen[kind] = by_field
            local by_value = by_field[name] or {}
            by_field[name] = by_value
            local first = by_value[v]
            if first then
              -- The value may be a secret (a key): it is not repeated.
              r.add(copy_keys(p.keys, name), "duplicate " .. kind .. " " .. name
                .. " (also " .. r.describe(first) .. ")")
              clean = false
            else
              by_value[v] = p.keys
            end
          end
        end
        if clean then
          consumer[kind][#consumer[kind] + 1] = valid
        end
      end
    end
  end
end

-- Builds the normalized config from the validated (possibly partial, when
-- schema errors were found) document, adding cross-entity errors to r.
local function compile(r, doc, file)
  local out = {
    file = file,
    format_version = doc._format_version,
    server = doc.server,
    services = {},
    routes = {},
    upstreams = {},
    consumers = {},
    credentials = {},
  }

  -- Server: parse what the schema checked.
  local server = doc.server
  if type(server) == "table" then
    local listens, seen = {}, {}
    for i, s in ipairs(server.listen or {}) do
      local l = s and parse_listen(s)
      if l then
        local keys = { "server", "listen", i }
        local id = l.addr .. "|" .. l.port
        if seen[id] then
          r.add(keys, "duplicate listen address " .. quote(l.text) .. " (also "
            .. r.describe(seen[id]) .. ")")
        end
        seen[id] = keys
        l.where = r.where(keys)
        listens[#listens + 1] = l
      end
    end
    server.listen = listens
    local trusted = {}
    for i, s in ipairs(server.trusted_ips or {}) do
      local c = s and parse_cidr(s)
      if c then
        c.where = r.where({ "server", "trusted_ips", i })
        trusted[#trusted + 1] = c
      end
    end
    server.trusted_ips = trusted
    local dicts = {}
    for name, size in pairs(server.shared_dicts or {}) do
      dicts[#dicts + 1] = { name = name, size = size }
    end
    tbl_sort(dicts, function(a, b) return a.name < b.name end)
    server.shared_dicts = dicts
  end

  -- Upstreams and their targets.
  local upstream_by_name, upstream_by_id, upstream_names = {}, {}, {}
  for i, u in ipairs(doc.upstreams or {}) do
    if u then
      local keys = { "upstreams", i }
      unique(r, upstream_names, u.name, keys, "upstream")
      local entry = { name = u.name, algorithm = u.algorithm, host_header = u.host_header,
                      slots = u.slots, hash_on = u.hash_on, hash_fallback = u.hash_fallback,
                      hash_on_name = u[HASH_ON_NAME[u.hash_on or ""] or ""],
                      hash_fallback_name = u[HASH_FALLBACK_NAME[u.hash_fallback or ""] or ""],
                      hash_on_cookie_path = u.hash_on_cookie_path,
                      healthchecks = u.healthchecks,
                      targets = {}, keys = keys, seen = {} }
      out.upstreams[#out.upstreams + 1] = entry
      entry.index = #out.upstreams
      if u.name and not upstream_by_name[str_lower(u.name)] then
        upstream_by_name[str_lower(u.name)] = entry
      end
      if u.id then
        upstream_by_id[u.id] = entry
      end
    end
  end

  local function add_target(entry, t, keys)
    local host, port = split_host_port(t.target)
    port = port or DEFAULT_TARGET_PORT
    local id = str_lower(host) .. "|" .. port
    if entry.seen[id] then
      r.add(copy_keys(keys, "target"), "duplicate target " .. quote(t.target) .. " (also "
        .. r.describe(entry.seen[id]) .. ")")
      return
    end
    entry.seen[id] = keys
    entry.targets[#entry.targets + 1] = { host = host, port = port, weight = t.weight,
                                          where = r.where(copy_keys(keys, "target")) }
  end

  for i, u in ipairs(doc.upstreams or {}) do
    if u then
      local entry = upstream_by_name[u.name and str_lower(u.name)]
      for j, t in ipairs(u.targets or {}) do
        if t and t.target and entry then
          add_target(entry, t, { "upstreams", i, "targets", j })
        end
      end
    end
  end
  for i, t in ipairs(doc.targets or {}) do
    if t then
      local keys = { "targets", i }
      if t.upstream == nil then
        r.add(keys, "a top-level target needs 'upstream: NAME' (or nest it under its upstream)")
      elseif t.target then
        local entry, ref = find_ref(t.upstream, upstream_by_name, upstream_by_id)
        if not entry then
          r.add(copy_keys(keys, "upstream"), "no upstream named " .. quote(ref))
        else
          add_target(entry, t, keys)
        end
      end
    end
  end

  -- Services.
  local service_by_name, service_by_id, service_names = {}, {}, {}
  local services = {}
  for i, s in ipairs(doc.services or {}) do
    if s then
      local keys = { "services", i }
      unique(r, service_names, s.name, keys, "service")
      local raw = type(r.doc) == "table" and type(r.doc.services) == "table"
        and r.doc.services[i]
      local host_key = (type(raw) == "table" and raw.url ~= nil and raw.url ~= NULL)
        and "url" or "host"
      local entry = {
        -- Services and routes without an id get one derived from their name
        -- (else their place in the file), the same on every load and node.
        id = s.id or derived_id("service:" .. (s.name or ("#" .. i))), tags = s.tags,
        name = s.name, protocol = s.protocol, host = s.host, port = s.port, path = s.path,
        retries = s.retries, retry_on = s.retry_on, retry_budget = s.retry_budget,
        connect_timeout = s.connect_timeout,
        write_timeout = s.write_timeout, read_timeout = s.read_timeout,
        where = r.where(copy_keys(keys, host_key)), enabled = s.enabled,
      }
      local u = s.host and upstream_by_name[str_lower(s.host)]
      if u then
        entry.upstream = u.index
      end
      services[i] = entry
      if s.name and not service_by_name[str_lower(s.name)] then
        service_by_name[str_lower(s.name)] = entry
      end
      if s.id then
        service_by_id[s.id] = entry
      end
      if s.enabled ~= false then
        out.services[#out.services + 1] = entry
        entry.index = #out.services
      end
    end
  end

  -- Consumers: unique ids, usernames and custom ids; credentials kept as
  -- written (nested ones, then top-level ones naming their consumer).
  local consumer_by_id, consumer_by_username, consumer_by_custom_id = {}, {}, {}
  local consumers = {}
  -- Credentials in file order, nested ones first: { kind =, cred =, consumer =, keys = }.
  local pending = {}
  local function claim(index, key, entry, keys, field, what)
    if key == nil then
      return true
    end
    local first = index[key]
    if first then
      r.add(copy_keys(keys, field), "duplicate consumer " .. what .. " " .. quote(key)
        .. " (also " .. r.describe(first.keys) .. ")")
      return false
    end
    index[key] = { entry = entry, keys = keys }
    return true
  end
  for i, c in ipairs(doc.consumers or {}) do
    if c and (c.username or c.custom_id) then
      local keys = { "consumers", i }
      local entry = {
        id = c.id or consumer_id(c.username, c.custom_id),
        username = c.username, custom_id = c.custom_id, tags = c.tags,
        created_at = c.created_at, updated_at = c.updated_at,
        where = r.where(keys),
      }
      for _, name in ipairs(CREDENTIALS) do
        entry[name] = {}
        for j, cred in ipairs(c[name] or {}) do
          if cred then
            pending[#pending + 1] = { kind = name, cred = cred, consumer = entry,
                                      keys = { "consumers", i, name, j } }
          end
        end
      end
      -- A derived id repeats exactly when the username (or custom_id) does:
      -- that one error is enough.
      if claim(consumer_by_username, c.username, entry, keys, "username", "username")
          and claim(consumer_by_custom_id, c.custom_id, entry, keys, "custom_id", "custom_id")
          and claim(consumer_by_id, entry.id, entry, keys, "id", "id") then
        out.consumers[#out.consumers + 1] = entry
        entry.index = #out.consumers
        consumers[i] = entry
      end
    end
  end

  -- Returns the consumer a reference names (a username or an id, or a
  -- mapping with one of them), or nil and what it named.
  local function find_consumer(ref)
    local hit
    if type(ref) == "string" then
      hit = consumer_by_id[ref] or consumer_by_username[ref]
    elseif ref.username then
      hit, ref = consumer_by_username[ref.username], ref.username
    else
      hit, ref = consumer_by_id[ref.id], ref.id
    end
    return hit and hit.entry, ref
  end

  for _, name in ipairs(CREDENTIALS) do
    for i, cred in ipairs(doc[name] or {}) do
      if type(cred) == "table" and cred.consumer ~= nil and cred.consumer ~= NULL then
        local entry, ref = find_consumer(cred.consumer)
        if entry then
          pending[#pending + 1] = { kind = name, cred = cred, consumer = entry, keys = { name, i } }
        else
          r.add({ name, i, "consumer" }, "no consumer with username or id " .. quote(ref))
        end
      end
    end
  end

  -- Plugins: each instance validated against its plugin's schema; scopes
  -- are resolved to route, service and consumer indexes once routes are
  -- ordered. An instance names the scopes it is not nested in (route:,
  -- service:, consumer:); one whose reference is unknown is left out.
  plugins.set_paths(type(server) == "table" and server.plugin_paths or nil)
  compile_credentials(r, pending, out)
  local instances = {}
  local route_by_name, route_by_id = {}, {}
  local function resolve_scope(p, pkeys, scope)
    local ok, ref = true
    if scope.service == nil and p.service ~= nil and p.service ~= NULL then
      scope.service, ref = find_ref(p.service, service_by_name, service_by_id)
      if not scope.service then
        r.add(copy_keys(pkeys, "service"), "no service named " .. quote(ref))
        ok = false
      end
    end
    if scope.route == nil and p.route ~= nil and p.route ~= NULL then
      scope.route, ref = find_ref(p.route, route_by_name, route_by_id)
      if not scope.route then
        r.add(copy_keys(pkeys, "route"), "no route named " .. quote(ref))
        ok = false
      end
    end
    if scope.consumer == nil and p.consumer ~= nil and p.consumer ~= NULL then
      scope.consumer, ref = find_consumer(p.consumer)
      if not scope.consumer then
        r.add(copy_keys(pkeys, "consumer"), "no consumer with username or id " .. quote(ref))
        ok = false
      end
    end
    return ok
  end
  -- exact_keys: the place of a single top-level instance (list holds just it).
  local function add_plugins(list, keys, service, route, exact_keys, consumer)
    for j, p in ipairs(list or {}) do
      local pkeys = p and (exact_keys or copy_keys(keys, "plugins", j))
      local scope = { service = service, route = route, consumer = consumer }
      if p and p.name and resolve_scope(p, pkeys, scope) then
        local plugin, err = plugins.load(p.name)
        if not plugin then
          r.add(copy_keys(pkeys, "name"), err)
        else
          local conf = p.config
          if conf == nil or conf == NULL then
            conf = {}
          end
          local ok, valid, errors = pcall(schema.validate, plugin.schema, conf,
            schema.path_of(copy_keys(pkeys, "config")), copy_keys(pkeys, "config"))
          if not ok then
            r.add(copy_keys(pkeys, "name"), "plugin '" .. p.name .. "' has an invalid schema: "
              .. tostring(valid))
          else
            for _, e in ipairs(errors or {}) do
              r.add(e.keys, e.message, e.path)
            end
            if valid and p.enabled ~= false then
              instances[#instances + 1] = { name = p.name, config = valid, priority = p.priority,
                                            service = scope.service, route = scope.route,
                                            consumer = scope.consumer, keys = pkeys }
            end
          end
        end
      end
    end
  end

  -- Routes: nested ones, then top-level ones, ordered by line in the end.
  local routes, route_names = {}, {}
  local function add_route(route, keys, service)
    unique(r, route_names, route.name, keys, "route")
    if service and service.enabled ~= false then
      local c = compile_route(r, route, keys, doc._format_version)
      c.service = service.index
      routes[#routes + 1] = { route = c, line = line_of(r.doc, r.lines, keys) or math_huge,
                              seq = #routes + 1 }
      if route.name and not route_by_name[str_lower(route.name)] then
        route_by_name[str_lower(route.name)] = c
      end
      if route.id then
        route_by_id[route.id] = c
      end
      add_plugins(route.plugins, keys, nil, c)
    end
  end
  for i, s in ipairs(doc.services or {}) do
    if s then
      for j, route in ipairs(s.routes or {}) do
        if route then
          add_route(route, { "services", i, "routes", j }, services[i])
        end
      end
    end
  end
  for i, route in ipairs(doc.routes or {}) do
    if route then
      local keys = { "routes", i }
      local raw = type(r.doc.routes) == "table" and r.doc.routes[i]
      if route.service == nil then
        if type(raw) ~= "table" or raw.service == nil or raw.service == NULL then
          r.add(keys, "a top-level route needs 'service: NAME' (or nest it under its service)")
        end
        add_route(route, keys, nil)
      else
        local service, ref = find_ref(route.service, service_by_name, service_by_id)
        if not service then
          r.add(copy_keys(keys, "service"), "no service named " .. quote(ref))
        end
        add_route(route, keys, service)
      end
    end
  end
  tbl_sort(routes, function(a, b)
    if a.line ~= b.line then
      return a.line < b.line
    end
    return a.seq < b.seq
  end)
  for i, x in ipairs(routes) do
    out.routes[i] = x.route
    x.route.index = i
  end

  for i, s in ipairs(doc.services or {}) do
    if s and services[i] and services[i].enabled ~= false then
      add_plugins(s.plugins, { "services", i }, services[i], nil)
    end
  end
  for i, c in ipairs(doc.consumers or {}) do
    if c and consumers[i] then
      add_plugins(c.plugins, { "consumers", i }, nil, nil, nil, consumers[i])
    end
  end
  for i, p in ipairs(doc.plugins or {}) do
    if p then
      add_plugins({ p }, nil, nil, nil, { "plugins", i })
    end
  end

  -- One instance per plugin name and scope.
  out.plugins = {}
  local seen = {}
  for _, inst in ipairs(instances) do
    local scope = (inst.route and ("r" .. inst.route.index) or "")
      .. (inst.service and ("s" .. tostring(inst.service.index)) or "")
      .. (inst.consumer and ("c" .. inst.consumer.index) or "")
    local id = inst.name .. "|" .. scope
    if seen[id] then
      r.add(copy_keys(inst.keys, "name"), "plugin " .. quote(inst.name)
        .. " is configured twice for the same scope (also " .. r.describe(seen[id]) .. ")")
    else
      seen[id] = inst.keys
      out.plugins[#out.plugins + 1] = {
        name = inst.name, config = inst.config, priority = inst.priority,
        route = inst.route and inst.route.index or nil,
        service = inst.service and inst.service.index or nil,
        consumer = inst.consumer and inst.consumer.index or nil,
        where = r.where(inst.keys),
      }
    end
  end

  -- Dicts a plugin in use declares (handler.SHARED_DICTS = { name = bytes },
  -- or a function of the instance's config returning one: a dict the config
  -- names), unless server.shared_dicts names them already: the user's size wins.
  if type(server) == "table" and type(server.shared_dicts) == "table" then
    local have, added = {}, false
    for _, d in ipairs(server.shared_dicts) do
      have[d.name] = true
    end
    for _, p in ipairs(out.plugins) do
      local plugin = plugins.load(p.name)
      local wanted = plugin and plugin.handler.SHARED_DICTS
      if type(wanted) == "function" then
        wanted = wanted(p.config)
      end
      for name, size in pairs(type(wanted) == "table" and wanted or {}) do
        if not have[name] then
          have[name], added = true, true
          server.shared_dicts[#server.shared_dicts + 1] = { name = name, size = size }
        end
      end
    end
    if added then
      tbl_sort(server.shared_dicts, function(a, b) return a.name < b.name end)
    end
  end

  for _, u in ipairs(out.upstreams) do
    u.keys, u.seen, u.index = nil, nil, nil
  end
  for _, s in ipairs(out.services) do
    s.enabled, s.index = nil, nil
  end
  for _, c in ipairs(out.consumers) do
    c.index = nil
  end
  return out
end

-- Validates a document (as the YAML loader returns it, or a plain table) and
-- returns the normalized config, or nil, the errors as text (one per line,
-- "FILE:LINE: PATH: MESSAGE\n") and the errors as a list ({ path, message,
-- line, keys }). lines is the loader's line table (nil for plain tables:
-- messages then carry no line); file names the file in messages.
function _M.validate(doc, lines, file)
  file = file or "<config>"
  local r = new_report(doc, lines, file)
  if doc == nil or doc == NULL then
    r.add({}, "the file is empty: it needs at least _format_version: \"3.0\"")
    return nil, r.text(), r.errors
  end
  if type(doc) ~= "table" or (doc[1] ~= nil) then
    r.add({}, "expected a mapping at the top level, got " .. describe(doc))
    return nil, r.text(), r.errors
  end

  local valid, errors, partial = schema.validate(document_schema, doc, "")
  for _, e in ipairs(errors or {}) do
    local message = e.message
    if e.path == "_format_version" and type(doc._format_version) == "number" then
      message = message .. " (quote it: _format_version: \"3.0\")"
    end
    r.add(e.keys, message, e.path)
  end
  local out = compile(r, valid or partial or {}, file)
  if #r.errors > 0 then
    return nil, r.text(), r.errors
  end
  return out
end

-- Reads and validates the YAML file at path; returns as validate, or nil and
-- the loader's error.
function _M.load(path)
  local doc, lines = yaml.load_file(path)
  if doc == nil then
    return nil, lines .. "\n", { { message = lines } }
  end
  return _M.validate(doc, lines, path)
end

-- Validates YAML text; name stands for the file in messages. For specs and
-- tools.
function _M.load_string(s, name)
  local doc, lines = yaml.load_string(s, name or "<string>")
  if doc == nil then
    return nil, lines .. "\n", { { message = lines } }
  end
  return _M.validate(doc, lines, name or "<string>")
end

_M.parse_url = parse_url
_M.parse_listen = parse_listen
_M.parse_cidr = parse_cidr
_M.is_ipv6 = is_ipv6

return _M
