-- GET /session with a well-formed id that no session has: the 401 path.
wrk.headers["sessionid"] = "0123456789abcdef0123456789abcdef"
