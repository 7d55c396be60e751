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
