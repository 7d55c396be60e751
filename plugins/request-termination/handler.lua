-- request-termination: answers the request itself; nothing reaches the upstream.
local sluice = sluice

local DEFAULT_MESSAGES = {
  [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not found",
  [405] = "Method not allowed", [429] = "Too many requests",
  [503] = "Service unavailable",
}

local RequestTermination = {
  PRIORITY = 2,
  VERSION = "0.1.0",
}

function RequestTermination.access(_, conf)
  if conf.trigger then
    local t = conf.trigger
    if not sluice.request.get_header(t) and sluice.request.get_query_arg(t) == nil then
      return
    end
  end
  local status = conf.status_code
  if conf.echo then
    return sluice.response.exit(status, {
      message = "request-termination echo",
      request = {
        method = sluice.request.get_method(),
        host = sluice.request.get_host(),
        path = sluice.request.get_raw_path(),
        query = sluice.request.get_query(),
        headers = sluice.request.get_headers(),
      },
    })
  end
  if conf.body then
    return sluice.response.exit(status, conf.body,
      { ["Content-Type"] = conf.content_type or "application/json; charset=utf-8" })
  end
  return sluice.response.exit(status,
    { message = conf.message or DEFAULT_MESSAGES[status] or "Request terminated" })
end

return RequestTermination
