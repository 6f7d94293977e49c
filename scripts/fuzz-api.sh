#!/usr/bin/env bash
# Hostile-input run: schemathesis (from PyPI) generates requests from the server's
# own OpenAPI document (GET /openapi.json) and fails on any 5xx other than the
# documented ones, any answer not matching the document (every error must be
# {"error", "message"}), any undocumented status, any schema-valid request refused
# and any warning (scripts/fuzz-api.toml: schema-valid user data that fails its
# signature or decryption is rightly a 422, the one exception). Everything on
# 127.0.0.1.
#
#   scripts/fuzz-api.sh                # default: 100 examples per operation
#   EXAMPLES=20 scripts/fuzz-api.sh
#   LOCAL_CACHE=1 scripts/fuzz-api.sh  # the server with session.local_cache = true
#                                      # (guarded routes served from memory)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages redis-server

EXAMPLES="${EXAMPLES:-100}"
case "${LOCAL_CACHE:-0}" in
  0|false) local_cache=false ;;
  1|true) local_cache=true ;;
  *) echo "LOCAL_CACHE must be 0 or 1, not ${LOCAL_CACHE}"; exit 2 ;;
esac
use_scratch

venv="${FUZZ_VENV:-.dev/fuzz-venv}"
if [ ! -x "$venv/bin/st" ]; then
  echo ">> installing schemathesis into $venv"
  # Debian's python3 makes virtual environments only with python3-venv.
  python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null ||
    ensure_packages python3 python3-venv
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis
fi

redis_port="$(free_port)"; http_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
cargo build --quiet --bin wxsession
touch "$work/empty.toml"
echo ">> fuzzing with session.local_cache = $local_cache, $EXAMPLES examples per operation"
WXSESSION_WECHAT_APPID=wx_fuzz WXSESSION_WECHAT_MOCK=true WXSESSION_ADMIN_TOKEN=fuzz-admin-token-0123456789abcdef0 \
WXSESSION_REDIS_URL="redis://127.0.0.1:$redis_port/0" WXSESSION_SERVER_BIND="127.0.0.1:$http_port" \
WXSESSION_SESSION_LOCAL_CACHE="$local_cache" \
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/debug/wxsession" --config "$work/empty.toml" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done

# A real session, so guarded routes are reached past the guard too (logout is
# left out, or the first example would end it).
sid="$(curl -s -XPOST "http://127.0.0.1:$http_port/login" -d '{"code":"fuzz"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionid"])')"

"$venv/bin/st" --config-file scripts/fuzz-api.toml run "http://127.0.0.1:$http_port/openapi.json" \
  --checks all \
  --max-examples "$EXAMPLES" \
  --exclude-operation-id logout \
  -H "sessionid: $sid" -H "Authorization: Bearer fuzz-admin-token-0123456789abcdef0" \
  --no-color
if grep -q "panicked" "$work/server.log"; then
  echo "the server panicked:"; grep -A5 panicked "$work/server.log"; exit 1
fi
