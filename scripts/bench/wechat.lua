-- GET /sns/jscode2session straight at the WeChat stand-in, the query the server
-- sends for a login, a distinct code per request: the WeChat call alone, to
-- set against (c1), a login through the server at the same concurrency.
local nonce = os.getenv("NONCE") or tostring(os.time())
local counter = 0
function request()
  counter = counter + 1
  return wrk.format("GET", "/sns/jscode2session?appid=wx_bench&secret=bench-secret&js_code="
    .. nonce .. "-" .. counter .. "&grant_type=authorization_code")
end
