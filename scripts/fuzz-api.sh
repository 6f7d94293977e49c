#!/usr/bin/env bash
# Hostile-input run: schemathesis (from PyPI) generates requests from the server's
# own OpenAPI document (GET /openapi.json) and fails on any 5xx other than the
# documented ones, any answer not matching the document (every error must be
# {"error", "message"}), and any undocumented status. Everything on 127.0.0.1.
# `positive_data_acceptance` is left out: schema-valid user data that fails its
# signature or decryption is rightly a 422, which that check counts as a failure.
#
#   scripts/fuzz-api.sh            # default: 100 examples per operation
#   EXAMPLES=20 scripts/fuzz-api.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages redis-server

EXAMPLES="${EXAMPLES:-100}"
use_scratch

venv="${FUZZ_VENV:-.dev/fuzz-venv}"
if [ ! -x "$venv/bin/st" ]; then
  echo ">> installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis
fi

redis_port="$(free_port)"; http_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
pids+=($!)
cargo build --quiet --bin wxsession
touch "$work/empty.toml"
WXSESSION_WECHAT_APPID=wx_fuzz WXSESSION_WECHAT_MOCK=true WXSESSION_ADMIN_TOKEN=fuzz-admin-token-0123456789abcdef0 \
WXSESSION_REDIS_URL="redis://127.0.0.1:$redis_port/0" WXSESSION_SERVER_BIND="127.0.0.1:$http_port" \
RUST_LOG=warn target/debug/wxsession --config "$work/empty.toml" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done

# A real session, so guarded routes are reached past the guard too (logout is
# left out, or the first example would end it).
sid="$(curl -s -XPOST "http://127.0.0.1:$http_port/login" -d '{"code":"fuzz"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionid"])')"

"$venv/bin/st" run "http://127.0.0.1:$http_port/openapi.json" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --max-examples "$EXAMPLES" \
  --exclude-operation-id logout \
  -H "sessionid: $sid" -H "Authorization: Bearer fuzz-admin-token-0123456789abcdef0" \
  --no-color
if grep -q "panicked" "$work/server.log"; then
  echo "the server panicked:"; grep -A5 panicked "$work/server.log"; exit 1
fi
