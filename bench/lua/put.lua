-- bench/lua/put.lua - wrk script: writes of distinct keys with a fixed-size value.
--
-- What: every request writes a new key <prefix><thread>-<n> (n counts up per
-- wrk thread) with a random `size`-byte value, to raftkv (PUT /v1/kv/KEY, raw body)
-- or to etcd (POST /v3/kv/put through the v3 JSON gateway, base64).
-- Why: distinct keys measure the insert path (no overwrite of a hot key) and
-- are the same for every system compared; bench/run.py gives each wrk run
-- its own prefix so runs never reuse a key.
-- Args (after "--"): target=raftkv|etcd prefix=STR size=BYTES seed=N
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")

local tid = 0
function setup(thread)
  thread:set("tid", tid)
  tid = tid + 1
end

local target, prefix, nextvalue, n = "raftkv", "w", nil, 0

function init(argv)
  local a = common.args(argv)
  target = a.target or "raftkv"
  prefix = (a.prefix or "w") .. tostring(tid or 0) .. "-"
  nextvalue = common.pool(tonumber(a.size or "100"), target == "etcd",
                          tonumber(a.seed or "1"))
end

function request()
  n = n + 1
  local key = prefix .. n
  local value, value64 = nextvalue()
  if target == "etcd" then
    return common.request("POST", "/v3/kv/put", common.JSON,
      '{"key":"' .. common.b64(key) .. '","value":"' .. value64 .. '"}')
  end
  return common.request("PUT", "/v1/kv/" .. key, common.RAW, value)
end

function done(summary, latency, requests)
  common.report(summary, latency)
end
