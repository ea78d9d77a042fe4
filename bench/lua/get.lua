-- bench/lua/get.lua - wrk script: reads of random keys from the preloaded set.
--
-- What: every request reads one of the `keys` keys rk0000000.. that
-- bench/run.py loaded before, chosen uniformly at random; from raftkv
-- (GET /v1/kv/KEY?consistency=linearizable|stale) or from etcd
-- (POST /v3/kv/range; "serializable": true is etcd's stale read).
-- Why: a uniform random key over a preloaded set reads a real store, not one
-- cached key; a missing key would be a 404, which wrk counts as an error, so
-- a broken preload shows in the table.
-- Args: target=raftkv|etcd keys=N consistency=linearizable|stale seed=N
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")

local target, nkeys, stale = "raftkv", 1, false
local query = "?consistency=linearizable"

function init(argv)
  local a = common.args(argv)
  target = a.target or "raftkv"
  nkeys = tonumber(a.keys or "1")
  stale = (a.consistency == "stale")
  query = "?consistency=" .. (stale and "stale" or "linearizable")
  math.randomseed(tonumber(a.seed or "1"))
end

function request()
  local key = common.read_key(math.random(0, nkeys - 1))
  if target == "etcd" then
    return common.request("POST", "/v3/kv/range", common.JSON,
      '{"key":"' .. common.b64(key) .. '"' ..
      (stale and ',"serializable":true}' or '}'))
  end
  return common.request("GET", "/v1/kv/" .. key .. query)
end

function done(summary, latency, requests)
  common.report(summary, latency)
end
