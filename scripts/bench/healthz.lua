-- GET /healthz built per request exactly like get.lua builds GET /session (same
-- header, same Lua work in wrk), so the two differ only in what the server does.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
local i = 0
function request()
  i = i + 1
  return wrk.format("GET", "/healthz", {["sessionid"] = ids[(i % #ids) + 1]})
end
