-- POST /login with a distinct code per request: thread id + counter, behind a
-- NONCE that differs per wrk run. (Codes must not repeat across runs either: a
-- repeated code within 300 s is answered from its wxsess:code: record without
-- calling WeChat, a cheaper path than the one measured here.)
local nonce = os.getenv("NONCE") or tostring(os.time())
local counter = 0
local thread_id = 0
function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
function request()
  counter = counter + 1
  local body = '{"code":"' .. nonce .. "-" .. tid .. "-" .. counter .. '"}'
  return wrk.format("POST", "/login", {["Content-Type"] = "application/json"}, body)
end
