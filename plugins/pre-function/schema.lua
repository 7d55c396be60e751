-- pre-function: inline Lua per phase, compiled once when the config loads.
return require("sluice.functions").schema("pre-function")
