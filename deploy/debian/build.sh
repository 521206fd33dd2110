#!/bin/sh
# build.sh [OUTDIR]: builds the Debian package bangui-exporter into OUTDIR
# (default .build/deb) with nfpm from the tools module; prints its path.
# Used by `make package` and by the real-host test (deploy/debian).
#
# GOARCH (default: go env GOARCH) picks the architecture.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${1:-.build/deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

GOARCH=${GOARCH:-$(go env GOARCH)}
BANGUI_VERSION=$(tr -d ' \n' <VERSION)
# nfpm.yaml reads the generated files from here (relative to the root).
stage=.build/deb-stage
rm -rf "$stage"
mkdir -p "$stage"
export GOARCH BANGUI_VERSION

# The binary: static (netgo, osusergo, no cgo) like promu's, with the
# revision and branch stamped when this is a git checkout.
rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
pkg=github.com/prometheus/common/version
CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags netgo,osusergo \
	-ldflags "-s -w -X $pkg.Version=$BANGUI_VERSION -X $pkg.Revision=$rev -X $pkg.Branch=$branch -X $pkg.BuildUser=debian-package -X $pkg.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)" \
	-o "$stage/bangui_exporter" .

# The man page, from the flags themselves; kingpin's header (the whole
# multi-line --version text) and NAME line are replaced by proper ones.
"$stage/bangui_exporter" --help-man | awk -v ver="$BANGUI_VERSION" '
	NR == 1 { print ".TH BANGUI_EXPORTER 1 \"\" \"bangui_exporter " ver "\" \"User Commands\""; skip = 1; next }
	skip && /^\.SH "NAME"/ { skip = 0; print; getline; print "bangui_exporter \\- Prometheus exporter for fail2ban"; next }
	!skip { print }
' | gzip -9n >"$stage/bangui_exporter.1.gz"

# Upstream changelog and docs, compressed as Debian policy asks.
gzip -9n <CHANGELOG.md >"$stage/changelog.gz"
mkdir "$stage/doc"
for f in README.md docs/*.md; do
	gzip -9n <"$f" >"$stage/doc/$(basename "$f").gz"
done

# The Debian changelog (changelog.Debian.gz): one entry for this package
# build of the upstream version.
cat >"$stage/changelog.yml" <<YML
- semver: $BANGUI_VERSION-1
  date: $(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
  packager: bangui_exporter maintainers <bangui_exporter@users.noreply.github.com>
  changes:
    - note: Package of upstream version $BANGUI_VERSION; the upstream changes are in changelog.gz.
  deb:
    urgency: medium
    distributions:
      - unstable
YML

# The admin API's jail ships disabled: the admin API itself is off by default.
sed 's/^enabled\( *\)= true$/enabled\1= false/' deploy/fail2ban/jail.d/bangui-exporter.conf >"$stage/jail-bangui-exporter.conf"
grep -q '^enabled *= false$' "$stage/jail-bangui-exporter.conf" || {
	echo "build.sh: could not disable the jail in deploy/fail2ban/jail.d/bangui-exporter.conf" >&2
	exit 1
}

deb="$out/bangui-exporter_${BANGUI_VERSION}-1_${GOARCH}.deb"
go tool -modfile=tools/go.mod nfpm package --config deploy/debian/nfpm.yaml --packager deb --target "$deb" >&2
echo "$deb"
