#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, the doc examples, the Prometheus alerting
# rules' unit tests (promtool), the schemathesis run, the mini-program client's
# tests, and the Rust unit and integration tests.
# The integration tests start their own redis-server (installed here if missing)
# and a WeChat stand-in, all on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
# promtool comes with Debian's prometheus, whose install starts the Prometheus
# daemon (and the node exporter it recommends) where the init system lets it.
# Only promtool is wanted: what this install started is stopped again.
prometheus_was_installed=0
dpkg -s prometheus >/dev/null 2>&1 && prometheus_was_installed=1
ensure_packages redis-server redis-sentinel redis-tools openssl iproute2 nginx faketime prometheus
command -v python3 >/dev/null 2>&1 || ensure_packages python3 # free_port, schemathesis
if [ "$prometheus_was_installed" = 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  for service in prometheus prometheus-node-exporter; do
    if [ -x "/etc/init.d/$service" ] && "/etc/init.d/$service" status >/dev/null 2>&1; then
      echo ">> stopping the $service service the package started"
      $sudo "/etc/init.d/$service" stop >/dev/null || true
    fi
  done
fi

echo ">> cargo fmt --check"
cargo fmt --all -- --check
echo ">> cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo ">> doc examples (compiled; nextest does not run them)"
cargo test --doc --quiet
echo ">> alerting rules (promtool check, promtool test)"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
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
