-- bench/lua/common.lua - helpers shared by the wrk scripts of bench/run.py.
--
-- What: argument parsing (key=value after wrk's "--"), base64 (etcd's JSON
-- gateway wants keys and values in base64), key names, and the one-line JSON
-- report that every script prints from done().
-- Why: bench/run.py parses that line instead of wrk's human output, so it
-- gets exact counts (requests, each kind of error) and latency percentiles in
-- microseconds; wrk counts a status >= 400 as an error, which is how a failed
-- write or a missing key shows up in the table.
local M = {}

-- {"k=v", ...} -> {k = "v"}; anything else (wrk passes the URL too) ignored.
function M.args(argv)
  local t = {}
  for _, a in pairs(argv or {}) do
    local k, v = tostring(a):match("^([%w_]+)=(.*)$")
    if k then t[k] = v end
  end
  return t
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local enc = {}
for i = 1, 64 do enc[i - 1] = B64:sub(i, i) end

function M.b64(s)
  local out, n = {}, #s
  local byte = string.byte
  for i = 1, n - 2, 3 do
    local a, b, c = byte(s, i, i + 2)
    local v = a * 65536 + b * 256 + c
    out[#out + 1] = enc[math.floor(v / 262144)] .. enc[math.floor(v / 4096) % 64]
                    .. enc[math.floor(v / 64) % 64] .. enc[v % 64]
  end
  local r = n % 3
  if r == 1 then
    local v = byte(s, n) * 65536
    out[#out + 1] = enc[math.floor(v / 262144)] .. enc[math.floor(v / 4096) % 64] .. "=="
  elseif r == 2 then
    local a, b = byte(s, n - 1, n)
    local v = a * 65536 + b * 256
    out[#out + 1] = enc[math.floor(v / 262144)] .. enc[math.floor(v / 4096) % 64]
                    .. enc[math.floor(v / 64) % 64] .. "="
  end
  return table.concat(out)
end

-- Values: random printable bytes (the base64 alphabet), so that nothing
-- downstream (libraft compresses snapshots with LZ4) gets them for free.
-- A pool of random text is made once in init(); each value is a slice of it
-- at a random offset that is a multiple of 3, so that its base64 (for etcd)
-- is the matching slice of the pool's base64 plus the encoding of at most
-- two tail bytes: no per-request encoding of big values.
function M.pool(size, want_b64, seed)
  math.randomseed(seed or 1)
  local len = 3 * math.floor((math.max(2 * size + 3, 1048576) + 2) / 3)
  local t = {}
  for i = 1, len do t[i] = enc[math.random(0, 63)] end
  local raw = table.concat(t)
  local raw64 = want_b64 and M.b64(raw) or nil
  local head = 3 * math.floor(size / 3)
  local slots = math.floor((len - size) / 3)
  local sub = string.sub
  return function()
    local o = 3 * math.random(0, slots)
    local v = sub(raw, o + 1, o + size)
    if not raw64 then return v end
    local e = sub(raw64, o / 3 * 4 + 1, (o + head) / 3 * 4)
    if head < size then e = e .. M.b64(sub(raw, o + head + 1, o + size)) end
    return v, e
  end
end

-- One HTTP/1.1 request, as wrk.format would build it (Host, and for a body
-- Content-Type and Content-Length), but by one string concatenation: wrk
-- shares this 2-core machine with the servers it measures, and wrk.format's
-- header table and string.format per request cost wrk 2 us of CPU a request
-- (11.8 -> 9.9 us of user+sys per PUT), CPU the servers then lack.
local host_line
function M.request(method, path, ctype, body)
  if not host_line then
    host_line = " HTTP/1.1\r\nHost: " .. (wrk.headers["Host"] or wrk.host)
  end
  if body then
    return method .. " " .. path .. host_line .. "\r\nContent-Type: " ..
           ctype .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
  end
  return method .. " " .. path .. host_line .. "\r\n\r\n"
end

M.RAW = "application/octet-stream"
M.JSON = "application/json"

-- Preloaded read keys: rk0000000 .. rk(N-1), the names bench/run.py loads.
function M.read_key(i)
  return string.format("rk%07d", i)
end

-- The line bench/run.py looks for.  Latencies in microseconds.
function M.report(summary, latency)
  local e = summary.errors
  local function pct(p)
    if summary.requests == 0 then return 0 end
    return latency:percentile(p)
  end
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,' ..
    '"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,' ..
    '"lat_p999_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read,
    e.write, e.status, e.timeout, latency.mean, pct(50), pct(90), pct(99),
    pct(99.9), latency.max))
end

-- Lets the scripts say `local common = require("common")` from any cwd.
return M
