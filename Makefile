# bangui_exporter
#
#   make build     the binary, with version information (promu, tools module)
#   make test      every test: unit, property, fault, real fail2ban, real Prometheus
#   make demo      run the exporter on a sandboxed fail2ban with sample bans
#   make bench     Go benchmarks and the whole-process benchmark
#   make generate  regenerate the Grafana dashboards
#   make lint      golangci-lint
#   make package   the Debian package (nfpm) in .build/deb, checked by lintian

GO        ?= go
TOOLS     := $(GO) tool -modfile=tools/go.mod
BIN       := bangui_exporter
# Tests start real fail2ban-server, Prometheus and the built exporter; they
# take a while and need a generous timeout under -race.
TEST_TIMEOUT ?= 60m
# BANGUI_CI=1 turns every "tool not installed, skipping" into a failure.
export BANGUI_CI

.PHONY: all build test test-short demo bench bench-go bench-process generate lint tarball package clean

all: build test

build:
	$(TOOLS) promu build --prefix .

test:
	./scripts/fetch-geoip.sh >/dev/null
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short:
	./scripts/fetch-geoip.sh >/dev/null
	$(GO) test -race -short ./...

demo:
	./scripts/demo.sh

bench: bench-go bench-process

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 60m ./collector/... ./geo/... ./sessionauth/... ./socket/...

bench-process:
	./bench/run.sh

generate:
	$(GO) generate ./dashboards/...

lint:
	$(TOOLS) golangci-lint run ./...

tarball: build
	$(TOOLS) promu tarball --prefix . .

package:
	./deploy/debian/build.sh .build/deb
	lintian --fail-on error,warning .build/deb/*.deb

clean:
	rm -f $(BIN) *.test
	rm -rf .build .tarballs
