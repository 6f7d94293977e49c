#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, the schemathesis run, the
# mini-program client's tests, and the Rust unit and integration tests.
# The integration tests start their own redis-server (installed here if missing)
# and a WeChat stand-in, all on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages redis-server redis-sentinel redis-tools openssl iproute2 nginx faketime

echo ">> cargo fmt --check"
cargo fmt --all -- --check
echo ">> cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo ">> hostile input (schemathesis against the OpenAPI document)"
EXAMPLES="${FUZZ_EXAMPLES:-30}" bash scripts/fuzz-api.sh
EXAMPLES="${FUZZ_EXAMPLES:-30}" LOCAL_CACHE=1 bash scripts/fuzz-api.sh
echo ">> Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
echo ">> mini-program client tests (node --test, against the binary the tests built)"
command -v node >/dev/null 2>&1 || ensure_packages nodejs
cargo build --quiet --bin wxsession
WXSESSION_BIN="${CARGO_TARGET_DIR:-target}/debug/wxsession" node --test client/test/
