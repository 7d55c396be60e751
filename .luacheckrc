std = "luajit"
globals = { "sluice" }
max_line_length = 100
files["spec/**/*.lua"] = { std = "+busted" }
