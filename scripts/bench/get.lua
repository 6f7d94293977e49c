-- GET /session rotating over the session ids in the file named by IDS_FILE.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
local i = 0
function request()
  i = i + 1
  return wrk.format("GET", "/session", {["sessionid"] = ids[(i % #ids) + 1]})
end
