-- password.lua: basic-auth's stored password formats, hashing at load, and checks per request.
--
-- A stored password is one of:
--   $pbkdf2-sha256$i=ITERATIONS$SALT$HASH   PBKDF2-HMAC-SHA256 (also -sha1, -sha512), in
--                                           the PHC string format: SALT and HASH in
--                                           standard base64 without padding
--   40 lower-case hex digits                Kong's hash: sha1(password .. consumer id)
-- Anything else in a config is a plain password, which normalize hashes
-- once, at load, with a random salt and ITERATIONS rounds.
--
-- Checking a password costs a full PBKDF2 (tens of ms, on the event loop),
-- so each worker remembers the outcome of the last checks, keyed by an HMAC
-- (with a per-worker random key) of what the client sent: see check.
local crypto = require("sluice.crypto")

local tonumber = tonumber
local type = type
local setmetatable = setmetatable
local str_find = string.find
local str_match = string.match
local str_rep = string.rep

local _M = {}

-- Rounds for passwords hashed at load, and the range a pre-hashed one may use.
_M.ITERATIONS = 100000
local MIN_ITERATIONS = 1000
local MAX_ITERATIONS = 10000000
local SALT_BYTES = 16
local HASH_BYTES = 32
local ALGS = { sha1 = true, sha256 = true, sha512 = true }

-- The outcomes each worker remembers: up to 2 * CACHE_SIZE of each kind.
local CACHE_SIZE = 4096

local function b64(s)
  return (str_match(crypto.base64_encode(s), "^[^=]*"))
end

local function unb64(s)
  if not str_find(s, "^[A-Za-z0-9+/]*$") then
    return nil
  end
  return crypto.base64_decode(s .. str_rep("=", (4 - #s % 4) % 4))
end

-- The parts of a stored password: { alg =, iterations =, salt =, hash = }
-- for PBKDF2, { sha1 = hex } for Kong's hash; nil and why for a malformed
-- $pbkdf2- string; nil for anything else (a plain password).
function _M.parse(stored)
  if type(stored) ~= "string" then
    return nil
  end
  if #stored == 40 and str_find(stored, "^[0-9a-f]+$") then
    return { sha1 = stored }
  end
  if not str_find(stored, "^%$pbkdf2%-") then
    return nil
  end
  local alg, iter, salt, hash = str_match(stored, "^%$pbkdf2%-(%w+)%$i=(%d+)%$([^$]*)%$([^$]*)$")
  if not alg then
    return nil, "a password starting with $pbkdf2- must be $pbkdf2-sha256$i=ITERATIONS$SALT$HASH"
  end
  if not ALGS[alg] then
    return nil, "unsupported PBKDF2 digest '" .. alg .. "' (sha1, sha256 or sha512)"
  end
  iter = tonumber(iter)
  if iter < MIN_ITERATIONS or iter > MAX_ITERATIONS then
    return nil, "PBKDF2 iterations must be from " .. MIN_ITERATIONS .. " to " .. MAX_ITERATIONS
  end
  salt, hash = unb64(salt), unb64(hash)
  if not salt or #salt < 8 then
    return nil, "the PBKDF2 salt must be at least 8 bytes of unpadded standard base64"
  end
  if not hash or #hash < 16 or #hash > 64 then
    return nil, "the PBKDF2 hash must be 16 to 64 bytes of unpadded standard base64"
  end
  return { alg = alg, iterations = iter, salt = salt, hash = hash }
end

-- A plain password as this module stores it: PBKDF2-HMAC-SHA256 with a new
-- random salt.
function _M.hash(plain, iterations)
  iterations = iterations or _M.ITERATIONS
  local salt = crypto.random_bytes(SALT_BYTES)
  local hash = assert(crypto.pbkdf2("sha256", plain, salt, iterations, HASH_BYTES))
  return "$pbkdf2-sha256$i=" .. iterations .. "$" .. b64(salt) .. "$" .. b64(hash)
end

-- What a configured password is stored as: a hash kept as it is, a plain
-- password hashed. nil, err for a malformed $pbkdf2- string.
function _M.normalize(password)
  local parsed, err = _M.parse(password)
  if parsed then
    return password
  end
  if err then
    return nil, err
  end
  return _M.hash(password)
end

-- parsed_of[cred] = parse(cred.password), or false: parsed once per worker.
local parsed_of = setmetatable({}, { __mode = "k" })

-- Whether password is the one stored in cred.password (Kong's hashes are
-- salted with cred.consumer.id). The comparison is constant-time, and the
-- PBKDF2 before it takes as long for every password.
function _M.matches(cred, password)
  local p = parsed_of[cred]
  if p == nil then
    p = _M.parse(cred.password) or false
    parsed_of[cred] = p
  end
  if not p then
    return false
  end
  if p.sha1 then
    local mine = crypto.hex(crypto.sha1(password .. cred.consumer.id))
    return crypto.constant_time_equals(mine, p.sha1)
  end
  local derived = crypto.pbkdf2(p.alg, password, p.salt, p.iterations, #p.hash)
  return derived ~= nil and crypto.constant_time_equals(derived, p.hash)
end

-- Two generations of a bounded map: a full current generation becomes the
-- old one (dropping the previous old one); a hit in the old one moves the
-- entry back. No allocation but the new generation's table.
local function new_cache()
  return { cur = {}, old = {}, n = 0 }
end

local function cache_get(c, k)
  local v = c.cur[k]
  if v == nil then
    v = c.old[k]
    if v ~= nil then
      c.old[k] = nil
      if c.n >= CACHE_SIZE then
        c.old, c.cur, c.n = c.cur, {}, 0
      end
      c.cur[k] = v
      c.n = c.n + 1
    end
  end
  return v
end

local function cache_set(c, k, v)
  if c.cur[k] == nil then
    if c.n >= CACHE_SIZE then
      c.old, c.cur, c.n = c.cur, {}, 0
    end
    c.n = c.n + 1
  end
  c.cur[k] = v
end

-- Per worker: good[mac] = cred for a user:pass that matched cred, bad[mac] =
-- cred for one that did not. An entry counts only while it names the very
-- credential select_by_username returns, so a reload (new credentials)
-- forgets them all.
local good, bad = new_cache(), new_cache()
local mac_key = crypto.random_bytes(32)

-- Whether userpass ("user:pass" as the client sent it, decoded) has cred's
-- password. The first check of a user:pass in a worker costs a PBKDF2; the
-- ones after it an HMAC-SHA256 and a table lookup, right or wrong. The cache
-- keys are HMACs so that no password stays in memory as a table key.
function _M.check(cred, userpass, password)
  local mac = crypto.hmac("sha256", mac_key, userpass)
  if cache_get(good, mac) == cred then
    return true
  end
  if cache_get(bad, mac) == cred then
    return false
  end
  local ok = _M.matches(cred, password)
  cache_set(ok and good or bad, mac, cred)
  return ok
end

-- For the specs: forget every outcome.
function _M._reset()
  good, bad = new_cache(), new_cache()
end

return _M
