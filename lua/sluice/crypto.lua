-- crypto.lua: hashes, HMAC, base64, random bytes, PBKDF2 and signatures (JOSE algs) over libcrypto.
--
-- Pure Lua over LuaJIT's FFI to OpenSSL 3. Every function takes and returns
-- Lua strings of raw bytes unless its comment says otherwise. None of them
-- yields or touches a request, so they work in every phase, at config time
-- included (@phases any).
--
-- Errors follow STYLE.md: a wrong argument type raises "bad argument #N to
-- 'fn' (...)"; a failure the caller cannot rule out in advance (an invalid
-- PEM, an unsupported alg taken from a token, a key of the wrong type)
-- returns nil and a message. Every path that can leave errors on OpenSSL's
-- per-thread error queue clears it before returning.
--
-- Reused state: digests, the HMAC context per digest, the signing context,
-- the out-params and a scratch buffer are allocated once per worker (per Lua
-- state) and reused by every call. That is safe because no function here
-- yields between setting them and reading them back.

local ffi = require("ffi")
local bit = require("bit")

local error = error
local pairs = pairs
local pcall = pcall
local tostring = tostring
local type = type
local math_floor = math.floor
local str_byte = string.byte
local str_char = string.char
local str_find = string.find
local bit_band = bit.band
local bit_bor = bit.bor
local bit_lshift = bit.lshift
local bit_rshift = bit.rshift
local ffi_cast = ffi.cast
local ffi_copy = ffi.copy
local ffi_fill = ffi.fill
local ffi_istype = ffi.istype
local ffi_new = ffi.new
local ffi_string = ffi.string

-- Declared once per VM: LuaJIT accepts an identical redefinition only while
-- nothing was declared after it, and a second load of this module (busted
-- insulates spec files; `sluice test` loads the runtime before them) comes
-- after other declarations.
if not pcall(ffi.typeof, "sl_crypto_key_t") then
ffi.cdef([[
typedef struct engine_st ENGINE;
typedef struct ossl_lib_ctx_st OSSL_LIB_CTX;
typedef struct evp_md_st EVP_MD;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_mac_st EVP_MAC;
typedef struct evp_mac_ctx_st EVP_MAC_CTX;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_pkey_ctx_st EVP_PKEY_CTX;
typedef struct bio_st BIO;
typedef struct x509_st X509;
typedef struct ossl_param_st {
  const char *key;
  unsigned int data_type;
  void *data;
  size_t data_size;
  size_t return_size;
} OSSL_PARAM;
typedef int pem_password_cb(char *buf, int size, int rwflag, void *userdata);

unsigned long ERR_get_error(void);
void ERR_error_string_n(unsigned long e, char *buf, size_t len);
void ERR_clear_error(void);

int RAND_bytes(unsigned char *buf, int num);
int CRYPTO_memcmp(const void *a, const void *b, size_t len);

EVP_MD *EVP_MD_fetch(OSSL_LIB_CTX *ctx, const char *algorithm, const char *properties);
void EVP_MD_free(EVP_MD *md);
int EVP_MD_get_size(const EVP_MD *md);
EVP_MD_CTX *EVP_MD_CTX_new(void);
void EVP_MD_CTX_free(EVP_MD_CTX *ctx);
int EVP_MD_CTX_reset(EVP_MD_CTX *ctx);
int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl);
int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt);
int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s);

EVP_MAC *EVP_MAC_fetch(OSSL_LIB_CTX *libctx, const char *algorithm, const char *properties);
void EVP_MAC_free(EVP_MAC *mac);
EVP_MAC_CTX *EVP_MAC_CTX_new(EVP_MAC *mac);
void EVP_MAC_CTX_free(EVP_MAC_CTX *ctx);
int EVP_MAC_CTX_set_params(EVP_MAC_CTX *ctx, const OSSL_PARAM params[]);
int EVP_MAC_init(EVP_MAC_CTX *ctx, const unsigned char *key, size_t keylen,
                 const OSSL_PARAM params[]);
int EVP_MAC_update(EVP_MAC_CTX *ctx, const unsigned char *data, size_t datalen);
int EVP_MAC_final(EVP_MAC_CTX *ctx, unsigned char *out, size_t *outl, size_t outsize);

BIO *BIO_new_mem_buf(const void *buf, int len);
int BIO_free(BIO *a);
EVP_PKEY *PEM_read_bio_PUBKEY(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u);
EVP_PKEY *d2i_PUBKEY(EVP_PKEY **a, const unsigned char **pp, long length);
EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u);
X509 *PEM_read_bio_X509(BIO *bp, X509 **x, pem_password_cb *cb, void *u);
EVP_PKEY *X509_get_pubkey(X509 *x);
void X509_free(X509 *a);

void EVP_PKEY_free(EVP_PKEY *pkey);
int EVP_PKEY_get_base_id(const EVP_PKEY *pkey);
int EVP_PKEY_get_size(const EVP_PKEY *pkey);
int EVP_PKEY_get_group_name(const EVP_PKEY *pkey, char *name, size_t name_sz,
                            size_t *gname_len);
int EVP_DigestSignInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e,
                       EVP_PKEY *pkey);
int EVP_DigestSign(EVP_MD_CTX *ctx, unsigned char *sigret, size_t *siglen,
                   const unsigned char *tbs, size_t tbslen);
int EVP_DigestVerifyInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e,
                         EVP_PKEY *pkey);
int EVP_DigestVerify(EVP_MD_CTX *ctx, const unsigned char *sigret, size_t siglen,
                     const unsigned char *tbs, size_t tbslen);
int EVP_PKEY_CTX_set_rsa_padding(EVP_PKEY_CTX *ctx, int pad_mode);
int EVP_PKEY_CTX_set_rsa_pss_saltlen(EVP_PKEY_CTX *ctx, int saltlen);
int EVP_PKEY_CTX_set_rsa_mgf1_md(EVP_PKEY_CTX *ctx, const EVP_MD *md);

typedef struct {
  EVP_PKEY *pkey;
  int kind;
  int priv;
} sl_crypto_key_t;
]])
end

-- Key derivation, declared on its own (added after the block above; the
-- marker type makes a second load of this module skip it, as above).
if not pcall(ffi.typeof, "sl_crypto_kdf_marker_t") then
ffi.cdef([[
typedef struct { int unused; } sl_crypto_kdf_marker_t;
int PKCS5_PBKDF2_HMAC(const char *pass, int passlen, const unsigned char *salt, int saltlen,
                      int iter, const EVP_MD *digest, int keylen, unsigned char *out);
]])
end

-- libcrypto: the copy the executable already has, when it has one (sluice links
-- OpenSSL; whether the linker kept it depends on what the core uses), else
-- libcrypto.so.3. The probe is a 3.0-only symbol, so an executable carrying
-- OpenSSL 1.1 is not mistaken for one that can serve these declarations.
local C
do
  local function lookup(lib, name)
    return lib[name]
  end
  if pcall(lookup, ffi.C, "EVP_PKEY_get_base_id") then
    C = ffi.C
  else
    C = ffi.load("libcrypto.so.3")
  end
end

local u8_ptr_t = ffi.typeof("const uint8_t *")
local u8_array_t = ffi.typeof("uint8_t[?]")
local key_t = ffi.typeof("sl_crypto_key_t")

local EVP_MAX_MD_SIZE = 64
local ERR_BUF_SIZE = 256
-- The scratch buffer grows up to this many bytes and is kept; larger outputs
-- get a buffer of their own for the call.
local SCRATCH_KEEP = 64 * 1024
-- Parsed PEM keys kept per cache (public keys for verify, private keys for sign).
local KEY_CACHE_SIZE = 32

local OSSL_PARAM_UTF8_STRING = 4
local RSA_PKCS1_PADDING = 1
local RSA_PKCS1_PSS_PADDING = 6
local RSA_PSS_SALTLEN_DIGEST = -1

local EVP_PKEY_RSA = 6
local EVP_PKEY_RSA_PSS = 912
local EVP_PKEY_EC = 408
local EVP_PKEY_ED25519 = 1087
local EVP_PKEY_ED448 = 1088

-- Key kinds: what a key can be used for, decided once when it is loaded.
local KIND_OTHER = 0
local KIND_RSA = 1
local KIND_RSA_PSS = 2
local KIND_P256 = 3
local KIND_P384 = 4
local KIND_P521 = 5
local KIND_ED25519 = 6
local KIND_ED448 = 7

local KIND_NAMES = {
  [KIND_OTHER] = "other", [KIND_RSA] = "RSA", [KIND_RSA_PSS] = "RSA-PSS",
  [KIND_P256] = "P-256", [KIND_P384] = "P-384", [KIND_P521] = "P-521",
  [KIND_ED25519] = "Ed25519", [KIND_ED448] = "Ed448",
}

local CURVE_KINDS = { prime256v1 = KIND_P256, secp384r1 = KIND_P384, secp521r1 = KIND_P521 }

-- Digest names as callers write them -> OpenSSL's names.
local DIGEST_NAMES = { md5 = "MD5", sha1 = "SHA1", sha256 = "SHA256", sha384 = "SHA384",
                       sha512 = "SHA512" }

local B64_STD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local PAD = 61 -- "="

local _M = {}

-- Reusable state ---------------------------------------------------------------

local err_buf = ffi_new("char[?]", ERR_BUF_SIZE)
local md_buf = ffi_new("unsigned char[?]", EVP_MAX_MD_SIZE)
local uint_out = ffi_new("unsigned int[1]")
local size_out = ffi_new("size_t[1]")
local pctx_out = ffi_new("EVP_PKEY_CTX *[1]")
-- A DER ECDSA signature for P-521 is at most 3 + 2 * (2 + 1 + 66) = 141 bytes.
local der_buf = ffi_new("uint8_t[160]")
local raw_buf = ffi_new("uint8_t[132]")

local scratch_size = 4096
local scratch = ffi_new(u8_array_t, scratch_size)

-- Returns a buffer of at least n bytes: the shared scratch buffer (grown when
-- n is at most SCRATCH_KEEP), or a new one the caller alone holds.
local function buffer(n)
  if n <= scratch_size then
    return scratch
  end
  if n > SCRATCH_KEEP then
    return ffi_new(u8_array_t, n)
  end
  while scratch_size < n do
    scratch_size = scratch_size * 2
  end
  scratch = ffi_new(u8_array_t, scratch_size)
  return scratch
end

-- Returns prefix followed by the oldest error on OpenSSL's queue, and empties it.
local function openssl_error(prefix)
  local code = C.ERR_get_error()
  local msg = "unknown error"
  if code ~= 0 then
    C.ERR_error_string_n(code, err_buf, ERR_BUF_SIZE)
    msg = ffi_string(err_buf)
  end
  C.ERR_clear_error()
  return prefix .. msg
end

local function fetch_digest(name)
  local md = C.EVP_MD_fetch(nil, name, nil)
  if md == nil then
    error(openssl_error("sluice.crypto: could not load digest " .. name .. ": "))
  end
  return ffi.gc(md, C.EVP_MD_free)
end

-- Digests by caller's name: { sha256 = <EVP_MD *>, ... }, fetched once and
-- kept for the life of the Lua state, which frees them when it closes.
local digests = {}
for name, ossl_name in pairs(DIGEST_NAMES) do
  digests[name] = fetch_digest(ossl_name)
end

local digest_ctx = ffi.gc(C.EVP_MD_CTX_new(), C.EVP_MD_CTX_free)
local sig_ctx = ffi.gc(C.EVP_MD_CTX_new(), C.EVP_MD_CTX_free)
if digest_ctx == nil or sig_ctx == nil then
  error("sluice.crypto: could not allocate a digest context")
end

local hmac_impl = C.EVP_MAC_fetch(nil, "HMAC", nil)
if hmac_impl == nil then
  error(openssl_error("sluice.crypto: could not load HMAC: "))
end
hmac_impl = ffi.gc(hmac_impl, C.EVP_MAC_free)

-- HMAC contexts by digest name, made on first use with the digest set, then
-- re-keyed by EVP_MAC_init on every call: { sha256 = <EVP_MAC_CTX *>, ... }.
local hmac_ctxs = {}

local PARAM_DIGEST = "digest"

local function hmac_ctx(alg)
  local ctx = hmac_ctxs[alg]
  if ctx then
    return ctx
  end
  local ossl_name = DIGEST_NAMES[alg]
  ctx = C.EVP_MAC_CTX_new(hmac_impl)
  if ctx == nil then
    return nil, openssl_error("could not create an HMAC context: ")
  end
  ctx = ffi.gc(ctx, C.EVP_MAC_CTX_free)
  -- The strings the params point at are upvalues and table values, alive
  -- for as long as the call below needs them.
  local params = ffi_new("OSSL_PARAM[2]")
  params[0].key = PARAM_DIGEST
  params[0].data_type = OSSL_PARAM_UTF8_STRING
  params[0].data = ffi_cast("void *", ossl_name)
  params[0].data_size = #ossl_name
  if C.EVP_MAC_CTX_set_params(ctx, params) ~= 1 then
    return nil, openssl_error("could not set the HMAC digest: ")
  end
  hmac_ctxs[alg] = ctx
  return ctx
end

-- Argument checks ----------------------------------------------------------------

-- Both raise the standard message for argument n of fn. They are called
-- straight from the public function, so level 3 blames that function's caller.
local function bad_argument(n, fn, expected, value)
  error("bad argument #" .. n .. " to '" .. fn .. "' (" .. expected .. " expected, got "
        .. type(value) .. ")", 3)
end

local function check_string(n, fn, value)
  if type(value) ~= "string" then
    error("bad argument #" .. n .. " to '" .. fn .. "' (string expected, got "
          .. type(value) .. ")", 3)
  end
end

-- Hashes and HMAC ------------------------------------------------------------------

local function digest(md, s)
  local ctx = digest_ctx
  if C.EVP_DigestInit_ex(ctx, md, nil) ~= 1
      or C.EVP_DigestUpdate(ctx, s, #s) ~= 1
      or C.EVP_DigestFinal_ex(ctx, md_buf, uint_out) ~= 1 then
    return nil, openssl_error("could not compute digest: ")
  end
  return ffi_string(md_buf, uint_out[0])
end

-- crypto.digest(alg, s) -> raw digest | nil, err
-- alg: "md5", "sha1", "sha256", "sha384" or "sha512".
function _M.digest(alg, s)
  check_string(1, "digest", alg)
  check_string(2, "digest", s)
  local md = digests[alg]
  if not md then
    return nil, "unsupported digest: " .. alg
  end
  return digest(md, s)
end

-- crypto.sha1(s), crypto.sha256(s), crypto.sha384(s), crypto.sha512(s) -> raw digest.
function _M.sha1(s)
  check_string(1, "sha1", s)
  return digest(digests.sha1, s)
end

function _M.sha256(s)
  check_string(1, "sha256", s)
  return digest(digests.sha256, s)
end

function _M.sha384(s)
  check_string(1, "sha384", s)
  return digest(digests.sha384, s)
end

function _M.sha512(s)
  check_string(1, "sha512", s)
  return digest(digests.sha512, s)
end

-- crypto.hmac(alg, key, data) -> raw MAC | nil, err
-- alg as for crypto.digest; the key may be empty.
function _M.hmac(alg, key, data)
  check_string(1, "hmac", alg)
  check_string(2, "hmac", key)
  check_string(3, "hmac", data)
  if not digests[alg] then
    return nil, "unsupported digest: " .. alg
  end
  local ctx, err = hmac_ctx(alg)
  if not ctx then
    return nil, err
  end
  -- A Lua string, even "", is never a NULL pointer: EVP_MAC_init treats a
  -- NULL key as "keep the previous key", which would be wrong here.
  if C.EVP_MAC_init(ctx, key, #key, nil) ~= 1
      or C.EVP_MAC_update(ctx, data, #data) ~= 1
      or C.EVP_MAC_final(ctx, md_buf, size_out, EVP_MAX_MD_SIZE) ~= 1 then
    return nil, openssl_error("could not compute HMAC: ")
  end
  return ffi_string(md_buf, size_out[0])
end

-- Hex and base64 -------------------------------------------------------------------

local HEX_DIGITS = ffi_new("const uint8_t[17]", "0123456789abcdef")

-- crypto.hex(s) -> s in lower-case hex.
function _M.hex(s)
  check_string(1, "hex", s)
  local n = #s
  local out = buffer(2 * n)
  local p = ffi_cast(u8_ptr_t, s)
  for i = 0, n - 1 do
    local b = p[i]
    out[2 * i] = HEX_DIGITS[bit_rshift(b, 4)]
    out[2 * i + 1] = HEX_DIGITS[bit_band(b, 15)]
  end
  return ffi_string(out, 2 * n)
end

-- Encoding tables (6-bit value -> character) and decoding tables (byte ->
-- 6-bit value, or -1 for a byte outside the alphabet).
local function encode_table(alphabet)
  return ffi_new("const uint8_t[65]", alphabet)
end

local function decode_table(alphabet)
  local t = ffi_new("int8_t[256]")
  ffi_fill(t, 256, 0xff)
  for i = 1, 64 do
    t[str_byte(alphabet, i)] = i - 1
  end
  return t
end

local ENC_STD, DEC_STD = encode_table(B64_STD), decode_table(B64_STD)
local ENC_URL, DEC_URL = encode_table(B64_URL), decode_table(B64_URL)

local function b64_encode(s, enc, pad)
  local n = #s
  local rem = n % 3
  local full = n - rem
  local out_len = full / 3 * 4
  if rem > 0 then
    out_len = out_len + (pad and 4 or rem + 1)
  end
  local out = buffer(out_len)
  local p = ffi_cast(u8_ptr_t, s)
  local o = 0
  for i = 0, full - 1, 3 do
    local v = bit_bor(bit_lshift(p[i], 16), bit_lshift(p[i + 1], 8), p[i + 2])
    out[o] = enc[bit_rshift(v, 18)]
    out[o + 1] = enc[bit_band(bit_rshift(v, 12), 63)]
    out[o + 2] = enc[bit_band(bit_rshift(v, 6), 63)]
    out[o + 3] = enc[bit_band(v, 63)]
    o = o + 4
  end
  if rem == 1 then
    local v = p[full]
    out[o] = enc[bit_rshift(v, 2)]
    out[o + 1] = enc[bit_band(bit_lshift(v, 4), 63)]
    if pad then
      out[o + 2] = PAD
      out[o + 3] = PAD
    end
  elseif rem == 2 then
    local v = bit_bor(bit_lshift(p[full], 8), p[full + 1])
    out[o] = enc[bit_rshift(v, 10)]
    out[o + 1] = enc[bit_band(bit_rshift(v, 4), 63)]
    out[o + 2] = enc[bit_band(bit_lshift(v, 2), 63)]
    if pad then
      out[o + 3] = PAD
    end
  end
  return ffi_string(out, out_len)
end

-- Decodes s with table dec. Padding, when present, must be complete ("=" or
-- "==" making the length a multiple of 4); pad_required also rejects its
-- absence. Unused bits in the last character must be zero, so that every
-- byte string has exactly one encoding (RFC 4648, section 3.5).
local function b64_decode(s, dec, pad_required, what)
  local n = #s
  local pad = 0
  if n > 0 and str_byte(s, n) == PAD then
    pad = (n > 1 and str_byte(s, n - 1) == PAD) and 2 or 1
  end
  if (pad > 0 or pad_required) and n % 4 ~= 0 then
    return nil, "invalid " .. what .. ": length is not a multiple of 4"
  end
  -- With the length checked, pad is always consistent with m.
  local m = n - pad
  local tail = m % 4
  if tail == 1 then
    return nil, "invalid " .. what .. ": truncated input"
  end
  local full = m - tail
  local out_len = full / 4 * 3 + (tail > 0 and tail - 1 or 0)
  local out = buffer(out_len)
  local p = ffi_cast(u8_ptr_t, s)
  local o = 0
  for i = 0, full - 1, 4 do
    local a, b, c, d = dec[p[i]], dec[p[i + 1]], dec[p[i + 2]], dec[p[i + 3]]
    if bit_bor(a, b, c, d) < 0 then
      return nil, "invalid " .. what .. ": invalid character"
    end
    local v = bit_bor(bit_lshift(a, 18), bit_lshift(b, 12), bit_lshift(c, 6), d)
    out[o] = bit_rshift(v, 16)
    out[o + 1] = bit_band(bit_rshift(v, 8), 255)
    out[o + 2] = bit_band(v, 255)
    o = o + 3
  end
  if tail > 0 then
    local a, b = dec[p[full]], dec[p[full + 1]]
    local c = tail == 3 and dec[p[full + 2]] or 0
    if bit_bor(a, b, c) < 0 then
      return nil, "invalid " .. what .. ": invalid character"
    end
    local v = bit_bor(bit_lshift(a, 18), bit_lshift(b, 12), bit_lshift(c, 6))
    if bit_band(v, tail == 2 and 0xffff or 0xff) ~= 0 then
      return nil, "invalid " .. what .. ": non-zero padding bits"
    end
    out[o] = bit_rshift(v, 16)
    if tail == 3 then
      out[o + 1] = bit_band(bit_rshift(v, 8), 255)
    end
  end
  return ffi_string(out, out_len)
end

-- crypto.base64_encode(s) -> standard alphabet, padded.
function _M.base64_encode(s)
  check_string(1, "base64_encode", s)
  return b64_encode(s, ENC_STD, true)
end

-- crypto.base64_decode(s) -> bytes | nil, err. Padding required; no whitespace.
function _M.base64_decode(s)
  check_string(1, "base64_decode", s)
  return b64_decode(s, DEC_STD, true, "base64")
end

-- crypto.base64url_encode(s) -> URL-safe alphabet, unpadded (as JOSE wants).
function _M.base64url_encode(s)
  check_string(1, "base64url_encode", s)
  return b64_encode(s, ENC_URL, false)
end

-- crypto.base64url_decode(s) -> bytes | nil, err. Padding optional.
function _M.base64url_decode(s)
  check_string(1, "base64url_decode", s)
  return b64_decode(s, DEC_URL, false, "base64url")
end

-- Random and comparison ------------------------------------------------------------

-- crypto.random_bytes(n) -> n bytes from OpenSSL's CSPRNG. A failing CSPRNG
-- raises instead of returning nil: a caller that forgot the check would
-- otherwise mint predictable tokens.
function _M.random_bytes(n)
  if type(n) ~= "number" then
    bad_argument(1, "random_bytes", "number", n)
  end
  if n < 0 or n ~= math_floor(n) or n > 0x7fffffff then
    error("bad argument #1 to 'random_bytes' (non-negative integer expected, got "
          .. tostring(n) .. ")", 2)
  end
  if n == 0 then
    return ""
  end
  local out = buffer(n)
  if C.RAND_bytes(out, n) ~= 1 then
    error(openssl_error("could not generate random bytes: "), 2)
  end
  return ffi_string(out, n)
end

-- crypto.constant_time_equals(a, b) -> boolean. The time taken depends on the
-- lengths only, never on the contents.
function _M.constant_time_equals(a, b)
  check_string(1, "constant_time_equals", a)
  check_string(2, "constant_time_equals", b)
  local n = #a
  if n ~= #b then
    return false
  end
  return C.CRYPTO_memcmp(a, b, n) == 0
end

-- Key derivation ------------------------------------------------------------------

-- The most iterations and output bytes crypto.pbkdf2 takes: beyond them a
-- call would block a worker for seconds (or allocate without bound).
local PBKDF2_MAX_ITERATIONS = 100000000
local PBKDF2_MAX_LENGTH = 1024

-- crypto.pbkdf2(alg, password, salt, iterations, length) -> key | nil, err
-- PBKDF2 with HMAC-alg (RFC 8018, section 5.2): length bytes derived from
-- password and salt (any bytes, either may be empty) in iterations rounds.
-- alg as for crypto.digest. Slow on purpose: the time grows linearly with
-- iterations (about 0.35 us per iteration with SHA-256 on the development
-- machine) and the call does not yield.
function _M.pbkdf2(alg, password, salt, iterations, length)
  check_string(1, "pbkdf2", alg)
  check_string(2, "pbkdf2", password)
  check_string(3, "pbkdf2", salt)
  if type(iterations) ~= "number" then
    bad_argument(4, "pbkdf2", "number", iterations)
  end
  if iterations < 1 or iterations ~= math_floor(iterations)
      or iterations > PBKDF2_MAX_ITERATIONS then
    error("bad argument #4 to 'pbkdf2' (an integer from 1 to " .. PBKDF2_MAX_ITERATIONS
          .. " expected, got " .. tostring(iterations) .. ")", 2)
  end
  if type(length) ~= "number" then
    bad_argument(5, "pbkdf2", "number", length)
  end
  if length < 1 or length ~= math_floor(length) or length > PBKDF2_MAX_LENGTH then
    error("bad argument #5 to 'pbkdf2' (an integer from 1 to " .. PBKDF2_MAX_LENGTH
          .. " expected, got " .. tostring(length) .. ")", 2)
  end
  local md = digests[alg]
  if not md then
    return nil, "unsupported digest: " .. alg
  end
  local out = buffer(length)
  if C.PKCS5_PBKDF2_HMAC(password, #password, salt, #salt, iterations, md, length, out) ~= 1 then
    return nil, openssl_error("could not derive a key: ")
  end
  return ffi_string(out, length)
end

-- Keys ---------------------------------------------------------------------------

-- Returns the kind of pkey, one of the KIND_* constants.
local function key_kind(pkey)
  local id = C.EVP_PKEY_get_base_id(pkey)
  if id == EVP_PKEY_RSA then
    return KIND_RSA
  elseif id == EVP_PKEY_RSA_PSS then
    return KIND_RSA_PSS
  elseif id == EVP_PKEY_ED25519 then
    return KIND_ED25519
  elseif id == EVP_PKEY_ED448 then
    return KIND_ED448
  elseif id == EVP_PKEY_EC then
    if C.EVP_PKEY_get_group_name(pkey, err_buf, ERR_BUF_SIZE, size_out) == 1 then
      return CURVE_KINDS[ffi_string(err_buf, size_out[0])] or KIND_OTHER
    end
    C.ERR_clear_error()
  end
  return KIND_OTHER
end

local function new_key(pkey, is_private)
  local key = ffi_new(key_t)
  key.pkey = pkey
  key.kind = key_kind(pkey)
  key.priv = is_private and 1 or 0
  return key
end

-- Reads a public key from a SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY") or
-- from an X.509 certificate PEM.
local function read_public_key(pem)
  local bio = C.BIO_new_mem_buf(pem, #pem)
  if bio == nil then
    return nil, openssl_error("invalid public key: ")
  end
  local pkey
  if str_find(pem, "-----BEGIN CERTIFICATE-----", 1, true) then
    local x509 = C.PEM_read_bio_X509(bio, nil, nil, nil)
    if x509 ~= nil then
      pkey = C.X509_get_pubkey(x509)
      C.X509_free(x509)
    end
  else
    pkey = C.PEM_read_bio_PUBKEY(bio, nil, nil, nil)
  end
  C.BIO_free(bio)
  if pkey == nil then
    return nil, openssl_error("invalid public key: ")
  end
  C.ERR_clear_error()
  return new_key(pkey, false)
end

local function read_private_key(pem, passphrase)
  local bio = C.BIO_new_mem_buf(pem, #pem)
  if bio == nil then
    return nil, openssl_error("invalid private key: ")
  end
  -- With no callback, OpenSSL takes the last argument as the passphrase;
  -- passing NULL instead would make it prompt on the terminal.
  local pkey = C.PEM_read_bio_PrivateKey(bio, nil, nil, ffi_cast("void *", passphrase))
  C.BIO_free(bio)
  if pkey == nil then
    return nil, openssl_error("invalid private key: ")
  end
  C.ERR_clear_error()
  return new_key(pkey, true)
end

-- Parsed keys by PEM text, most recently used first, at most KEY_CACHE_SIZE
-- per cache; a hit moves the node to the front, a miss past the limit drops
-- the last node:
--   cache = { map = { [pem] = node }, count = n, head = sentinel node }
--   node  = { pem = "-----BEGIN PUBLIC KEY-----\n...", key = <sl_crypto_key_t>,
--             prev = node, next = node }   -- a ring through the sentinel
local function lru_new()
  local head = {}
  head.prev, head.next = head, head
  return { map = {}, count = 0, head = head }
end

local function lru_get(cache, pem)
  local node = cache.map[pem]
  if not node then
    return nil
  end
  local head = cache.head
  if head.next ~= node then
    node.prev.next, node.next.prev = node.next, node.prev
    node.prev, node.next = head, head.next
    head.next.prev = node
    head.next = node
  end
  return node.key
end

local function lru_set(cache, pem, key)
  local head = cache.head
  if cache.count >= KEY_CACHE_SIZE then
    local last = head.prev
    last.prev.next, head.prev = head, last.prev
    cache.map[last.pem] = nil
    cache.count = cache.count - 1
  end
  local node = { pem = pem, key = key, prev = head, next = head.next }
  head.next.prev = node
  head.next = node
  cache.map[pem] = node
  cache.count = cache.count + 1
end

local public_keys = lru_new()
local private_keys = lru_new()

-- Signatures ---------------------------------------------------------------------

local RSA_KINDS = { [KIND_RSA] = true }
local PSS_KINDS = { [KIND_RSA] = true, [KIND_RSA_PSS] = true }
local EDDSA_KINDS = { [KIND_ED25519] = true, [KIND_ED448] = true }
local NO_KINDS = {}

-- JOSE algs: kinds = the key kinds the alg accepts; md = digest (none for
-- EdDSA, which hashes internally); padding for RSA; ec_size = bytes of r and
-- of s in the raw signature. HS* are listed so that a public or private key
-- offered for them fails as a mismatch (the alg-confusion attack), never as
-- an HMAC keyed with the PEM text.
local ALGS = {
  RS256 = { kinds = RSA_KINDS, md = digests.sha256, padding = RSA_PKCS1_PADDING },
  RS384 = { kinds = RSA_KINDS, md = digests.sha384, padding = RSA_PKCS1_PADDING },
  RS512 = { kinds = RSA_KINDS, md = digests.sha512, padding = RSA_PKCS1_PADDING },
  PS256 = { kinds = PSS_KINDS, md = digests.sha256, padding = RSA_PKCS1_PSS_PADDING },
  PS384 = { kinds = PSS_KINDS, md = digests.sha384, padding = RSA_PKCS1_PSS_PADDING },
  PS512 = { kinds = PSS_KINDS, md = digests.sha512, padding = RSA_PKCS1_PSS_PADDING },
  ES256 = { kinds = { [KIND_P256] = true }, md = digests.sha256, ec_size = 32 },
  ES384 = { kinds = { [KIND_P384] = true }, md = digests.sha384, ec_size = 48 },
  ES512 = { kinds = { [KIND_P521] = true }, md = digests.sha512, ec_size = 66 },
  EdDSA = { kinds = EDDSA_KINDS },
  Ed25519 = { kinds = { [KIND_ED25519] = true } },
  Ed448 = { kinds = { [KIND_ED448] = true } },
  HS256 = { kinds = NO_KINDS },
  HS384 = { kinds = NO_KINDS },
  HS512 = { kinds = NO_KINDS },
}

-- Writes the DER INTEGER for the n big-endian bytes at p + off into der_buf
-- at pos; returns the position after it.
local function der_integer(pos, p, off, n)
  local last = off + n - 1
  local i = off
  while i < last and p[i] == 0 do
    i = i + 1
  end
  local len = last - i + 1
  der_buf[pos] = 0x02
  if p[i] >= 0x80 then
    der_buf[pos + 1] = len + 1
    der_buf[pos + 2] = 0
    pos = pos + 3
  else
    der_buf[pos + 1] = len
    pos = pos + 2
  end
  ffi_copy(der_buf + pos, p + i, len)
  return pos + len
end

-- Converts a JOSE r||s signature (2 * size bytes, checked by the caller) to
-- DER; returns a pointer into der_buf and the length.
local function raw_to_der(sig, size)
  local p = ffi_cast(u8_ptr_t, sig)
  -- The integers go after room for the longest header (30 81 LL).
  local stop = der_integer(3, p, 0, size)
  stop = der_integer(stop, p, size, size)
  local content = stop - 3
  local start
  if content < 128 then
    start = 1
    der_buf[1] = 0x30
    der_buf[2] = content
  else
    start = 0
    der_buf[0] = 0x30
    der_buf[1] = 0x81
    der_buf[2] = content
  end
  return der_buf + start, stop - start
end

-- Copies the DER INTEGER at p[pos] right-aligned into raw_buf[out .. out +
-- size - 1]; returns the position after it, or nil when it is malformed.
local function der_read_integer(p, pos, stop, out, size)
  if pos + 2 > stop or p[pos] ~= 0x02 then
    return nil
  end
  local len = p[pos + 1]
  pos = pos + 2
  local last = pos + len
  if len == 0 or len > 127 or last > stop then
    return nil
  end
  while len > 0 and p[pos] == 0 do
    pos = pos + 1
    len = len - 1
  end
  if len > size then
    return nil
  end
  ffi_fill(raw_buf + out, size - len, 0)
  ffi_copy(raw_buf + out + size - len, p + pos, len)
  return last
end

-- Converts OpenSSL's DER ECDSA signature (len bytes at p) to JOSE r||s.
local function der_to_raw(p, len, size)
  if len < 2 or p[0] ~= 0x30 then
    return nil
  end
  local pos = 2
  if p[1] == 0x81 then
    pos = 3
  end
  local pos2 = der_read_integer(p, pos, len, 0, size)
  if not pos2 or not der_read_integer(p, pos2, len, size, size) then
    return nil
  end
  return ffi_string(raw_buf, 2 * size)
end

-- Sets RSA padding (and, for PSS, salt length = digest length and MGF1 with
-- the same digest) on the context an EVP_Digest{Sign,Verify}Init made.
local function set_padding(a)
  local pctx = pctx_out[0]
  if C.EVP_PKEY_CTX_set_rsa_padding(pctx, a.padding) ~= 1 then
    return false
  end
  if a.padding == RSA_PKCS1_PSS_PADDING then
    return C.EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1
      and C.EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, a.md) == 1
  end
  return true
end

local function verify(key, alg, data, sig)
  local a = ALGS[alg]
  if not a then
    return nil, "unsupported algorithm: " .. alg
  end
  if not a.kinds[key.kind] then
    return nil, "key type mismatch"
  end
  local sig_ptr, sig_len = sig, #sig
  if a.ec_size then
    if sig_len ~= 2 * a.ec_size then
      return false
    end
    sig_ptr, sig_len = raw_to_der(sig, a.ec_size)
  end
  local ctx = sig_ctx
  if C.EVP_DigestVerifyInit(ctx, pctx_out, a.md, nil, key.pkey) ~= 1
      or (a.padding and not set_padding(a)) then
    C.EVP_MD_CTX_reset(ctx)
    return nil, openssl_error("could not verify: ")
  end
  local rc = C.EVP_DigestVerify(ctx, sig_ptr, sig_len, data, #data)
  C.EVP_MD_CTX_reset(ctx)
  -- 0 is a bad signature; a negative result is a signature OpenSSL could not
  -- even parse (wrong length, out of range). Both mean "not signed by this
  -- key", and neither may leave errors behind for the next caller.
  C.ERR_clear_error()
  return rc == 1
end

local function sign(key, alg, data)
  local a = ALGS[alg]
  if not a then
    return nil, "unsupported algorithm: " .. alg
  end
  if not a.kinds[key.kind] then
    return nil, "key type mismatch"
  end
  if key.priv == 0 then
    return nil, "not a private key"
  end
  local ctx = sig_ctx
  if C.EVP_DigestSignInit(ctx, pctx_out, a.md, nil, key.pkey) ~= 1
      or (a.padding and not set_padding(a)) then
    C.EVP_MD_CTX_reset(ctx)
    return nil, openssl_error("could not sign: ")
  end
  local size = C.EVP_PKEY_get_size(key.pkey)
  local out = buffer(size)
  size_out[0] = size
  local rc = C.EVP_DigestSign(ctx, out, size_out, data, #data)
  C.EVP_MD_CTX_reset(ctx)
  if rc ~= 1 then
    return nil, openssl_error("could not sign: ")
  end
  if a.ec_size then
    local raw = der_to_raw(out, size_out[0], a.ec_size)
    if not raw then
      return nil, "could not sign: malformed ECDSA signature"
    end
    return raw
  end
  return ffi_string(out, size_out[0])
end

-- Key objects: sl_crypto_key_t cdata. The EVP_PKEY is freed when the key is
-- collected.
local key_methods = {}

-- key:verify(alg, data, sig) -> true | false | nil, err (see crypto.verify).
function key_methods.verify(key, alg, data, sig)
  check_string(1, "verify", alg)
  check_string(2, "verify", data)
  check_string(3, "verify", sig)
  return verify(key, alg, data, sig)
end

-- key:sign(alg, data) -> signature | nil, err (see crypto.sign).
function key_methods.sign(key, alg, data)
  check_string(1, "sign", alg)
  check_string(2, "sign", data)
  return sign(key, alg, data)
end

-- key:type() -> "RSA", "RSA-PSS", "P-256", "P-384", "P-521", "Ed25519",
-- "Ed448" or "other".
function key_methods.type(key)
  return KIND_NAMES[key.kind]
end

-- key:is_private() -> true when the key was loaded from a private key PEM.
function key_methods.is_private(key)
  return key.priv == 1
end

-- A second load of this module (busted insulates spec files and reloads what
-- they require) finds key_t already bound to the first load's metatable;
-- newer LuaJITs refuse to rebind it, and the first one serves as well.
pcall(ffi.metatype, key_t, {
  __index = key_methods,
  __tostring = function(key)
    return "sluice.crypto key (" .. KIND_NAMES[key.kind]
      .. (key.priv == 1 and ", private)" or ", public)")
  end,
  __gc = function(key)
    if key.pkey ~= nil then
      C.EVP_PKEY_free(key.pkey)
      key.pkey = nil
    end
  end,
})

-- crypto.load_public_key(pem) -> key | nil, "invalid public key: ..."
-- pem: "BEGIN PUBLIC KEY" (SubjectPublicKeyInfo) or "BEGIN CERTIFICATE".
function _M.load_public_key(pem)
  check_string(1, "load_public_key", pem)
  return read_public_key(pem)
end

-- crypto.load_private_key(pem [, passphrase]) -> key | nil, "invalid private key: ..."
-- pem: PKCS#8 ("BEGIN PRIVATE KEY", "BEGIN ENCRYPTED PRIVATE KEY") or the
-- traditional RSA/EC forms.
function _M.load_private_key(pem, passphrase)
  check_string(1, "load_private_key", pem)
  if passphrase ~= nil then
    check_string(2, "load_private_key", passphrase)
  end
  return read_private_key(pem, passphrase or "")
end

-- crypto.verify(alg, key, data, sig) -> true | false | nil, err
-- key: a public key PEM (parsed keys are cached, see public_keys) or a key
-- object. false: the signature is not valid. nil, err: unsupported alg, key
-- type mismatch, invalid PEM.
function _M.verify(alg, key, data, sig)
  check_string(1, "verify", alg)
  check_string(3, "verify", data)
  check_string(4, "verify", sig)
  if type(key) == "string" then
    local pem = key
    key = lru_get(public_keys, pem)
    if not key then
      local err
      key, err = read_public_key(pem)
      if not key then
        return nil, err
      end
      lru_set(public_keys, pem, key)
    end
  elseif not ffi_istype(key_t, key) then
    bad_argument(2, "verify", "string or key", key)
  end
  return verify(key, alg, data, sig)
end

-- crypto.sign(alg, key, data) -> signature | nil, err
-- key: an unencrypted private key PEM (cached like crypto.verify's) or a
-- private key object. ES* signatures come back as JOSE r||s.
function _M.sign(alg, key, data)
  check_string(1, "sign", alg)
  check_string(3, "sign", data)
  if type(key) == "string" then
    local pem = key
    key = lru_get(private_keys, pem)
    if not key then
      local err
      key, err = read_private_key(pem, "")
      if not key then
        return nil, err
      end
      lru_set(private_keys, pem, key)
    end
  elseif not ffi_istype(key_t, key) then
    bad_argument(2, "sign", "string or key", key)
  end
  return sign(key, alg, data)
end

-- JWK public keys -------------------------------------------------------------------

-- DER pieces of a SubjectPublicKeyInfo: the algorithm identifiers by JWK key
-- type and curve, and the size of a coordinate on each curve.
local OID_RSA = "\6\9\42\134\72\134\247\13\1\1\1\5\0" -- rsaEncryption, NULL
local OID_EC = "\6\7\42\134\72\206\61\2\1" -- id-ecPublicKey
local EC_CURVES = {
  ["P-256"] = { oid = "\6\8\42\134\72\206\61\3\1\7", size = 32 },
  ["P-384"] = { oid = "\6\5\43\129\4\0\34", size = 48 },
  ["P-521"] = { oid = "\6\5\43\129\4\0\35", size = 66 },
}
local OKP_CURVES = {
  Ed25519 = { oid = "\6\3\43\101\112", size = 32 },
  Ed448 = { oid = "\6\3\43\101\113", size = 57 },
}

-- A DER element: tag, length, content.
local function der(tag, content)
  local n = #content
  local len
  if n < 0x80 then
    len = str_char(n)
  elseif n < 0x100 then
    len = str_char(0x81, n)
  else
    len = str_char(0x82, bit_rshift(n, 8), bit_band(n, 0xff))
  end
  return str_char(tag) .. len .. content
end

-- The DER INTEGER of a big-endian unsigned magnitude.
local function der_uint(bytes)
  local i = 1
  while i < #bytes and str_byte(bytes, i) == 0 do
    i = i + 1
  end
  bytes = bytes:sub(i)
  if str_byte(bytes, 1) >= 0x80 then
    bytes = "\0" .. bytes
  end
  return der(0x02, bytes)
end

local function spki(algorithm, public_key)
  return der(0x30, der(0x30, algorithm) .. der(0x03, "\0" .. public_key))
end

-- The base64url member name of jwk, decoded; nil, err when it is missing or
-- not base64url.
local function jwk_bytes(jwk, name)
  local v = jwk[name]
  if type(v) ~= "string" or v == "" then
    return nil, "invalid JWK: '" .. name .. "' missing"
  end
  local raw = b64_decode(v, DEC_URL, false, "base64url")
  if not raw then
    return nil, "invalid JWK: '" .. name .. "' is not base64url"
  end
  return raw
end

-- The SubjectPublicKeyInfo DER of a JWK, and the key type it must load as.
local function jwk_der(jwk)
  local kty = jwk.kty
  if kty == "RSA" then
    local n, err = jwk_bytes(jwk, "n")
    if not n then
      return nil, err
    end
    local e
    e, err = jwk_bytes(jwk, "e")
    if not e then
      return nil, err
    end
    return spki(OID_RSA, der(0x30, der_uint(n) .. der_uint(e))), "RSA"
  elseif kty == "EC" then
    local curve = EC_CURVES[jwk.crv]
    if not curve then
      return nil, "invalid JWK: unsupported EC curve '" .. tostring(jwk.crv) .. "'"
    end
    local x, err = jwk_bytes(jwk, "x")
    if not x then
      return nil, err
    end
    local y
    y, err = jwk_bytes(jwk, "y")
    if not y then
      return nil, err
    end
    if #x ~= curve.size or #y ~= curve.size then
      return nil, "invalid JWK: 'x' and 'y' must be " .. curve.size .. " bytes on " .. jwk.crv
    end
    return spki(OID_EC .. curve.oid, "\4" .. x .. y), jwk.crv
  elseif kty == "OKP" then
    local curve = OKP_CURVES[jwk.crv]
    if not curve then
      return nil, "invalid JWK: unsupported OKP curve '" .. tostring(jwk.crv) .. "'"
    end
    local x, err = jwk_bytes(jwk, "x")
    if not x then
      return nil, err
    end
    if #x ~= curve.size then
      return nil, "invalid JWK: 'x' must be " .. curve.size .. " bytes on " .. jwk.crv
    end
    return spki(curve.oid, x), jwk.crv
  end
  return nil, "invalid JWK: unsupported key type '" .. tostring(kty) .. "'"
end

local der_ptr = ffi_new("const unsigned char *[1]")

-- crypto.load_jwk(jwk) -> public key | nil, "invalid JWK: ..."
-- jwk: a decoded JSON Web Key (RFC 7517/7518/8037) table: kty RSA (n, e), EC
-- (crv P-256/P-384/P-521, x, y) or OKP (crv Ed25519/Ed448, x). Private
-- members (d, p, q, ...) are ignored: the key is the public half. The JWK's
-- alg, use and kid are not looked at; the caller decides what they allow.
-- OpenSSL checks the key (an EC point must be on its curve).
function _M.load_jwk(jwk)
  if type(jwk) ~= "table" then
    bad_argument(1, "load_jwk", "table", jwk)
  end
  local bytes, want = jwk_der(jwk)
  if not bytes then
    return nil, want
  end
  der_ptr[0] = ffi_cast(u8_ptr_t, bytes)
  local pkey = C.d2i_PUBKEY(nil, der_ptr, #bytes)
  if pkey == nil then
    return nil, openssl_error("invalid JWK: ")
  end
  C.ERR_clear_error()
  local key = new_key(pkey, false)
  if KIND_NAMES[key.kind] ~= want then
    return nil, "invalid JWK: not a " .. want .. " key"
  end
  return key
end

-- Internal, for the specs: the number of PEMs each key cache holds.
function _M._cache_counts()
  return public_keys.count, private_keys.count
end

return _M
