-- GET /session rotating over IDS_FILE, like get.lua, but a fixed number of
-- requests: after N answers the thread stops and creates the file DONE (wrk
-- itself would wait out its -d; scripts/profile.sh ends it then).
-- Requests are formatted once, in init(), as in get.lua.
local reqs = {}
local n = tonumber(os.getenv("N"))
local done = os.getenv("DONE")
local i, answered = 0, 0
function init(args)
  for line in io.lines(os.getenv("IDS_FILE")) do
    reqs[#reqs + 1] = wrk.format("GET", "/session", {["sessionid"] = line})
  end
end
function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
function response(status, headers, body)
  if status ~= 200 then io.stderr:write("unexpected status ", status, "\n") end
  answered = answered + 1
  if answered == n then
    io.open(done, "w"):close()
    wrk.thread:stop()
  end
end
