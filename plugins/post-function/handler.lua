-- post-function: inline Lua that runs after every other plugin.
return require("sluice.functions").new("post-function", -1000)
