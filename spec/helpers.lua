-- helpers.lua: the integration helpers live in lua/sluice/test/helpers.lua (sluice.test).
return require("sluice.test.helpers")
