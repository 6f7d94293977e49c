#!/usr/bin/env bash
# Rerunnable benchmark, everything on 127.0.0.1:
#   (a)  guarded GET /session, sliding on, rotating over SESSIONS sessions
#   (a*) the same with session.local_cache = true (plus Redis commands per request)
#   (h)  GET /healthz of the cache-on server: the framework alone (driven by a
#        Lua script doing the same client-side work as (a), so that wrk, which
#        shares the cores, costs the same in both)
#   (b)  the 401 path (a well-formed unknown id)
#   (c)  POST /login against an instant WeChat stand-in, a fresh code per request
#        (checked: one stand-in call per timed login)
#   (c1) the same over one connection, and (w1) the stand-in's jscode2session
#        alone over one connection: p99 (c1) - p99 (w1) is what a login adds to
#        the WeChat call when nothing queues
#   (e)  examples/bench_reference.rs: one GETEX per request over one multiplexed
#        connection per worker, the ceiling for one round trip per request
#   (d)  redis-benchmark GET and GETEX (-c 64) on the same Redis, session-sized value
# The sessions are made through POST /login. Runs are interleaved
# (a e a* h, or h a* e a in turn, then b c c1 w1 d-GET d-GETEX; ROUNDS times) and medians
# reported, every ratio as the median and spread (min–max) of per-round ratios
# (a figure needs ROUNDS >= 3; wrk's requests are formatted once in the Lua
# init(), so its own cost per request stays small); then the RSS of
# the cache-on server holding CACHED_SESSIONS sessions. Every wrk run is checked:
# (b) must answer only 401s, the others only 2xx, or the script fails. Beside each
# run's CPU, how long wrk's threads and the server's were ready but waited for a
# core (at saturation on shared cores, that is most of the tail).
#   scripts/bench.sh                        # defaults: 10 s runs, 3 rounds (~10 min)
#   BENCH_SECS=3 ROUNDS=1 scripts/bench.sh  # a quick look (BENCH_SECS >= 3)
#   CHART=bench.svg scripts/bench.sh        # also a chart (.svg or .png, gnuplot) of
#                                           # req/s and p99 per round of (a), (a*), (e)
#                                           # and (h), and every run's figures per
#                                           # round beside it (bench.dat)
# Also: SESSIONS (10000), CACHED_SESSIONS (100000), REDIS_N (200000).
# Honours CARGO_TARGET_DIR and SERVER_BINARY.
set -euo pipefail
case "${CHART:-}" in "" | /*) ;; *) CHART="$PWD/$CHART" ;; esac
cd "$(dirname "$0")/.."
cmdline="scripts/bench.sh"
for v in REDIS_N CACHED_SESSIONS SESSIONS ROUNDS BENCH_SECS; do
  if [ -n "${!v:-}" ]; then cmdline="$v=${!v} $cmdline"; fi
done
source scripts/lib.sh
source scripts/bench/common.sh
# redis-benchmark and redis-cli come with Debian's redis-tools.
ensure_packages redis-server redis-tools wrk
command -v curl >/dev/null || ensure_packages curl
command -v python3 >/dev/null || ensure_packages python3
CHART="${CHART:-}"
if [ -n "$CHART" ]; then
  case "$CHART" in
    *.svg | *.png) ;;
    *) echo "CHART must end in .svg or .png: $CHART"; exit 2 ;;
  esac
  ensure_packages gnuplot-nox
fi

SECS="${BENCH_SECS:-10}"; ROUNDS="${ROUNDS:-3}"
[ "$SECS" -ge 3 ] || { echo "BENCH_SECS must be 3 or more"; exit 2; }
SESSIONS="${SESSIONS:-10000}"; CACHED="${CACHED_SESSIONS:-100000}"; REDIS_N="${REDIS_N:-200000}"
THREADS=2; CONNS=64
use_scratch
# On Ctrl-C or TERM: stop here (the EXIT trap stops every process), do not carry on.
trap 'exit 130' INT
trap 'exit 143' TERM

echo ">> building (release)"
cargo build --release --quiet --bin wxsession --example bench_reference
bin="${CARGO_TARGET_DIR:-target}/release"
SERVER_BINARY="${SERVER_BINARY:-$bin/wxsession}"
redis_port="$(free_port)"; wx_port="$(free_port)"; plain_port="$(free_port)"; cache_port="$(free_port)"; ref_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!); redis_pid=$!
wait_port "$redis_port"
"$bin/examples/bench_reference" wechat --bind "127.0.0.1:$wx_port" &
pids+=($!); wx_pid=$!
start_server "$plain_port"; plain_pid=$!
start_server "$cache_port" WXSESSION_SESSION_LOCAL_CACHE=true; cache_pid=$!
"$bin/examples/bench_reference" session --bind "127.0.0.1:$ref_port" --redis "redis://127.0.0.1:$redis_port/0" &
pids+=($!); ref_pid=$!
for p in "$redis_port" "$wx_port" "$plain_port" "$cache_port" "$ref_port"; do wait_port "$p"; done

wechat_hits() { curl -sf "127.0.0.1:$wx_port/hits"; }
echo ">> $SESSIONS sessions through POST /login"
login_sessions "$SESSIONS" "$work/ids.txt" "$plain_port"
# Cross-check in Redis: at least those sessions, plus at most one per connection.
redis-cli -p "$redis_port" --scan --pattern 'wxsess:s:*' | sed 's/^wxsess:s://' | sort > "$work/in_redis.txt"
missing="$(sort "$work/ids.txt" | comm -23 - "$work/in_redis.txt" | wc -l)"
in_redis="$(wc -l < "$work/in_redis.txt")"
if [ "$missing" -ne 0 ] || [ "$in_redis" -gt $((SESSIONS + CONNS)) ]; then
  echo "!! Redis holds $in_redis sessions, $missing of the $SESSIONS answered ids missing"; exit 1
fi
export IDS_FILE="$work/ids.txt"
# (d) reads a real session's value: GET on redis-benchmark's fixed key (a copy),
# GETEX on the session itself.
first_key="wxsess:s:$(head -1 "$work/ids.txt")"
redis-cli -p "$redis_port" GET "$first_key" | tr -d '\n' | redis-cli -p "$redis_port" -x SET 'key:__rand_int__' >/dev/null

commands_total() {
  redis-cli -p "$redis_port" info commandstats | tr -d '\r' | grep '^cmdstat_' \
    | grep -v -e '^cmdstat_ping' -e '^cmdstat_info' | sed -E 's/.*calls=([0-9]+).*/\1/' | awk '{s += $1} END {print s}'
}
to_ms() { # wrk's 612.00us / 1.73ms / 1.02s -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
# CPU accounting: clock ticks of one process, and of the whole machine (busy, all).
all_ticks() { awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat; }
cpu_start() { # server pid: remembers the counters
  c_srv="$(proc_ticks "$1")"; c_redis="$(proc_ticks "$redis_pid")"; read -r c_busy c_all < <(all_ticks)
}
cpu_end() { # server pid: prints "server% redis% rest%" (of one core) since cpu_start
  local srv redis busy all
  srv="$(proc_ticks "$1")"; redis="$(proc_ticks "$redis_pid")"; read -r busy all < <(all_ticks)
  [ "$1" = "$redis_pid" ] && srv="$c_srv" # the server is Redis: count it once
  awk -v s=$((srv - c_srv)) -v r=$((redis - c_redis)) -v b=$((busy - c_busy)) -v a=$((all - c_all)) -v n="$(nproc)" \
    'BEGIN { k = 100 * n / (a > 0 ? a : 1); printf "%.0f %.0f %.0f", s * k, r * k, (b - s - r) * k }'
}
# name expect url lua server_pid: one wrk run (expect: 2xx or 401, what every
# answer must be); appends "name rps p50_ms p99_ms requests cpu_server cpu_redis
# cpu_rest" to results (CPU in % of one core; rest = wrk, the stand-in, softirq,
# others), and to waits how long wrk's threads and the server's waited for a core
# (ms per second, and µs per time a thread was given one), from 1 s in to 1 s
# before the end.
run() {
  local name="$1" expect="$2" url="$3" script="$4" server_pid="$5" out cpu timeout_pid wrk_pid w0 s0 t0 w1 s1 t1
  local args=(-t"${RUN_THREADS:-$THREADS}" -c"${RUN_CONNS:-$CONNS}" -d"${SECS}s" --latency -s "$script")
  cpu_start "$server_pid"
  NONCE="$(nonce)" timeout --foreground $((SECS + 30)) wrk "${args[@]}" "$url" > "$work/wrk.out" &
  timeout_pid=$!
  pids+=("$timeout_pid") # stopped with the rest if the script is
  sleep 1
  wrk_pid="$(pgrep -P "$timeout_pid" wrk || true)" # none if wrk has already failed
  w0="$(run_queue_wait "$wrk_pid")"; s0="$(run_queue_wait "$server_pid")"; t0="$(date +%s%N)"
  sleep $((SECS - 2))
  w1="$(run_queue_wait "$wrk_pid")"; s1="$(run_queue_wait "$server_pid")"; t1="$(date +%s%N)"
  wait "$timeout_pid"
  unset 'pids[-1]'
  out="$(cat "$work/wrk.out")"
  cpu="$(cpu_end "$server_pid")"
  awk -v name="$name" -v w="$w0 $w1" -v s="$s0 $s1" -v ns=$((t1 - t0)) 'BEGIN {
    split(w, a, " "); split(s, b, " ")
    printf "%s %.1f %.0f %.1f %.0f\n", name, (a[3] - a[1]) / ns * 1000, (a[3] - a[1]) / 1000 / ((a[4] - a[2]) > 0 ? a[4] - a[2] : 1),
      (b[3] - b[1]) / ns * 1000, (b[3] - b[1]) / 1000 / ((b[4] - b[2]) > 0 ? b[4] - b[2] : 1) }' >> "$work/waits"
  local rps p50 p99 reqs non2xx errors
  rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  p50="$(echo "$out" | awk '$1 == "50%" {print $2}')"
  p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
  reqs="$(echo "$out" | awk '/requests in/ {print $1}')"
  non2xx="$(echo "$out" | awk '/Non-2xx/ {print $NF}')"; non2xx="${non2xx:-0}"
  errors="$(echo "$out" | awk '/Socket errors/ {sub(/.*Socket errors: /, ""); print}')"
  if { [ "$expect" = 2xx ] && [ "$non2xx" -ne 0 ]; } || { [ "$expect" = 401 ] && [ "$non2xx" -ne "$reqs" ]; }; then
    echo "!! $name: $non2xx of $reqs answers were not $expect"; echo "$out"; tail -5 "$work/server.log"; exit 1
  fi
  [ -n "$errors" ] && echo "$name socket errors: $errors" >> "$work/notes"
  echo "$name $rps $(to_ms "$p50") $(to_ms "$p99") $reqs $cpu" >> "$work/results"
  echo "$round $name $rps $(to_ms "$p50") $(to_ms "$p99")" >> "$work/per_round"
  printf '   %-8s %10s req/s  p50 %-8s p99 %-8s cpu%% server/redis/rest %s %s\n' "$name" "$rps" "$p50" "$p99" \
    "${cpu// //}" "${errors:+socket errors: $errors}"
}
# name, redis-benchmark command...: appends "name rps p50_ms p99_ms" to results.
run_redis() {
  local name="$1" line test rps avg min p50 p95 p99 max cpu; shift
  cpu_start "$redis_pid"
  line="$(timeout --foreground 120 redis-benchmark -p "$redis_port" -c "$CONNS" -n "$REDIS_N" --csv "$@" | tail -1 | tr -d '"')"
  cpu="$(cpu_end "$redis_pid")"
  IFS=, read -r test rps avg min p50 p95 p99 max <<<"$line"
  echo "$name $rps $p50 $p99 $REDIS_N $cpu" >> "$work/results"
  echo "$round $name $rps $p50 $p99" >> "$work/per_round"
  printf '   %-8s %10s req/s  p50 %-8s p99 %-8s cpu%% server/redis/rest %s\n' "$name" "$rps" "${p50}ms" "${p99}ms" "${cpu// //}"
}

# Warm the cache-on server, then measure.
timeout --foreground 30 wrk -t"$THREADS" -c"$CONNS" -d2s -s scripts/bench/get.lua "http://127.0.0.1:$cache_port" >/dev/null
for round in $(seq "$ROUNDS"); do
  echo ">> round $round of $ROUNDS"
  # (a) (e) (a*) (h) in a row, the other way round in every other round: every
  # ratio is taken from neighbours ((a)/(e), (a*)/(e), (a*)/(h)), and no run
  # always follows the same one.
  if [ $((round % 2)) -eq 1 ]; then order=(a e_ref a_cache healthz); else order=(healthz a_cache e_ref a); fi
  for name in "${order[@]}"; do
    case "$name" in
      a) run a 2xx "http://127.0.0.1:$plain_port" scripts/bench/get.lua "$plain_pid" ;;
      e_ref) run e_ref 2xx "http://127.0.0.1:$ref_port" scripts/bench/get.lua "$ref_pid" ;;
      a_cache)
        before="$(commands_total)"
        run a_cache 2xx "http://127.0.0.1:$cache_port" scripts/bench/get.lua "$cache_pid"
        after="$(commands_total)"
        echo "a_cache_cmds $((after - before))" >> "$work/results"
        ;;
      healthz) run healthz 2xx "http://127.0.0.1:$cache_port" scripts/bench/healthz.lua "$cache_pid" ;;
    esac
  done
  run b_401 401 "http://127.0.0.1:$plain_port/session" scripts/bench/unknown.lua "$plain_pid"
  before="$(wechat_hits)"
  run c_login 2xx "http://127.0.0.1:$plain_port" scripts/bench/login.lua "$plain_pid"
  after="$(wechat_hits)"
  echo "c_login_hits $((after - before))" >> "$work/results"
  RUN_THREADS=1 RUN_CONNS=1 run c1_login 2xx "http://127.0.0.1:$plain_port" scripts/bench/login.lua "$plain_pid"
  RUN_THREADS=1 RUN_CONNS=1 run w1_wechat 2xx "http://127.0.0.1:$wx_port" scripts/bench/wechat.lua "$wx_pid"
  run_redis d_get -t get
  run_redis d_getex GETEX "$first_key" EX 7200
done

rss_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
plain_rss="$(rss_kib "$plain_pid")"; ref_rss="$(rss_kib "$ref_pid")"
echo ">> cache RSS with $CACHED sessions (made through POST /login)"
login_sessions "$CACHED" "$work/ids_cached.txt" "$plain_port"
for _ in 1 2; do
  IDS_FILE="$work/ids_cached.txt" timeout --foreground $((SECS + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" \
    -s scripts/bench/get.lua "http://127.0.0.1:$cache_port" >/dev/null
done
entries="$(curl -s "127.0.0.1:$cache_port/metrics" | awk '/^wxsession_cache_entries/ {print $2}')"
cache_rss="$(rss_kib "$cache_pid")"

touch "$work/notes"
python3 - "$work" "$plain_rss" "$ref_rss" "$cache_rss" "${entries:-?}" "$SECS" "$ROUNDS" "$SESSIONS" \
  "$cmdline" "$(nproc)" "$(wrk --version 2>&1 | head -1 | awk '{print $2}')" "$(redis-server --version | awk '{sub(/^v=/, "", $3); print $3}')" <<'PY'
import statistics, sys, os
(work, plain_rss, ref_rss, cache_rss, entries, secs, rounds, sessions,
 cmdline, nproc, wrk_version, redis_version) = sys.argv[1:]
rows, extra = {}, {}
for line in open(os.path.join(work, "results")):
    name, *vals = line.split()
    if name in ("a_cache_cmds", "c_login_hits"):
        extra.setdefault(name, []).append(int(vals[0]))
    else:
        rows.setdefault(name, []).append([float(v) for v in vals])
med = {name: [statistics.median(r[i] for r in runs) for i in range(3)] + [[int(r[3]) for r in runs]]
       for name, runs in rows.items()}
cpu = {name: [statistics.median(r[i] for r in runs) for i in (4, 5, 6)] for name, runs in rows.items()}
waits = {}
for line in open(os.path.join(work, "waits")):
    name, *vals = line.split()
    waits.setdefault(name, []).append([float(v) for v in vals])
waits = {name: [statistics.median(r[i] for r in runs) for i in range(4)] for name, runs in waits.items()}
cmds_per_req = statistics.median(c / r for c, r in zip(extra["a_cache_cmds"], med["a_cache"][3]))
hits_per_login = statistics.median(h / r for h, r in zip(extra["c_login_hits"], med["c_login"][3]))
labels = [("a", "(a) guarded GET /session"),
          ("a_cache", "(a*) same, local cache on"),
          ("healthz", "(h) GET /healthz (same wrk Lua work as (a))"),
          ("b_401", "(b) 401 path"),
          ("c_login", "(c) POST /login (instant WeChat stand-in)"),
          ("c1_login", "(c1) POST /login, 1 connection (-t1 -c1)"),
          ("w1_wechat", "(w1) the stand-in's jscode2session alone, 1 connection"),
          ("e_ref", "(e) one-GETEX reference"),
          ("d_get", "(d) redis-benchmark GET -c 64"),
          ("d_getex", "(d) redis-benchmark GETEX -c 64")]
print()
print(f"Command: `{cmdline}`; nproc = {nproc} (server, Redis, wrk and redis-benchmark share them); "
      f"wrk {wrk_version}, redis {redis_version}; {sessions} sessions.")
print()
print(f"| run (nproc {nproc}, wrk -t2 -c64 -d{secs}s, median of {rounds}) | req/s | p50 ms | p99 ms |")
print("|---|---|---|---|")
for key, label in labels:
    rps, p50, p99, _ = med[key]
    print(f"| {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} |")
print()
# Each ratio per round (the runs of one round are neighbours in time), then the
# median and the spread over the rounds: one good round is not a figure.
def ratio(top, bottom, column=0):
    per_round = sorted(x[column] / y[column] for x, y in zip(rows[top], rows[bottom]))
    return f"{statistics.median(per_round):.2f} ({per_round[0]:.2f}–{per_round[-1]:.2f})"
print(f"Ratios of req/s per round, median (min–max) over {rounds} rounds:")
print(f"  (a)/(e) = {ratio('a', 'e_ref')}   (a*)/(h) = {ratio('a_cache', 'healthz')}   "
      f"(a*)/(e) = {ratio('a_cache', 'e_ref')}   (a)/(d GETEX) = {ratio('a', 'd_getex')}")
print(f"  p99 (a*)/(e) = {ratio('a_cache', 'e_ref', 2)}   p99 (a)/(e) = {ratio('a', 'e_ref', 2)}")
print(f"Login over the WeChat call, 1 connection: p99 (c1) - p99 (w1) = "
      f"{med['c1_login'][2] - med['w1_wechat'][2]:.2f} ms, p50 {med['c1_login'][1] - med['w1_wechat'][1]:.2f} ms")
print(f"Redis commands per cached guarded request (a*) = {cmds_per_req:.4f}; "
      f"WeChat stand-in calls per timed login (c) = {hits_per_login:.3f}")
print(f"Peak RSS (VmHWM): cache-off server {int(plain_rss) / 1024:.1f} MiB after every run; "
      f"reference {int(ref_rss) / 1024:.1f} MiB; cache-on server {int(cache_rss) / 1024:.1f} MiB "
      f"holding {entries} cached sessions")
print()
print(f"CPU during each run, % of one core (all {nproc} cores busy = {100 * int(nproc)}%), median; "
      "rest = wrk or redis-benchmark, the WeChat stand-in, kernel softirq, anything else. "
      "Then how long wrk's threads and the server's were ready to run but waited for a core "
      "(the kernel's schedstat), in ms per second and µs per time a thread got one, median:")
print()
print("| run | server | redis | rest | wrk waited | server waited |")
print("|---|---|---|---|---|---|")
for key, label in labels:
    srv, red, rest = cpu[key]
    srv_text = "(is redis)" if key.startswith("d_") else f"{srv:.0f}" + (" (stand-in)" if key == "w1_wechat" else "")
    w = waits.get(key)
    wait_text = f"{w[0]:.0f} ms/s ({w[1]:.0f} µs) | {w[2]:.0f} ms/s ({w[3]:.0f} µs)" if w else "– | –"
    print(f"| {label} | {srv_text} | {red:.0f} | {rest:.0f} | {wait_text} |")
notes = open(os.path.join(work, "notes")).read().strip()
if notes:
    print("wrk socket errors:\n" + notes)
PY

# The chart: req/s and p99 of the guarded runs and their two yardsticks, per
# round, from every run's figures (kept in the .dat file beside the chart).
if [ -n "$CHART" ]; then
  data="${CHART%.*}.dat"
  {
    echo "# $cmdline; nproc $(nproc); wrk -t$THREADS -c$CONNS -d${SECS}s; $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "# round run req_per_s p50_ms p99_ms"
    cat "$work/per_round"
  } > "$data"
  # One row per round: req/s of a, a_cache, e_ref, healthz, then their p99.
  awk '!/^#/ { v[$1, $2, "rps"] = $3; v[$1, $2, "p99"] = $5; if ($1 > n) n = $1 }
       END { split("a a_cache e_ref healthz", runs, " ")
             for (r = 1; r <= n; r++) { line = r
               for (i = 1; i <= 4; i++) line = line " " v[r, runs[i], "rps"]
               for (i = 1; i <= 4; i++) line = line " " v[r, runs[i], "p99"]
               print line } }' "$data" > "$work/chart.dat"
  case "$CHART" in
    *.svg) terminal="svg size 900,720 dynamic font 'sans,11' background '#ffffff'" ;;
    *.png) terminal="pngcairo size 900,720 font 'sans,10'" ;;
  esac
  gnuplot <<GP
set terminal $terminal
set output '$CHART'
set multiplot layout 2,1 title "scripts/bench.sh, per round: nproc $(nproc), wrk -t$THREADS -c$CONNS -d${SECS}s"
set xrange [0.5:$ROUNDS + 0.5]
set xtics 1
set grid ytics
set lmargin 12
set rmargin 4
set key outside top center horizontal
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
array label[4] = ["(a) GET /session, cache off", "(a*) same, cache on", "(e) one-GETEX reference", "(h) GET /healthz"]
set ylabel "req/s"
plot for [i = 1:4] '$work/chart.dat' using 1:(column(1 + i)) with linespoints pointtype 7 linetype i title label[i]
set ylabel "p99 (ms)"
set xlabel "round"
unset key
plot for [i = 1:4] '$work/chart.dat' using 1:(column(5 + i)) with linespoints pointtype 7 linetype i title label[i]
unset multiplot
GP
  echo ">> chart: $CHART (figures: $data)"
fi
