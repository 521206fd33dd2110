#!/bin/sh
# Whole-process benchmark of bangui_exporter (called by `make bench`).
# Builds the exporter from this checkout and runs it as users do by default:
# countries on from the real GeoLite2 Country database (fetched here by
# scripts/fetch-geoip.sh; the exporter never asks the network), archive on.
# Generates (and caches in bench/.data/cache) synthetic fail2ban databases of
# 10k, 100k and 1M rows and measures ready, scrape latency (plain and gzip),
# latency after 1,000 new bans, peak RSS and the app database's size beside
# two naive re-aggregations (sqlite3; per-IP mmdb lookups) and, against a
# sandboxed fail2ban with 50,000 banned IPs, the socket exporters' way. Prints
# a markdown report (also written to bench/.data/results.md and results.json).
# Needs: go, sqlite3, npm (once, for the mmdb), fail2ban (or -socket-bans 0).
# Extra arguments go to benchproc, e.g.
#   bench/run.sh -sizes 10000,100000 -scrapes 100
#   bench/run.sh -countries=false -socket-bans 0
# See BENCHMARKS.md ("Whole-process harness") for every option.
set -eu
cd "$(dirname "$0")/.."
mkdir -p bench/.data
./scripts/fetch-geoip.sh >/dev/null ||
	echo "bench/run.sh: no GeoLite2 Country database; with -countries=false the harness runs without it" >&2
exec go run ./bench/cmd/benchproc -data bench/.data \
	-out bench/.data/results.md -json bench/.data/results.json "$@"
