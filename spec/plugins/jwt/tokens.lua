-- tokens.lua: what the jwt specs sign tokens with: the fixture keys and a JWT encoder.
--
-- Keys are spec/pdk/fixtures/crypto's (made by its make.sh), and their JWKs
-- spec/pdk/fixtures/jwk/jwks.json; nothing here runs the openssl CLI.
local crypto = require("sluice.crypto")
local cjson = require("cjson")

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)spec/plugins/jwt/[^/]+$") or "./"
local CRYPTO = ROOT .. "spec/pdk/fixtures/crypto/"

local _M = {}

function _M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- name -> PEM text: rsa, p256, p384, p521, ed25519, ed448, rsa-pss (private);
-- NAME.pub for the public ones.
_M.pem = setmetatable({}, { __index = function(t, name)
  local v = _M.read(CRYPTO .. name .. ".pem")
  rawset(t, name, v)
  return v
end })

_M.jwk = cjson.decode(_M.read(ROOT .. "spec/pdk/fixtures/jwk/jwks.json"))

local HMAC = { HS256 = "sha256", HS384 = "sha384", HS512 = "sha512" }

local function b64(s)
  return crypto.base64url_encode(s)
end

-- A compact JWS of claims (a table or a raw string), signed with alg by key
-- (an HMAC secret, or a private key PEM). header: the header table (default
-- { typ = "JWT", alg = alg }) or a raw string.
function _M.encode(claims, alg, key, header)
  header = header or { typ = "JWT", alg = alg }
  local h = type(header) == "string" and header or cjson.encode(header)
  local c = type(claims) == "string" and claims or cjson.encode(claims)
  local input = b64(h) .. "." .. b64(c)
  local sig
  if HMAC[alg] then
    sig = assert(crypto.hmac(HMAC[alg], key, input))
  elseif alg == "none" then
    sig = ""
  else
    sig = assert(crypto.sign(alg, key, input))
  end
  return input .. "." .. b64(sig)
end

-- A JSON Web Key Set body of the fixture JWKs: list of { name, kid, alg }.
function _M.jwks(list)
  local keys = {}
  for i, k in ipairs(list) do
    local jwk = {}
    for f, v in pairs(_M.jwk[k[1]]) do
      jwk[f] = v
    end
    jwk.kid, jwk.alg, jwk.use = k.kid, k.alg, k.use
    keys[i] = jwk
  end
  return cjson.encode({ keys = keys })
end

-- A JWKS endpoint: nginx answering GET /keys with the file set() last wrote
-- (a 503 while there is none), so a spec can rotate keys or take the issuer
-- down. Returns { url =, set = fn(body or nil), hits = fn() -> requests so far }.
function _M.jwks_server()
  local helpers = require("sluice.test.helpers")
  local dir = helpers.tmpdir()
  local file = dir .. "/keys.json"
  local u = helpers.start_upstream({ locations = string.format([[
    location = /keys {
      content_by_lua_block {
        local f = io.open("%s", "rb")
        if not f then
          ngx.status = 503
          ngx.say("down")
          return
        end
        local body = f:read("*a")
        f:close()
        ngx.header["Content-Type"] = "application/json"
        ngx.print(body)
      }
    }]], file) })
  local server = { url = "http://127.0.0.1:" .. u.port .. "/keys", upstream = u }
  function server.set(body)
    if body then
      helpers.write_file(file, body)
    else
      os.remove(file)
    end
  end
  function server.hits()
    local n = 0
    for _, line in ipairs(helpers.upstream_requests(u)) do
      if line:find("GET /keys", 1, true) then
        n = n + 1
      end
    end
    return n
  end
  return server
end

return _M
