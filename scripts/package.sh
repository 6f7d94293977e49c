#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and checks it on this machine, as root:
# its contents and control data; `dpkg -i`; the wxsession user, the configuration's
# owner, mode and conffile status; `systemd-analyze verify` of the unit (where
# systemd-analyze exists); the INSTALLED /usr/bin/wxsession, as the wxsession
# user, refusing the packaged configuration until an AppID is set, then
# `check-config --connect` and a login against a redis-server of its own on a
# free 127.0.0.1 port (WeChat in mock mode); `dpkg --purge` and that nothing is
# left. Everything it starts, installs or creates is undone on exit.
#
# Needs root (dpkg -i), a Rust toolchain, and a machine where wxsession is not
# installed already (it would be purged). Installs what else it needs: Debian's
# dpkg-dev (for the package's dependencies), redis-server, curl, python3, and
# cargo-deb from crates.io (`cargo install cargo-deb --locked`) when missing.
# Honours CARGO_TARGET_DIR; the package is left in $CARGO_TARGET_DIR/debian/.
# Prints PASS/FAIL lines; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: PASS or FAIL by the command's exit status.
check() {
  local what="$1"
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
# A failure that leaves nothing further worth checking.
abort() {
  fail "$*"
  echo "package.sh: $passed passed, $failed failed (stopped early)"
  exit 1
}

[ "$(id -u)" -eq 0 ] || abort "run as root (dpkg -i and the wxsession user need it)"
if dpkg-query -W -f='${Status}' wxsession 2>/dev/null | grep -q 'installed'; then
  abort "wxsession is installed on this machine already; this script installs and purges it, so remove it first"
fi

work="$(mktemp -d)"
pids=()
user_existed=no
getent passwd wxsession >/dev/null && user_existed=yes
group_existed=no
getent group wxsession >/dev/null && group_existed=yes
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if dpkg-query -W -f='${Status}' wxsession 2>/dev/null | grep -qv 'not-installed'; then
    timeout 120 dpkg --purge wxsession >/dev/null 2>&1 || true
  fi
  # The package keeps its user on purge; one this run made goes again.
  if [ "$user_existed" = no ] && getent passwd wxsession >/dev/null; then
    userdel wxsession 2>/dev/null || true
  fi
  if [ "$group_existed" = no ] && getent group wxsession >/dev/null; then
    groupdel wxsession 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
ensure_packages dpkg-dev redis-server curl python3
if ! cargo deb --version >/dev/null 2>&1; then
  echo ">> installing cargo-deb (crates.io)"
  timeout 1800 cargo install cargo-deb --locked --quiet || abort "cargo install cargo-deb"
fi
echo ">> cargo deb (a release build: minutes)"
timeout 1800 cargo deb >"$work/cargo-deb.log" 2>&1 || {
  tail -20 "$work/cargo-deb.log"
  abort "cargo deb"
}
deb="$(tail -1 "$work/cargo-deb.log")"
[ -f "$deb" ] || abort "cargo deb made no package (last line: $deb)"
pass "cargo deb built $deb ($(du -h "$deb" | cut -f1))"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"

# ---------------------------------------------------------------- the .deb itself
dpkg-deb -I "$deb" >"$work/info"
dpkg-deb -c "$deb" >"$work/contents"
check "control: Package wxsession, Version $version-1" \
  grep -q "Version: $version-1" "$work/info"
check "control: Depends computed (libc6)" grep -q "Depends: .*libc6" "$work/info"
# `dpkg-deb -c` lines: mode owner/group size date time path.
has() { awk -v m="$1" -v p="$2" '$1 == m && $2 == "0/0" && $6 == p { f = 1 } END { exit !f }' "$work/contents"; }
check "contents: /usr/bin/wxsession 0755 root" has -rwxr-xr-x ./usr/bin/wxsession
check "contents: /etc/wxsession/config.toml 0640 root (group set by postinst)" \
  has -rw-r----- ./etc/wxsession/config.toml
check "contents: the systemd unit" has -rw-r--r-- ./usr/lib/systemd/system/wxsession.service
check "contents: /usr/share/doc/wxsession/default.example" \
  has -rw-r--r-- ./usr/share/doc/wxsession/default.example
check "contents: no /etc/default/wxsession (the AppSecret's file is the admin's)" \
  bash -c "! grep -q 'etc/default' '$work/contents'"
check "control: config.toml is a conffile" \
  bash -c "dpkg-deb -I '$deb' conffiles | grep -qx /etc/wxsession/config.toml"

# ---------------------------------------------------------------- install
timeout 120 dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || {
  cat "$work/dpkg-i.log"
  abort "dpkg -i"
}
pass "dpkg -i"
check "dpkg: installed" bash -c "dpkg-query -W -f='\${Status}' wxsession | grep -qx 'install ok installed'"
system_user() {
  local entry
  entry="$(getent passwd wxsession)" || return 1
  [ "$(cut -d: -f3 <<<"$entry")" -lt 1000 ] && [ "$(cut -d: -f7 <<<"$entry")" = /usr/sbin/nologin ]
}
check "user wxsession exists, a system user without a login shell" system_user
check "group wxsession exists" bash -c "getent group wxsession >/dev/null"
stat_is() { [ "$(stat -c '%a %U:%G' "$2")" = "$1" ] || { echo "  $2: $(stat -c '%a %U:%G' "$2")"; return 1; }; }
check "/etc/wxsession/config.toml is 640 root:wxsession" stat_is "640 root:wxsession" /etc/wxsession/config.toml
check "/etc/wxsession is 750 root:wxsession" stat_is "750 root:wxsession" /etc/wxsession
check "dpkg lists /etc/wxsession/config.toml as a conffile" \
  bash -c "dpkg-query -W -f='\${Conffiles}' wxsession | grep -q '/etc/wxsession/config.toml '"
check "/usr/bin/wxsession --version says $version" \
  bash -c "/usr/bin/wxsession --version | grep -qx 'wxsession $version'"
unit=/usr/lib/systemd/system/wxsession.service
check "unit: runs the installed binary with the packaged configuration as wxsession" \
  bash -c "grep -qx 'ExecStart=/usr/bin/wxsession --config /etc/wxsession/config.toml' $unit &&
           grep -qx 'User=wxsession' $unit && grep -qx 'EnvironmentFile=-/etc/default/wxsession' $unit"
if command -v systemd-analyze >/dev/null 2>&1; then
  # Silent and 0 when the unit is sound (a warning is a failure too).
  verify_unit() {
    local rc=0
    systemd-analyze verify "$unit" >"$work/verify" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] && [ ! -s "$work/verify" ] && return 0
    sed 's/^/  | /' "$work/verify"
    return 1
  }
  check "systemd-analyze verify $unit" verify_unit
else
  echo "SKIP: systemd-analyze not installed: the unit is not verified"
fi

# ---------------------------------------------------------------- reinstall over a local edit
# What an upgrade does to the configuration: dpkg keeps the admin's edit of a
# conffile the package did not change, and postinst keeps its owner and mode.
echo "# local edit by package.sh" >>/etc/wxsession/config.toml
timeout 120 dpkg -i "$deb" >"$work/dpkg-i2.log" 2>&1 || {
  cat "$work/dpkg-i2.log"
  abort "dpkg -i again (reinstall)"
}
pass "dpkg -i again (reinstall)"
check "reinstall: the local edit of config.toml is kept" \
  grep -qx "# local edit by package.sh" /etc/wxsession/config.toml
check "reinstall: config.toml still 640 root:wxsession" stat_is "640 root:wxsession" /etc/wxsession/config.toml

# ---------------------------------------------------------------- the installed binary
# As the service runs: the wxsession user and group, nothing inherited.
as_service() {
  setpriv --reuid=wxsession --regid=wxsession --init-groups --inh-caps=-all --no-new-privs \
    env -i PATH=/usr/bin:/bin "$@"
}
secret="PACKAGE-CHECK-APPSECRET-$$-c0ffee"
set +e
as_service /usr/bin/wxsession --config /etc/wxsession/config.toml >"$work/unset.out" 2>"$work/unset.err"
code=$?
set -e
refused() { [ "$code" -eq 2 ] && [ "$(wc -l <"$work/unset.err")" -eq 1 ] && grep -q 'wechat.appid' "$work/unset.err"; }
if refused; then
  pass "as packaged (no AppID yet) the server refuses to start: exit 2, one line naming wechat.appid"
else
  fail "as packaged the server should exit 2 naming wechat.appid; exit $code: $(cat "$work/unset.err")"
fi

redis_port="$(free_port)"
mkdir "$work/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$work/redis" --save "" \
  --appendonly no --daemonize no >"$work/redis/log" 2>&1 &
pids+=($!)
wait_for() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
wait_for "$redis_port" || abort "redis-server on 127.0.0.1:$redis_port"
overrides=(
  WXSESSION_WECHAT_APPID=wx_package_check
  WXSESSION_WECHAT_SECRET="$secret"
  WXSESSION_WECHAT_MOCK=true
  WXSESSION_REDIS_URL="redis://127.0.0.1:$redis_port/0"
)

set +e
as_service "${overrides[@]}" timeout 30 /usr/bin/wxsession --config /etc/wxsession/config.toml \
  check-config --connect >"$work/check.out" 2>&1
code=$?
set -e
sed 's/^/  | /' "$work/check.out"
check "check-config --connect with the installed configuration: exit 0" [ "$code" -eq 0 ]
check "check-config: redis ok, WeChat skipped in mock mode" \
  bash -c "grep -q '^redis: ok' '$work/check.out' && grep -q '^app default: api_base skipped' '$work/check.out'"
check "check-config: the AppSecret is not printed" bash -c "! grep -q '$secret' '$work/check.out'"

port="$(free_port)"
# Not through the function: setpriv and env exec, so $! is the server itself.
setpriv --reuid=wxsession --regid=wxsession --init-groups --inh-caps=-all --no-new-privs \
  env -i PATH=/usr/bin:/bin "${overrides[@]}" WXSESSION_SERVER_BIND="127.0.0.1:$port" \
  WXSESSION_SERVER_WORKERS=1 /usr/bin/wxsession --config /etc/wxsession/config.toml \
  >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")
if ! wait_for "$port"; then
  cat "$work/server.log"
  abort "the installed server did not start"
fi
pass "the installed server listens on 127.0.0.1:$port"
check "the server runs as user and group wxsession" \
  [ "$(stat -c '%U:%G' "/proc/$server")" = wxsession:wxsession ]
base="http://127.0.0.1:$port"
# curl's answer: the body, then the status on a line of its own.
status_of() { tail -1 <<<"$1"; }
body_of() { head -n -1 <<<"$1"; }
login="$(curl -sS --max-time 5 -w '\n%{http_code}' -XPOST "$base/login" \
  -H 'content-type: application/json' -d '{"code":"package-check"}' || true)"
sid="$(body_of "$login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionid"])' 2>/dev/null || true)"
check "POST /login: 200 with a sessionid" \
  [ "$(status_of "$login")" = 200 -a "$(grep -cE '^[0-9a-f]{32}$' <<<"$sid")" = 1 ]
session="$(curl -sS --max-time 5 -w '\n%{http_code}' "$base/session" -H "sessionid: $sid" || true)"
openid="$(body_of "$session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["openid"])' 2>/dev/null || true)"
check "GET /session with that sessionid: 200 with the openid ($openid)" \
  [ "$(status_of "$session")" = 200 -a "${openid#mock_}" != "$openid" ]
no_secret_logged() { ! grep -q -e "$secret" -e "${sid:-no-session-id}" "$work/server.log"; }
check "the server's log holds neither the AppSecret nor the session id" no_secret_logged
kill -TERM "$server"
set +e
timeout 20 tail --pid="$server" -f /dev/null
wait "$server"
code=$?
set -e
check "SIGTERM: the server exits 0" [ "$code" -eq 0 ]

# ---------------------------------------------------------------- purge
timeout 120 dpkg --purge wxsession >"$work/purge.log" 2>&1 || {
  cat "$work/purge.log"
  abort "dpkg --purge"
}
pass "dpkg --purge"
check "purged: dpkg knows no wxsession" \
  bash -c "! dpkg-query -W -f='\${Status}' wxsession 2>/dev/null | grep -q installed"
for path in /usr/bin/wxsession /etc/wxsession "$unit" /usr/share/doc/wxsession; do
  check "purged: $path is gone" bash -c "[ ! -e '$path' ]"
done

echo "package.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
