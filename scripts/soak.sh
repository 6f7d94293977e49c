#!/usr/bin/env bash
# Soak: SOAK_SECS (default 60) of mixed login / guard / logout load with wrk
# against a release build (mock WeChat) and its own Redis, all on 127.0.0.1.
# Fails on any unexpected status or socket error, or when the server's RSS grows
# more than 10% from the warmed-up start to the end. Prints both RSS figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages redis-server wrk

SECS="${SOAK_SECS:-60}"
use_scratch

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

cargo build --release --quiet --bin wxsession
redis_port="$(free_port)"; http_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
touch "$work/empty.toml"
WXSESSION_WECHAT_APPID=wx_soak WXSESSION_WECHAT_MOCK=true RUST_LOG=warn \
WXSESSION_REDIS_URL="redis://127.0.0.1:$redis_port/0" WXSESSION_SERVER_BIND="127.0.0.1:$http_port" \
  target/release/wxsession --config "$work/empty.toml" 2>"$work/server.log" &
server=$!
pids+=($server)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done

echo ">> warm-up (5 s)"
wrk -t2 -c32 -d5s -s scripts/soak/mixed.lua "http://127.0.0.1:$http_port" >/dev/null
start_rss="$(rss_kib "$server")"
echo ">> soak: ${SECS} s of mixed load (wrk -t2 -c32)"
out="$(wrk -t2 -c32 -d"${SECS}s" --latency -s scripts/soak/mixed.lua "http://127.0.0.1:$http_port")"
end_rss="$(rss_kib "$server")"
echo "$out" | grep -E "Requests/sec|SOAK"
echo "RSS start ${start_rss} KiB, end ${end_rss} KiB"

line="$(echo "$out" | grep '^SOAK')"
unexpected="$(echo "$line" | sed -E 's/.*unexpected=([0-9]+).*/\1/')"
errors="$(echo "$line" | sed -E 's/.*errors=([0-9]+).*/\1/')"
status=0
[ "$unexpected" -eq 0 ] || { echo "FAIL: $unexpected unexpected statuses"; status=1; }
[ "$errors" -eq 0 ] || { echo "FAIL: $errors socket errors"; status=1; }
if [ $((end_rss * 10)) -gt $((start_rss * 11)) ]; then
  echo "FAIL: RSS grew more than 10%"; status=1
fi
if grep -q panicked "$work/server.log"; then echo "FAIL: the server panicked"; status=1; fi
[ $status -eq 0 ] && echo "soak OK"
exit $status
