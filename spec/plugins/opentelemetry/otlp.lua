-- otlp.lua: reads the OTLP/HTTP JSON exports a spec's collector received, checking their shape.
local cjson = require("cjson.safe")
local assert = require("luassert")

local _M = {}

-- Every span of every export, with its resource: { span..., resource = { key -> value } }.
-- Asserts the protobuf JSON mapping on the way: hex ids, nanosecond strings, typed values.
function _M.spans(reqs)
  local out = {}
  for _, r in ipairs(reqs) do
    assert.equal("application/json", r.headers["content-type"])
    local doc = assert(cjson.decode(r.body))
    for _, rs in ipairs(doc.resourceSpans) do
      local resource = {}
      for _, a in ipairs(rs.resource.attributes) do
        resource[a.key] = a.value.stringValue
      end
      for _, ss in ipairs(rs.scopeSpans) do
        assert.equal("sluice", ss.scope.name)
        for _, s in ipairs(ss.spans) do
          assert.matches("^%x+$", s.traceId)
          assert.equal(32, #s.traceId)
          assert.equal(16, #s.spanId)
          assert.matches("^%d+$", s.startTimeUnixNano)
          assert.matches("^%d+$", s.endTimeUnixNano)
          assert.is_true(#s.startTimeUnixNano >= 19)
          local attrs = {}
          for _, a in ipairs(s.attributes) do
            local v = a.value
            attrs[a.key] = v.stringValue or (v.intValue and tonumber(v.intValue))
              or v.doubleValue or v.boolValue
            if v.intValue then
              assert.is_string(v.intValue) -- int64 is a string in proto3 JSON
            end
          end
          s.attrs = attrs
          s.resource = resource
          out[#out + 1] = s
        end
      end
    end
  end
  return out
end

-- The spans named name (in export order).
function _M.named(spans, name)
  local out = {}
  for _, s in ipairs(spans) do
    if s.name == name then
      out[#out + 1] = s
    end
  end
  return out
end

-- The parts of a traceparent header: trace id, parent id, flags.
function _M.traceparent(v)
  return v:match("^00%-(%x+)%-(%x+)%-(%x%x)$")
end

return _M
