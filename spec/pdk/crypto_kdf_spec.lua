-- crypto_kdf_spec.lua: sluice.crypto.pbkdf2 against RFC 7914's PBKDF2-HMAC-SHA256 vectors.
local crypto = require("sluice.crypto")

describe("sluice.crypto.pbkdf2", function()
  it("derives RFC 7914's test vectors (section 11)", function()
    assert.equal("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
      .. "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
      crypto.hex(crypto.pbkdf2("sha256", "passwd", "salt", 1, 64)))
    assert.equal("4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
      .. "a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d",
      crypto.hex(crypto.pbkdf2("sha256", "Password", "NaCl", 80000, 64)))
  end)

  it("derives RFC 6070's PBKDF2-HMAC-SHA1 vectors, embedded NULs included", function()
    assert.equal("4b007901b765489abead49d926f721d065a429c1",
      crypto.hex(crypto.pbkdf2("sha1", "password", "salt", 4096, 20)))
    assert.equal("56fa6aa75548099dcc37d7f03425e0c3",
      crypto.hex(crypto.pbkdf2("sha1", "pass\0word", "sa\0lt", 4096, 16)))
  end)

  it("takes empty passwords and salts, and refuses what it cannot do", function()
    assert.equal(32, #crypto.pbkdf2("sha256", "", "", 1, 32))
    local key, err = crypto.pbkdf2("md4", "p", "s", 1, 32)
    assert.is_nil(key)
    assert.equal("unsupported digest: md4", err)
    assert.has_error(function() crypto.pbkdf2("sha256", nil, "s", 1, 32) end,
      "bad argument #2 to 'pbkdf2' (string expected, got nil)")
    assert.has_error(function() crypto.pbkdf2("sha256", "p", "s", 0, 32) end,
      "bad argument #4 to 'pbkdf2' (an integer from 1 to 100000000 expected, got 0)")
    assert.has_error(function() crypto.pbkdf2("sha256", "p", "s", 1.5, 32) end)
    assert.has_error(function() crypto.pbkdf2("sha256", "p", "s", 1, 0) end,
      "bad argument #5 to 'pbkdf2' (an integer from 1 to 1024 expected, got 0)")
  end)
end)
