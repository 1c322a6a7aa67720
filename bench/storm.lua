-- wrk script for bench/ingress_storm.py: each request carries one alert; alerts spread
-- over KEYS incident keys (fingerprints), every alert distinct (annotation n).
local keys = tonumber(os.getenv("KEYS") or "20")
local run = os.getenv("RUN") or "run"
local token = os.getenv("TOKEN") or "bench"
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  n = 0
end

request = function()
  n = n + 1
  local i = id * 100000000 + n
  local body = string.format(
    '{"alerts":[{"labels":{"alertname":"Storm","service":"svc-%d"},"annotations":{"n":"%d"},"fingerprint":"%s-%d"}]}',
    i % keys, i, run, i % keys)
  return wrk.format("POST", "/v1/alerts/generic",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
