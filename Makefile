# hello: build, run, test and ship the greeter.
# `make` (or `make help`) lists every target and knob; override a knob per call:
#   make docker-run PORT=9090

# Knobs.
IMAGE    ?= hello
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
TAG      ?= $(VERSION)
REGISTRY ?= localhost:5000
GOARCH   ?= amd64
PORT     ?= 8080
# Where go-build writes the binary.
BIN      ?= hello
# Where pinned tools (staticcheck, the test registry, Kubernetes) are installed.
TOOLS    ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hello
STATICCHECK_VERSION ?= v0.8.2
# CNCF Distribution, the registry the container and cluster suites push to.
REGISTRY_VERSION ?= v3.0.0

KNOBS := IMAGE VERSION TAG REGISTRY GOARCH PORT BIN TOOLS STATICCHECK_VERSION REGISTRY_VERSION

REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# -trimpath and a version from git (not from the build's VCS stamp) make two
# builds of one commit byte-identical; -s -w drop the symbol and debug tables.
GOBUILD := CGO_ENABLED=0 go build -trimpath -buildvcs=false \
	-ldflags '-s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)'
STATICCHECK := $(TOOLS)/staticcheck@$(STATICCHECK_VERSION)/staticcheck
REGISTRY_BIN := $(TOOLS)/registry@$(REGISTRY_VERSION)/registry

.DEFAULT_GOAL := help
.PHONY: help go-run go-build test lint clean

help: ## List the targets and the knobs with their current values
	@echo "Targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9_-]*:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Knobs (make TARGET KNOB=value):"
	@$(foreach k,$(KNOBS),printf '  %-20s %s\n' '$(k)' '$($(k))';)

go-run: ## Run the service from source on $(PORT)
	go run -ldflags '-X main.version=$(VERSION)' . -addr :$(PORT)

go-build: ## Build $(BIN): static linux/$(GOARCH), stripped, version stamped
	GOOS=linux GOARCH=$(GOARCH) $(GOBUILD) -o $(BIN) .

test: lint ## gofmt, go vet, staticcheck, then go test -race (fuzz seeds included)
	go test -race -count=1 ./...

lint: $(STATICCHECK) ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l .)" || { echo "gofmt -l lists files to format:"; gofmt -l .; exit 1; }
	go vet ./...
	$(STATICCHECK) ./...

# go install, not go get: the pinned tool never enters go.mod.
$(STATICCHECK):
	GOBIN=$(@D) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

$(REGISTRY_BIN):
	GOBIN=$(@D) go install github.com/distribution/distribution/v3/cmd/registry@$(REGISTRY_VERSION)

clean: ## Remove the built binary
	rm -f $(BIN)
