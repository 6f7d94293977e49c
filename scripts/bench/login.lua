-- POST /login with a distinct code per request.
local counter = 0
local thread_id = 0
function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
function request()
  counter = counter + 1
  local body = '{"code":"bench-' .. tid .. '-' .. counter .. '-' .. math.random(1e9) .. '"}'
  return wrk.format("POST", "/login", {["Content-Type"] = "application/json"}, body)
end
