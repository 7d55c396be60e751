-- pdk: a bench plugin whose access handler does typical cheap PDK work (read
-- a request header, set one on the upstream request), to measure and to
-- JIT-check the hot PDK path (bench/plugins.sh).
--
-- SLUICE_JIT_LOG / SLUICE_JIT_LIB: as in the noop plugin.
local function jit_log()
  local file = os.getenv("SLUICE_JIT_LOG")
  if not file or file == "" or package.loaded["jit.v"] then
    return
  end
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
    local h = sluice.request.get_header("user-agent") -- luacheck: ignore 211 (read, unused)
    sluice.service.request.set_header("X-Bench", "1")
  end,
}
