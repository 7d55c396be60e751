-- cors: PCRE2 regexes over LuaJIT FFI, compiled once and matched against a whole string.
--
-- sluice links libpcre2-8 (its router's regex paths), so the functions are
-- in the process already; without them (a build that links it statically
-- and hides it) the shared library is loaded by name. Each declaration is
-- made on its own and a redefinition is ignored: another module may have
-- declared the same PCRE2 functions first.
local ffi = require("ffi")

local ffi_gc = ffi.gc
local ffi_new = ffi.new
local ffi_string = ffi.string
local ipairs = ipairs
local pcall = pcall
local setmetatable = setmetatable
local tonumber = tonumber

local ANCHORED = 0x80000000
local ENDANCHORED = 0x20000000
local JIT_COMPLETE = 0x00000001
local ERROR_NOMATCH = -1
local MESSAGE_SIZE = 256

local CDEFS = {
  "typedef struct pcre2_real_code_8 pcre2_code_8;",
  "typedef struct pcre2_real_match_data_8 pcre2_match_data_8;",
  [[pcre2_code_8 *pcre2_compile_8(const unsigned char *pattern, size_t length, uint32_t options,
      int *errorcode, size_t *erroroffset, void *ccontext);]],
  "int pcre2_jit_compile_8(pcre2_code_8 *code, uint32_t options);",
  "void pcre2_code_free_8(pcre2_code_8 *code);",
  [[pcre2_match_data_8 *pcre2_match_data_create_from_pattern_8(const pcre2_code_8 *code,
      void *gcontext);]],
  "void pcre2_match_data_free_8(pcre2_match_data_8 *match_data);",
  [[int pcre2_match_8(const pcre2_code_8 *code, const unsigned char *subject, size_t length,
      size_t startoffset, uint32_t options, pcre2_match_data_8 *match_data, void *mcontext);]],
  "int pcre2_get_error_message_8(int errorcode, unsigned char *buffer, size_t bufflen);",
}
for _, d in ipairs(CDEFS) do
  pcall(ffi.cdef, d)
end

local lib = ffi.C
if not pcall(function() return lib.pcre2_compile_8 end) then
  lib = ffi.load("libpcre2-8.so.0")
end

local _M = {}

-- Out-parameters of pcre2_compile, reused: compiling never yields.
local errcode = ffi_new("int[1]")
local erroffset = ffi_new("size_t[1]")
local message = ffi_new("unsigned char[?]", MESSAGE_SIZE)

local Regex = {}
Regex.__index = Regex

-- Compiles pattern so that it matches only a whole subject (as if written
-- ^(?:pattern)$, without $ matching before a final newline). Returns the
-- regex, or nil and PCRE2's reason with the offset
-- ("missing closing parenthesis at offset 4"). The compiled code and its
-- match data are freed when the regex is collected.
function _M.compile(pattern)
  local code = lib.pcre2_compile_8(pattern, #pattern, ANCHORED + ENDANCHORED, errcode,
    erroffset, nil)
  if code == nil then
    lib.pcre2_get_error_message_8(errcode[0], message, MESSAGE_SIZE)
    return nil, ffi_string(message) .. " at offset " .. tonumber(erroffset[0])
  end
  code = ffi_gc(code, lib.pcre2_code_free_8)
  -- JIT is an optimisation: a platform without it still matches, slower.
  lib.pcre2_jit_compile_8(code, JIT_COMPLETE)
  local md = ffi_gc(lib.pcre2_match_data_create_from_pattern_8(code, nil),
    lib.pcre2_match_data_free_8)
  if md == nil then
    return nil, "out of memory"
  end
  return setmetatable({ code = code, md = md, pattern = pattern }, Regex)
end

-- True when the regex matches the whole of s. The match data is shared by
-- every call of this regex, which is safe because a match never yields.
-- Returns false (and the PCRE2 code) on a matching error, such as the
-- match limit being hit: an origin that cannot be matched is not allowed.
function Regex:matches(s)
  local rc = lib.pcre2_match_8(self.code, s, #s, 0, 0, self.md, nil)
  if rc >= 0 then
    return true
  end
  if rc == ERROR_NOMATCH then
    return false
  end
  return false, rc
end

return _M
