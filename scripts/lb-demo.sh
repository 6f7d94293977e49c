#!/usr/bin/env bash
# Load-balancer demo on 127.0.0.1: one Redis, three wxsession instances (mock
# WeChat) and nginx round-robin in front, plus a sample backend that nginx
# protects with auth_request on wxsession's GET /auth. Ctrl-C stops everything.
# tests/it/nginx_lb.rs runs the same setup (same nginx template) as a test.
#
# Usage: scripts/lb-demo.sh   (no arguments; uses target/release/wxsession and
# builds it only when missing: run `cargo build --release` for a fresh one)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
  sed -n '2,8s/^# \{0,1\}//p' "$0"
  case "$1" in -h|--help) exit 0 ;; *) exit 2 ;; esac
fi
source scripts/lib.sh
ensure_packages redis-server nginx
# Debian puts nginx in /usr/sbin, which is not on a non-root user's PATH.
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

bin=target/release/wxsession
if [ ! -x "$bin" ]; then
  echo ">> building $bin (cargo build --release)"
  cargo build --release --quiet --bin wxsession
fi

use_scratch

redis_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
wait_port "$redis_port"
touch "$work/empty.toml"
ports=()
for i in 1 2 3; do
  port="$(free_port)"
  # Configured only here: a clean environment, so no WXSESSION_* of the caller leaks in.
  env -i PATH="$PATH" RUST_LOG=warn WXSESSION_WECHAT_APPID=wx_demo WXSESSION_WECHAT_MOCK=true \
    WXSESSION_SERVER_WORKERS=1 WXSESSION_REDIS_URL="redis://127.0.0.1:$redis_port/0" \
    WXSESSION_SERVER_BIND="127.0.0.1:$port" \
    "$bin" --config "$work/empty.toml" 2>"$work/instance$i.log" &
  pids+=($!)
  ports+=("$port")
done
for p in "${ports[@]}"; do wait_port "$p"; done

nginx_port="$(free_port)"; app_port="$(free_port)"
user_line=""; [ "$(id -u)" -eq 0 ] && user_line="user root;"
sed -e "s|@USER_LINE@|$user_line|" -e "s|@DIR@|$work|g" -e "s|@PORT@|$nginx_port|" -e "s|@APP@|$app_port|g" \
    -e "s|@UP1@|${ports[0]}|" -e "s|@UP2@|${ports[1]}|" -e "s|@UP3@|${ports[2]}|" \
    scripts/nginx-lb.conf.template > "$work/nginx.conf"
"$nginx_bin" -p "$work" -c "$work/nginx.conf" &
pids+=($!)
wait_port "$nginx_port"

base="http://127.0.0.1:$nginx_port"
cat <<EOT
nginx on $base, round-robin over wxsession on ports ${ports[*]} (one Redis on $redis_port).

  SID=\$(curl -s -XPOST $base/login -d '{"code":"demo"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionid"])')
  curl -s $base/session -H "sessionid: \$SID"; echo           # answered by any instance
  curl -s $base/protected/orders -H "sessionid: \$SID"        # "hello <openid>": nginx checked /auth
  curl -si $base/protected/orders | head -1                  # 401 without a session
  for i in \$(seq 30); do curl -s -o /dev/null $base/session -H "sessionid: \$SID"; done
  for p in ${ports[*]}; do curl -s 127.0.0.1:\$p/metrics | grep 'guard_checks_total{outcome="ok"}'; done   # the spread
  curl -si -XDELETE $base/session -H "sessionid: \$SID"        # logout: dead on all three at once
  for p in ${ports[*]}; do curl -s -o /dev/null -w "\$p %{http_code}\\n" 127.0.0.1:\$p/session -H "sessionid: \$SID"; done   # 401 x3
  curl -si $base/protected/orders -H "sessionid: \$SID" | head -1   # 401 after logout
  curl -si $base/metrics | head -1                           # 403: /admin and /metrics stay off the edge

Logs: $work/instance{1,2,3}.log, $work/error.log (nginx).

Ctrl-C stops everything.
EOT
wait
