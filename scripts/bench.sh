#!/usr/bin/env bash
# Rerunnable benchmark (issues 3 and 10), everything on 127.0.0.1:
#   (a)  guarded GET /session, sliding on, rotating over SESSIONS sessions
#   (a*) the same with session.local_cache = true (plus Redis commands per request)
#   (h)  GET /healthz of the cache-on server: the framework alone (driven by a
#        Lua script doing the same client-side work as (a), so that wrk, which
#        shares the 2 cores, costs the same in both)
#   (b)  the 401 path (a well-formed unknown id)
#   (c)  POST /login against an instant WeChat stand-in
#   (d)  redis-benchmark GET and GETEX on the same Redis
#   (e)  examples/bench_reference.rs: one GETEX per request over one multiplexed
#        connection per worker, the ceiling for one round trip per request
# Runs are interleaved (a a* h b c e, ROUNDS times) and medians reported; then
# RSS with CACHED_SESSIONS sessions in the cache.
#   scripts/bench.sh                        # defaults: 10 s runs, 3 rounds
#   BENCH_SECS=3 ROUNDS=1 scripts/bench.sh  # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages redis-server redis-tools wrk

SECS="${BENCH_SECS:-10}"; ROUNDS="${ROUNDS:-3}"
SESSIONS="${SESSIONS:-10000}"; CACHED="${CACHED_SESSIONS:-100000}"
use_scratch

echo ">> building (release)"
cargo build --release --quiet --bin wxsession --example bench_reference
redis_port="$(free_port)"; wx_port="$(free_port)"; plain_port="$(free_port)"; cache_port="$(free_port)"; ref_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
wait_port "$redis_port"
target/release/examples/bench_reference wechat --bind "127.0.0.1:$wx_port" &
pids+=($!)
touch "$work/empty.toml"
start_server() { # port, extra env...
  local port="$1"; shift
  env WXSESSION_WECHAT_APPID=wx_bench WXSESSION_WECHAT_SECRET=bench-secret \
    WXSESSION_WECHAT_API_BASE="http://127.0.0.1:$wx_port" RUST_LOG=warn \
    WXSESSION_REDIS_URL="redis://127.0.0.1:$redis_port/0" WXSESSION_SERVER_BIND="127.0.0.1:$port" "$@" \
    target/release/wxsession --config "$work/empty.toml" 2>>"$work/server.log" &
  pids+=($!)
}
start_server "$plain_port"; plain_pid=$!
start_server "$cache_port" WXSESSION_SESSION_LOCAL_CACHE=true; cache_pid=$!
target/release/examples/bench_reference session --bind "127.0.0.1:$ref_port" --redis "redis://127.0.0.1:$redis_port/0" &
pids+=($!)
for p in "$redis_port" "$wx_port" "$plain_port" "$cache_port" "$ref_port"; do wait_port "$p"; done

# Sessions written straight into Redis, in the server's own format.
make_sessions() { # count, ids file
  python3 - "$1" "$2" <<'PY' | redis-cli -p "$redis_port" --pipe >/dev/null
import os, sys, time, json
count, path = int(sys.argv[1]), sys.argv[2]
now = int(time.time())
out = sys.stdout.buffer
with open(path, "w") as ids:
    for i in range(count):
        sid = os.urandom(16).hex()
        ids.write(sid + "\n")
        value = json.dumps({"openid": f"bench{i}", "unionid": None, "created_at": now}, separators=(",", ":"))
        args = ["SET", f"wxsess:s:{sid}", value, "EX", "7200"]
        out.write(f"*{len(args)}\r\n".encode())
        for a in args:
            b = a.encode()
            out.write(f"${len(b)}\r\n".encode() + b + b"\r\n")
PY
}
make_sessions "$SESSIONS" "$work/ids.txt"
export IDS_FILE="$work/ids.txt"

commands_total() { redis-cli -p "$redis_port" info commandstats | tr -d '\r' | grep '^cmdstat_' | grep -v -e '^cmdstat_ping' -e '^cmdstat_info' | sed -E 's/.*calls=([0-9]+).*/\1/' | paste -sd+ | bc; }
# name url [lua]: one wrk run; appends "name rps p50_ms p99_ms requests" to results
run() {
  local name="$1" url="$2" script="${3:-}"
  local out
  if [ -n "$script" ]; then out="$(wrk -t2 -c64 -d"${SECS}s" --latency -s "$script" "$url")"; else out="$(wrk -t2 -c64 -d"${SECS}s" --latency "$url")"; fi
  local rps p50 p99 reqs
  rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  p50="$(echo "$out" | awk '$1=="50%" {print $2}')"
  p99="$(echo "$out" | awk '$1=="99%" {print $2}')"
  reqs="$(echo "$out" | awk '/requests in/ {print $1}')"
  echo "$name $rps $p50 $p99 $reqs" >> "$work/results"
  printf '   %-8s %10s req/s  p50 %-8s p99 %s\n' "$name" "$rps" "$p50" "$p99"
}

# Warm the cache-on server, then measure.
wrk -t2 -c64 -d2s -s scripts/bench/get.lua "http://127.0.0.1:$cache_port" >/dev/null
for round in $(seq "$ROUNDS"); do
  echo ">> round $round"
  run a "http://127.0.0.1:$plain_port" scripts/bench/get.lua
  before="$(commands_total)"
  run a_cache "http://127.0.0.1:$cache_port" scripts/bench/get.lua
  after="$(commands_total)"
  echo "a_cache_cmds $((after - before))" >> "$work/results"
  run healthz "http://127.0.0.1:$cache_port" scripts/bench/healthz.lua
  run b_401 "http://127.0.0.1:$plain_port/session" scripts/bench/unknown.lua
  run c_login "http://127.0.0.1:$plain_port" scripts/bench/login.lua
  run e_ref "http://127.0.0.1:$ref_port" scripts/bench/get.lua
done
echo ">> redis-benchmark (d)"
redis-benchmark -p "$redis_port" -c 64 -n 300000 --csv -t get | tail -1 > "$work/d_get.csv"
redis-benchmark -p "$redis_port" -c 64 -n 300000 --csv GETEX benchkey EX 7200 | tail -1 > "$work/d_getex.csv"
redis-cli -p "$redis_port" set benchkey x >/dev/null

rss_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
plain_rss="$(rss_kib "$plain_pid")"
echo ">> cache RSS with $CACHED sessions"
make_sessions "$CACHED" "$work/ids_cached.txt"
IDS_FILE="$work/ids_cached.txt" wrk -t2 -c64 -d"${SECS}s" -s scripts/bench/get.lua "http://127.0.0.1:$cache_port" >/dev/null
IDS_FILE="$work/ids_cached.txt" wrk -t2 -c64 -d"${SECS}s" -s scripts/bench/get.lua "http://127.0.0.1:$cache_port" >/dev/null
entries="$(curl -s "127.0.0.1:$cache_port/metrics" | awk '/^wxsession_cache_entries/ {print $2}')"
cache_rss="$(rss_kib "$cache_pid")"

python3 - "$work" "$plain_rss" "$cache_rss" "$entries" "$SECS" "$ROUNDS" "$SESSIONS" "$CACHED" <<'PY'
import csv, statistics, sys, os
work, plain_rss, cache_rss, entries, secs, rounds, sessions, cached = sys.argv[1:]
rows = {}
cmds = []
for line in open(os.path.join(work, "results")):
    parts = line.split()
    if parts[0] == "a_cache_cmds":
        cmds.append(int(parts[1])); continue
    rows.setdefault(parts[0], []).append(parts[1:])
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
med = {}
for name, runs in rows.items():
    med[name] = (statistics.median(float(r[0]) for r in runs),
                 statistics.median(ms(r[1]) for r in runs),
                 statistics.median(ms(r[2]) for r in runs),
                 [int(r[3]) for r in runs])
def redis_csv(path):
    row = next(csv.reader(open(path)))
    return float(row[1]), float(row[4]), float(row[6])
d_get, d_getex = redis_csv(os.path.join(work, "d_get.csv")), redis_csv(os.path.join(work, "d_getex.csv"))
per_req = statistics.median(c / r for c, r in zip(cmds, med["a_cache"][3]))
labels = {"a": "(a) guarded GET /session", "a_cache": "(a*) same, local cache on", "healthz": "(h) GET /healthz",
          "b_401": "(b) 401 path", "c_login": "(c) POST /login", "e_ref": "(e) one-GETEX reference"}
print()
print(f"| run ({os.cpu_count()} cores, wrk -t2 -c64 -d{secs}s, median of {rounds}) | req/s | p50 ms | p99 ms |")
print("|---|---|---|---|")
for key in ["a", "a_cache", "healthz", "b_401", "c_login", "e_ref"]:
    rps, p50, p99, _ = med[key]
    print(f"| {labels[key]} | {rps:,.0f} | {p50:.2f} | {p99:.2f} |")
print(f"| (d) redis-benchmark GET -c 64 | {d_get[0]:,.0f} | {d_get[1]:.2f} | {d_get[2]:.2f} |")
print(f"| (d) redis-benchmark GETEX -c 64 | {d_getex[0]:,.0f} | {d_getex[1]:.2f} | {d_getex[2]:.2f} |")
print()
a, e, ac, h = med["a"][0], med["e_ref"][0], med["a_cache"][0], med["healthz"][0]
print(f"(a)/(d GETEX) = {a / d_getex[0]:.2f}   (a)/(e) = {a / e:.2f}")
print(f"(a*)/(h) = {ac / h:.2f}   (a*)/(e) = {ac / e:.2f}   Redis commands per cached guarded request = {per_req:.4f}")
print(f"server peak RSS under load: {int(plain_rss) / 1024:.1f} MiB (cache off); "
      f"{int(cache_rss) / 1024:.1f} MiB with the cache on holding {entries} sessions")
PY
