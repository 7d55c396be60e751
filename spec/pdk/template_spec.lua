-- template_spec.lua: sluice.template: what compiles to what, what is refused, and what renders
-- for a real request (through pre-function, in-process).
local template = require("sluice.template")
local t = require("sluice.test")

-- Renders each template for one request: returns name -> rendered value, as
-- the upstream received them in X-R-<n> headers.
local function render_all(templates, req, opts)
  local code = { "local template = require('sluice.template')",
                 "sluice.ctx.shared.tenant = 'acme'",
                 "sluice.ctx.shared.deep = { a = { b = 'deep' } }",
                 "local st = {}" }
  for i, s in ipairs(templates) do
    code[#code + 1] = ("sluice.service.request.set_header('X-R-%d', '<' .. "
      .. "template.render(assert(template.compile(%q)), st) .. '>')"):format(i, s)
  end
  local res = t.plugin("pre-function", { access = { table.concat(code, "\n") } }, opts)
    :run(req or {})
  assert(res.upstream, table.concat(res.logs, "\n"))
  local out = {}
  for i = 1, #templates do
    out[i] = res.upstream.headers["x-r-" .. i]
  end
  return out
end

describe("sluice.template", function()
  describe("compile", function()
    it("returns a string without templates as it is", function()
      assert.equal("plain value", template.compile("plain value"))
      assert.equal("cost $(5", template.compile("cost $(5"))
      assert.is_false(template.is_dynamic(template.compile("x")))
    end)

    it("compiles accessors and expressions into pieces", function()
      local tpl = template.compile("a $(headers.x) b $(query_params.y or 'z')")
      assert.is_true(template.is_dynamic(tpl))
      assert.equal(4, tpl.n)
      assert.equal("a ", tpl[1])
      assert.same({ "x" }, { tpl[2][1] })
      assert.equal(" b ", tpl[3])
      assert.equal("query_params.y or 'z'", tpl[4].source)
    end)

    it("refuses unknown variables, bad keys and Lua that does not compile", function()
      local cases = {
        ["$(header.x)"] = "unknown template variable 'header'",
        ["$(headers.a.b)"] = "headers takes one key",
        ["$(headers[1])"] = "a header name must be a string",
        ["$(ctx.plugin.x)"] = "ctx has only 'shared'",
        ["$(headers.x +)"] = "invalid Lua expression",
      }
      for s, msg in pairs(cases) do
        local tpl, err = template.compile(s)
        assert.is_nil(tpl)
        assert.matches("bad template " .. s, err, 1, true)
        assert.matches(msg, err, 1, true)
      end
      assert.has_error(function() template.compile(5) end,
        "bad argument #1 to 'compile' (string expected, got number)")
    end)
  end)

  describe("render", function()
    it("reads headers, query, captures, ctx.shared and the consumer of the request", function()
      local got = render_all({
        "$(headers.x_tenant)", '$(headers["X-Tenant"])', "$(query_params.id)",
        "$(query_params.flag)", "$(uri_captures.id)", "$(uri_captures[2])",
        "$(uri_captures[3])", "$(ctx.shared.tenant)", "$(shared.deep.a.b)",
        "$(consumer.username)", "$(headers.x_absent)", "$(headers.x_multi)",
      }, { path = "/items/42/edit?id=7&flag", headers = { ["X-Tenant"] = "acme",
           ["X-Multi"] = { "1", "2" } }, consumer = { id = "c", username = "alice" } },
      { route = { paths = { [[~/items/(?<id>\d+)/(\w+)$]] } } })
      assert.same({ "<acme>", "<acme>", "<7>", "<true>", "<42>", "<edit>", "<>", "<acme>",
                    "<deep>", "<alice>", "<>", "<1>" }, got)
    end)

    it("runs expressions in a sandbox: variables, safe functions, lists joined", function()
      local got = render_all({
        "$(query_params.user or 'anonymous')",
        "$(string.upper(headers.x_tenant))",
        "$(headers['x-multi'] or 'none')",
        "$(type(headers.x_multi))",
        "$('$(literal)')",
        "$(#uri_captures)",
        "$(consumer and consumer.username or 'nobody')",
        "$(os and os.exit)",
        "$(sluice)",
        "$((function() local n = 0 for _ in pairs(headers) do n = n + 1 end "
          .. "return n >= 2 end)())",
      }, { headers = { ["X-Tenant"] = "acme", ["X-Multi"] = { "1", "2" } } })
      assert.same({ "<anonymous>", "<ACME>", "<1, 2>", "<table>", "<$(literal)>", "<0>",
                    "<nobody>", "<>", "<>", "<true>" }, got)
    end)

    it("raises with the template when an expression fails", function()
      local res = t.plugin("pre-function", { access = { [[
        local template = require("sluice.template")
        local tpl = assert(template.compile("$(headers.none:upper())"))
        local ok, err = pcall(template.render, tpl, {})
        sluice.service.request.set_header("X-Err", tostring(err))
        local ok2, err2 = pcall(template.render, assert(template.compile("$(rawset_x)")), {})
        sluice.service.request.set_header("X-Nil", tostring(ok2) .. tostring(err2))
        local tpl3 = assert(template.compile("$((function() foo = 1 end)())"))
        local _, err3 = pcall(template.render, tpl3, {})
        sluice.service.request.set_header("X-Assign", tostring(err3))
      ]] } }):run({})
      local h = res.upstream.headers
      assert.matches("template $(headers.none:upper()) failed: ", h["x-err"], 1, true)
      assert.equal("true", h["x-nil"])
      assert.matches("templates cannot assign variables (tried to set 'foo')", h["x-assign"],
        1, true)
    end)
  end)
end)
