-- request-transformer in-process (t.plugin): every operation on headers, query, bodies, uri and
-- method, and templates from headers, query, captures and the consumer, checked on what would go
-- upstream.
local t = require("sluice.test")
local cjson = require("cjson.safe")

local function run(conf, req, opts)
  local res = t.plugin("request-transformer", conf, opts):run(req or {})
  assert(res.upstream, "nothing went upstream: " .. tostring(res.status) .. " "
    .. tostring(res.body) .. " " .. table.concat(res.logs, "\n"))
  return res.upstream, res
end

-- The query string as a table of name -> list of values.
local function query(up)
  local q = {}
  for pair in up.query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    q[k] = q[k] or {}
    table.insert(q[k], v)
  end
  return q
end

describe("plugin: request-transformer (access)", function()
  describe("headers", function()
    it("removes, renames, replaces, adds and appends, in Kong's order", function()
      local up = run({
        remove = { headers = { "X-Secret", "x-absent" } },
        rename = { headers = { "X-Old:X-New" } },
        replace = { headers = { "X-Env:prod", "X-Missing:no" } },
        add = { headers = { "X-Added:1", "X-Env:not-added" } },
        append = { headers = { "X-List:c", "X-Fresh:f" } },
      }, { headers = { ["X-Secret"] = "s", ["X-Old"] = "o", ["X-Env"] = "dev",
                       ["X-List"] = "a" } })
      local h = up.headers
      assert.is_nil(h["x-secret"])
      assert.is_nil(h["x-old"])
      assert.equal("o", h["x-new"])
      assert.equal("prod", h["x-env"])
      assert.is_nil(h["x-missing"]) -- replace only when present
      assert.equal("1", h["x-added"])
      assert.same({ "a", "c" }, h["x-list"])
      assert.equal("f", h["x-fresh"])
    end)

    it("sees its own earlier operations: add after remove adds, replace after rename replaces",
      function()
        local up = run({
          remove = { headers = { "X-A" } },
          rename = { headers = { "X-B:X-C" } },
          replace = { headers = { "X-C:replaced" } },
          add = { headers = { "X-A:again" } },
          append = { headers = { "X-C:more" } },
        }, { headers = { ["X-A"] = "1", ["X-B"] = "2" } })
        assert.equal("again", up.headers["x-a"])
        assert.is_nil(up.headers["x-b"])
        assert.same({ "replaced", "more" }, up.headers["x-c"])
      end)

    it("renames every line of a repeated header", function()
      local up = run({ rename = { headers = { "x-multi:x-moved" } } },
        { headers = { ["X-Multi"] = { "1", "2" } } })
      assert.same({ "1", "2" }, up.headers["x-moved"])
      assert.is_nil(up.headers["x-multi"])
    end)

    it("replaces Host (the upstream gets it) but never adds, appends or removes it", function()
      local up = run({ replace = { headers = { "Host:api.internal" } } })
      assert.equal("api.internal", up.headers.host)
      up = run({ add = { headers = { "Host:nope" } }, append = { headers = { "Host:nope" } },
                 remove = { headers = { "host" } } })
      assert.equal("127.0.0.1:8080", up.headers.host)
    end)

    it("refuses a request whose templated value would hold a line break, with 400", function()
      local p = t.plugin("request-transformer", { add = { headers = { "X-Q:$(query_params.q)" } } })
      local res = p:run({ path = "/", query = "q=a%0D%0AX-Injected:%201" })
      assert.res_status(400, res)
      assert.is_nil(res.upstream)
    end)
  end)

  describe("querystring", function()
    it("applies the five operations", function()
      local up = run({
        remove = { querystring = { "debug" } },
        rename = { querystring = { "q:search" } },
        replace = { querystring = { "page:1", "absent:x" } },
        add = { querystring = { "lang:en", "page:99" } },
        append = { querystring = { "tag:b", "new:n" } },
      }, { path = "/", query = "debug=1&q=shoes&page=5&tag=a" })
      assert.same({ search = { "shoes" }, page = { "1" }, lang = { "en" },
                    tag = { "a", "b" }, new = { "n" } }, query(up))
    end)

    it("leaves the query byte for byte when nothing applies", function()
      local up = run({ remove = { querystring = { "absent" } } },
        { path = "/", query = "b=2&a=%7e1" })
      assert.equal("b=2&a=%7e1", up.query)
    end)
  end)

  describe("JSON bodies", function()
    it("applies the five operations and keeps every other byte", function()
      local raw = '{"password":"p","user":"bob","id":12345678901234567,"tags":[],'
        .. '"role":"user","list":["a"],"url":"http://x/y"}'
      local up = run({
        remove = { body = { "password" } },
        rename = { body = { "user:username" } },
        replace = { body = { "role:admin", "absent:x" } },
        add = { body = { "source:gateway", "role:ignored" } },
        append = { body = { "list:b", "fresh:f" } },
      }, { method = "POST", headers = { ["Content-Type"] = "application/json" }, body = raw })
      assert.equal('{"username":"bob","id":12345678901234567,"tags":[],"role":"admin",'
        .. '"list":["a","b"],"url":"http://x/y","source":"gateway","fresh":["f"]}', up.body)
      assert.equal(tostring(#up.body), up.headers["content-length"])
    end)

    it("adds to an empty body, and leaves invalid JSON and arrays alone", function()
      local up = run({ add = { body = { "a:1" } } },
        { method = "POST", headers = { ["Content-Type"] = "application/json" }, body = "" })
      assert.same({ a = "1" }, cjson.decode(up.body))
      for _, raw in ipairs({ "{not json", "[1,2]" }) do
        up = run({ add = { body = { "a:1" } } },
          { method = "POST", headers = { ["Content-Type"] = "application/json" }, body = raw })
        assert.equal(raw, up.body)
      end
    end)

    it("leaves the body of other content types alone", function()
      local up = run({ add = { body = { "a:1" } } },
        { method = "POST", headers = { ["Content-Type"] = "text/plain" }, body = "hello" })
      assert.equal("hello", up.body)
    end)
  end)

  describe("form bodies", function()
    it("applies the five operations and fixes Content-Length", function()
      local up = run({
        remove = { body = { "secret" } },
        rename = { body = { "u:user" } },
        replace = { body = { "mode:live" } },
        add = { body = { "src:gw" } },
        append = { body = { "tag:2" } },
      }, { method = "POST", headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
           body = "secret=s&u=bob&mode=test&tag=1" })
      assert.equal("mode=live&src=gw&tag=1&tag=2&user=bob", up.body)
      assert.equal(tostring(#up.body), up.headers["content-length"])
      assert.equal("application/x-www-form-urlencoded", up.headers["content-type"])
    end)
  end)

  describe("multipart bodies", function()
    local B = "XyZ"
    local function part(head, content)
      return "--" .. B .. "\r\n" .. head .. "\r\n\r\n" .. content .. "\r\n"
    end

    it("keeps file parts whole while it removes, renames, replaces, adds and appends", function()
      local file = 'Content-Disposition: form-data; name="doc"; filename="a.bin"\r\n'
        .. "Content-Type: application/octet-stream"
      local body = part('Content-Disposition: form-data; name="secret"', "s")
        .. part(file, "\0\1binary\r\n--not-a-boundary")
        .. part('Content-Disposition: form-data; name="mode"', "test")
        .. "--" .. B .. "--\r\n"
      local up = run({
        remove = { body = { "secret" } },
        rename = { body = { "doc:upload" } },
        replace = { body = { "mode:live" } },
        add = { body = { "src:gw" } },
        append = { body = { "src:again" } },
      }, { method = "POST", headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. B },
           body = body })
      local renamed = file:gsub('name="doc"', 'name="upload"')
      assert.equal(part(renamed, "\0\1binary\r\n--not-a-boundary")
        .. part('Content-Disposition: form-data; name="mode"', "live")
        .. part('Content-Disposition: form-data; name="src"', "gw")
        .. part('Content-Disposition: form-data; name="src"', "again")
        .. "--" .. B .. "--\r\n", up.body)
      assert.equal(tostring(#up.body), up.headers["content-length"])
    end)
  end)

  it("renames a part whose name is not quoted, and leaves a body without its boundary alone",
    function()
      local body = "--b1\r\nContent-Disposition: form-data; name=plain\r\n\r\nv\r\n--b1--\r\n"
      local up = run({ rename = { body = { "plain:renamed" } } }, { method = "POST",
        headers = { ["Content-Type"] = "multipart/form-data; boundary=b1" }, body = body })
      assert.equal('--b1\r\nContent-Disposition: form-data; name="renamed"\r\n\r\nv\r\n'
        .. "--b1--\r\n", up.body)
      up = run({ rename = { body = { "plain:renamed" } } }, { method = "POST",
        headers = { ["Content-Type"] = "multipart/form-data; boundary=other" }, body = body })
      assert.equal(body, up.body)
    end)

  describe("uri and method", function()
    it("replaces the path from a template of the route's captures", function()
      local up = run({ replace = { uri = "/v2/items/$(uri_captures.id)/$(uri_captures[2])" } },
        { path = "/items/42/edit?x=1" },
        { route = { paths = { [[~/items/(?<id>\d+)/(\w+)$]] } } })
      assert.equal("/v2/items/42/edit", up.path)
      assert.equal("x=1", up.query)
    end)

    it("changes the method; to GET a form body's fields join the query", function()
      local up = run({ http_method = "put" }, { method = "POST" })
      assert.equal("PUT", up.method)
      up = run({ http_method = "GET" }, { method = "POST", path = "/", query = "a=1",
        headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }, body = "a=2&b=3" })
      assert.equal("GET", up.method)
      assert.same({ a = { "1", "2" }, b = { "3" } }, query(up))
    end)
  end)

  describe("templates", function()
    it("renders headers, query arguments, captures and the consumer", function()
      local up = run({ add = { headers = {
        "X-T1:t=$(headers.x_tenant)",
        "X-Tenant2:$(headers[\"X-Tenant\"])",
        "X-Id:$(query_params.id)",
        "X-Cap:$(uri_captures.id)-$(uri_captures[1])",
        "X-User:$(consumer.username)",
        "X-Missing:[$(headers.x_nothing)]",
        "X-Expr:$(query_params.user or 'anonymous')",
        "X-Upper:$(string.upper(headers.x_tenant))",
        "X-Literal:$('$(not a template)')",
        "X-Unbalanced:cost $(5",
      } } }, { path = "/items/7?id=99", headers = { ["X-Tenant"] = "acme" },
               consumer = { id = "c1", username = "alice" } },
        { route = { paths = { [[~/items/(?<id>\d+)$]] } } })
      local h = up.headers
      assert.equal("t=acme", h["x-t1"])
      assert.equal("acme", h["x-tenant2"])
      assert.equal("99", h["x-id"])
      assert.equal("7-7", h["x-cap"])
      assert.equal("alice", h["x-user"])
      assert.equal("[]", h["x-missing"])
      assert.equal("anonymous", h["x-expr"])
      assert.equal("ACME", h["x-upper"])
      assert.equal("$(not a template)", h["x-literal"])
      assert.equal("cost $(5", h["x-unbalanced"])
    end)

    it("renders from the client's request, not from what earlier operations changed", function()
      local up = run({ remove = { headers = { "X-Tenant" } },
                       add = { querystring = { "tenant:$(headers.x_tenant)" } } },
        { headers = { ["X-Tenant"] = "acme" } })
      assert.is_nil(up.headers["x-tenant"])
      assert.equal("tenant=acme", up.query)
    end)

    it("answers 500 and logs when an expression raises; the next request starts clean",
      function()
        local p = t.plugin("request-transformer",
          { add = { headers = { "X-Order:1", "X-A:$(headers.x_none:upper())" } } })
        local res = p:run({})
        assert.res_status(500, res)
        assert.matches("template $(headers.x_none:upper()) failed",
          table.concat(res.logs, "\n"), 1, true)
        local up = run({ remove = { headers = { "X-Gone" } } }, { headers = { ["X-Gone"] = "1" } })
        assert.is_nil(up.headers["x-order"])
        assert.is_nil(up.headers["x-gone"])
      end)
  end)
end)
