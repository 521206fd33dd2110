# bangui_exporter
#
#   make build     the binary, with version information (promu, tools module)
#   make test      every test: unit, property, fault, real fail2ban, real Prometheus
#   make demo      run the exporter on a sandboxed fail2ban with sample bans
#   make bench     Go benchmarks and the whole-process benchmark
#   make generate  regenerate the mixin: dashboards and rules (mixin/, dashboards/*.json, deploy/prometheus/rules/)
#   make lint      go vet and golangci-lint
#   make docker    the Docker image for this host's architecture (docker-all: amd64, arm64, armv7)
#   make package   the Debian package (nfpm) in .build/deb, checked by lintian

GO        ?= go
TOOLS     := $(GO) tool -modfile=tools/go.mod
BIN       := bangui_exporter
# Tests start real fail2ban-server, Prometheus and the built exporter; they
# take a while and need a generous timeout under -race.
TEST_TIMEOUT ?= 60m
# BANGUI_CI=1 turns every "tool not installed, skipping" into a failure.
export BANGUI_CI

.PHONY: FORCE all build test test-short demo bench bench-go bench-process generate lint tarball clean docker docker-all docker-stage package

# Docker images (deploy/Dockerfile). DOCKER_BASE replaces the base image
# (default: the Prometheus busybox image of each platform), e.g. a local
# image for an offline build: make docker DOCKER_BASE=local/busybox.
# DOCKER_BASE_<arch> sets it for one platform of docker-all.
DOCKER        ?= docker
DOCKER_IMAGE  ?= bangui_exporter
DOCKER_TAG    ?= latest
DOCKER_ARCHS  ?= amd64 arm64 armv7
DOCKER_BASE   ?=
# The host's platform in promu's names (GOARCH arm + GOARM 7 is armv7).
DOCKER_ARCH   ?= $(shell $(GO) env GOARCH | sed 's/^arm$$/armv7/')
# The version information promu's ldflags (.promu.yml) would set.
GO_LDFLAGS := -X github.com/prometheus/common/version.Version=$(shell cat VERSION) \
	-X github.com/prometheus/common/version.Revision=$(shell git rev-parse HEAD 2>/dev/null) \
	-X github.com/prometheus/common/version.Branch=$(shell git rev-parse --abbrev-ref HEAD 2>/dev/null) \
	-X github.com/prometheus/common/version.BuildUser=$(shell id -un)@$(shell hostname) \
	-X github.com/prometheus/common/version.BuildDate=$(shell date -u +%Y%m%d-%H:%M:%S)
goarch = $(if $(filter armv7,$(1)),arm,$(1))
goarm  = $(if $(filter armv7,$(1)),7,)
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
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 60m ./collector/... ./geo/... ./sessionauth/... ./socket/... ./banmap/...

bench-process:
	./bench/run.sh

generate:
	$(GO) generate ./dashboards/...

lint:
	$(GO) vet ./...
	$(TOOLS) golangci-lint run ./...

tarball: build
	$(TOOLS) promu tarball --prefix . .

# The static binary of one platform where the Dockerfile copies it (the
# same build tags and ldflags as promu; promu crossbuild needs its builder
# images, go build does not).
.build/linux-%/$(BIN): FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=$(call goarch,$*) GOARM=$(call goarm,$*) \
		$(GO) build -trimpath -tags netgo,osusergo -ldflags '$(GO_LDFLAGS)' -o $@ .

# The data directory the Dockerfile copies (nobody:root 0770 in the image).
docker-stage:
	install -d -m 0755 .build/docker/empty
	install -d -m 0770 .build/docker/var-lib/bangui_exporter

docker-build-%: .build/linux-%/$(BIN) docker-stage
	$(DOCKER) build -f deploy/Dockerfile --build-arg ARCH=$* --build-arg OS=linux \
		$(if $(or $(DOCKER_BASE_$*),$(DOCKER_BASE)),--build-arg BASE=$(or $(DOCKER_BASE_$*),$(DOCKER_BASE))) \
		-t $(DOCKER_IMAGE)-linux-$*:$(DOCKER_TAG) .

# The host's image, also tagged $(DOCKER_IMAGE):$(DOCKER_TAG) (what
# deploy/docker-compose.yml runs).
docker: docker-build-$(DOCKER_ARCH)
	$(DOCKER) tag $(DOCKER_IMAGE)-linux-$(DOCKER_ARCH):$(DOCKER_TAG) $(DOCKER_IMAGE):$(DOCKER_TAG)

# One image per platform, $(DOCKER_IMAGE)-linux-ARCH:$(DOCKER_TAG), as the
# Prometheus exporters publish them; combine them into one multi-platform
# name with `docker manifest create` after pushing (docs/deploy.md).
docker-all: $(addprefix docker-build-,$(DOCKER_ARCHS))

FORCE:

# Keep the binaries (make would delete them as intermediate files).
.PRECIOUS: .build/linux-%/$(BIN)
package:
	./deploy/debian/build.sh .build/deb
	lintian --fail-on error,warning .build/deb/*.deb

clean:
	rm -f $(BIN) *.test
	rm -rf .build .tarballs
