std = "luajit"
globals = { "sluice" }
max_line_length = 100
files["spec/**/*.lua"] = { std = "+busted" }
files["bench/*.lua"] = { std = "+busted" } -- benchmarks run with busted inside sluice
