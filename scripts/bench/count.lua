-- GET /session rotating over IDS_FILE, like get.lua, but a fixed number of
-- requests: after N answers the thread stops and creates the file DONE (wrk
-- itself would wait out its -d; scripts/profile.sh ends it then).
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
local n = tonumber(os.getenv("N"))
local done = os.getenv("DONE")
local i, answered = 0, 0
function request()
  i = i + 1
  return wrk.format("GET", "/session", {["sessionid"] = ids[(i % #ids) + 1]})
end
function response(status, headers, body)
  if status ~= 200 then io.stderr:write("unexpected status ", status, "\n") end
  answered = answered + 1
  if answered == n then
    io.open(done, "w"):close()
    wrk.thread:stop()
  end
end
