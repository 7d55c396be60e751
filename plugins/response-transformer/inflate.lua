-- inflate.lua: streaming gzip/zlib decompression over zlib (libz.so.1) through the LuaJIT FFI.
--
--   local z = assert(inflate.new())
--   local out, err = z:feed(piece)      -- what the piece inflates to ("" is fine)
--   z:finish()                          -- true when the stream ended cleanly
--
-- zlib is loaded once per process with dlopen: the runtime package (zlib1g)
-- is on every Debian system, so sluice links nothing new. An inflater owns
-- zlib's state for one response; close() frees it, and so does the garbage
-- collector if a response is abandoned.

local ffi = require("ffi")

local ffi_gc = ffi.gc
local ffi_string = ffi.string
local setmetatable = setmetatable
local tbl_concat = table.concat

ffi.cdef([[
typedef struct sl_z_stream_s {
  const char *next_in;
  unsigned int avail_in;
  unsigned long total_in;
  unsigned char *next_out;
  unsigned int avail_out;
  unsigned long total_out;
  const char *msg;
  void *state;
  void *zalloc;
  void *zfree;
  void *opaque;
  int data_type;
  unsigned long adler;
  unsigned long reserved;
} sl_z_stream;
const char *zlibVersion(void);
int inflateInit2_(sl_z_stream *strm, int windowBits, const char *version, int stream_size);
int inflate(sl_z_stream *strm, int flush);
int inflateReset(sl_z_stream *strm);
int inflateEnd(sl_z_stream *strm);
]])

local Z_OK, Z_STREAM_END, Z_BUF_ERROR = 0, 1, -5
local Z_NO_FLUSH = 0
-- 15-bit window, +32: zlib detects a gzip or a zlib header by itself.
local WINDOW_BITS = 15 + 32
local OUT_SIZE = 65536

local _M = {}

local zlib, load_err
do
  local ok, lib = pcall(ffi.load, "libz.so.1")
  if not ok then
    ok, lib = pcall(ffi.load, "z")
  end
  if ok then
    zlib = lib
  else
    load_err = "zlib (libz.so.1) could not be loaded: " .. tostring(lib)
  end
end

-- Output scratch: feed never yields, so one buffer serves every inflater.
local out_buf = ffi.new("unsigned char[?]", OUT_SIZE)
local STREAM_SIZE = ffi.sizeof("sl_z_stream")

local Inflater = {}
Inflater.__index = Inflater

-- A new inflater, or nil, err when zlib is missing or out of memory.
function _M.new()
  if not zlib then
    return nil, load_err
  end
  local strm = ffi.new("sl_z_stream[1]")
  if zlib.inflateInit2_(strm, WINDOW_BITS, zlib.zlibVersion(), STREAM_SIZE) ~= Z_OK then
    return nil, "zlib could not start inflating"
  end
  ffi_gc(strm, zlib.inflateEnd)
  return setmetatable({ strm = strm, ended = false }, Inflater)
end

-- Inflates the next piece of the compressed stream. Returns what it
-- inflates to (possibly ""), or nil, err for data that is not gzip or zlib.
-- Several gzip members in a row inflate one after the other; bytes after
-- the end of a zlib stream are an error.
function Inflater:feed(piece)
  if #piece == 0 then
    return ""
  end
  local strm = self.strm
  local z = strm[0]
  z.next_in = piece
  z.avail_in = #piece
  local out, n = nil, 0
  while true do
    if self.ended then
      if z.avail_in == 0 then
        break
      end
      -- Another gzip member follows the one that ended.
      if zlib.inflateReset(strm) ~= Z_OK then
        return nil, "zlib could not restart"
      end
      self.ended = false
    end
    z.next_out = out_buf
    z.avail_out = OUT_SIZE
    local rc = zlib.inflate(strm, Z_NO_FLUSH)
    local produced = OUT_SIZE - z.avail_out
    if produced > 0 then
      out = out or {}
      n = n + 1
      out[n] = ffi_string(out_buf, produced)
    end
    if rc == Z_STREAM_END then
      self.ended = true
    elseif rc == Z_BUF_ERROR then
      break -- no progress possible: it needs the next piece
    elseif rc ~= Z_OK then
      z.next_in = nil
      local msg = z.msg ~= nil and ffi_string(z.msg) or ("error " .. rc)
      return nil, "invalid compressed body: " .. msg
    elseif z.avail_in == 0 and z.avail_out ~= 0 then
      break -- this piece is all inflated
    end
  end
  z.next_in = nil
  if n == 0 then
    return ""
  end
  return n == 1 and out[1] or tbl_concat(out, "", 1, n)
end

-- True when the compressed stream ended (the body was complete).
function Inflater:finish()
  return self.ended
end

-- Frees zlib's state now (else the garbage collector does).
function Inflater:close()
  local strm = self.strm
  if strm then
    zlib.inflateEnd(ffi_gc(strm, nil))
    self.strm = nil
  end
end

return _M
