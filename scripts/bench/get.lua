-- GET /session rotating over the session ids in the file named by IDS_FILE.
-- Every request is formatted once, in init(): request() only hands out the next
-- one, so wrk's own cost per request stays small and equal across servers.
local reqs = {}
local i = 0
function init(args)
  for line in io.lines(os.getenv("IDS_FILE")) do
    reqs[#reqs + 1] = wrk.format("GET", "/session", {["sessionid"] = line})
  end
end
function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
