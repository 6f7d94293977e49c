#!/usr/bin/env bash
# Memory of a server whose local cache holds SESSIONS sessions, everything on
# 127.0.0.1: builds release, starts Redis, the instant WeChat stand-in
# (examples/bench_reference.rs) and two servers, one with session.local_cache on
# (the one measured) and one without, which makes the sessions through POST /login
# (as scripts/bench.sh does, so that the measured server's memory is its cache's,
# not the login path's). Then reads every session through the cache-on server's
# guard (wrk, scripts/bench/get.lua) until its wxsession_cache_entries gauge says
# they are all cached, and prints its peak and current RSS (VmHWM, VmRSS).
#   scripts/cache-rss.sh                              # 100,000 sessions (~1 min)
#   SESSIONS=20000 scripts/cache-rss.sh
#   SERVER_BINARY=/tmp/before scripts/cache-rss.sh    # another build of the server
# Honours CARGO_TARGET_DIR. Stops everything it started, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/bench/common.sh
ensure_packages redis-server redis-tools wrk
command -v curl >/dev/null || ensure_packages curl
command -v python3 >/dev/null || ensure_packages python3

SESSIONS="${SESSIONS:-100000}"
bin="${CARGO_TARGET_DIR:-target}/release"
export SERVER_BINARY="${SERVER_BINARY:-$bin/wxsession}"
use_scratch
trap 'exit 130' INT
trap 'exit 143' TERM

echo ">> building (release)"
cargo build --release --quiet --bin wxsession --example bench_reference
redis_port="$(free_port)"; wx_port="$(free_port)"; login_port="$(free_port)"; cache_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
wait_port "$redis_port"
"$bin/examples/bench_reference" wechat --bind "127.0.0.1:$wx_port" &
pids+=($!)
start_server "$login_port"
start_server "$cache_port" WXSESSION_SESSION_LOCAL_CACHE=true \
  WXSESSION_SESSION_LOCAL_CACHE_CAPACITY="$SESSIONS"; cache_pid=$!
for p in "$wx_port" "$login_port" "$cache_port"; do wait_port "$p"; done

# what: the cache-on server's VmHWM, VmRSS and cached sessions.
report() {
  local entries
  entries="$(curl -sf "127.0.0.1:$cache_port/metrics" | awk '/^wxsession_cache_entries / {print $2}')"
  awk -v what="$1" -v entries="$entries" '
    /^VmHWM/ {hwm = $2} /^VmRSS/ {rss = $2}
    END {printf "   %-28s VmHWM %6.1f MiB  VmRSS %6.1f MiB  wxsession_cache_entries %s\n", what, hwm / 1024, rss / 1024, entries}' \
    "/proc/$cache_pid/status"
}
cached() { curl -sf "127.0.0.1:$cache_port/metrics" | awk '/^wxsession_cache_entries / {print $2}'; }

report "started"
echo ">> $SESSIONS sessions through POST /login (on the cache-off server)"
login_sessions "$SESSIONS" "$work/ids.txt" "$login_port"
export IDS_FILE="$work/ids.txt"
echo ">> reading them all through the cache-on server's guard"
for _ in $(seq 12); do # at most 12 × 5 s
  out="$(timeout --foreground 30 wrk -t2 -c64 -d5s -s scripts/bench/get.lua "http://127.0.0.1:$cache_port")"
  non2xx="$(echo "$out" | awk '/Non-2xx/ {print $NF}')"
  if [ -n "$non2xx" ]; then echo "!! $non2xx answers were not 2xx"; echo "$out"; exit 1; fi
  sleep 0.5 # the gauge follows the tracking connection's heartbeat (250 ms)
  [ "$(cached)" -ge "$SESSIONS" ] && break
done
report "all read"
if [ "$(cached)" -lt "$SESSIONS" ]; then echo "!! only $(cached) of $SESSIONS sessions cached"; exit 1; fi
echo "   (${SERVER_BINARY}, $(nproc) cores, server.workers = 0: one per core)"
