-- pre-function: inline Lua that runs before every other plugin.
return require("sluice.functions").new("pre-function", 1000000)
