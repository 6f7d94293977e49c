-- Creates sessions through the product: POST /login, each with a code no other
-- request used (NONCE differs per call), writing every answered session id to
-- OUT.<thread>.ids. Once a thread has COUNT/THREADS answers it marks
-- OUT.<thread>.done and stops; scripts/bench.sh then ends wrk (which would sleep
-- out its -d) and keeps the first COUNT ids. Up to one request per connection
-- is still in flight at the stop, so Redis may hold a few more sessions.
-- (Counting answers, not requests: wrk calls request() once on thread 1's state
-- to check the script, and never sends that one.)
local count = tonumber(os.getenv("COUNT"))
local threads = tonumber(os.getenv("THREADS"))
local nonce = os.getenv("NONCE")
local out = os.getenv("OUT")

local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local quota, sent, answered, failed, ids, finished
function init(args)
  quota = math.floor(count / threads) + ((tid < count % threads) and 1 or 0)
  sent, answered, failed, finished = 0, 0, 0, false
  ids = io.open(out .. "." .. tid .. ".ids", "w")
end

function request()
  sent = sent + 1
  return wrk.format("POST", "/login", {["Content-Type"] = "application/json"},
    '{"code":"' .. nonce .. "-" .. tid .. "-" .. sent .. '"}')
end

function response(status, headers, body)
  if finished then return end
  local id = body:match('"sessionid":"(%x+)"')
  if id then
    ids:write(id, "\n")
    answered = answered + 1
  else -- a failed login: counted, no id
    answered = answered + 1
    failed = failed + 1
  end
  if answered >= quota then
    finished = true
    ids:close()
    local mark = io.open(out .. "." .. tid .. ".done", "w")
    mark:write(failed, "\n")
    mark:close()
    wrk.thread:stop()
  end
end
