-- bench/lua/mix.lua - wrk script: 90% reads, 10% writes over the preloaded set.
--
-- What: each request picks a random preloaded key; with probability
-- `writes`% (default 10) it overwrites it with a random `size`-byte value, else it
-- reads it with the system's default consistency (raftkv: linearizable;
-- etcd: linearizable range).
-- Why: the usual read-mostly service traffic; reads and writes share the
-- leader, so this shows how the two paths get in each other's way.
-- Args: target=raftkv|etcd keys=N writes=PERCENT size=BYTES seed=N
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")

local target, nkeys, writes, nextvalue = "raftkv", 1, 10, nil

function init(argv)
  local a = common.args(argv)
  target = a.target or "raftkv"
  nkeys = tonumber(a.keys or "1")
  writes = tonumber(a.writes or "10")
  nextvalue = common.pool(tonumber(a.size or "100"), target == "etcd",
                          tonumber(a.seed or "1"))
end

function request()
  local key = common.read_key(math.random(0, nkeys - 1))
  local write = math.random(1, 100) <= writes
  local value, value64
  if write then value, value64 = nextvalue() end
  if target == "etcd" then
    if write then
      return common.request("POST", "/v3/kv/put", common.JSON,
        '{"key":"' .. common.b64(key) .. '","value":"' .. value64 .. '"}')
    end
    return common.request("POST", "/v3/kv/range", common.JSON,
      '{"key":"' .. common.b64(key) .. '"}')
  end
  if write then
    return common.request("PUT", "/v1/kv/" .. key, common.RAW, value)
  end
  return common.request("GET", "/v1/kv/" .. key)
end

function done(summary, latency, requests)
  common.report(summary, latency)
end
