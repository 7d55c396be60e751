-- Streaming: a 1 GiB download and a 1 GiB upload pass through sluice with
-- bounded worker memory.
local helpers = require("spec.helpers")
local socket = require("socket")

local fmt = string.format

local GIB = 1024 * 1024 * 1024
-- What the worker may grow by while 1 GiB goes through it.
local MAX_GROWTH_KB = 32 * 1024

local LOCATIONS = [[
    location = /big {
      alias BIGFILE;
    }
    location = /sink {
      content_by_lua_block {
        local sock, err = ngx.req.socket()
        if not sock then
          ngx.status = 500
          ngx.say("no body socket: ", err)
          return
        end
        sock:settimeout(5000)
        local total = 0
        while true do
          local data, rerr, partial = sock:receive(65536)
          if data then
            total = total + #data
          else
            total = total + #(partial or "")
            if rerr ~= "closed" then
              ngx.status = 500
              ngx.say("read error after ", total, ": ", rerr)
              return
            end
            break
          end
        end
        ngx.say(total)
      }
    }
    location = /chunked-sink {
      content_by_lua_block {
        -- The raw socket: decode the chunked body here, counting payload bytes.
        local sock = ngx.req.socket(true)
        sock:settimeout(5000)
        local total, err = 0, nil
        while true do
          local line
          line, err = sock:receive("*l")
          local size = line and tonumber(line:match("^%x+"), 16)
          if not size then
            err = err or ("bad chunk size line " .. tostring(line))
            break
          end
          if size == 0 then
            repeat
              line, err = sock:receive("*l")
            until line == "" or not line
            break
          end
          while size > 0 do
            local data
            data, err = sock:receive(math.min(size, 65536))
            if not data then
              break
            end
            total = total + #data
            size = size - #data
          end
          if err or not sock:receive("*l") then
            err = err or "missing CRLF after a chunk"
            break
          end
        end
        local body = err and ("read error after " .. total .. ": " .. err .. "\n")
          or (total .. "\n")
        sock:send("HTTP/1.1 " .. (err and "500" or "200") .. " OK\r\nContent-Length: " .. #body
          .. "\r\nConnection: close\r\n\r\n" .. body)
      }
    }
]]

describe("streaming:", function()
  local dir, upstream, s, worker

  setup(function()
    dir = helpers.tmpdir()
    helpers.run(fmt("truncate -s 1G %s/big.bin", dir))
    upstream = helpers.start_upstream({ locations = LOCATIONS:gsub("BIGFILE", dir .. "/big.bin") })
    s = helpers.start_sluice(fmt([[
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:%d
    routes:
      - name: all
        paths: ["/"]
]], upstream.port), { workers = 1 })
    worker = helpers.wait_for(function()
      return helpers.children(s.pid)[1]
    end, 3)
  end)

  teardown(function()
    helpers.stop_all()
    os.execute("rm -rf " .. dir)
  end)

  -- Runs curl in the background (reading the output of `input` when given),
  -- sampling the worker's RSS until it ends. Returns curl's output, the
  -- baseline and peak RSS (KiB) and the number of samples taken.
  local function run_sampling(curl_args, input)
    assert.is_number(worker)
    -- Warm up: the buffers a request needs are allocated once.
    helpers.curl(fmt("http://127.0.0.1:%d/warmup", s.port))
    local base = helpers.rss_kb(worker)
    assert.is_number(base)
    local out, done = dir .. "/curl.out", dir .. "/curl.done"
    os.remove(out)
    os.remove(done)
    local script = dir .. "/curl.sh"
    helpers.write_file(script, fmt("%scurl -sS --max-time 60 %s >%s 2>&1\ntouch %s\n",
      input and (input .. " | ") or "", curl_args, out, done))
    os.execute(fmt("sh %s >/dev/null 2>&1 &", script))
    local peak, samples = base, 0
    local deadline = socket.gettime() + 70
    while not helpers.read_file(done) and socket.gettime() < deadline do
      local rss = helpers.rss_kb(worker)
      if rss then
        samples = samples + 1
        peak = math.max(peak, rss)
      end
      socket.sleep(0.02)
    end
    return helpers.read_file(out) or "", base, peak, samples
  end

  it("a 1 GiB download streams with bounded worker memory", function()
    local out, base, peak, samples = run_sampling(fmt(
      "-o /dev/null -w '%%{http_code} %%{size_download}' http://127.0.0.1:%d/big", s.port))
    assert.equals(fmt("200 %d", GIB), out)
    assert.is_true(samples >= 3, "the transfer ended before memory could be sampled")
    assert.is_true(helpers.alive(worker), "the worker died")
    assert.is_true(peak - base < MAX_GROWTH_KB, fmt("worker RSS grew from %d KiB to %d KiB",
      base, peak))
  end)

  it("a 1 GiB chunked upload streams with bounded worker memory", function()
    local out, base, peak, samples = run_sampling(fmt(
      "-T - -w ' %%{http_code}' http://127.0.0.1:%d/chunked-sink", s.port),
      "head -c 1G /dev/zero")
    assert.equals(fmt("%d\n 200", GIB), out)
    assert.is_true(samples >= 3, "the transfer ended before memory could be sampled")
    assert.is_true(helpers.alive(worker), "the worker died")
    assert.is_true(peak - base < MAX_GROWTH_KB, fmt("worker RSS grew from %d KiB to %d KiB",
      base, peak))
  end)

  it("a 1 GiB upload streams with bounded worker memory", function()
    local out, base, peak, samples = run_sampling(fmt(
      "-T %s/big.bin -w ' %%{http_code}' http://127.0.0.1:%d/sink", dir, s.port))
    assert.equals(fmt("%d\n 200", GIB), out)
    assert.is_true(samples >= 3, "the transfer ended before memory could be sampled")
    assert.is_true(helpers.alive(worker), "the worker died")
    assert.is_true(peak - base < MAX_GROWTH_KB, fmt("worker RSS grew from %d KiB to %d KiB",
      base, peak))
  end)
end)
