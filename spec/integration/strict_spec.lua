-- Strict parsing: ambiguous or malformed requests get 400, the connection is
-- closed, and nothing of them reaches the upstream (no request smuggling).
local helpers = require("spec.helpers")

local fmt = string.format

-- name, request bytes. Each request's path is /strict-NAME and its body, if
-- any, smuggles a request for /smuggled-NAME.
local CASES = {
  { "cl-and-te", "POST /strict-cl-and-te HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 36\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled-cl-and-te HTTP/1.1\r\n\r\n" },
  { "te-and-cl", "POST /strict-te-and-cl HTTP/1.1\r\nHost: gw.test\r\n"
    .. "Transfer-Encoding: chunked\r\nContent-Length: 36\r\n\r\n"
    .. "0\r\n\r\nGET /smuggled-te-and-cl HTTP/1.1\r\n\r\n" },
  { "two-cl", "POST /strict-two-cl HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n"
    .. "Content-Length: 37\r\n\r\nGET /smuggled-two-cl HTTP/1.1\r\n\r\n" },
  { "cl-list", "POST /strict-cl-list HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0, 38\r\n\r\n"
    .. "GET /smuggled-cl-list HTTP/1.1\r\n\r\n" },
  { "te-gzip-chunked", "POST /strict-te-gzip-chunked HTTP/1.1\r\nHost: gw.test\r\n"
    .. "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    .. "GET /smuggled-te-gzip-chunked HTTP/1.1\r\n\r\n" },
  { "te-identity", "POST /strict-te-identity HTTP/1.1\r\nHost: gw.test\r\n"
    .. "Transfer-Encoding: identity\r\n\r\nGET /smuggled-te-identity HTTP/1.1\r\n\r\n" },
  { "obs-fold", "GET /strict-obs-fold HTTP/1.1\r\nHost: gw.test\r\nX-Folded: one\r\n"
    .. " two\r\n\r\n" },
  { "obs-fold-tab", "GET /strict-obs-fold-tab HTTP/1.1\r\nHost: gw.test\r\nX-Folded: one\r\n"
    .. "\ttwo\r\n\r\n" },
  { "space-before-colon", "GET /strict-space-before-colon HTTP/1.1\r\nHost: gw.test\r\n"
    .. "X-Name : value\r\n\r\n" },
  { "te-space-before-colon", "POST /strict-te-space-before-colon HTTP/1.1\r\nHost: gw.test\r\n"
    .. "Content-Length: 49\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    .. "GET /smuggled-te-space-before-colon HTTP/1.1\r\n\r\n" },
  { "nul-in-value", "GET /strict-nul-in-value HTTP/1.1\r\nHost: gw.test\r\n"
    .. "X-Value: a\0b\r\n\r\n" },
  { "bare-cr-in-value", "GET /strict-bare-cr-in-value HTTP/1.1\r\nHost: gw.test\r\n"
    .. "X-Value: a\rb\r\n\r\n" },
  { "bad-byte-in-name", "GET /strict-bad-byte-in-name HTTP/1.1\r\nHost: gw.test\r\n"
    .. "X(Name): value\r\n\r\n" },
  { "ctl-in-name", "GET /strict-ctl-in-name HTTP/1.1\r\nHost: gw.test\r\n"
    .. "X\1Name: value\r\n\r\n" },
  { "bad-cl", "POST /strict-bad-cl HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3x\r\n\r\nabc" },
  { "negative-cl", "POST /strict-negative-cl HTTP/1.1\r\nHost: gw.test\r\n"
    .. "Content-Length: -1\r\n\r\n" },
  { "te-chunked-twice", "POST /strict-te-chunked-twice HTTP/1.1\r\nHost: gw.test\r\n"
    .. "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" },
  { "high-byte-in-name", "GET /strict-high-byte-in-name HTTP/1.1\r\nHost: gw.test\r\n"
    .. "X-\255: value\r\n\r\n" },
  { "missing-host", "GET /strict-missing-host HTTP/1.1\r\nX-Other: 1\r\n\r\n" },
  { "two-hosts", "GET /strict-two-hosts HTTP/1.1\r\nHost: gw.test\r\nHost: other.test\r\n\r\n" },
  { "bad-chunk-size", "POST /strict-bad-chunk-size HTTP/1.1\r\nHost: gw.test\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" },
}

describe("strict: malformed requests", function()
  local upstream, s

  setup(function()
    upstream = helpers.start_upstream()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: all
        paths: ["/"]
]], upstream.port))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  -- Waits until a request sent after the bad ones has reached the upstream,
  -- so that anything sluice forwarded before it is in the upstream's log too.
  local function sync_upstream(tag)
    local status = helpers.curl(fmt("http://127.0.0.1:%d/sync-%s", s.port, tag))
    assert.equals(200, status)
    assert.is_truthy(helpers.wait_for(function()
      return helpers.upstream_saw(upstream, "/sync-" .. tag)
    end, 3))
  end

  for _, case in ipairs(CASES) do
    local name, raw = case[1], case[2]
    local rejected_body = name == "bad-chunk-size"
    it((rejected_body and "a malformed chunked body" or name) .. " gets 400 and a closed "
      .. "connection" .. (rejected_body and "" or ", and never reaches the upstream"), function()
      local c = helpers.connect(s.port)
      assert(c:send(raw))
      local res, err = c:read_response()
      assert.is_truthy(res, err)
      assert.equals(400, res.status)
      assert.matches("^application/json", res.headers["content-type"])
      local body = helpers.json(res.body)
      assert.is_table(body, res.body)
      assert.is_string(body.message)
      assert.is_true(#body.message > 0)
      assert.equals("close", res.headers["connection"])
      assert.is_true((c:closed(2)))
      c:close()

      sync_upstream(name)
      assert.is_false(helpers.upstream_saw(upstream, "/smuggled-" .. name))
      if not rejected_body then
        assert.is_false(helpers.upstream_saw(upstream, "/strict-" .. name))
      end
    end)
  end

  it("still accepts a well-formed request with a chunked body", function()
    local res = helpers.request(s.port, "POST /ok HTTP/1.1\r\nHost: gw.test\r\n"
      .. "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert.is_truthy(res)
    assert.equals(200, res.status)
    assert.equals("abcde", helpers.json(res.body).body)
  end)
end)
