-- http-log's config: Kong's fields and defaults, the queue, and what is refused at load.
local t = require("sluice.test")

local function refused(conf)
  local ok, err = pcall(t.plugin, "http-log", conf)
  assert.is_false(ok)
  return tostring(err)
end

describe("plugin: http-log (schema)", function()
  it("fills Kong's defaults, queue included", function()
    local c = t.plugin("http-log", { http_endpoint = "http://127.0.0.1:9000/logs" }).config
    assert.equal("POST", c.method)
    assert.equal("application/json", c.content_type)
    assert.equal(10000, c.timeout)
    assert.equal(60000, c.keepalive)
    assert.same({}, c.headers)
    assert.same({ max_batch_size = 1, max_coalescing_delay = 1, max_entries = 10000,
                  max_retry_time = 60, initial_retry_delay = 0.01, max_retry_delay = 60,
                  concurrency_limit = 1 }, c.queue)
    assert.same({}, c.redact)
    assert.is_false(c.query_values)
  end)

  it("maps Kong's deprecated queue_size and flush_timeout onto the queue", function()
    local c = t.plugin("http-log", { http_endpoint = "http://h/x", queue_size = 50,
                                     flush_timeout = 3, retry_count = 4 }).config
    assert.equal(50, c.queue.max_batch_size)
    assert.equal(3, c.queue.max_coalescing_delay)
  end)

  it("refuses https endpoints with the reason", function()
    assert.matches("config.http_endpoint: https endpoints are not supported yet",
      refused({ http_endpoint = "https://logs.example.com/in" }), 1, true)
  end)

  it("refuses a URL without a host, another scheme, or a missing endpoint", function()
    assert.matches("the URL has no host", refused({ http_endpoint = "http:///x" }), 1, true)
    assert.matches("expected an http:// URL", refused({ http_endpoint = "ftp://h/x" }), 1, true)
    assert.matches("config.http_endpoint: required field missing", refused({}), 1, true)
  end)

  it("refuses Host, Content-Length and Content-Type headers, as Kong does", function()
    assert.matches("cannot contain 'Host' header",
      refused({ http_endpoint = "http://h/x", headers = { host = "x" } }), 1, true)
    assert.matches("cannot contain 'Content-Type' header",
      refused({ http_endpoint = "http://h/x", headers = { ["Content-Type"] = "x" } }), 1, true)
  end)

  it("refuses an Authorization header together with user info in the URL", function()
    assert.matches("specifying both an 'Authorization' header and user info",
      refused({ http_endpoint = "http://u:p@h/x", headers = { Authorization = "Bearer t" } }),
      1, true)
  end)

  it("refuses custom_fields_by_lua that does not compile, naming the field", function()
    assert.matches("field 'tenant': invalid Lua",
      refused({ http_endpoint = "http://h/x", custom_fields_by_lua = { tenant = "return (" } }),
      1, true)
  end)

  it("checks the queue's bounds", function()
    assert.matches("config.queue.max_batch_size",
      refused({ http_endpoint = "http://h/x", queue = { max_batch_size = 0 } }), 1, true)
    assert.matches("config.queue.concurrency_limit",
      refused({ http_endpoint = "http://h/x", queue = { concurrency_limit = 4 } }), 1, true)
  end)
end)
