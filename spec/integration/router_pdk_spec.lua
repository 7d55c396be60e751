-- sluice.router, the forwarded getters, get_http_version, client.get_protocol
-- and response.get_source, through the real binary.
local helpers = require("spec.helpers")

local fmt = string.format

describe("PDK: router and forwarded", function()
  local s, upstream

  setup(function()
    upstream = helpers.start_upstream()
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
server:
  listen: ["127.0.0.1:{PORT}"]
  workers: 1
  pid_file: "{DIR}/sluice.pid"
  access_log: "{DIR}/access.log"
  trusted_ips: ["127.0.0.1"]
services:
  - name: users
    id: 0b6e5d2a-6f6f-4c59-9a44-1f8f8e6f3c11
    url: http://127.0.0.1:%d/v1
    retries: 2
    tags: [team-a]
    routes:
      - name: users-api
        paths: ["/users", "~/u/\\d+$"]
        methods: [GET]
        tags: [public]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local route, service = sluice.router.get_route(), sluice.router.get_service()
                  return sluice.response.exit(200, {
                    route = { id = route.id, name = route.name, paths = route.paths,
                              methods = route.methods, tags = route.tags,
                              service = route.service.id },
                    service = { id = service.id, name = service.name, host = service.host,
                                port = service.port, path = service.path,
                                retries = service.retries, tags = service.tags },
                    scheme = sluice.request.get_forwarded_scheme(),
                    host = sluice.request.get_forwarded_host(),
                    port = sluice.request.get_forwarded_port(),
                    path = sluice.request.get_forwarded_path(),
                    version = sluice.request.get_http_version(),
                    protocol = sluice.client.get_protocol(),
                    protocol_terminated = sluice.client.get_protocol(true),
                  })
      - name: unnamed
        paths: ["/anon"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return sluice.response.exit(200, { id = sluice.router.get_route().id,
                    service = sluice.router.get_service().id })
      - name: source
        paths: ["/source"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local how = sluice.request.get_query_arg("how")
                  if how == "exit" then return sluice.response.exit(418) end
                  if how == "error" then error("on purpose") end
              header_filter:
                - sluice.response.set_header("X-Source", sluice.response.get_source())
  - name: dead
    url: http://127.0.0.1:1
    routes:
      - paths: ["/dead"]
        plugins:
          - name: pre-function
            config:
              header_filter:
                - sluice.response.set_header("X-Source", sluice.response.get_source())
]], upstream.port))
  end)

  teardown(function()
    helpers.stop_all()
  end)

  local function get(path, args)
    local status, headers, body = helpers.curl(fmt("%s 'http://127.0.0.1:%d%s'", args or "",
      s.port, path))
    return status, headers, helpers.json(body)
  end

  it("get_route and get_service give the matched entities in Kong's shape", function()
    local status, _, out = get("/users/7")
    assert.equals(200, status)
    assert.same({ id = out.route.id, name = "users-api", paths = { "/users", "~/u/\\d+$" },
                  methods = { "GET" }, tags = { "public" },
                  service = "0b6e5d2a-6f6f-4c59-9a44-1f8f8e6f3c11" }, out.route)
    assert.matches("^%x+%-%x+%-5%x+%-%x+%-%x+$", out.route.id)
    assert.same({ id = "0b6e5d2a-6f6f-4c59-9a44-1f8f8e6f3c11", name = "users",
                  host = "127.0.0.1", port = upstream.port, path = "/v1", retries = 2,
                  tags = { "team-a" } }, out.service)
  end)

  it("derives the same id for an entity without one on every load", function()
    local _, _, a = get("/anon")
    assert.matches("^%x+%-%x+%-5%x+%-%x+%-%x+$", a.id)
    -- The same file in a second process: the same ids.
    local text = helpers.read_file(s.file)
    local at = text:find(s.dir, 1, true)
    while at do
      text = text:sub(1, at - 1) .. "{DIR}" .. text:sub(at + #s.dir)
      at = text:find(s.dir, 1, true)
    end
    text = text:gsub('"127.0.0.1:%d+"', '"127.0.0.1:{PORT}"', 1)
    local again = helpers.start_sluice(text, { own_server = true })
    local _, _, b = helpers.curl(fmt("'http://127.0.0.1:%d/anon'", again.port))
    assert.same(a, helpers.json(b))
  end)

  it("forwarded getters read X-Forwarded-* from a trusted client", function()
    local _, _, out = get("/users", "-H 'X-Forwarded-Proto: HTTPS' "
      .. "-H 'X-Forwarded-Host: API.Example.com:8443' -H 'X-Forwarded-Path: /api/users'")
    assert.equals("https", out.scheme)
    assert.equals("api.example.com", out.host)
    assert.equals(8443, out.port)
    assert.equals("/api/users", out.path)
    assert.equals("http", out.protocol)
    assert.equals("https", out.protocol_terminated)
    _, _, out = get("/users", "-H 'X-Forwarded-Port: 444' -H 'X-Forwarded-Host: a.test:8443'")
    assert.equals(444, out.port)
  end)

  it("forwarded getters fall back to what sluice saw without the headers", function()
    local _, _, out = get("/users?x=1", "-H 'Host: Users.Local:9000'")
    assert.equals("http", out.scheme)
    assert.equals("users.local", out.host)
    assert.equals(s.port, out.port) -- the port sluice listens on, as get_port
    assert.equals("/users", out.path)
    assert.equals("http", out.protocol_terminated)
  end)

  it("get_http_version says 1.1 or 1.0", function()
    local _, _, out = get("/users")
    assert.equals(1.1, out.version)
    _, _, out = get("/users", "--http1.0")
    assert.equals(1.0, out.version)
  end)

  it("get_source tells an upstream answer, an exit and an error apart", function()
    local _, headers = get("/source")
    assert.equals("service", headers["x-source"])
    _, headers = get("/source?how=exit")
    assert.equals("exit", headers["x-source"])
    _, headers = get("/source?how=error")
    assert.equals("error", headers["x-source"])
    local status
    status, headers = get("/dead")
    assert.equals(502, status)
    assert.equals("error", headers["x-source"])
  end)
end)

describe("PDK: forwarded getters from an untrusted client", function()
  teardown(function()
    helpers.stop_all()
  end)

  it("ignore X-Forwarded-*", function()
    local s = helpers.start_sluice([[
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - paths: ["/"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  return sluice.response.exit(200, {
                    scheme = sluice.request.get_forwarded_scheme(),
                    host = sluice.request.get_forwarded_host(),
                    port = sluice.request.get_forwarded_port(),
                    path = sluice.request.get_forwarded_path() })
]])
    local _, _, body = helpers.curl(fmt("-H 'X-Forwarded-Proto: https' "
      .. "-H 'X-Forwarded-Host: evil.test:1' -H 'X-Forwarded-Path: /x' 'http://127.0.0.1:%d/p'",
      s.port))
    assert.same({ scheme = "http", host = "127.0.0.1", port = s.port, path = "/p" },
      helpers.json(body))
  end)
end)
