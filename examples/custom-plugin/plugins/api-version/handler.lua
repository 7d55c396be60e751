-- api-version: rewrites the upstream path by API version and says which one answered.
--
-- A client asks for a version with a header (Accept-Version: v2) or a query
-- argument (?version=v2); the request goes upstream under that version's path
-- prefix (/api/v2/...), the upstream sees X-API-Version, and the client gets
-- X-API-Version back on the response.
local sluice = sluice

local ApiVersion = {
  PRIORITY = 900, -- after authentication (1000+), before transformations
  VERSION = "1.0.0",
}

local function wanted(conf)
  local v = sluice.request.get_header(conf.header)
  if v == nil or v == "" then
    v = sluice.request.get_query_arg(conf.query_arg)
  end
  if v == true or v == "" then
    v = nil
  end
  return v
end

function ApiVersion.access(_, conf)
  local version = wanted(conf)
  local prefix = version and conf.versions[version]
  if not prefix then
    if version and conf.reject_unknown then
      return sluice.response.exit(400, {
        message = "unknown API version '" .. version .. "'",
      })
    end
    version = conf.default
    prefix = version and conf.versions[version]
    if not prefix then
      return sluice.response.exit(400, { message = "an API version is required" })
    end
  end
  local path = sluice.request.get_path()
  sluice.service.request.set_path(prefix == "/" and path or (prefix .. path))
  sluice.service.request.set_header("X-API-Version", version)
  sluice.ctx.plugin.version = version
end

function ApiVersion.header_filter(_, _)
  local version = sluice.ctx.plugin.version
  if version then
    sluice.response.set_header("X-API-Version", version)
  end
end

return ApiVersion
