#!/usr/bin/env bash
# Sets up and runs wxsession for development on this machine:
# installs redis-server if missing, starts it on 127.0.0.1:6379 with AOF on
# (data in .dev/redis), and runs the server in WeChat mock mode on 127.0.0.1:8080.
# Then: curl -XPOST localhost:8080/login -d '{"code":"any"}'
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages redis-server

REDIS_PORT="${REDIS_PORT:-6379}"
if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo ">> a Redis already answers on 127.0.0.1:$REDIS_PORT; using it"
else
  mkdir -p .dev/redis
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$PWD/.dev/redis" \
    --appendonly yes --daemonize yes --logfile "$PWD/.dev/redis/redis.log"
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo ">> redis-server on 127.0.0.1:$REDIS_PORT (AOF on, data in .dev/redis; stop: redis-cli -p $REDIS_PORT shutdown)"
fi

export WXSESSION_WECHAT_APPID="${WXSESSION_WECHAT_APPID:-wx_dev_mock}"
export WXSESSION_WECHAT_MOCK="${WXSESSION_WECHAT_MOCK:-true}"
export WXSESSION_REDIS_URL="${WXSESSION_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}"
exec cargo run --release -- --config config.toml "$@"
