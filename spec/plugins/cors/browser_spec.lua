-- cors with a real browser: headless Chromium loads a page from one origin
-- whose script calls the gateway on another with fetch(), and the browser's
-- own CORS checks decide what the script gets. Origins differ by port only:
-- the page from 127.0.0.1:PAGE (allowed) or 127.0.0.1:OTHER (refused), the
-- gateway on 127.0.0.1:GATEWAY. The script writes its results into the page,
-- which Chromium prints with --dump-dom once the fetches are over.
local t = require("sluice.test")
local cjson = require("cjson")
local helpers = t.helpers

local fmt = string.format

-- Every Chromium run ends within this many seconds, finished or not.
local CHROMIUM_TIMEOUT = 60

-- The page's script: runs the checks listed for ?who=, each one a fetch to
-- the gateway (?api=), and writes { done = true, [name] = result } into
-- <pre id="results">, a result being { status, body, headers it could
-- read } or { error = "TypeError: Failed to fetch" } when the browser
-- refused the answer.
local PAGE = [[
<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head>
<body><pre id="results">pending</pre>
<script>
const params = new URLSearchParams(location.search);
const api = params.get("api");

async function call(path, init, read) {
  try {
    const res = await fetch(api + path, init || {});
    const out = { status: res.status, body: await res.text() };
    for (const name of read || []) out[name] = res.headers.get(name);
    return out;
  } catch (e) {
    return { error: String(e) };
  }
}

const checks = {
  allowed: {
    simple: () => call("/simple", {}, ["x-total", "x-secret", "access-control-allow-origin"]),
    preflighted: () => call("/items/1", { method: "PUT", body: "{}",
      headers: { "Content-Type": "application/json", "X-Id": "7" } }),
    method_refused: () => call("/items/2", { method: "DELETE" }),
    credentialed: () => {
      document.cookie = "sid=s3cret; path=/";
      return call("/private", { credentials: "include" });
    },
    credentials_not_allowed: () => call("/simple?credentials", { credentials: "include" }),
    regex_echoed_headers: () => call("/regex/1", { method: "PUT",
      headers: { "X-Anything": "yes" } }),
  },
  refused: {
    simple: () => call("/simple?refused"),
    preflighted: () => call("/items/3", { method: "PUT", body: "{}",
      headers: { "Content-Type": "application/json", "X-Id": "7" } }),
    regex: () => call("/regex/2"),
  },
};

(async () => {
  const out = {};
  const list = checks[params.get("who")] || {};
  for (const name of Object.keys(list)) out[name] = await list[name]();
  out.done = true;
  document.getElementById("results").textContent = JSON.stringify(out);
})();
</script>
</body></html>
]]

local function chromium_installed()
  local _, rc = helpers.run("command -v chromium >/dev/null")
  return rc == 0
end

-- A sluice that answers every request with the page, as one origin.
local function page_server()
  return t.start({ services = { { name = "page", url = "http://127.0.0.1:9", routes = {
    { name = "page", paths = { "/" }, plugins = { { name = "request-termination", config = {
      status_code = 200, content_type = "text/html; charset=utf-8", body = PAGE } } } },
  } } } })
end

local function unescape(s)
  return (s:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&amp;", "&"))
end

-- Loads url in a fresh headless Chromium and returns the page's results.
local function browse(url)
  local dir = helpers.tmpdir()
  helpers.track({ dir = dir, name = "chromium" })
  local out, rc = helpers.run(fmt("{ timeout -k 5 %d chromium --headless --no-sandbox "
    .. "--disable-gpu --no-first-run --disable-extensions --disable-dev-shm-usage "
    .. "--user-data-dir=%s/profile --virtual-time-budget=30000 --dump-dom '%s' "
    .. "2>%s/chromium.log; }", CHROMIUM_TIMEOUT, dir, url, dir))
  local text = out:match('<pre id="results">(.-)</pre>')
  local results = text and cjson.decode(unescape(text))
  if not (results and results.done) then
    error(fmt("the page did not finish (chromium exited %s):\n%s\nchromium's log:\n%s",
      tostring(rc), out:sub(1, 2000), (helpers.read_file(dir .. "/chromium.log") or ""):sub(-2000)))
  end
  return results
end

local FAILED = "TypeError: Failed to fetch"

describe("plugin: cors (a real browser)", function()
  if not chromium_installed() then
    it("needs chromium", function()
      pending("chromium is not installed: scripts/deps.sh test installs it")
    end)
    return
  end

  local upstream, gateway, page, other

  setup(function()
    page = page_server()
    other = page_server()
    upstream = t.mock_upstream({ routes = {
      ["/simple"] = { status = 200, body = { hello = "world" },
                      headers = { ["X-Total"] = "42", ["X-Secret"] = "hidden" } },
    } })
    local function route(name, path, conf)
      return { name = name, paths = { path }, strip_path = false,
               plugins = { { name = "cors", config = conf } } }
    end
    local allowed = page.url
    gateway = t.start({ services = { { name = "api", url = upstream.url, routes = {
      route("simple", "/simple", { origins = { allowed }, exposed_headers = { "X-Total" } }),
      route("items", "/items", { origins = { allowed }, methods = { "GET", "PUT" },
                                 headers = { "Content-Type", "X-Id" } }),
      route("private", "/private", { origins = { allowed }, credentials = true }),
      -- Any port of 127.0.0.1 but the refused page's: a PCRE lookahead.
      route("regex", "/regex", { origins = { fmt("http://127\\.0\\.0\\.1:(?!%d$)\\d+",
                                                 other.port) } }),
    } } } })
  end)

  teardown(function()
    t.stop()
  end)

  it("lets the allowed origin's script read what the plugin allows, and no more", function()
    local r = browse(fmt("%s/?who=allowed&api=%s", page.url, gateway.url))

    -- A simple GET: readable; only the exposed header is visible to the script.
    -- (Access-Control-* headers are the browser's own business: never exposed.)
    assert.same({ status = 200, body = '{"hello":"world"}', ["x-total"] = "42",
                  ["x-secret"] = cjson.null, ["access-control-allow-origin"] = cjson.null },
      r.simple)

    -- A PUT with a custom header: the browser's preflight was answered by
    -- sluice, then the PUT went up.
    assert.equal(200, r.preflighted.status, cjson.encode(r.preflighted))
    local echoed = cjson.decode(r.preflighted.body)
    assert.equal("PUT", echoed.method)
    assert.equal("7", helpers.lower_headers(echoed.headers)["x-id"])

    -- DELETE is not in methods: the browser never sends it.
    assert.same({ error = FAILED }, r.method_refused)

    -- With credentials: the cookie went along and the script reads the answer.
    assert.equal(200, r.credentialed.status, cjson.encode(r.credentialed))
    local sent = helpers.lower_headers(cjson.decode(r.credentialed.body).headers)
    assert.equal("sid=s3cret", sent.cookie)

    -- The same on a route without credentials: the browser hides the answer.
    assert.same({ error = FAILED }, r.credentials_not_allowed)

    -- A regex origin, and Access-Control-Request-Headers echoed (headers unset).
    assert.equal(200, r.regex_echoed_headers.status, cjson.encode(r.regex_echoed_headers))
    assert.equal("yes", helpers.lower_headers(
      cjson.decode(r.regex_echoed_headers.body).headers)["x-anything"])

    -- The upstream got the actual requests, and not one preflight.
    local got = {}
    for _, req in ipairs(upstream:requests()) do
      got[#got + 1] = req.method .. " " .. req.uri
      assert.equal(page.url, req.headers.origin)
    end
    table.sort(got)
    assert.same({ "GET /private", "GET /simple", "GET /simple?credentials", "PUT /items/1",
                  "PUT /regex/1" }, got)
  end)

  it("blocks a refused origin: its script reads nothing, its preflighted request never goes up",
    function()
      local before = #upstream:requests()
      local r = browse(fmt("%s/?who=refused&api=%s", other.url, gateway.url))
      assert.same({ error = FAILED }, r.simple)
      assert.same({ error = FAILED }, r.preflighted)
      assert.same({ error = FAILED }, r.regex)
      -- Simple requests are sent (the browser only hides the answer); the
      -- PUT is not, since its preflight was refused.
      local got = {}
      for i = before + 1, #upstream:requests() do
        local req = upstream:requests()[i]
        got[#got + 1] = req.method .. " " .. req.uri
      end
      table.sort(got)
      assert.same({ "GET /regex/2", "GET /simple?refused" }, got)
    end)
end)
