-- jwt_verify.lua: what verifying one HS256 token costs (a benchmark, run with busted inside
-- sluice, so the plugin's real code and the real sluice.db run):
--
--   build/sluice test bench/jwt_verify.lua
--
-- It times N verifications of the same token through the functions the access handler
-- calls: decode (header from the cache), the credential lookup, the HMAC and its
-- comparison, and the exp/nbf checks. The target is <= 5 us per token.
local t = require("sluice.test")
local tokens = require("spec.plugins.jwt.tokens")

local N = 200000

describe("plugin: jwt (perf)", function()
  it("measures HS256 verification", function()
    local conf = { claims_to_verify = { "exp", "nbf" } }
    local p = t.plugin("jwt", conf, { consumers = { { username = "alice",
      jwt_secrets = { { key = "alice-iss", secret = "a-secret-of-32-bytes-for-hs256!!" } } } } })
    local handler = p.handler
    local token = require("sluice.plugins.jwt.token")
    local prepared = handler._prepare(p.config)
    local verify = handler._verify_with_credential
    local now = os.time()
    local jwt = tokens.encode({ iss = "alice-iss", sub = "1234567890", name = "Alice",
                                exp = now + 3600, nbf = now - 60, scope = "orders:read" },
                              "HS256", "a-secret-of-32-bytes-for-hs256!!")
    local dao = sluice.db.jwt_secrets
    local decode, check_claims = token.decode, token.check_claims

    local function run(n)
      local failures = 0
      for _ = 1, n do
        local header, claims, input, signature = decode(jwt)
        local cred = dao:select_by_key(claims.iss)
        if verify(prepared, cred, header.alg, input, signature)
            or check_claims(claims, prepared.claims, prepared.leeway, now) then
          failures = failures + 1
        end
      end
      return failures
    end

    assert.equal(0, run(1000)) -- warm up: JIT traces, header cache, HMAC context
    local start = os.clock()
    assert.equal(0, run(N))
    local us = (os.clock() - start) / N * 1e6
    print(string.format("\njwt HS256: %d verifications, %.2f us each (%d-byte token); "
      .. "target <= 5 us: %s", N, us, #jwt, us <= 5 and "met" or "missed"))
  end)
end)
