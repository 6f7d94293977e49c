#!/usr/bin/env bash
# Instructions per guarded GET /session: the server against the one-GETEX
# reference (examples/bench_reference.rs), counted by valgrind's callgrind.
# Counts, not seconds: the same for the same binaries whatever else the machine
# is doing, so a change of a few hundred instructions per request shows.
# Each side runs under callgrind twice, for LOW and for HIGH requests (wrk -t1 -c8
# after a warm-up); the difference over HIGH - LOW requests leaves out start-up
# and shutdown. Prints instructions per request for both, then the functions
# whose own cost differs most (server minus reference).
#   scripts/profile.sh                       # LOW=2000 HIGH=12000 TOP=30 (~3 min)
#   KEEP=DIR scripts/profile.sh              # also keeps the callgrind files in DIR
#   CONNS=64 scripts/profile.sh              # wrk connections (default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/bench/common.sh
ensure_packages redis-server valgrind wrk
command -v curl >/dev/null || ensure_packages curl
command -v python3 >/dev/null || ensure_packages python3
LOW="${LOW:-2000}"; HIGH="${HIGH:-12000}"; TOP="${TOP:-30}"
use_scratch

echo ">> building (release)"
cargo build --release --quiet --bin wxsession --example bench_reference
redis_port="$(free_port)"; wx_port="$(free_port)"; login_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
wait_port "$redis_port"
target/release/examples/bench_reference wechat --bind "127.0.0.1:$wx_port" &
pids+=($!)
start_server "$login_port"
wait_port "$wx_port"; wait_port "$login_port"
login_sessions 200 "$work/ids" "$login_port"
export IDS_FILE="$work/ids"

# requests port: N requests at 8 connections, returns when they are answered.
drive() {
  local n="$1" port="$2" w
  rm -f "$work/done"
  DONE="$work/done" N="$n" wrk -t1 -c"${CONNS:-8}" -d600s -s scripts/bench/count.lua "http://127.0.0.1:$port" >"$work/wrk.out" &
  w=$!
  for _ in $(seq 6000); do [ -e "$work/done" ] && break; kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
  kill -INT "$w" 2>/dev/null || true
  wait "$w" || true
  [ -e "$work/done" ] || { echo "!! $n requests did not complete"; cat "$work/wrk.out"; exit 1; }
}
# side requests: the side under callgrind, warmed up, then driven; output in $work/<side>.<requests>
measure() {
  local side="$1" n="$2" port pid
  port="$(free_port)"
  local server_wrap=(valgrind --tool=callgrind ${CALLGRIND_OPTS:-} --callgrind-out-file="$work/$side.$n")
  if [ "$side" = server ]; then
    start_server "$port"
  else
    "${server_wrap[@]}" target/release/examples/bench_reference session --bind "127.0.0.1:$port" \
      --redis "redis://127.0.0.1:$redis_port/0" 2>>"$work/server.log" &
    pids+=($!)
  fi
  pid=$!
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  drive 300 "$port"
  drive "$n" "$port"
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for side in server reference; do
  for n in "$LOW" "$HIGH"; do
    echo ">> $side: $n requests under callgrind"
    measure "$side" "$n"
  done
done

if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$work"/server.* "$work"/reference.* "$KEEP"/; fi
python3 - "$work" "$LOW" "$HIGH" "$TOP" "${CONNS:-8}" <<'PY'
import glob, re, subprocess, sys
work, low, high, top, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def own_costs(side, n):
    # The dump taken after the requests: <side>.<n>.1 (callgrind numbers its dumps).
    path = sorted(glob.glob(f"{work}/{side}.{n}.*"))[0]
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--show=Ir", path],
                         capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([0-9,]+)\s+\(\s*[0-9.]+%\)\s+(.*?)(\s\[.*\])?$", line)
        if m:
            costs[m.group(2)] = costs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return costs
def per_request(side):
    lo, hi = own_costs(side, low), own_costs(side, high)
    return {k: (hi.get(k, 0) - lo.get(k, 0)) / (high - low) for k in set(lo) | set(hi)}
s, r = per_request("server"), per_request("reference")
total = "PROGRAM TOTALS"
print()
print(f"Instructions per guarded GET /session (callgrind, {high} - {low} requests, wrk -t1 -c{conns}):")
print(f"  server {s[total]:,.0f}   reference {r[total]:,.0f}   ratio {s[total] / r[total]:.3f}")
print()
print(f"Functions by own cost, server minus reference, per request (top {top}):")
print(f"{'diff':>8} {'server':>8} {'ref':>8}  function")
rows = sorted((k for k in set(s) | set(r) if k != total), key=lambda k: -(s.get(k, 0) - r.get(k, 0)))
for k in rows[:top]:
    print(f"{s.get(k, 0) - r.get(k, 0):8.0f} {s.get(k, 0):8.0f} {r.get(k, 0):8.0f}  {k[:150]}")
PY
