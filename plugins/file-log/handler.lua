-- file-log: appends each request's log entry to a file as one JSON line.
--
-- One write(2) of one line per request, on a descriptor opened with
-- O_APPEND: lines from several workers never interleave, and writing a few
-- hundred bytes to a local file does not hold the event loop up noticeably
-- (no buffering, so nothing is lost when a worker dies). The file is
-- reopened when the worker was told to reopen its logs (SIGUSR1, see
-- sluice.log.generation): after logrotate renames it, the lines written
-- before the signal are in the renamed file and those after it in a new one.
local bit = require("bit")
local ffi = require("ffi")
local log_entry = require("sluice.log_entry")

local sluice = sluice

local C = ffi.C
local ffi_errno = ffi.errno
local ipairs = ipairs
local pcall = pcall
local tonumber = tonumber

for _, decl in ipairs({
  "int open(const char *pathname, int flags, ...);",
  "long write(int fd, const void *buf, unsigned long count);",
  "int close(int fd);",
  "char *strerror(int errnum);",
}) do
  pcall(ffi.cdef, decl)
end

local O_WRONLY, O_CREAT, O_APPEND, O_CLOEXEC = 0x1, 0x40, 0x400, 0x80000
local FLAGS = bit.bor(O_WRONLY, O_CREAT, O_APPEND, O_CLOEXEC)
local MODE = 420 -- 0644
local EINTR, EAGAIN = 4, 11

local FileLog = {
  PRIORITY = 9, -- Kong's
  VERSION = "1.0.0",
}

-- Per worker: path -> { fd =, generation = sluice.log.generation() when opened }.
local files = {}

local function strerror()
  return ffi.string(C.strerror(ffi_errno()))
end

local function close(f)
  if f.fd >= 0 then
    C.close(f.fd)
    f.fd = -1
  end
end

-- The open file for path, opened again when the logs were rotated (or when
-- reopen asks for it); nil, err when it cannot be opened.
local function file_for(path, reopen)
  local gen = sluice.log.generation()
  local f = files[path]
  if f and (reopen or f.generation ~= gen) then
    close(f)
  end
  if not f or f.fd < 0 then
    local fd = C.open(path, FLAGS, ffi.cast("int", MODE))
    if fd < 0 then
      return nil, "cannot open " .. path .. ": " .. strerror()
    end
    f = f or {}
    f.fd, f.generation = fd, gen
    files[path] = f
  end
  return f
end

-- Writes the whole line; a short write (a full disk) is retried for the rest.
local function write_line(f, line)
  local len = #line
  local buf = ffi.cast("const char *", line)
  local off = 0
  for _ = 1, 100 do
    local n = tonumber(C.write(f.fd, buf + off, len - off))
    if n < 0 then
      local e = ffi_errno()
      if e ~= EINTR and e ~= EAGAIN then
        return nil, strerror()
      end
    else
      off = off + n
      if off >= len then
        return true
      end
    end
  end
  return nil, "short writes"
end

function FileLog.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    log_entry.compile(conf)
  end
end

function FileLog.log(_, conf)
  local json, err = sluice.json.encode(log_entry.build(conf))
  if not json then
    sluice.log.err("could not encode the log entry: ", err)
    return
  end
  local f
  f, err = file_for(conf.path, conf.reopen)
  if not f then
    sluice.log.err(err)
    return
  end
  local ok
  ok, err = write_line(f, json .. "\n")
  if not ok then
    sluice.log.err("could not write to ", conf.path, ": ", err)
  end
  if conf.reopen then
    close(f)
  end
end

return FileLog
