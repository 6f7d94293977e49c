#!/usr/bin/env bash
# Before/after for the guarded GET /session: two or more builds of the server
# binary, and the one-GETEX reference, on one Redis, interleaved (every binary
# once per round, ROUNDS rounds of SECS seconds, wrk -t2 -c64, requests
# formatted once in the Lua init()), medians of req/s, each binary's ratio to
# the reference per round as median (min–max), and the server's and Redis's CPU
# per request (µs, user + system). A ratio is a figure from 3 rounds up.
#   cp target/release/wxsession /tmp/before    # then change, build, and:
#   scripts/ab.sh /tmp/before target/release/wxsession
#   ROUNDS=5 SECS=10 scripts/ab.sh A B C       # defaults: 3 rounds of 8 s
#   FEATURED=1 scripts/ab.sh target/release/wxsession
#     # the first binary once more, with session.one_per_device on, over sessions
#     # that carry a device and a step-up holding: the guard's cost with them in use
#   APPS=50 scripts/ab.sh target/release/wxsession
#     # the first binary once more with 49 more apps configured (mock QQ apps),
#     # over the same sessions: the guard's cost with many apps
#   WIRE=1 scripts/ab.sh target/release/wxsession
#     # also the reference's wire mode: its GETEX written by hand on one
#     # pipelined connection per worker, without redis-rs (what redis-rs's
#     # per-command machinery costs)
#   UNIX_SOCKET=1 scripts/ab.sh A B
#     # the servers reach Redis over a Unix socket (unix://), the reference
#     # over TCP as always
#   REFERENCE=/tmp/other/bench_reference scripts/ab.sh A B
#     # the reference from another build (default: built here, release)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/ab.sh BINARY [BINARY...]"; exit 2; }
source scripts/lib.sh
source scripts/bench/common.sh
ensure_packages redis-server wrk
command -v python3 >/dev/null || ensure_packages python3
ROUNDS="${ROUNDS:-3}"; SECS="${SECS:-8}"
use_scratch

[ -n "${REFERENCE:-}" ] || cargo build --release --quiet --example bench_reference
reference="${REFERENCE:-target/release/examples/bench_reference}"
redis_port="$(free_port)"; wx_port="$(free_port)"
redis_env=(); socket_args=()
if [ "${UNIX_SOCKET:-0}" = 1 ]; then
  socket_args=(--unixsocket "$work/redis.sock" --unixsocketperm 700)
  redis_env=(WXSESSION_REDIS_URL="unix://$work/redis.sock?db=0")
fi
redis-server --bind 127.0.0.1 --port "$redis_port" ${socket_args[@]+"${socket_args[@]}"} --save '' --appendonly no \
  --dir "$work" >/dev/null &
pids+=($!); redis_pid=$!
wait_port "$redis_port"
"$reference" wechat --bind "127.0.0.1:$wx_port" &
pids+=($!)
names=(); ports=(); spids=(); idfiles=()
for i in $(seq $#); do
  port="$(free_port)"
  SERVER_BINARY="${!i}" start_server "$port" ${redis_env[@]+"${redis_env[@]}"}
  spids+=($!); ports+=("$port"); names+=("$i:$(basename "${!i}")"); idfiles+=("$work/ids")
done
if [ "${FEATURED:-0}" = 1 ]; then
  port="$(free_port)"
  SERVER_BINARY="$1" start_server "$port" ${redis_env[@]+"${redis_env[@]}"} WXSESSION_SESSION_ONE_PER_DEVICE=true
  spids+=($!); ports+=("$port"); names+=("1:$(basename "$1")+features"); idfiles+=("$work/ids-featured")
fi
if [ "${APPS:-1}" -gt 1 ]; then
  port="$(free_port)"
  more_apps=()
  for i in $(seq 2 "$APPS"); do
    more_apps+=("WXSESSION_APPS_APP${i}_PLATFORM=qq" "WXSESSION_APPS_APP${i}_APPID=11000000$i" "WXSESSION_APPS_APP${i}_MOCK=true")
  done
  SERVER_BINARY="$1" start_server "$port" ${redis_env[@]+"${redis_env[@]}"} "${more_apps[@]}"
  spids+=($!); ports+=("$port"); names+=("1:$(basename "$1")+${APPS}apps"); idfiles+=("$work/ids")
fi
port="$(free_port)"
"$reference" session --bind "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port/0" &
pids+=($!); spids+=($!); ports+=("$port"); names+=("reference"); idfiles+=("$work/ids")
if [ "${WIRE:-0}" = 1 ]; then
  port="$(free_port)"
  "$reference" wire --bind "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port/0" &
  pids+=($!); spids+=($!); ports+=("$port"); names+=("reference-wire"); idfiles+=("$work/ids")
fi
for p in "$wx_port" "${ports[@]}"; do wait_port "$p"; done

# 10,000 sessions through the first binary's POST /login.
login_sessions 10000 "$work/ids" "${ports[0]}"
if [ "${FEATURED:-0}" = 1 ]; then
  # 10,000 more, rewritten as a login naming a device and a step-up leave them
  # (the fields in the order the server writes them), holding past the run.
  featured_port="${ports[$#]}" # the first one after the binaries given
  login_sessions 10000 "$work/ids-featured" "$featured_port"
  until_secs=$(( $(date +%s) + 3600 ))
  rewrite="local v = redis.call('GET', KEYS[1]) if not v then return 0 end"
  rewrite+=" v = string.gsub(v, '\"device\":null', '\"device\":\"phone\"')"
  rewrite+=" v = string.gsub(v, '}\$', ',\"elevated_until\":' .. ARGV[1] .. '}')"
  rewrite+=" redis.call('SET', KEYS[1], v, 'KEEPTTL') return 1"
  while read -r id; do
    printf 'EVAL "%s" 1 wxsess:s:%s %s\n' "${rewrite//\"/\\\"}" "$id" "$until_secs"
  done < "$work/ids-featured" | redis-cli -p "$redis_port" >/dev/null
  sample="$(curl -s -H "sessionid: $(head -1 "$work/ids-featured")" "http://127.0.0.1:$featured_port/session")"
  echo "$sample" | grep -q "\"elevated_until\":$until_secs" || { echo "!! featured sessions not rewritten: $sample"; exit 1; }
fi

for round in $(seq "$ROUNDS"); do
  for i in "${!names[@]}"; do
    t0="$(proc_ticks "${spids[$i]}")"; r0="$(proc_ticks "$redis_pid")"; u0="$(proc_user_ticks "${spids[$i]}")"
    out="$(IDS_FILE="${idfiles[$i]}" timeout $((SECS + 30)) wrk -t2 -c64 -d"${SECS}s" -s scripts/bench/get.lua "http://127.0.0.1:${ports[$i]}")"
    t1="$(proc_ticks "${spids[$i]}")"; r1="$(proc_ticks "$redis_pid")"; u1="$(proc_user_ticks "${spids[$i]}")"
    if echo "$out" | grep -q Non-2xx; then echo "!! ${names[$i]} answered non-2xx"; echo "$out"; exit 1; fi
    rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"; n="$(echo "$out" | awk '/requests in/ {print $1}')"
    echo "${names[$i]} $rps $((t1 - t0)) $((r1 - r0)) $n $((u1 - u0))" | tee -a "$work/results" \
      | awk -v r="$round" -v hz="$(getconf CLK_TCK)" '{printf "   round %s  %-24s %10.0f req/s  server %.2f us/req (user %.2f)  redis %.2f us/req\n", r, $1, $2, $3 * 1e6 / hz / $5, $6 * 1e6 / hz / $5, $4 * 1e6 / hz / $5}'
  done
done
python3 - "$work/results" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
runs = {}
hz = int(sys.argv[2])
for line in open(sys.argv[1]):
    name, rps, srv, red, n, usr = line.split()
    runs.setdefault(name, []).append((float(rps), int(srv) * 1e6 / hz / int(n), int(red) * 1e6 / hz / int(n), int(usr) * 1e6 / hz / int(n)))
refs = [r[0] for r in runs["reference"]]
print(f"\nmedians of {len(refs)} rounds: req/s, /reference per round as median (min–max), "
      "server CPU (of it user) and Redis CPU per request (us)")
for name, rows in runs.items():
    rps = statistics.median(r[0] for r in rows)
    ratios = sorted(r[0] / ref for r, ref in zip(rows, refs))
    spread = f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"
    print(f"  {name:24s} {rps:10,.0f}  {spread:18s}  {statistics.median(r[1] for r in rows):6.2f} ({statistics.median(r[3] for r in rows):5.2f})  {statistics.median(r[2] for r in rows):6.2f}")
PY
