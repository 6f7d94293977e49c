-- GET /healthz with the same rotating sessionid header as get.lua, formatted
-- once in init() the same way, so the two differ only in what the server does.
local reqs = {}
local i = 0
function init(args)
  for line in io.lines(os.getenv("IDS_FILE")) do
    reqs[#reqs + 1] = wrk.format("GET", "/healthz", {["sessionid"] = line})
  end
end
function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
