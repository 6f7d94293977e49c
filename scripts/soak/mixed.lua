-- Mixed load for scripts/soak.sh: each wrk thread logs in (mock WeChat, a fresh
-- code each time), uses its sessions with GET /session and logs some out.
-- Statuses other than 200/204 (and 401 for a session this thread just logged
-- out while a request on it was in flight) count as unexpected.
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  pool = {}
  counter = 0
  unexpected = 0
  raced = 0
  statuses = {}
end

function request()
  counter = counter + 1
  if #pool < 8 or counter % 25 == 0 then
    local body = '{"code":"soak-' .. tid .. '-' .. counter .. '"}'
    return wrk.format("POST", "/login", {["Content-Type"] = "application/json"}, body)
  elseif counter % 25 == 24 then
    local id = table.remove(pool, 1)
    return wrk.format("DELETE", "/session", {["sessionid"] = id})
  else
    local id = pool[math.random(#pool)]
    return wrk.format("GET", "/session", {["sessionid"] = id})
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 then
    local id = body:match('"sessionid":"(%x+)"')
    if id then table.insert(pool, id) end
  elseif status == 401 then
    raced = raced + 1
  elseif status ~= 204 then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local total_unexpected, total_raced = 0, 0
  for _, t in ipairs(threads) do
    total_unexpected = total_unexpected + t:get("unexpected")
    total_raced = total_raced + t:get("raced")
  end
  io.write(string.format("SOAK requests=%d unexpected=%d raced401=%d errors=%d p99_ms=%.2f\n",
    summary.requests, total_unexpected, total_raced,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(99) / 1000))
end
