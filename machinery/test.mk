# The suites behind make test, and the bench: lint, unit, container-test,
# fuzz, soak and bench. Included by the top Makefile.

BENCH_ROUNDS   ?= 3
BENCH_DURATION ?= 10s
FUZZTIME       ?= 60s
SOAK_DURATION  ?= 60s
# hello's ReadHeaderTimeout: slowloris dribblers must be cut off then.
HEADER_TIMEOUT ?= 5s
# The connection flood: this many connections send a GET and stay open, then
# this many more send nothing. The soak needs twice as many open files.
FLOOD_CONNS    ?= 6000
KNOBS += BENCH_ROUNDS BENCH_DURATION FUZZTIME SOAK_DURATION HEADER_TIMEOUT FLOOD_CONNS
# command:Debian package for each tool bench and soak run.
BENCH_TOOLS := wrk:wrk ab:apache2-utils valgrind:valgrind callgrind_control:valgrind
# machinery/bench, a module of its own: built into .cache/bin, run from here.
BENCH := $(TOOL_BIN)/bench

# hello and every module one floor down: the release tool, the bench and
# each suite (the pinned tools' modules hold no code of ours).
MODULES := . $(patsubst %/go.mod,%,$(wildcard machinery/*/go.mod))

.PHONY: unit lint container-test floor bench bench-tools fuzz soak soak-short floor-clean

unit: ## go test -race: hello.go (fuzz seed corpora included), the release tool and the bench's own tests
	go test -race -count=1 ./...
	cd machinery/release && go test -race -count=1 ./...
	cd machinery/bench && go test -race -count=1 ./...

# gosec's ./... walks folders, not modules: one run here covers them all.
# Shell scripts are found by their #! line.
lint: $(STATICCHECK) $(GOSEC) ## gofmt, go vet, staticcheck, gosec on every module; shellcheck on every shell script
	@test -z "$$(gofmt -l .)" || { echo "gofmt -l lists files to format:"; gofmt -l .; exit 1; }
	@set -e; for m in $(MODULES); do echo "go vet, staticcheck: $$m"; \
		(cd $$m && go vet ./... && $(STATICCHECK) ./...); done
	@echo "gosec: $(MODULES)"; $(GOSEC) -quiet -tests ./...
	@command -v shellcheck >/dev/null || { echo "shellcheck not found: install Debian's package (apt-get install shellcheck)"; exit 1; }
	@scripts=$$(git ls-files -z -co --exclude-standard | xargs -0 awk 'FNR == 1 && /^#!.*[\/ ](ba|da)?sh( |$$)/ {print FILENAME} {nextfile}'); \
		echo "shellcheck:" $$scripts; shellcheck $$scripts

# Docker 28 and buildx, built once from the Go module proxy into the tools
# cache (machinery/container/docker28/build says how): the suite starts that
# engine beside the default one, with each of its image stores, and walks
# the image there through BuildKit. One folder per pair of versions.
DOCKER28_VERSION ?= v28.5.2
BUILDX_VERSION   ?= v0.29.1
DOCKER28_DIR     := $(TOOLS)/docker-$(DOCKER28_VERSION:v%=%)-buildx-$(BUILDX_VERSION:v%=%)
KNOBS += DOCKER28_VERSION BUILDX_VERSION

container-test: $(REGISTRY_BIN) $(COSIGN_BIN) $(CYCLONEDX) $(RELEASE) $(DOCKER28_DIR)/dockerd ## Prove the image on Docker 20.10, Docker 28 (BuildKit) and Podman, and real registries (machinery/container)
	cd machinery/container && REGISTRY_BIN=$(REGISTRY_BIN) COSIGN_BIN=$(COSIGN_BIN) RELEASE_BIN=$(RELEASE) \
		DOCKER28_DIR=$(DOCKER28_DIR) go test -count=1 -v -timeout 15m .

# dockerd moves into place last, so an interrupted build is done again.
$(DOCKER28_DIR)/dockerd: machinery/container/docker28/build
	@echo "docker28: building dockerd and docker-proxy $(DOCKER28_VERSION) and buildx $(BUILDX_VERSION) from the Go module proxy once into $(@D); later runs reuse it"
	@machinery/container/docker28/build $(DOCKER28_VERSION) $(BUILDX_VERSION) $(@D)

# bench drives $(BIN) and ./floor (machinery/bench/floor: a bare net/http
# handler on hello's server limits, writing a greeting's bytes). All its
# traffic goes to 127.0.0.1, bounded in count and time.
$(BENCH): machinery/bench/go.mod $(filter-out %_test.go,$(wildcard machinery/bench/*.go))
	@mkdir -p $(@D) && cd machinery/bench && go build -o $@ .

clean: floor-clean
floor-clean:
	rm -f floor

floor: ## Build ./floor, the bench baseline, with exactly hello's build flags
	cd machinery/bench && GOOS=linux GOARCH=$(GOARCH) $(GOBUILD) -o $(CURDIR)/floor ./floor

bench: go-build floor bench-tools $(BENCH) ## Print the markdown table hello vs floor; fails over an instruction or size budget (Docker)
	.ci/dockerd
	$(BENCH) bench -hello $(abspath $(BIN)) -rounds $(BENCH_ROUNDS) -duration $(BENCH_DURATION)

bench-tools: ## Install wrk, ab and valgrind from Debian's packages when missing
	@missing=; for t in $(BENCH_TOOLS); do \
		command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "bench-tools: installing Debian's$$missing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
		|| { echo "bench-tools: install$$missing as root (apt-get install$$missing)"; exit 1; }; \
	fi

fuzz: ## Fuzz FuzzGreet for $(FUZZTIME); fails on the first broken invariant
	go test -run '^$$' -fuzz '^FuzzGreet$$' -fuzztime $(FUZZTIME) .

soak: go-build bench-tools $(BENCH) ## Load, slowloris, SIGTERM under load, 431, large GET body, connection flood
	$(BENCH) soak -hello $(abspath $(BIN)) -duration $(SOAK_DURATION) -header-timeout $(HEADER_TIMEOUT) \
		-flood $(FLOOD_CONNS)

# The short flood, 3,000 + 3,000 connections, is still six times hello's
# default -max-conns (1024); a hello that holds them all reaches 85 MiB.
soak-short: ## soak and fuzz at CI length: 10 s of load, a 3,000 + 3,000 flood, 10 s of fuzzing
	$(MAKE) soak fuzz SOAK_DURATION=10s FLOOD_CONNS=3000 FUZZTIME=10s
