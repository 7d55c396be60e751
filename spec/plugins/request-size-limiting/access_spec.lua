-- request-size-limiting in-process (t.plugin): Content-Length bodies against the
-- limit in each unit, 411 and 417, and what reaches the upstream.
local t = require("sluice.test")

local rep = string.rep

describe("plugin: request-size-limiting (access)", function()
  it("lets a body of exactly the limit through, whole", function()
    local p = t.plugin("request-size-limiting", { allowed_payload_size = 10, size_unit = "bytes" })
    local res = p:run({ method = "POST", path = "/up", body = rep("a", 10) })
    assert.res_status(200, res)
    assert.equal(rep("a", 10), res.upstream.body)
  end)

  it("refuses one byte more with Kong's 413, before the upstream", function()
    local p = t.plugin("request-size-limiting", { allowed_payload_size = 10, size_unit = "bytes" })
    local res = p:run({ method = "POST", path = "/up", body = rep("a", 11) })
    assert.same({ message = "Request size limit exceeded" }, assert(res:json()))
    assert.equal(413, res.status)
    assert.matches("^application/json", res.headers["content-type"])
    assert.is_nil(res.upstream)
  end)

  it("counts kilobytes and megabytes as 1024 and 1048576 bytes", function()
    local kb = t.plugin("request-size-limiting", { allowed_payload_size = 2,
                                                   size_unit = "kilobytes" })
    assert.res_status(200, kb:run({ method = "PUT", body = rep("k", 2048) }))
    assert.res_status(413, kb:run({ method = "PUT", body = rep("k", 2049) }))
    local mb = t.plugin("request-size-limiting", { allowed_payload_size = 1 })
    assert.res_status(200, mb:run({ method = "PUT", body = rep("m", 1048576) }))
    assert.res_status(413, mb:run({ method = "PUT", body = rep("m", 1048577) }))
  end)

  it("allows only empty bodies with a limit of 0", function()
    local p = t.plugin("request-size-limiting", { allowed_payload_size = 0 })
    assert.res_status(200, p:run({ method = "POST", body = "" }))
    assert.res_status(413, p:run({ method = "POST", body = "x" }))
    assert.res_status(200, p:run({ method = "GET" }))
  end)

  it("answers 417 to a client that waits for 100 Continue, as Kong", function()
    local p = t.plugin("request-size-limiting", { allowed_payload_size = 4, size_unit = "bytes" })
    local res = p:run({ method = "POST", body = "12345", headers = { Expect = "100-continue" } })
    assert.equal(417, res.status)
    assert.same({ message = "Request size limit exceeded" }, assert(res:json()))
    assert.res_status(200, p:run({ method = "POST", body = "1234",
                                   headers = { Expect = "100-continue" } }))
  end)

  it("requires a Content-Length with require_content_length, with Kong's 411", function()
    local p = t.plugin("request-size-limiting", { allowed_payload_size = 4, size_unit = "bytes",
                                                  require_content_length = true })
    local res = p:run({ method = "GET", path = "/x" })
    assert.equal(411, res.status)
    assert.same({ message = "A valid Content-Length header is required" }, assert(res:json()))
    assert.is_nil(res.upstream)
    assert.res_status(200, p:run({ method = "POST", body = "" }))
    assert.res_status(200, p:run({ method = "POST", body = "1234" }))
    assert.res_status(413, p:run({ method = "POST", body = "12345" }))
  end)

  it("lets bodiless requests through without require_content_length", function()
    local p = t.plugin("request-size-limiting", { allowed_payload_size = 1, size_unit = "bytes" })
    local res = p:run({ method = "GET", path = "/plain" })
    assert.res_status(200, res)
    assert.equal("/plain", res.upstream.path)
  end)
end)

describe("pdk: sluice.request.set_max_body_size", function()
  local function pre(code, request)
    return t.plugin("pre-function", { access = { code } }):run(request or {})
  end

  it("returns true under the limit and nil, err over it", function()
    local res = pre("local ok, err = sluice.request.set_max_body_size(3) "
      .. "if ok == nil then return sluice.response.exit(299, err) end",
      { method = "POST", body = "abcd" })
    assert.equal(299, res.status)
    assert.equal("request body larger than 3 bytes", res.body)
    res = pre("assert(sluice.request.set_max_body_size(4) == true)",
      { method = "POST", body = "abcd" })
    assert.res_status(200, res)
    assert.equal("abcd", res.upstream.body)
  end)

  it("makes the C core refuse the body when the plugin lets it through anyway", function()
    local res = pre("sluice.request.set_max_body_size(3)", { method = "POST", body = "abcd" })
    assert.equal(413, res.status)
    assert.same({ message = "Request size limit exceeded" }, assert(res:json()))
    assert.is_nil(res.upstream)
  end)

  it("only lowers the limit, never raises server.max_body_size", function()
    local res = pre("sluice.request.set_max_body_size(1) sluice.request.set_max_body_size(100)",
      { method = "POST", body = "abcd" })
    assert.res_status(200, res)
  end)

  it("names a bad argument and a wrong phase", function()
    local res = pre("sluice.request.set_max_body_size(-1)")
    assert.equal(500, res.status)
    assert.matches("bad argument #1 to 'set_max_body_size' (integer from 0 to 1e+15 expected, "
      .. "got -1)", table.concat(res.logs, "\n"), 1, true)
    local p = t.plugin("post-function", { header_filter = {
      "sluice.request.set_max_body_size(10)" } })
    res = p:run({})
    assert.equal(500, res.status)
    assert.matches("sluice.request.set_max_body_size is not allowed in phase header_filter",
      table.concat(res.logs, "\n"), 1, true)
  end)
end)
