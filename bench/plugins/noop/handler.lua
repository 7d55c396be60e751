-- noop: a bench plugin whose access handler does nothing, so a route with it
-- measures what running a Lua plugin chain costs per request (bench/plugins.sh).
--
-- With SLUICE_JIT_LOG=FILE in sluice's environment, init_worker turns on
-- LuaJIT's verbose trace log (jit.v, as `luajit -jv` does) into FILE for the
-- worker's VM; bench/plugins.sh --jit reads it for trace aborts.
local function jit_log()
  local file = os.getenv("SLUICE_JIT_LOG")
  -- once per VM: a second on() would truncate the file (the pdk plugin does the same)
  if not file or file == "" or package.loaded["jit.v"] then
    return
  end
  -- jit.v and jit.vmdef ship with LuaJIT, outside sluice's package.path
  -- (Debian's libluajit2-5.1-common: /usr/share/luajit-2.1.0-beta3/jit/v.lua).
  local dir = os.getenv("SLUICE_JIT_LIB")
  if dir and dir ~= "" then
    package.path = dir .. "/?.lua;" .. package.path
  end
  require("jit.v").on(file)
end

return {
  PRIORITY = 1000,
  VERSION = "0.1.0",
  init_worker = function(_self)
    jit_log()
  end,
  access = function(_self, _conf)
  end,
}
