-- wrk script for bench/episode_storm.py: exactly POSTS posts in all, spread evenly over
-- KEYS incident keys, one alert each. Every post of a key repeats the key's episode
-- (fixed fingerprint and starts_at); with DISTINCT=1 each post is a new alert of that
-- episode (annotation n), otherwise a plain re-send. Even keys are IngressTest (the
-- incident waits for approval), odd keys Storm (the incident ends as no_remedy).
--
-- wrk has no request-count flag, so each thread owns a share of the posts: delay() hands
-- out the share (past it, a connection idles for an hour instead of sending), and when the
-- thread has read every answer it stops and drops a file in DONE_DIR; the bench then
-- interrupts wrk (SIGINT), which otherwise sleeps out its -d cap.
local posts = tonumber(os.getenv("POSTS"))
local keys = tonumber(os.getenv("KEYS"))
local threads = tonumber(os.getenv("THREADS"))
local run = os.getenv("RUN")
local token = os.getenv("TOKEN")
local starts = os.getenv("STARTS")
local distinct = os.getenv("DISTINCT") == "1"
local done_dir = os.getenv("DONE_DIR")
local all, counter = {}, 0

function setup(thread)
  thread:set("id", counter)
  table.insert(all, thread)
  counter = counter + 1
end

function init(args)
  -- post i goes to the thread i % threads: this thread's share is every threads-th post
  share = math.floor(posts / threads) + ((id < posts % threads) and 1 or 0)
  reserved, sent, answered, non202 = 0, 0, 0, 0
  states, refused, sample = {}, {}, {}
end

function delay()
  -- Reserved here, not in request(): wrk calls request() after this delay's timer fires,
  -- and counting only there would let several connections pass the last slot at once.
  if reserved < share then
    reserved = reserved + 1
    return 0
  end
  return 3600000
end

request = function()
  local i = id + sent * threads
  sent = sent + 1
  local k = i % keys
  local name = (k % 2 == 0) and "IngressTest" or "Storm"
  local body = string.format(
    '{"alerts":[{"labels":{"alertname":"%s","service":"svc-%d"},"annotations":{"n":"%d"},' ..
    '"fingerprint":"%s-%d","starts_at":"%s","status":"firing"}]}',
    name, k, distinct and i or 0, run, k, starts)
  return wrk.format("POST", "/v1/alerts/generic",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 202 then
    -- kept per status with one body, so a failure says why
    non202 = non202 + 1
    refused[status] = (refused[status] or 0) + 1
    sample[status] = sample[status] or body
  end
  for state in string.gmatch(body, '"state":%s*"([^"]*)"') do
    states[state] = (states[state] or 0) + 1
  end
  if answered == share then
    io.open(done_dir .. "/" .. id, "w"):close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total, bad, merged, statuses, bodies = 0, 0, {}, {}, {}
  for _, thread in ipairs(all) do
    total = total + thread:get("answered")
    bad = bad + thread:get("non202")
    for state, n in pairs(thread:get("states")) do
      merged[state] = (merged[state] or 0) + n
    end
    for status, n in pairs(thread:get("refused")) do
      statuses[status] = (statuses[status] or 0) + n
    end
    for status, body in pairs(thread:get("sample")) do
      bodies[status] = body
    end
  end
  local parts, failed = {}, {}
  for state, n in pairs(merged) do
    table.insert(parts, string.format('"%s":%d', state, n))
  end
  for status, n in pairs(statuses) do
    -- the sample body as a JSON key: quotes, backslashes and control characters dropped
    local text = bodies[status]:sub(1, 300):gsub('[\\"%c]', '')
    table.insert(failed, string.format('"%d %s":%d', status, text, n))
  end
  io.write(string.format('EPISODE {"answered":%d,"non202":%d,"median_us":%d,"max_us":%d,"states":{%s},"refused":{%s}}\n',
    total, bad, math.floor(latency:percentile(50)), math.floor(latency.max), table.concat(parts, ","), table.concat(failed, ",")))
end
