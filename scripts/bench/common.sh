# Shared by scripts/bench.sh, ab.sh and profile.sh (sourced after scripts/lib.sh
# and use_scratch, with $redis_port and $wx_port set): how a server under test
# is started, how sessions are made, how CPU is read.

# port, extra env...: a server on 127.0.0.1:port against this Redis and the WeChat
# stand-in, in the background ($! is its pid; also in $pids). SERVER_BINARY picks
# the build (default target/release/wxsession); the array server_wrap, if set,
# is the command it runs under (valgrind, say).
start_server() {
  local port="$1"; shift
  touch "$work/empty.toml"
  env WXSESSION_WECHAT_APPID=wx_bench WXSESSION_WECHAT_SECRET=bench-secret \
    WXSESSION_WECHAT_API_BASE="http://127.0.0.1:$wx_port" WXSESSION_WECHAT_ALLOW_INSECURE_API_BASE=true \
    RUST_LOG=warn \
    WXSESSION_REDIS_URL="redis://127.0.0.1:$redis_port/0" WXSESSION_SERVER_BIND="127.0.0.1:$port" "$@" \
    ${server_wrap[@]+"${server_wrap[@]}"} "${SERVER_BINARY:-target/release/wxsession}" \
    --config "$work/empty.toml" 2>>"$work/server.log" &
  pids+=($!)
}

# A prefix no earlier wrk run used, so that login codes never repeat.
nonce() { echo "bench$(date +%s%N)$RANDOM"; }

# count, ids file, server port: `count` logins through that server with wrk
# (scripts/bench/create.lua, 2 threads, 64 connections), the answered session
# ids into the file. Fails the script unless every login answered a session.
login_sessions() {
  local count="$1" out="$2" port="$3" threads=2 wrk_pid marks=0
  rm -f "$work"/created.*
  COUNT="$count" THREADS="$threads" NONCE="$(nonce)" OUT="$work/created" \
    wrk -t"$threads" -c64 -d120s -s scripts/bench/create.lua "http://127.0.0.1:$port" >"$work/create.log" &
  wrk_pid=$!; pids+=("$wrk_pid")
  for _ in $(seq 1200); do # at most 120 s, as wrk's -d
    marks="$(find "$work" -maxdepth 1 -name 'created.*.done' | wc -l)"
    [ "$marks" -eq "$threads" ] && break
    kill -0 "$wrk_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" || true
  local got failed
  got="$(cat "$work"/created.*.ids | wc -l)"
  failed="$(cat "$work"/created.*.done 2>/dev/null | awk '{s += $1} END {print s + 0}')"
  if [ "$marks" -ne "$threads" ] || [ "$failed" -ne 0 ] || [ "$got" -lt "$count" ]; then
    echo "!! wanted $count sessions: $got logins answered with a session, $failed failed"
    cat "$work/create.log"; tail -5 "$work/server.log"; exit 1
  fi
  cat "$work"/created.*.ids | head -n "$count" > "$out"
}

# pid: clock ticks (user + system) the process has used so far.
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# pid: user-mode clock ticks only.
proc_user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
# pid: "nanoseconds waited for a core, times it was given one", summed over its
# threads (the kernel's per-task schedstat: run time, run-queue wait, slices); a
# thread that ends while it is read, or a process gone, counts nothing (so a
# difference over a spell in which threads ended is too low).
run_queue_wait() {
  { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{w += $2; n += $3} END {print w + 0, n + 0}'
}
