-- request-transformer: Kong's plugin: changes the headers, query, body, path and method upstream.
local transform = require("sluice.plugins.request-transformer.transform")

local sluice = sluice

local compile = transform.compile
local execute = transform.execute

local RequestTransformer = {
  PRIORITY = 801, -- Kong's: after authentication and rate limiting, before response-transformer
  VERSION = "1.0.0",
}

-- An instance with nothing to do stays out of the chain.
function RequestTransformer.uses_phase(conf, phase)
  local c = compile(conf)
  return phase == "access"
    and (c.headers or c.query or c.body or c.method or c.uri) ~= nil
end

-- Every config is compiled once per worker, before its first request.
function RequestTransformer.configure(_, configs)
  for _, conf in ipairs(configs or {}) do
    compile(conf)
  end
end

function RequestTransformer.access(_, conf)
  if not execute(compile(conf)) then
    return sluice.response.exit(400, transform.BAD_VALUE)
  end
end

return RequestTransformer
