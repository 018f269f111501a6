-- wrk script: every request names another client. Even requests come from one of
-- the 100,000 blocked addresses (10.x.y.z), odd ones from unblocked addresses, so
-- the lookups are half hits, half misses, spread over the whole table.
-- MODE (env): "authz" → GET /v1/authz with X-Forwarded-For; "decision" → GET /v1/decision?ip=&user=
local mode = os.getenv("MODE") or "authz"
local key = os.getenv("KEY")
local n = 0
local step = 7919 -- prime: walks all 100,000 blocked addresses in a scattered order

local function blocked(i)
  i = i % 100000
  return string.format("10.%d.%d.%d", math.floor(i / 65536), math.floor(i / 256) % 256, i % 256)
end

local function unblocked(i)
  return string.format("172.16.%d.%d", math.floor(i / 256) % 256, i % 256)
end

request = function()
  n = n + 1
  local ip
  if n % 2 == 0 then ip = blocked(n * step) else ip = unblocked(n) end
  if mode == "authz" then
    return wrk.format("GET", "/v1/authz", { ["X-Api-Key"] = key, ["X-Forwarded-For"] = ip, ["X-User-Id"] = "user" .. (n % 5000) })
  else
    return wrk.format("GET", "/v1/decision?ip=" .. ip .. "&user=user" .. (n % 5000), { ["X-Api-Key"] = key })
  end
end
