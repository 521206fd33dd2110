#!/bin/sh
# Whole-process benchmark of bangui_exporter (called by `make bench`).
# Builds the exporter from this checkout, generates (and caches in
# bench/.data/cache) synthetic fail2ban databases of 10k, 100k and 1M rows,
# measures startup, scrape latency, latency after 1,000 new bans and peak RSS
# beside a naive sqlite3 re-aggregation, and prints a markdown report (also
# written to bench/.data/results.md and results.json).
# Needs: go, sqlite3. Extra arguments go to benchproc, e.g.
#   bench/run.sh -sizes 10000,100000 -scrapes 100
set -eu
cd "$(dirname "$0")/.."
mkdir -p bench/.data
exec go run ./bench/cmd/benchproc -data bench/.data \
	-out bench/.data/results.md -json bench/.data/results.json "$@"
