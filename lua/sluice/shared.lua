-- shared.lua: shared dicts: `require("sluice.shared").NAME` is server.shared_dicts' dict NAME.
--
-- A shared dict is a key-value store in shared memory that every worker sees
-- (core/shdict.c). Semantics follow OpenResty's ngx.shared.DICT; the
-- differences are listed in docs/shared-dicts.md. Methods are called with ':'.
--
-- Errors follow STYLE.md: a wrong argument raises "bad argument #N to 'fn'
-- (...)" (the key is #1); a failure the caller cannot rule out in advance (a
-- full dict, a missing key, an empty key built from input) returns nil and a
-- message.
--
-- Reused state: the out-params (sluice.ffi's, plus three of types it has
-- none of) and the value buffer are allocated once per Lua state and shared
-- by every dict. That is safe because no method yields between filling them
-- and reading them back.
--
-- Argument errors are raised in the method itself, in a helper it calls
-- directly, or in store(), which the methods tail-call (`return store(...)`),
-- so error level 2 or 3 always points at the caller's line.

local ffi = require("ffi")
local base = require("sluice.ffi")
local new_tab = require("table.new")

local error = error
local pcall = pcall
local rawset = rawset
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type
local fmt = string.format
local ffi_cast = ffi.cast
local ffi_new = ffi.new
local ffi_string = ffi.string

-- A verbatim copy of the shdict block of core/sl_ffi.h (a spec compares them).
local CDEF = [[
/* BEGIN shdict */
/* Shared dicts (core/shdict.c; Lua: lua/sluice/shared.lua). Keys are 1 to
 * 65535 bytes of anything; a key outside that fails with "empty key" or "key
 * too long". Expired entries are invisible except to a stale get. Every call
 * takes the dict's process-shared lock for its duration and never blocks on
 * anything else. */
typedef struct sl_shdict_s sl_shdict_t;

/* Value types. Booleans travel as num 0 or 1. */
enum { SL_SHDICT_NIL = 0, SL_SHDICT_BOOLEAN = 1, SL_SHDICT_NUMBER = 3, SL_SHDICT_STRING = 4 };

/* Store operations; SL_SHDICT_SAFE may be or-ed into any of them. */
enum { SL_SHDICT_SET = 0, SL_SHDICT_ADD = 1, SL_SHDICT_REPLACE = 2, SL_SHDICT_SAFE = 4 };

/* The dict configured as name[0..len): SL_OK with *dict, or SL_DECLINED. */
SL_EXPORT int sl_ffi_shdict_find(const char *name, size_t len, sl_shdict_t **dict);

/* Like find, but creates and registers a dict of `size` bytes when none has
 * that name (for specs: a dict created after the fork is private to the
 * process that created it). SL_OK, or SL_ERROR with *err. */
SL_EXPORT int sl_ffi_shdict_open(const char *name, size_t len, size_t size, sl_shdict_t **dict,
                                 const char **err);

/* Copies key's value into buf[0..cap): SL_OK with *type, *vlen (strings),
 * *num (numbers, booleans), *flags and *is_stale; SL_DECLINED when there is no
 * such key (or it expired and stale is 0); SL_AGAIN when a string value needs
 * more than cap bytes, with the size in *vlen (call again with a bigger buf);
 * SL_ERROR with *err. A fresh hit counts as a use for the LRU order. */
SL_EXPORT int sl_ffi_shdict_get(sl_shdict_t *dict, const char *key, size_t klen, int stale,
                                char *buf, size_t cap, int *type, size_t *vlen, double *num,
                                uint32_t *flags, int *is_stale, const char **err);

/* set, add or replace key (op, see above) with a value of `type` (str/slen
 * for strings, num otherwise), expiring after exptime seconds (0: never) and
 * carrying user flags. A NIL value deletes key (op SET only). SL_OK; or
 * SL_DECLINED with "exists" (ADD) or "not found" (REPLACE); or SL_ERROR with
 * "no memory" (SAFE, or a value bigger than the dict) or an argument error.
 * *forcible is 1 when unexpired entries were evicted to make room. */
SL_EXPORT int sl_ffi_shdict_store(sl_shdict_t *dict, int op, const char *key, size_t klen, int type,
                                  const char *str, size_t slen, double num, double exptime,
                                  uint32_t flags, int *forcible, const char **err);

/* Adds value to key's number, atomically, leaving its expiry and flags as
 * they are: SL_OK with *result. A missing or expired key fails with
 * SL_DECLINED "not found", unless has_init: then key is created as
 * init + value, expiring after init_ttl seconds (0: never). A key holding
 * another type fails with SL_DECLINED "not a number". */
SL_EXPORT int sl_ffi_shdict_incr(sl_shdict_t *dict, const char *key, size_t klen, double value,
                                 int has_init, double init, double init_ttl, double *result,
                                 int *forcible, const char **err);

/* Seconds until key expires (0: never) in *ttl, or SL_DECLINED "not found". */
SL_EXPORT int sl_ffi_shdict_ttl(sl_shdict_t *dict, const char *key, size_t klen, double *ttl,
                                const char **err);

/* Makes key expire exptime seconds from now (0: never), or SL_DECLINED "not found". */
SL_EXPORT int sl_ffi_shdict_expire(sl_shdict_t *dict, const char *key, size_t klen, double exptime,
                                   const char **err);

/* Writes up to max_count (0: all) unexpired keys, most recently used first,
 * into buf[0..cap) as a 2-byte little-endian length followed by the key's
 * bytes: SL_OK with *count keys in *len bytes, or SL_AGAIN with the bytes
 * needed in *len (call again with a bigger buf). Walks the whole dict under
 * its lock. */
SL_EXPORT int sl_ffi_shdict_get_keys(sl_shdict_t *dict, int max_count, char *buf, size_t cap,
                                     size_t *len, int *count, const char **err);

/* Frees up to max_count (0: all) expired entries, oldest first; *count says
 * how many. Walks the whole dict under its lock. */
SL_EXPORT int sl_ffi_shdict_flush_expired(sl_shdict_t *dict, int max_count, int *count,
                                          const char **err);

/* Marks every entry expired; flush_expired or later writes free their memory. */
SL_EXPORT int sl_ffi_shdict_flush_all(sl_shdict_t *dict, const char **err);

/* The dict's size in bytes and the bytes not held by entries. */
SL_EXPORT int sl_ffi_shdict_space(sl_shdict_t *dict, size_t *capacity, size_t *free_space,
                                  const char **err);
/* END shdict */
]]

-- Another module may already have declared the block in this Lua state.
if not pcall(ffi.typeof, "sl_shdict_t") then
  ffi.cdef((CDEF:gsub("SL_EXPORT ", "")))
end

local C = ffi.C

local OK = base.OK
local AGAIN = base.AGAIN
local DECLINED = base.DECLINED

local T_NIL = C.SL_SHDICT_NIL
local T_BOOLEAN = C.SL_SHDICT_BOOLEAN
local T_NUMBER = C.SL_SHDICT_NUMBER
local T_STRING = C.SL_SHDICT_STRING
local OP_SET = C.SL_SHDICT_SET
local OP_ADD = C.SL_SHDICT_ADD
local OP_REPLACE = C.SL_SHDICT_REPLACE
local OP_SAFE = C.SL_SHDICT_SAFE

local KEYS_DEFAULT = 1024
local MAX_FLAGS = 4294967295
local MAX_INT = 2147483647
-- Values and key lists are copied into one buffer, grown on demand; a buffer
-- grown past this size serves one call only instead of being kept.
local BUF_KEEP = 1024 * 1024

local u8_ptr = ffi.typeof("const uint8_t *")

local buf_size = 4096
local buf = ffi_new("char[?]", buf_size)

-- Out-params, named for what each call uses them for.
local err_out = base.err
local type_out = base.int1
local stale_out = base.int2
local forcible_out = base.int1
local count_out = base.int1
local len_out = base.len1
local capacity_out = base.len1
local free_out = base.len2
local dict_out = ffi_new("sl_shdict_t *[1]")
local num_out = ffi_new("double[1]")
local flags_out = ffi_new("uint32_t[1]")

-- Returns a buffer of at least n bytes.
local function buffer(n)
  if n <= buf_size then
    return buf
  end
  local b = ffi_new("char[?]", n)
  if n <= BUF_KEEP then
    buf, buf_size = b, n
  end
  return b
end

-- Argument checks; each raises at level 3: the helper, the method, its caller.

local function handle(self, method)
  local d = type(self) == "table" and self._dict
  if not d then
    error(fmt("calling '%s' on bad self (shared dict expected, got %s)", method, type(self)), 3)
  end
  return d
end

local function check_key(key, method)
  local t = type(key)
  if t == "string" then
    return key
  end
  if t == "number" then
    return tostring(key)
  end
  error(fmt("bad argument #1 to '%s' (string expected, got %s)", method, t), 3)
end

local function check_number(v, n, method)
  local x = tonumber(v)
  if x == nil then
    error(fmt("bad argument #%d to '%s' (number expected, got %s)", n, method, type(v)), 3)
  end
  return x
end

-- Seconds, 0 (or nil) for never.
local function check_exptime(v, n, method)
  if v == nil then
    return 0
  end
  local x = tonumber(v)
  if x == nil then
    error(fmt("bad argument #%d to '%s' (number expected, got %s)", n, method, type(v)), 3)
  end
  if x ~= x or x < 0 then
    error(fmt("bad argument #%d to '%s' (seconds must be >= 0)", n, method), 3)
  end
  return x
end

local function check_count(v, n, method, default)
  if v == nil then
    return default
  end
  local x = tonumber(v)
  if x == nil then
    error(fmt("bad argument #%d to '%s' (number expected, got %s)", n, method, type(v)), 3)
  end
  if x < 0 or x % 1 ~= 0 then
    error(fmt("bad argument #%d to '%s' (count must be an integer >= 0)", n, method), 3)
  end
  return x > MAX_INT and 0 or x
end

-- Copies key's value out of the dict; returns it, or nil and the status code.
local function fetch(d, key, stale)
  local b = buf
  local rc = C.sl_ffi_shdict_get(d, key, #key, stale, b, buf_size, type_out, len_out, num_out,
                                 flags_out, stale_out, err_out)
  while rc == AGAIN do
    -- The value is bigger than the buffer; it may have grown again by the next try.
    local n = tonumber(len_out[0])
    b = buffer(n)
    rc = C.sl_ffi_shdict_get(d, key, #key, stale, b, n, type_out, len_out, num_out, flags_out,
                             stale_out, err_out)
  end
  if rc ~= OK then
    return nil, rc
  end
  local t = type_out[0]
  if t == T_STRING then
    return ffi_string(b, len_out[0])
  end
  if t == T_NUMBER then
    return num_out[0]
  end
  return num_out[0] ~= 0
end

-- set, safe_set, add, safe_add, replace and delete.
local function store(self, method, op, key, value, exptime, flags)
  local d = handle(self, method)
  key = check_key(key, method)
  local vt, str, len, num = T_NIL, nil, 0, 0
  local t = type(value)
  if t == "string" then
    vt, str, len = T_STRING, value, #value
  elseif t == "number" then
    vt, num = T_NUMBER, value
  elseif t == "boolean" then
    vt, num = T_BOOLEAN, value and 1 or 0
  elseif t ~= "nil" then
    error(fmt("bad argument #2 to '%s' (string, number, boolean or nil expected, got %s)",
              method, t), 2)
  end
  exptime = check_exptime(exptime, 3, method)
  if flags == nil then
    flags = 0
  else
    flags = check_number(flags, 4, method)
    if flags < 0 or flags > MAX_FLAGS or flags % 1 ~= 0 then
      error(fmt("bad argument #4 to '%s' (flags must be an integer from 0 to %d)", method,
                MAX_FLAGS), 2)
    end
  end
  local rc = C.sl_ffi_shdict_store(d, op, key, #key, vt, str, len, num, exptime, flags,
                                   forcible_out, err_out)
  if rc == OK then
    return true, nil, forcible_out[0] == 1
  end
  return nil, ffi_string(err_out[0]), forcible_out[0] == 1
end

local methods = {}

-- value, flags = dict:get(key): nil when key is missing or expired; flags only when not 0.
function methods.get(self, key)
  local d = handle(self, "get")
  key = check_key(key, "get")
  local value, rc = fetch(d, key, 0)
  if value == nil then
    if rc == DECLINED then
      return nil
    end
    return nil, ffi_string(err_out[0])
  end
  local flags = flags_out[0]
  if flags ~= 0 then
    return value, flags
  end
  return value
end

-- value, flags, stale = dict:get_stale(key): like get, but an expired entry not yet
-- reclaimed is returned too, with stale = true.
function methods.get_stale(self, key)
  local d = handle(self, "get_stale")
  key = check_key(key, "get_stale")
  local value, rc = fetch(d, key, 1)
  if value == nil then
    if rc == DECLINED then
      return nil
    end
    return nil, ffi_string(err_out[0])
  end
  local flags = flags_out[0]
  return value, flags ~= 0 and flags or nil, stale_out[0] == 1
end

-- ok, err, forcible = dict:set(key, value, exptime?, flags?): stores value (nil deletes),
-- evicting least recently used entries when full (forcible = true if live ones went).
function methods.set(self, key, value, exptime, flags)
  return store(self, "set", OP_SET, key, value, exptime, flags)
end

-- Like set, but never evicts a live entry: nil, "no memory" when full.
function methods.safe_set(self, key, value, exptime, flags)
  return store(self, "safe_set", OP_SET + OP_SAFE, key, value, exptime, flags)
end

-- Like set, but nil, "exists" when key holds an unexpired value.
function methods.add(self, key, value, exptime, flags)
  return store(self, "add", OP_ADD, key, value, exptime, flags)
end

function methods.safe_add(self, key, value, exptime, flags)
  return store(self, "safe_add", OP_ADD + OP_SAFE, key, value, exptime, flags)
end

-- Like set, but nil, "not found" unless key holds an unexpired value.
function methods.replace(self, key, value, exptime, flags)
  return store(self, "replace", OP_REPLACE, key, value, exptime, flags)
end

-- true = dict:delete(key)
function methods.delete(self, key)
  return store(self, "delete", OP_SET, key, nil)
end

-- value, err, forcible = dict:incr(key, value, init?, init_ttl?): adds value atomically.
-- A missing key is nil, "not found", unless init is given: then it is created as
-- init + value, expiring after init_ttl seconds (nil or 0: never).
function methods.incr(self, key, value, init, init_ttl)
  local d = handle(self, "incr")
  key = check_key(key, "incr")
  value = check_number(value, 2, "incr")
  local has_init, ttl = 0, 0
  if init ~= nil then
    init = check_number(init, 3, "incr")
    has_init = 1
    ttl = check_exptime(init_ttl, 4, "incr")
  elseif init_ttl ~= nil then
    error("bad argument #4 to 'incr' (init_ttl needs init)", 2)
  else
    init = 0
  end
  local rc = C.sl_ffi_shdict_incr(d, key, #key, value, has_init, init, ttl, num_out, forcible_out,
                                  err_out)
  if rc == OK then
    return num_out[0], nil, forcible_out[0] == 1
  end
  return nil, ffi_string(err_out[0]), forcible_out[0] == 1
end

-- seconds = dict:ttl(key): time left (0: never expires), or nil, "not found".
function methods.ttl(self, key)
  local d = handle(self, "ttl")
  key = check_key(key, "ttl")
  local rc = C.sl_ffi_shdict_ttl(d, key, #key, num_out, err_out)
  if rc == OK then
    return num_out[0]
  end
  return nil, ffi_string(err_out[0])
end

-- true = dict:expire(key, exptime): key now expires exptime seconds from now (0: never),
-- or nil, "not found".
function methods.expire(self, key, exptime)
  local d = handle(self, "expire")
  key = check_key(key, "expire")
  if exptime == nil then
    error("bad argument #2 to 'expire' (number expected, got nil)", 2)
  end
  exptime = check_exptime(exptime, 2, "expire")
  local rc = C.sl_ffi_shdict_expire(d, key, #key, exptime, err_out)
  if rc == OK then
    return true
  end
  return nil, ffi_string(err_out[0])
end

-- keys = dict:get_keys(max_count?): up to max_count (default 1024, 0: all) unexpired keys,
-- most recently used first. Holds the dict's lock for a walk of all of it.
function methods.get_keys(self, max_count)
  local d = handle(self, "get_keys")
  local max = check_count(max_count, 1, "get_keys", KEYS_DEFAULT)
  local b, n = buf, buf_size
  local rc = C.sl_ffi_shdict_get_keys(d, max, b, n, len_out, count_out, err_out)
  while rc == AGAIN do
    n = tonumber(len_out[0])
    b = buffer(n)
    rc = C.sl_ffi_shdict_get_keys(d, max, b, n, len_out, count_out, err_out)
  end
  if rc ~= OK then
    return nil, ffi_string(err_out[0])
  end
  local count = count_out[0]
  local keys = new_tab(count, 0)
  local p = ffi_cast(u8_ptr, b)
  local pos = 0
  for i = 1, count do
    local klen = p[pos] + p[pos + 1] * 256
    keys[i] = ffi_string(p + pos + 2, klen)
    pos = pos + 2 + klen
  end
  return keys
end

-- count = dict:flush_expired(max_count?): frees up to max_count (default 0: all) expired
-- entries. Holds the dict's lock for a walk of all of it.
function methods.flush_expired(self, max_count)
  local d = handle(self, "flush_expired")
  local max = check_count(max_count, 1, "flush_expired", 0)
  local rc = C.sl_ffi_shdict_flush_expired(d, max, count_out, err_out)
  if rc ~= OK then
    return nil, ffi_string(err_out[0])
  end
  return count_out[0]
end

-- true = dict:flush_all(): every entry expires now (get_stale still sees them).
function methods.flush_all(self)
  local d = handle(self, "flush_all")
  local rc = C.sl_ffi_shdict_flush_all(d, err_out)
  if rc ~= OK then
    return nil, ffi_string(err_out[0])
  end
  return true
end

-- bytes = dict:capacity(): the size of the dict's shared memory.
function methods.capacity(self)
  local d = handle(self, "capacity")
  local rc = C.sl_ffi_shdict_space(d, capacity_out, free_out, err_out)
  if rc ~= OK then
    return nil, ffi_string(err_out[0])
  end
  return tonumber(capacity_out[0])
end

-- bytes = dict:free_space(): bytes not held by entries (expired ones hold theirs until
-- reclaimed).
function methods.free_space(self)
  local d = handle(self, "free_space")
  local rc = C.sl_ffi_shdict_space(d, capacity_out, free_out, err_out)
  if rc ~= OK then
    return nil, ffi_string(err_out[0])
  end
  return tonumber(free_out[0])
end

local mt = { __index = methods }

-- The module is the table of dicts by name, filled on first use:
-- { [name] = { _dict = sl_shdict_t *, name = name } }. A name that is not a
-- configured dict is nil, and is looked up again next time.
local _M = {}

setmetatable(_M, {
  __index = function(t, name)
    if type(name) ~= "string" or C.sl_ffi_shdict_find(name, #name, dict_out) ~= OK then
      return nil
    end
    local dict = setmetatable({ _dict = dict_out[0], name = name }, mt)
    rawset(t, name, dict)
    return dict
  end,
})

return _M
