#!/usr/bin/env bash
# Latency of the guarded GET /session, everything on 127.0.0.1:
#   (1) At a fixed rate, not only at saturation: the reference's peak R first
#       (examples/bench_reference.rs, wrk -t2 -c64), then oha at 25%, 50% and 75%
#       of R (-q with --latency-correction, which corrects for coordinated
#       omission; -c 64) against the server with the cache off, with it on, and
#       the reference: p50 and p99.
#   (2) Redis at a distance: Redis behind examples/delay_proxy.rs adding 0,
#       0.25 ms and 1 ms each way; the server with the cache off and on, each
#       through its own proxy: req/s, p50, p99 at saturation (wrk, rotating over
#       SESSIONS sessions) and p50, p99 at 25% of R (oha).
# oha sends one session id (it cannot rotate headers); wrk rotates. Runs are
# interleaved, ROUNDS rounds, and each figure is the median (min–max) of its rounds.
#   scripts/latency.sh                      # SECS=8 ROUNDS=3 (~12 min)
#   SECS=3 ROUNDS=1 scripts/latency.sh      # a quick look, not a figure
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/bench/common.sh
ensure_packages redis-server wrk
command -v python3 >/dev/null || ensure_packages python3
command -v curl >/dev/null || ensure_packages curl
# oha (crates.io) is a constant-rate load generator that corrects for coordinated omission.
command -v oha >/dev/null || cargo install oha --locked --quiet
SECS="${SECS:-8}"; ROUNDS="${ROUNDS:-3}"; SESSIONS="${SESSIONS:-1000}"
use_scratch
trap 'exit 130' INT
trap 'exit 143' TERM

echo ">> building (release)"
cargo build --release --quiet --bin wxsession --example bench_reference --example delay_proxy
redis_port="$(free_port)"; wx_port="$(free_port)"; ref_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
wait_port "$redis_port"
target/release/examples/bench_reference wechat --bind "127.0.0.1:$wx_port" &
pids+=($!)
target/release/examples/bench_reference session --bind "127.0.0.1:$ref_port" --redis "redis://127.0.0.1:$redis_port/0" &
pids+=($!)
declare -A port
for delay in 0 250 1000; do
  proxy="$(free_port)"
  target/release/examples/delay_proxy --listen "127.0.0.1:$proxy" --upstream "127.0.0.1:$redis_port" \
    --delay-us "$delay" --for-secs 7200 &
  pids+=($!)
  wait_port "$proxy"
  for cache in off on; do
    port[$cache.$delay]="$(free_port)"
    start_server "${port[$cache.$delay]}" WXSESSION_REDIS_URL="redis://127.0.0.1:$proxy/0" \
      WXSESSION_SESSION_LOCAL_CACHE="$([ "$cache" = on ] && echo true || echo false)"
  done
done
for p in "$wx_port" "$ref_port" "${port[@]}"; do wait_port "$p"; done
login_sessions "$SESSIONS" "$work/ids" "${port[off.0]}"
export IDS_FILE="$work/ids"
id="$(head -1 "$work/ids")"

to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }
# name port: wrk at saturation; appends "name rps p50 p99" to results.
saturate() {
  local out
  out="$(timeout --foreground $((SECS + 30)) wrk -t2 -c64 -d"${SECS}s" --latency -s scripts/bench/get.lua "http://127.0.0.1:$2")"
  if echo "$out" | grep -q Non-2xx; then echo "!! $1 answered non-2xx"; echo "$out"; exit 1; fi
  echo "$1 $(echo "$out" | awk '/Requests\/sec/ {print $2}') $(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')") $(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")" \
    | tee -a "$work/results" | awk '{printf "   %-16s %10.0f req/s  p50 %6.2f ms  p99 %6.2f ms\n", $1, $2, $3, $4}'
}
# name port rate: oha at a fixed rate; appends "name rps p50 p99" to results.
steady() {
  timeout --foreground $((SECS + 30)) oha -z "${SECS}s" -q "$3" -c 64 --latency-correction --no-tui \
    --output-format json -H "sessionid: $id" "http://127.0.0.1:$2/session" > "$work/oha.json"
  python3 - "$work/oha.json" "$1" <<'PY' | tee -a "$work/results" | awk '{printf "   %-16s %10.0f req/s  p50 %6.2f ms  p99 %6.2f ms\n", $1, $2, $3, $4}'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d["statusCodeDistribution"]
# Requests still in flight when -z ends are cut off by oha itself.
errors = {k: v for k, v in d["errorDistribution"].items() if k != "aborted due to deadline"}
if set(codes) != {"200"} or errors:
    sys.exit(f"!! {sys.argv[2]}: answers {codes}, errors {errors}")
p = d["latencyPercentiles"]
print(sys.argv[2], d["summary"]["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000)
PY
}

echo ">> the reference's peak"
saturate peak "$ref_port"
peak="$(awk '$1 == "peak" {print int($2)}' "$work/results")"
for round in $(seq "$ROUNDS"); do
  echo ">> round $round of $ROUNDS"
  for pct in 25 50 75; do
    rate=$((peak * pct / 100))
    steady "q$pct.off" "${port[off.0]}" "$rate"
    steady "q$pct.on" "${port[on.0]}" "$rate"
    steady "q$pct.ref" "$ref_port" "$rate"
  done
  for delay in 0 250 1000; do
    for cache in off on; do
      saturate "sat.$cache.$delay" "${port[$cache.$delay]}"
      steady "d25.$cache.$delay" "${port[$cache.$delay]}" $((peak / 4))
    done
  done
done

python3 - "$work/results" "$peak" "$SECS" "$ROUNDS" "$SESSIONS" "$(nproc)" <<'PY'
import statistics, sys
path, peak, secs, rounds, sessions, nproc = sys.argv[1:]
runs = {}
for line in open(path):
    name, *vals = line.split()
    runs.setdefault(name, []).append([float(v) for v in vals])
def fig(name, col, fmt="{:.2f}"):
    vals = sorted(r[col] for r in runs[name])
    return fmt.format(statistics.median(vals)) + f" ({fmt.format(vals[0])}–{fmt.format(vals[-1])})"
print(f"\nscripts/latency.sh: SECS={secs} ROUNDS={rounds}, nproc {nproc}; reference peak {int(peak):,} req/s "
      f"(wrk -t2 -c64); median (min–max) of {rounds} rounds")
print("\nAt a fixed rate (oha -q, --latency-correction, -c 64, one session id), p50 / p99 in ms:\n")
print("| rate | cache off | cache on | reference |")
print("|---|---|---|---|")
for pct in (25, 50, 75):
    cells = [f"{fig(f'q{pct}.{k}', 1)} / {fig(f'q{pct}.{k}', 2)}" for k in ("off", "on", "ref")]
    print(f"| {pct}% of peak ({int(peak) * pct // 100:,}/s) | " + " | ".join(cells) + " |")
print("\nRedis at a distance (examples/delay_proxy.rs, each way): saturation (wrk -t2 -c64, "
      f"{sessions} rotating sessions) req/s, p50, p99; then at 25% of the peak (oha) p50, p99; ms:\n")
print("| delay | cache | req/s | p50 | p99 | p50 at 25% | p99 at 25% |")
print("|---|---|---|---|---|---|---|")
for delay in ("0", "250", "1000"):
    for cache in ("off", "on"):
        s, d = f"sat.{cache}.{delay}", f"d25.{cache}.{delay}"
        print(f"| {int(delay) / 1000:g} ms | {cache} | {fig(s, 0, '{:,.0f}')} | {fig(s, 1)} | {fig(s, 2)} | "
              f"{fig(d, 1)} | {fig(d, 2)} |")
on = lambda delay: statistics.median(r[1] for r in runs[f"d25.on.{delay}"])
print(f"\nCache on, p50 at 25% of peak: 1 ms away / next to Redis = {on('1000') / on('0'):.2f}")
PY
