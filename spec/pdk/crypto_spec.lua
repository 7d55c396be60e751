-- crypto_spec.lua: sluice.crypto against published test vectors and the openssl CLI's output.
--
-- Keys and CLI signatures come from fixtures/crypto/ (made by fixtures/crypto/make.sh and
-- committed). Digests follow FIPS 180-4's examples, HMAC RFC 4231 and RFC 2202, base64
-- RFC 4648.
local crypto = require("sluice.crypto")
local ffi = require("ffi")

local FIXTURES = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "fixtures/crypto/"

local function fixture(name)
  local f = assert(io.open(FIXTURES .. name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Flips the lowest bit of byte i (negative i counts from the end).
local function flip(s, i)
  if i < 0 then
    i = #s + 1 + i
  end
  return s:sub(1, i - 1) .. string.char(bit.bxor(s:byte(i), 1)) .. s:sub(i + 1)
end

-- Declarations this spec adds only to look at OpenSSL's error queue.
ffi.cdef([[
unsigned long ERR_peek_error(void);
]])
local libcrypto = ffi.load("libcrypto.so.3")

local function assert_error_queue_empty()
  assert.equal(0, tonumber(libcrypto.ERR_peek_error()))
end

local DATA = fixture("data.txt")

-- alg -> { private key fixture, public key fixture }.
local KEYS = {
  RS256 = { "rsa.pem", "rsa.pub.pem" },
  RS384 = { "rsa.pem", "rsa.pub.pem" },
  RS512 = { "rsa.pem", "rsa.pub.pem" },
  PS256 = { "rsa.pem", "rsa.pub.pem" },
  PS384 = { "rsa.pem", "rsa.pub.pem" },
  PS512 = { "rsa.pem", "rsa.pub.pem" },
  ES256 = { "p256.pem", "p256.pub.pem" },
  ES384 = { "p384.pem", "p384.pub.pem" },
  ES512 = { "p521.pem", "p521.pub.pem" },
  EdDSA = { "ed25519.pem", "ed25519.pub.pem" },
}
local ALGS = { "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
               "EdDSA" }

-- alg -> the CLI's signature over DATA.
local CLI_SIGNATURES = {
  RS256 = "rs256.sig", RS384 = "rs384.sig", RS512 = "rs512.sig",
  PS256 = "ps256.sig", PS384 = "ps384.sig", PS512 = "ps512.sig",
  ES256 = "es256.sig", ES384 = "es384.sig", ES512 = "es512.sig",
  EdDSA = "eddsa-ed25519.sig",
}

describe("sluice.crypto", function()
  describe("digests", function()
    local ABC = "abc"
    local TWO_BLOCKS = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
    local TWO_BLOCKS_512 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
      .. "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"

    it("sha1 matches FIPS 180", function()
      assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", crypto.hex(crypto.sha1(ABC)))
      assert.equal("da39a3ee5e6b4b0d3255bfef95601890afd80709", crypto.hex(crypto.sha1("")))
      assert.equal("84983e441c3bd26ebaae4aa1f95129e5e54670f1",
                   crypto.hex(crypto.sha1(TWO_BLOCKS)))
    end)

    it("sha256 matches FIPS 180", function()
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                   crypto.hex(crypto.sha256(ABC)))
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                   crypto.hex(crypto.sha256("")))
      assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                   crypto.hex(crypto.sha256(TWO_BLOCKS)))
      assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
                   crypto.hex(crypto.sha256(string.rep("a", 1000000))))
    end)

    it("sha384 matches FIPS 180", function()
      assert.equal("cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
                   .. "8086072ba1e7cc2358baeca134c825a7", crypto.hex(crypto.sha384(ABC)))
      assert.equal("38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da"
                   .. "274edebfe76f65fbd51ad2f14898b95b", crypto.hex(crypto.sha384("")))
      assert.equal("09330c33f71147e83d192fc782cd1b4753111b173b3b05d22fa08086e3b0f712"
                   .. "fcc7c71a557e2db966c3e9fa91746039",
                   crypto.hex(crypto.sha384(TWO_BLOCKS_512)))
    end)

    it("sha512 matches FIPS 180", function()
      assert.equal("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                   .. "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
                   crypto.hex(crypto.sha512(ABC)))
      assert.equal("cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
                   .. "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
                   crypto.hex(crypto.sha512("")))
      assert.equal("8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
                   .. "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909",
                   crypto.hex(crypto.sha512(TWO_BLOCKS_512)))
    end)

    it("returns raw bytes of the digest's size", function()
      assert.equal(20, #crypto.sha1("x"))
      assert.equal(32, #crypto.sha256("x"))
      assert.equal(48, #crypto.sha384("x"))
      assert.equal(64, #crypto.sha512("x"))
    end)

    it("digest(alg, s) covers every digest, md5 included (RFC 1321)", function()
      for _, alg in ipairs({ "sha1", "sha256", "sha384", "sha512" }) do
        assert.equal(crypto[alg](TWO_BLOCKS), crypto.digest(alg, TWO_BLOCKS))
      end
      assert.equal("900150983cd24fb0d6963f7d28e17f72", crypto.hex(crypto.digest("md5", ABC)))
      assert.equal("d41d8cd98f00b204e9800998ecf8427e", crypto.hex(crypto.digest("md5", "")))
    end)

    it("digest rejects an unknown algorithm with nil, err", function()
      local d, err = crypto.digest("sha3", "abc")
      assert.is_nil(d)
      assert.equal("unsupported digest: sha3", err)
    end)

    it("hashes inputs with embedded zero bytes whole", function()
      assert.not_equal(crypto.sha256("a\0b"), crypto.sha256("a\0c"))
      assert.not_equal(crypto.sha256("a"), crypto.sha256("a\0"))
    end)
  end)

  describe("hex", function()
    it("encodes every byte in lower case", function()
      assert.equal("", crypto.hex(""))
      assert.equal("00ff7f80", crypto.hex("\0\255\127\128"))
      local all = {}
      for b = 0, 255 do
        all[#all + 1] = string.char(b)
      end
      local h = crypto.hex(table.concat(all))
      assert.equal(512, #h)
      assert.equal(table.concat(all), unhex(h))
      assert.is_nil(h:find("[^0-9a-f]"))
    end)

    it("handles inputs larger than its scratch buffer", function()
      local s = string.rep("\171", 100000)
      assert.equal(string.rep("ab", 100000), crypto.hex(s))
    end)
  end)

  describe("hmac", function()
    local KEY_20 = string.rep("\11", 20)
    local KEY_AA_20 = string.rep("\170", 20)
    local KEY_131 = string.rep("\170", 131)
    local DATA_DD = string.rep("\221", 50)
    local KEY_25 = unhex("0102030405060708090a0b0c0d0e0f10111213141516171819")
    local DATA_CD = string.rep("\205", 50)
    local LARGE_KEY = "Test Using Larger Than Block-Size Key - Hash Key First"
    local LARGE_BOTH = "This is a test using a larger than block-size key and a larger than "
      .. "block-size data. The key needs to be hashed before being used by the HMAC algorithm."

    -- RFC 4231 test cases 1-4, 6 and 7 (5 truncates the output).
    local CASES = {
      { KEY_20, "Hi There",
        sha256 = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        sha384 = "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
          .. "faea9ea9076ede7f4af152e8b2fa9cb6",
        sha512 = "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
          .. "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854" },
      { "Jefe", "what do ya want for nothing?",
        sha256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        sha384 = "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
          .. "8e2240ca5e69e2c78b3239ecfab21649",
        sha512 = "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
          .. "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737" },
      { KEY_AA_20, DATA_DD,
        sha256 = "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        sha384 = "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b"
          .. "2a5ab39dc13814b94e3ab6e101a34f27",
        sha512 = "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
          .. "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb" },
      { KEY_25, DATA_CD,
        sha256 = "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        sha384 = "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e"
          .. "6801dd23c4a7d679ccf8a386c674cffb",
        sha512 = "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
          .. "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd" },
      { KEY_131, LARGE_KEY,
        sha256 = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        sha384 = "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6"
          .. "0c2ef6ab4030fe8296248df163f44952",
        sha512 = "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
          .. "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598" },
      { KEY_131, LARGE_BOTH,
        sha256 = "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        sha384 = "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5"
          .. "a678cc31e799176d3860e6110c46523e",
        sha512 = "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
          .. "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58" },
    }

    for i, case in ipairs(CASES) do
      it("matches RFC 4231 test case " .. (i <= 4 and i or i + 1), function()
        for _, alg in ipairs({ "sha256", "sha384", "sha512" }) do
          assert.equal(case[alg], crypto.hex(crypto.hmac(alg, case[1], case[2])))
        end
      end)
    end

    it("matches RFC 2202 for sha1 and md5", function()
      assert.equal("b617318655057264e28bc0b6fb378c8ef146be00",
                   crypto.hex(crypto.hmac("sha1", KEY_20, "Hi There")))
      assert.equal("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
                   crypto.hex(crypto.hmac("sha1", "Jefe", "what do ya want for nothing?")))
      assert.equal("750c783e6ab0b503eaa86e310a5db738",
                   crypto.hex(crypto.hmac("md5", "Jefe", "what do ya want for nothing?")))
    end)

    it("uses an empty key as empty, not as the previous call's key", function()
      crypto.hmac("sha256", "Jefe", "x")
      assert.equal("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
                   crypto.hex(crypto.hmac("sha256", "", "")))
    end)

    it("keeps calls with different digests and keys apart", function()
      local a = crypto.hmac("sha256", "k1", "data")
      local b = crypto.hmac("sha512", "k1", "data")
      local c = crypto.hmac("sha256", "k2", "data")
      assert.equal(32, #a)
      assert.equal(64, #b)
      assert.not_equal(a, c)
      assert.equal(a, crypto.hmac("sha256", "k1", "data"))
    end)

    it("rejects an unknown digest with nil, err", function()
      local mac, err = crypto.hmac("sha224", "k", "d")
      assert.is_nil(mac)
      assert.equal("unsupported digest: sha224", err)
    end)
  end)

  describe("base64", function()
    -- RFC 4648, section 10.
    local VECTORS = {
      { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
      { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
    }

    it("encodes and decodes the RFC 4648 vectors", function()
      for _, v in ipairs(VECTORS) do
        assert.equal(v[2], crypto.base64_encode(v[1]))
        assert.equal(v[1], crypto.base64_decode(v[2]))
        local url = v[2]:gsub("=", "")
        assert.equal(url, crypto.base64url_encode(v[1]))
        assert.equal(v[1], crypto.base64url_decode(url))
        assert.equal(v[1], crypto.base64url_decode(v[2]))
      end
    end)

    it("uses + and / in the standard alphabet, - and _ in the URL one", function()
      assert.equal("+/8=", crypto.base64_encode("\251\255"))
      assert.equal("-_8", crypto.base64url_encode("\251\255"))
      assert.equal("\251\255", crypto.base64_decode("+/8="))
      assert.equal("\251\255", crypto.base64url_decode("-_8"))
    end)

    it("round-trips every length and byte value", function()
      local all = {}
      for b = 0, 255 do
        all[#all + 1] = string.char(b)
      end
      all = table.concat(all)
      for n = 0, 256 do
        local s = all:sub(1, n)
        assert.equal(s, crypto.base64_decode(crypto.base64_encode(s)))
        assert.equal(s, crypto.base64url_decode(crypto.base64url_encode(s)))
      end
    end)

    it("agrees with the openssl CLI on random data", function()
      local s = crypto.random_bytes(1000)
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write(s)
      f:close()
      local p = assert(io.popen("openssl base64 -A -in " .. path))
      local expected = p:read("*a")
      p:close()
      os.remove(path)
      assert.equal(expected, crypto.base64_encode(s))
    end)

    it("handles inputs larger than its scratch buffer", function()
      local s = crypto.random_bytes(200000)
      assert.equal(s, crypto.base64_decode(crypto.base64_encode(s)))
      assert.equal(s, crypto.base64url_decode(crypto.base64url_encode(s)))
    end)

    it("base64_decode rejects invalid input with nil, err", function()
      local bad = {
        "Zg", "Zg=", "Zm9vY", "Zm9vYg", -- missing or short padding
        "Zg===", "=Zg=", "Z===", "Zm=v", -- misplaced padding
        "Zm9v Yg==", "Zm9v\nYg==", "Zm9v\0Yg==", -- whitespace, NUL
        "Zm9-", "Zm9_", "Zm9v!A==", "\255\255\255\255", -- outside the alphabet
        "Zh==", "Zm9=", -- non-zero bits after the last byte
      }
      for _, s in ipairs(bad) do
        local out, err = crypto.base64_decode(s)
        assert.is_nil(out, s)
        assert.matches("^invalid base64: ", err)
      end
    end)

    it("base64url_decode rejects invalid input with nil, err", function()
      local bad = { "Z", "Zm9vY", "Zg=", "Zg===", "Zm9+", "Zm9/", "Zm 9", "Zh", "Zm9" }
      for _, s in ipairs(bad) do
        local out, err = crypto.base64url_decode(s)
        assert.is_nil(out, s)
        assert.matches("^invalid base64url: ", err)
      end
    end)
  end)

  describe("random_bytes", function()
    it("returns n bytes, different each time", function()
      assert.equal("", crypto.random_bytes(0))
      assert.equal(1, #crypto.random_bytes(1))
      assert.equal(100000, #crypto.random_bytes(100000))
      local a, b = crypto.random_bytes(32), crypto.random_bytes(32)
      assert.equal(32, #a)
      assert.not_equal(a, b)
    end)

    it("raises on a bad count", function()
      assert.has_error(function() crypto.random_bytes(-1) end,
        "bad argument #1 to 'random_bytes' (non-negative integer expected, got -1)")
      assert.has_error(function() crypto.random_bytes(1.5) end,
        "bad argument #1 to 'random_bytes' (non-negative integer expected, got 1.5)")
      assert.has_error(function() crypto.random_bytes("16") end,
        "bad argument #1 to 'random_bytes' (number expected, got string)")
    end)
  end)

  describe("constant_time_equals", function()
    it("compares contents and lengths", function()
      assert.is_true(crypto.constant_time_equals("", ""))
      assert.is_true(crypto.constant_time_equals("secret", "secret"))
      assert.is_false(crypto.constant_time_equals("secret", "secreT"))
      assert.is_false(crypto.constant_time_equals("Secret", "secret"))
      assert.is_false(crypto.constant_time_equals("secret", "secret2"))
      assert.is_false(crypto.constant_time_equals("secret", ""))
      assert.is_false(crypto.constant_time_equals("a\0b", "a\0c"))
      assert.is_true(crypto.constant_time_equals("a\0b", "a\0b"))
    end)
  end)

  describe("verify and sign", function()
    for _, alg in ipairs(ALGS) do
      describe(alg, function()
        local private_pem = fixture(KEYS[alg][1])
        local public_pem = fixture(KEYS[alg][2])
        local cli_sig = fixture(CLI_SIGNATURES[alg])

        it("verifies the openssl CLI's signature", function()
          assert.is_true(crypto.verify(alg, public_pem, DATA, cli_sig))
          assert_error_queue_empty()
        end)

        it("returns false for tampered data or signature", function()
          assert.is_false(crypto.verify(alg, public_pem, DATA .. "x", cli_sig))
          assert.is_false(crypto.verify(alg, public_pem, flip(DATA, 1), cli_sig))
          assert.is_false(crypto.verify(alg, public_pem, DATA, flip(cli_sig, 1)))
          assert.is_false(crypto.verify(alg, public_pem, DATA, flip(cli_sig, -1)))
          assert.is_false(crypto.verify(alg, public_pem, DATA, cli_sig:sub(2)))
          assert.is_false(crypto.verify(alg, public_pem, DATA, cli_sig .. "\0"))
          assert.is_false(crypto.verify(alg, public_pem, DATA, ""))
          assert.is_false(crypto.verify(alg, public_pem, DATA, string.rep("\0", #cli_sig)))
          assert_error_queue_empty()
        end)

        it("round-trips sign and verify, with PEMs and with key objects", function()
          local sig = assert(crypto.sign(alg, private_pem, DATA))
          assert.equal(#cli_sig, #sig)
          assert.is_true(crypto.verify(alg, public_pem, DATA, sig))
          local private = assert(crypto.load_private_key(private_pem))
          local public = assert(crypto.load_public_key(public_pem))
          local sig2 = assert(private:sign(alg, "other data"))
          assert.is_true(public:verify(alg, "other data", sig2))
          assert.is_true(crypto.verify(alg, public, "other data", sig2))
          assert.is_false(public:verify(alg, DATA, sig2))
          -- A private key verifies too.
          assert.is_true(private:verify(alg, DATA, sig))
          assert_error_queue_empty()
        end)

        it("signs empty data", function()
          local sig = assert(crypto.sign(alg, private_pem, ""))
          assert.is_true(crypto.verify(alg, public_pem, "", sig))
        end)
      end)
    end

    it("converts the CLI's DER ECDSA signatures to JOSE r||s", function()
      for _, bits in ipairs({ "256", "384", "512" }) do
        local der = fixture("es" .. bits .. ".der")
        local key = fixture(KEYS["ES" .. bits][2])
        assert.is_true(crypto.verify("ES" .. bits, key, DATA, fixture("es" .. bits .. ".sig")))
        -- DER is not a JOSE signature: it has the wrong length or the wrong layout.
        assert.is_false(crypto.verify("ES" .. bits, key, DATA, der))
      end
    end)

    it("round-trips many ECDSA signatures (r and s with high bits and leading zeros)", function()
      for _, alg in ipairs({ "ES256", "ES384", "ES512" }) do
        local private = assert(crypto.load_private_key(fixture(KEYS[alg][1])))
        local public = assert(crypto.load_public_key(fixture(KEYS[alg][2])))
        for i = 1, 64 do
          local sig = assert(private:sign(alg, "message " .. i))
          assert.is_true(public:verify(alg, "message " .. i, sig))
        end
      end
    end)

    it("verifies Ed448 under EdDSA and the Ed448 name", function()
      local public = fixture("ed448.pub.pem")
      local sig = fixture("eddsa-ed448.sig")
      assert.is_true(crypto.verify("EdDSA", public, DATA, sig))
      assert.is_true(crypto.verify("Ed448", public, DATA, sig))
      assert.is_false(crypto.verify("EdDSA", public, flip(DATA, 3), sig))
      local mine = assert(crypto.sign("EdDSA", fixture("ed448.pem"), DATA))
      assert.equal(114, #mine)
      assert.is_true(crypto.verify("EdDSA", public, DATA, mine))
      assert.is_true(crypto.verify("Ed25519", fixture("ed25519.pub.pem"), DATA,
                                   fixture("eddsa-ed25519.sig")))
    end)

    it("produces PS* signatures the CLI's salt-length rule accepts", function()
      -- Verifying with salt length = digest length rejects any other salt
      -- length, so the round trip and the CLI fixture together pin it.
      local sig = assert(crypto.sign("PS256", fixture("rsa.pem"), DATA))
      assert.is_true(crypto.verify("PS256", fixture("rsa.pub.pem"), DATA, sig))
      assert.is_false(crypto.verify("RS256", fixture("rsa.pub.pem"), DATA, sig))
      assert.is_false(crypto.verify("PS384", fixture("rsa.pub.pem"), DATA, sig))
    end)

    it("signs and verifies PS* with an RSA-PSS key", function()
      local sig = assert(crypto.sign("PS256", fixture("rsa-pss.pem"), DATA))
      assert.is_true(crypto.verify("PS256", fixture("rsa-pss.pub.pem"), DATA, sig))
    end)

    describe("key type mismatch", function()
      local function mismatch(alg, pem)
        local ok, err = crypto.verify(alg, fixture(pem), DATA, string.rep("\1", 64))
        assert.is_nil(ok, alg .. " with " .. pem)
        assert.equal("key type mismatch", err)
      end

      it("refuses RSA keys for ES* and EdDSA", function()
        mismatch("ES256", "rsa.pub.pem")
        mismatch("ES512", "rsa.pub.pem")
        mismatch("EdDSA", "rsa.pub.pem")
      end)

      it("refuses EC keys for RS*, PS* and EdDSA", function()
        mismatch("RS256", "p256.pub.pem")
        mismatch("PS256", "p256.pub.pem")
        mismatch("EdDSA", "p256.pub.pem")
      end)

      it("refuses an EC key on another curve than the alg's", function()
        mismatch("ES256", "p384.pub.pem")
        mismatch("ES384", "p256.pub.pem")
        mismatch("ES512", "p384.pub.pem")
        mismatch("ES256", "secp256k1.pub.pem")
      end)

      it("refuses EdDSA keys for RS* and ES*, and the wrong Ed curve by name", function()
        mismatch("RS256", "ed25519.pub.pem")
        mismatch("ES256", "ed25519.pub.pem")
        mismatch("Ed448", "ed25519.pub.pem")
        mismatch("Ed25519", "ed448.pub.pem")
      end)

      it("refuses an RSA-PSS key for RS*", function()
        mismatch("RS256", "rsa-pss.pub.pem")
      end)

      it("refuses any key for HS* (alg confusion: a public key is no HMAC secret)", function()
        local pem = fixture("rsa.pub.pem")
        -- What an attacker sends: the HMAC of the data keyed with the public PEM.
        local forged = crypto.hmac("sha256", pem, DATA)
        local ok, err = crypto.verify("HS256", pem, DATA, forged)
        assert.is_nil(ok)
        assert.equal("key type mismatch", err)
        mismatch("HS384", "p256.pub.pem")
        mismatch("HS512", "ed25519.pub.pem")
        local key = assert(crypto.load_public_key(pem))
        ok, err = key:verify("HS256", DATA, forged)
        assert.is_nil(ok)
        assert.equal("key type mismatch", err)
      end)

      it("refuses a key type no alg uses", function()
        for _, alg in ipairs(ALGS) do
          mismatch(alg, "dsa.pub.pem")
        end
      end)

      it("applies to sign as well", function()
        local sig, err = crypto.sign("ES256", fixture("rsa.pem"), DATA)
        assert.is_nil(sig)
        assert.equal("key type mismatch", err)
        sig, err = crypto.sign("HS256", fixture("rsa.pem"), DATA)
        assert.is_nil(sig)
        assert.equal("key type mismatch", err)
      end)
    end)

    it("rejects an unsupported algorithm with nil, err", function()
      for _, alg in ipairs({ "none", "RS1", "rs256", "ES256K", "" }) do
        local ok, err = crypto.verify(alg, fixture("rsa.pub.pem"), DATA, "sig")
        assert.is_nil(ok)
        assert.equal("unsupported algorithm: " .. alg, err)
      end
    end)

    it("reports an invalid PEM with OpenSSL's reason and an empty error queue", function()
      local inputs = {
        "",
        "not a pem",
        "an HMAC secret passed as a PEM",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        fixture("rsa.pub.pem"):gsub("M", "N", 3),
        fixture("rsa.pem"), -- a private key is not a public key
      }
      for _, pem in ipairs(inputs) do
        local ok, err = crypto.verify("RS256", pem, DATA, "sig")
        assert.is_nil(ok)
        assert.matches("^invalid public key: .+", err)
        assert_error_queue_empty()
        local key, err2 = crypto.load_public_key(pem)
        assert.is_nil(key)
        assert.equal(err, err2)
      end
      local ok, err = crypto.sign("RS256", "not a pem", DATA)
      assert.is_nil(ok)
      assert.matches("^invalid private key: .+", err)
      assert_error_queue_empty()
    end)

    it("reads the public key of an X.509 certificate", function()
      local key = assert(crypto.load_public_key(fixture("cert.pem")))
      assert.equal("RSA", key:type())
      assert.is_true(key:verify("RS256", DATA, fixture("rs256.sig")))
    end)

    it("reads traditional and encrypted private keys", function()
      local traditional = assert(crypto.load_private_key(fixture("rsa.pkcs1.pem")))
      local sig = assert(traditional:sign("RS256", DATA))
      assert.equal(fixture("rs256.sig"), sig) -- PKCS#1 v1.5 signatures are deterministic
      local encrypted = assert(crypto.load_private_key(fixture("encrypted.pem"), "sluice"))
      assert.equal(sig, encrypted:sign("RS256", DATA))
      -- Without the passphrase: an error, never a prompt on the terminal.
      local key, err = crypto.load_private_key(fixture("encrypted.pem"))
      assert.is_nil(key)
      assert.matches("^invalid private key: ", err)
      key, err = crypto.load_private_key(fixture("encrypted.pem"), "wrong")
      assert.is_nil(key)
      assert.matches("^invalid private key: ", err)
      assert_error_queue_empty()
    end)

    it("refuses to sign with a public key", function()
      local key = assert(crypto.load_public_key(fixture("rsa.pub.pem")))
      local sig, err = key:sign("RS256", DATA)
      assert.is_nil(sig)
      assert.equal("not a private key", err)
    end)

    it("describes keys", function()
      local expected = {
        ["rsa.pub.pem"] = "RSA", ["rsa-pss.pub.pem"] = "RSA-PSS", ["p256.pub.pem"] = "P-256",
        ["p384.pub.pem"] = "P-384", ["p521.pub.pem"] = "P-521",
        ["ed25519.pub.pem"] = "Ed25519", ["ed448.pub.pem"] = "Ed448",
        ["secp256k1.pub.pem"] = "other", ["dsa.pub.pem"] = "other",
      }
      for name, kind in pairs(expected) do
        local key = assert(crypto.load_public_key(fixture(name)))
        assert.equal(kind, key:type())
        assert.is_false(key:is_private())
      end
      local private = assert(crypto.load_private_key(fixture("p256.pem")))
      assert.is_true(private:is_private())
      assert.equal("sluice.crypto key (P-256, private)", tostring(private))
    end)

    it("caches parsed PEMs, at most 32 of each kind", function()
      local pem = fixture("rsa.pub.pem")
      local sig = fixture("rs256.sig")
      local before = crypto._cache_counts()
      assert.is_true(crypto.verify("RS256", "fresh\n" .. pem, DATA, sig))
      assert.equal(math.min(before + 1, 32), (crypto._cache_counts()))
      -- PEM allows text before the key, so these are 40 different cache keys.
      for i = 1, 40 do
        assert.is_true(crypto.verify("RS256", "key " .. i .. "\n" .. pem, DATA, sig))
      end
      assert.equal(32, (crypto._cache_counts()))
      -- The most recent ones are still there and still right.
      for i = 40, 1, -1 do
        assert.is_true(crypto.verify("RS256", "key " .. i .. "\n" .. pem, DATA, sig))
        assert.is_false(crypto.verify("RS256", "key " .. i .. "\n" .. pem, "x", sig))
      end
      assert.equal(32, (crypto._cache_counts()))
    end)

    it("verifies an RS256 JWT by hand, as docs/crypto.md shows", function()
      local cjson = require("cjson.safe")
      local private_key = assert(crypto.load_private_key(fixture("rsa.pem")))
      local public_key = assert(crypto.load_public_key(fixture("rsa.pub.pem")))

      -- docs/crypto.md's verify_jwt, verbatim.
      local function verify_jwt(token)
        local h, p, s = token:match("^([%w_-]+)%.([%w_-]+)%.([%w_-]+)$")
        if not h then
          return nil, "malformed token"
        end
        local header = cjson.decode(crypto.base64url_decode(h) or "")
        -- Never let the token pick the algorithm: this key is for RS256 only.
        if type(header) ~= "table" or header.alg ~= "RS256" then
          return nil, "unexpected alg"
        end
        local signature = crypto.base64url_decode(s)
        if not signature then
          return nil, "malformed signature"
        end
        -- The signed input is the first two parts exactly as they came in.
        if public_key:verify("RS256", h .. "." .. p, signature) ~= true then
          return nil, "bad signature"
        end
        return cjson.decode(crypto.base64url_decode(p) or "")
      end

      -- docs/crypto.md's issuing example.
      local function issue(header, claims)
        local signing_input = crypto.base64url_encode(header) .. "."
          .. crypto.base64url_encode(cjson.encode(claims))
        return signing_input .. "." .. crypto.base64url_encode(
          assert(private_key:sign("RS256", signing_input)))
      end

      local token = issue('{"alg":"RS256","typ":"JWT"}', { sub = "sluice" })
      assert.same({ sub = "sluice" }, verify_jwt(token))

      local h, _, s = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      local forged = h .. "." .. crypto.base64url_encode('{"sub":"admin"}') .. "." .. s
      assert.same({ nil, "bad signature" }, { verify_jwt(forged) })
      assert.same({ nil, "malformed token" }, { verify_jwt("a.b") })
      assert.same({ nil, "unexpected alg" },
                  { verify_jwt(issue('{"alg":"HS256"}', { sub = "sluice" })) })
      assert.same({ nil, "malformed signature" }, { verify_jwt(h .. ".e30.Zh") })
    end)
  end)

  describe("misuse", function()
    it("raises bad argument errors naming the function", function()
      assert.has_error(function() crypto.hmac("sha256", nil, "d") end,
        "bad argument #2 to 'hmac' (string expected, got nil)")
      assert.has_error(function() crypto.hmac(nil, "k", "d") end,
        "bad argument #1 to 'hmac' (string expected, got nil)")
      assert.has_error(function() crypto.sha256(42) end,
        "bad argument #1 to 'sha256' (string expected, got number)")
      assert.has_error(function() crypto.base64_decode({}) end,
        "bad argument #1 to 'base64_decode' (string expected, got table)")
      assert.has_error(function() crypto.constant_time_equals("a", nil) end,
        "bad argument #2 to 'constant_time_equals' (string expected, got nil)")
      assert.has_error(function() crypto.verify("RS256", 42, DATA, "sig") end,
        "bad argument #2 to 'verify' (string or key expected, got number)")
      assert.has_error(function() crypto.verify("RS256", "pem", DATA, nil) end,
        "bad argument #4 to 'verify' (string expected, got nil)")
      local key = assert(crypto.load_public_key(fixture("rsa.pub.pem")))
      assert.has_error(function() key:verify("RS256", nil, "sig") end,
        "bad argument #2 to 'verify' (string expected, got nil)")
      assert.has_error(function() crypto.load_private_key(fixture("rsa.pem"), 1) end,
        "bad argument #2 to 'load_private_key' (string expected, got number)")
    end)

    it("blames the caller's line", function()
      local ok, err = pcall(crypto.hex, nil)
      assert.is_false(ok)
      -- Called from pcall (a C function), so there is no Lua position to report.
      assert.equal("bad argument #1 to 'hex' (string expected, got nil)", err)
      ok, err = pcall(function()
        local hex = crypto.hex(nil)
        return hex
      end)
      assert.is_false(ok)
      assert.matches("crypto_spec%.lua:%d+: bad argument #1 to 'hex'", err)
    end)
  end)

  it("can be loaded again (busted insulates spec files) and shares key objects", function()
    local key = assert(crypto.load_public_key(fixture("rsa.pub.pem")))
    package.loaded["sluice.crypto"] = nil
    local again = require("sluice.crypto")
    assert.is_true(again.verify("RS256", key, DATA, fixture("rs256.sig")))
    local key2 = assert(again.load_public_key(fixture("rsa.pub.pem")))
    assert.is_true(crypto.verify("RS256", key2, DATA, fixture("rs256.sig")))
    assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                 again.hex(again.hmac("sha256", "Jefe", "what do ya want for nothing?")))
    package.loaded["sluice.crypto"] = crypto
  end)
end)
