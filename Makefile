# hello: build, run, test and ship the greeter.
# `make` (or `make help`) lists every target and knob; override a knob per call:
#   make docker-run PORT=9090

# Knobs.
IMAGE    ?= hello
# --abbrev=12: a fixed length, so every clone of one commit names it alike.
VERSION  ?= $(shell git describe --tags --always --dirty --abbrev=12 2>/dev/null || echo dev)
TAG      ?= $(VERSION)
REGISTRY ?= localhost:5000
GOARCH   ?= amd64
PORT     ?= 8080
# Where go-build writes the binary.
BIN      ?= hello
# Where the e2e cluster's pinned parts (k3s, Traefik, ...) are built.
TOOLS    ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hello
# The cosign binary: the pinned one, built on first use, or your own.
COSIGN   ?= $(COSIGN_BIN)

KNOBS := IMAGE VERSION TAG REGISTRY GOARCH PORT BIN TOOLS COSIGN

REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# -trimpath and a version from git (not from the build's VCS stamp) make two
# builds of one commit byte-identical; -s -w drop the symbol and debug tables.
GOBUILD := CGO_ENABLED=0 go build -trimpath -buildvcs=false \
	-ldflags '-s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)'
# The tools make runs. Each is pinned, with its dependencies, by a module of
# its own: tools/NAME/go.mod, a tool directive whose go line is the tool's
# own (and so are its GODEBUG defaults). In one module they would fight, and
# each would build with dependency versions its release was never tested
# with. To move one: go -C tools/NAME get -tool PACKAGE@VERSION, then
# go -C tools/NAME mod tidy. go tool builds a tool once into Go's build
# cache, which every clone shares; make keeps a copy in .cache/bin, so a run
# costs no more than the tool itself and the cache's trimming of unused
# entries cannot take it.
TOOL_BIN := $(CURDIR)/.cache/bin
STATICCHECK := $(TOOL_BIN)/staticcheck
GOSEC := $(TOOL_BIN)/gosec
# CNCF Distribution, the registry the container and cluster suites push to.
REGISTRY_BIN := $(TOOL_BIN)/registry
# cosign signs what docker-push pushes; cyclonedx-gomod writes its SBOM.
COSIGN_BIN := $(TOOL_BIN)/cosign
# What a target that runs $(COSIGN) needs built first: the pinned cosign, unless COSIGN names another.
COSIGN_DEP = $(filter $(COSIGN_BIN),$(COSIGN))
CYCLONEDX := $(TOOL_BIN)/cyclonedx-gomod
# release/ (a module of its own, on go-containerregistry) pushes reproducible
# images and resolves a tag to a verified digest.
RELEASE := $(TOOL_BIN)/release

.DEFAULT_GOAL := help
.PHONY: help go-run go-build test unit lint clean

help: ## List the targets and the knobs with their current values
	@echo "Targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9_-]*:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Knobs (make TARGET KNOB=value):"
	@$(foreach k,$(KNOBS),printf '  %-20s %s\n' '$(k)' '$($(k))';)

go-run: ## Run the service from source on $(PORT)
	go run -ldflags '-X main.version=$(VERSION)' . -addr :$(PORT)

# The image's COPY keeps the file's mode: under umask 077 it would be 0700,
# which user 65534 cannot run, and another image digest.
go-build: ## Build $(BIN): static linux/$(GOARCH), stripped, version stamped
	GOOS=linux GOARCH=$(GOARCH) $(GOBUILD) -o $(BIN) .
	chmod 0755 $(BIN)

# The root module, the release tool and each suite with a go.mod of its own.
MODULES := . release $(patsubst %/go.mod,%,$(wildcard test/*/go.mod))

test: lint unit container-test soak-short ## Everything a change must pass: lint, unit, container-test, soak-short

unit: ## go test -race on hello.go (the fuzz seed corpora run here too)
	go test -race -count=1 ./...

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

# go tool -n builds NAME when Go's cache lacks it and prints its path there.
# A first build compiles the whole tool: one line says so before it starts.
$(TOOL_BIN)/%: tools/%/go.mod tools/%/go.sum
	@echo "$*: building it once, as tools/$*/go.mod pins it, into Go's build cache ($$(go env GOCACHE)) and .cache/bin; later runs reuse it"
	@mkdir -p $(@D) && built=$$(go -C tools/$* tool -n $*) && cp "$$built" $@.tmp && mv -f $@.tmp $@

$(RELEASE): release/go.mod release/go.sum $(filter-out %_test.go,$(wildcard release/*.go))
	@echo "release: building release/ once into .cache/bin; later runs reuse it until release/ changes"
	@cd release && CGO_ENABLED=0 go build -trimpath -o $@ .

clean: ## Remove the built binary, and the images as docker-clean does
	rm -f $(BIN)

# ---- The image: docker-build, docker-run, docker-push, container-test ----
# Space-separated linux/<GOARCH> list. When set, docker-push builds and pushes
# one image per platform (as $(TAG)-<arch>), then one index under $(TAG) that
# lists them all, so an amd64 server and an arm64 Raspberry Pi pull one tag.
PLATFORMS ?=
# The repository's address, for the image's label: set it for a release
# (SOURCE=https://github.com/you/hello). It is part of the image digest, so it
# is not read from the clone's origin, which differs from clone to clone.
SOURCE    ?=
# Every timestamp in the pushed image: the commit's time, so that one commit
# gives one digest whenever and wherever it is built.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# docker-push signs with SIGNING_KEY, made on first use when missing (a key
# pair with an empty password; set COSIGN_PASSWORD for a key of your own);
# kubernetes-apply verifies with VERIFY_KEY, a list while a key is rotated
# (docs/image.md#rotating-the-key).
SIGNING_KEY ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/hello/cosign.key
VERIFY_KEY  ?= $(SIGNING_KEY:.key=.pub)
# How docker-push and kubernetes-apply speak to REGISTRY, as Docker's
# insecure-registries means it: true allows plain HTTP and an unchecked
# certificate, false wants HTTPS with a certificate this machine trusts;
# empty asks the engine (docker info): Docker's insecure when its
# insecure-registries lists REGISTRY or a CIDR there, 127.0.0.0/8 by default,
# holds an address REGISTRY resolves to; Podman's when its registries.conf
# lists REGISTRY with insecure = true. One rule, in release/registry.go:
# registry-check, release push, index and verify, and cosign sign, attest
# and verify all follow it.
REGISTRY_INSECURE ?=
# REGISTRY may name a path in the registry (registry.lan:5000/team): its host.
REGISTRY_HOST = $(firstword $(subst /, ,$(REGISTRY)))
KNOBS += PLATFORMS SOURCE SOURCE_DATE_EPOCH SIGNING_KEY VERIFY_KEY REGISTRY_INSECURE
export COSIGN_PASSWORD ?=
export REGISTRY_INSECURE

ARCHS := $(PLATFORMS:linux/%=%)
# Every name docker-build gives an image for $(TAG), and the names a pull of
# what docker-push pushed brings.
IMAGE_REFS = $(foreach t,$(TAG) $(ARCHS:%=$(TAG)-%),$(IMAGE):$(t) $(REGISTRY)/$(IMAGE):$(t))

.PHONY: docker-build docker-run docker-push docker-clean container-test registry-check signing-key

# Where `docker` is Podman's CLI, its build writes Docker's image format:
# in its default, OCI's, the HEALTHCHECK is dropped.
PODMAN_FORMAT = $(if $(findstring podman,$(shell docker --version 2>/dev/null)),--format docker)

# The build context is BIN's folder and the Dockerfile copies the file named
# hello from it: BIN=/tmp/x/hello builds from /tmp/x, leaving ./hello alone.
docker-build: go-build ## Build the image $(IMAGE):$(TAG) for linux/$(GOARCH) from $(BIN)
	@test "$(notdir $(BIN))" = hello || { echo "BIN=$(BIN): the Dockerfile copies a file named hello; set BIN=FOLDER/hello"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "No Docker engine answers: start one with .ci/dockerd"; exit 1; }
	docker build --platform linux/$(GOARCH) $(PODMAN_FORMAT) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg SOURCE=$(SOURCE) -t $(IMAGE):$(TAG) -f Dockerfile $(dir $(BIN))

# hello listens on $PORT inside too, so its banner names the port to curl.
docker-run: docker-build ## Run the image on 127.0.0.1:$(PORT), locked down as in production; Ctrl-C stops it
	docker run --rm --read-only --cap-drop ALL --security-opt no-new-privileges \
		-e PORT=$(PORT) -p 127.0.0.1:$(PORT):$(PORT) $(IMAGE):$(TAG)

# The pushed image is the built one with what makes two builds differ taken
# out (docs/image.md): every timestamp is SOURCE_DATE_EPOCH, and the history
# and the builder's IDs are gone. It is pushed by digest; cosign signs the
# digest, for $(TAG), and attaches the binary's CycloneDX SBOM as a signed
# attestation (--replace: pushing again leaves one, not one more); only then
# does $(TAG) move to it, so the tag never names an unsigned image. Before
# anything is pushed, release push refuses when $(TAG) names another digest
# signed by SIGNING_KEY or a key of VERIFY_KEY: a tag names one build
# (docs/image.md#a-tag-names-one-build). With PLATFORMS, the index is signed
# and attested too, with an SBOM that lists its images (release index), as
# the cluster's admission checks the digest a pod names: the index's.
# No transparency log is written:
# docs/image.md says what one adds.
# The recipe sets $insecure from `release registry`, for cosign's flags.
COSIGN_KEYED = --key $(SIGNING_KEY) --tlog-upload=false --yes \
	--allow-http-registry=$$insecure --allow-insecure-registry=$$insecure
COSIGN_SIGN = $(COSIGN) sign $(COSIGN_KEYED) -a tag=$(TAG)
# The signer's public key, from SIGNING_KEY itself (a file or a KMS URI), into "$$dir".
SIGNER_PUB = out=$$($(COSIGN) public-key --key $(SIGNING_KEY) --outfile "$$dir/signer.pub" 2>&1) || \
	{ echo "$$out"; echo "cosign cannot read SIGNING_KEY=$(SIGNING_KEY): is COSIGN_PASSWORD its password?"; exit 1; }
docker-push: registry-check signing-key $(RELEASE) $(CYCLONEDX) $(if $(ARCHS),,docker-build) ## Push $(REGISTRY)/$(IMAGE):$(TAG) reproducibly, sign it, attest its SBOM; with PLATFORMS, one index
ifeq ($(ARCHS),)
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; $(SIGNER_PUB); \
	insecure=$$($(RELEASE) registry -q $(REGISTRY_HOST)); \
	docker save -o "$$dir/image.tar" $(IMAGE):$(TAG); \
	$(CYCLONEDX) bin -json -std -noserial -notimestamp -version $(VERSION) -output "$$dir/sbom.json" $(BIN); \
	ref=$$($(RELEASE) push -epoch $(SOURCE_DATE_EPOCH) -dockerfile Dockerfile -cosign $(COSIGN) -key "$$dir/signer.pub" $(VERIFY_KEY:%=-key %) \
		"$$dir/image.tar" $(REGISTRY)/$(IMAGE):$(TAG)); \
	echo "pushed $$ref"; \
	$(COSIGN_SIGN) "$$ref"; \
	$(COSIGN) attest $(COSIGN_KEYED) --replace --type cyclonedx --predicate "$$dir/sbom.json" "$$ref"; \
	$(RELEASE) tag "$$ref" $(TAG); echo "tagged $(REGISTRY)/$(IMAGE):$(TAG)"; \
	echo "$$ref"
else
	set -e; for arch in $(ARCHS); do \
		$(MAKE) docker-push PLATFORMS= GOARCH=$$arch TAG=$(TAG)-$$arch; \
	done
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; $(SIGNER_PUB); \
	insecure=$$($(RELEASE) registry -q $(REGISTRY_HOST)); \
	ref=$$($(RELEASE) index -cosign $(COSIGN) -key "$$dir/signer.pub" $(VERIFY_KEY:%=-key %) -sbom "$$dir/sbom.json" \
		$(REGISTRY)/$(IMAGE):$(TAG) $(ARCHS:%=$(REGISTRY)/$(IMAGE):$(TAG)-%)); \
	echo "pushed $$ref"; $(COSIGN_SIGN) "$$ref"; \
	$(COSIGN) attest $(COSIGN_KEYED) --replace --type cyclonedx --predicate "$$dir/sbom.json" "$$ref"; \
	$(RELEASE) tag "$$ref" $(TAG); echo "tagged $(REGISTRY)/$(IMAGE):$(TAG)"; \
	echo "$$ref"
endif

# A key given as a cosign URI (awskms://, hashivault://, ...) is used as is.
signing-key: $(COSIGN_DEP)
	@case "$(SIGNING_KEY)" in *://*) exit 0;; esac; test -f $(SIGNING_KEY) && exit 0; \
	mkdir -p $(dir $(SIGNING_KEY)) && cd $(dir $(SIGNING_KEY)) && \
	{ out=$$($(COSIGN) generate-key-pair --output-key-prefix $(basename $(notdir $(SIGNING_KEY))) 2>&1) || { echo "$$out"; exit 1; }; } && \
	echo "made a signing key pair: $(SIGNING_KEY) signs (keep it secret), $(basename $(SIGNING_KEY)).pub verifies"

# Before building, ask the registry's /v2/ for an answer within 5 s, as
# REGISTRY_INSECURE's rule says to speak to it, with the credentials docker
# login stored for it: without one, the push would fail only after the
# build. No answer, a certificate this machine does not trust, plain HTTP
# where the rule says HTTPS, or credentials it refuses or wants: one line
# that says which.
registry-check: $(RELEASE) ## Check REGISTRY answers /v2/ within 5 s; plain HTTP, certificate unchecked, only if REGISTRY_INSECURE=true or, when empty, the engine's insecure registries allow it
	@$(RELEASE) registry $(REGISTRY_HOST) >/dev/null

clean: docker-clean
docker-clean: ## Remove the images docker-build and docker-push made for $(TAG) (and PLATFORMS)
	@for ref in $(IMAGE_REFS); do \
		if docker image inspect $$ref >/dev/null 2>&1; then docker rmi $$ref || exit; fi; \
	done

# Docker 28 and buildx, built once from the Go module proxy into the tools
# cache (test/container/docker28/build says how): the suite starts that
# engine beside the default one, with each of its image stores, and walks
# the image there through BuildKit. One folder per pair of versions.
DOCKER28_VERSION ?= v28.5.2
BUILDX_VERSION   ?= v0.29.1
DOCKER28_DIR     := $(TOOLS)/docker-$(DOCKER28_VERSION:v%=%)-buildx-$(BUILDX_VERSION:v%=%)
KNOBS += DOCKER28_VERSION BUILDX_VERSION

container-test: $(REGISTRY_BIN) $(COSIGN_BIN) $(CYCLONEDX) $(RELEASE) $(DOCKER28_DIR)/dockerd ## Prove the image on a real Docker engine and a real registry, and on Docker 28 beside it (test/container)
	cd test/container && REGISTRY_BIN=$(REGISTRY_BIN) COSIGN_BIN=$(COSIGN_BIN) RELEASE_BIN=$(RELEASE) \
		DOCKER28_DIR=$(DOCKER28_DIR) go test -count=1 -v -timeout 15m .

# dockerd moves into place last, so an interrupted build is done again.
$(DOCKER28_DIR)/dockerd: test/container/docker28/build
	@echo "docker28: building dockerd and docker-proxy $(DOCKER28_VERSION) and buildx $(BUILDX_VERSION) from the Go module proxy once into $(@D); later runs reuse it"
	@test/container/docker28/build $(DOCKER28_VERSION) $(BUILDX_VERSION) $(@D)

# ---- Benchmarks and reliability: bench, fuzz, soak ---------------------------
# bench/ is a Go program that drives $(BIN) and ./floor (bench/floor: a bare
# net/http handler on hello's server limits, writing a greeting's bytes). All
# its traffic goes to 127.0.0.1, bounded in count and time.
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

.PHONY: floor bench bench-tools fuzz soak soak-short floor-clean

clean: floor-clean
floor-clean:
	rm -f floor

floor: ## Build ./floor, the bench baseline, with exactly hello's build flags
	GOOS=linux GOARCH=$(GOARCH) $(GOBUILD) -o floor ./bench/floor

bench: go-build floor bench-tools ## Print the markdown table hello vs floor; fails over budget (Docker)
	.ci/dockerd
	go run ./bench bench -hello $(abspath $(BIN)) -rounds $(BENCH_ROUNDS) -duration $(BENCH_DURATION)

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

soak: go-build bench-tools ## Load, slowloris, SIGTERM under load, 431, large GET body, connection flood
	go run ./bench soak -hello $(abspath $(BIN)) -duration $(SOAK_DURATION) -header-timeout $(HEADER_TIMEOUT) \
		-flood $(FLOOD_CONNS)

# The short flood, 3,000 + 3,000 connections, is still six times hello's
# default -max-conns (1024); a hello that holds them all reaches 85 MiB.
soak-short: ## soak and fuzz at CI length: 10 s of load, a 3,000 + 3,000 flood, 10 s of fuzzing
	$(MAKE) soak fuzz SOAK_DURATION=10s FLOOD_CONNS=3000 FUZZTIME=10s

# ---- Kubernetes: kubernetes-apply, kubernetes-delete, e2e ----
# Deploy with kubectl and kustomize; prove it on a real cluster.
NAMESPACE    ?= hello
# The kubectl context to deploy to; empty means kubectl's current context.
KUBE_CONTEXT ?=
# The host name the Ingress answers to.
HOST         ?= hello.localhost
KUBECTL      ?= kubectl
# The cluster's ingress controller, for make e2e KUBECONFIG=...: its streams
# go there (k3s: http://<node>:80). The built-in cluster runs its own Traefik.
INGRESS_URL  ?=
# The built-in e2e cluster is one k3s server (docs/kubernetes.md), built
# from K3S_SOURCE, a `git archive` tarball of k3s checked against K3S_SHA256
# (the default sits beside the repository: ../shared/k3s/README.md), or the
# k3s binary K3S names. Its containerd config template comes from K3S_SOURCE
# either way.
K3S_SOURCE   ?= ../shared/k3s/k3s-151ca514.tar.gz
K3S_SHA256   ?= d14e62147c090a0dc56b32575ce4de90e8fb3e65bf49b833b945255c1942104a
K3S_DIR      := $(TOOLS)/k3s-$(K3S_SHA256)
K3S_BIN      := $(K3S_DIR)/k3s
K3S          ?= $(K3S_BIN)
K3S_TEMPLATE := $(K3S_DIR)/config-v3.toml.tmpl
# sigstore policy-controller, the admission webhook the built-in cluster runs
# (docs/kubernetes.md#admission): the binary, and the manifests its module
# ships (config/), in the tools cache.
POLICY_CONTROLLER_VERSION ?= v0.13.1
POLICY_CONTROLLER_DIR := $(TOOLS)/policy-controller-$(POLICY_CONTROLLER_VERSION)
POLICY_CONTROLLER_BIN := $(POLICY_CONTROLLER_DIR)/policy-controller
POLICY_CONTROLLER_CONFIG := $(POLICY_CONTROLLER_DIR)/config
KNOBS += NAMESPACE KUBE_CONTEXT HOST KUBECTL INGRESS_URL K3S_SOURCE K3S_SHA256 K3S POLICY_CONTROLLER_VERSION
# What make e2e needs built first: the pinned k3s, unless K3S names another.
K3S_DEP = $(filter $(K3S_BIN),$(K3S))

KUBECTL_CTX = $(KUBECTL)$(if $(KUBE_CONTEXT), --context $(KUBE_CONTEXT))

# test/e2e/traefik/go.mod pins the Traefik that serves the e2e cluster's
# Ingress (docs/ingress.md says why that version). Only recipes name these
# (a prerequisite or a rule's name is expanded on every make call), so no
# other make call reads the file.
TRAEFIK_VERSION = $(shell awk '$$1 == "require" && $$2 == "github.com/traefik/traefik/v3" {print $$3}' test/e2e/traefik/go.mod)
TRAEFIK_BIN = $(TOOLS)/traefik-$(TRAEFIK_VERSION)/traefik

# A throwaway kustomize overlay on top of k8s/: the namespace, the image and the
# host come from the knobs, so no file in the repo is edited per deployment.
# The image is named by the digest kubernetes-apply verified ($$DIGEST).
define OVERLAY
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../k8s]
namespace: $(NAMESPACE)
images: [{name: hello, newName: $(REGISTRY)/$(IMAGE), digest: "DIGEST"}]
labels: [{includeTemplates: true, pairs: {app.kubernetes.io/version: "$(TAG)"}}]
patches:
  - target: {kind: Ingress, name: hello}
    patch: '[{"op": "replace", "path": "/spec/rules/0/host", "value": "$(HOST)"}]'
endef
export OVERLAY
# The namespace's opt-in to policy-controller's checks, added to the
# overlay's patches once the image policies are Ready.
define OPT_IN
  - target: {kind: Namespace}
    patch: '[{"op": "add", "path": "/metadata/labels/policy.sigstore.dev~1include", "value": "true"}]'
endef
export OPT_IN
# sigstore policy-controller's API: a cluster that serves it checks images at
# admission. HAS_ADMISSION sets $$admission to yes or no; when kubectl cannot
# list the APIs, its error stops make.
ADMISSION_API := policy.sigstore.dev/v1beta1
HAS_ADMISSION = apis=$$($(KUBECTL_CTX) api-versions) && \
	admission=$$(printf '%s\n' "$$apis" | grep -qx '$(ADMISSION_API)' && echo yes || echo no)
POLICIES = clusterimagepolicy/$(NAMESPACE)-signed clusterimagepolicy/$(NAMESPACE)-sbom
# kustomize only accepts a relative path to k8s/, hence a folder inside the repo.
WITH_OVERLAY = mkdir -p .cache && dir=$$(mktemp -d .cache/overlay.XXXXXX) && trap 'rm -rf "$$dir"' EXIT && \
	echo "$$OVERLAY" | sed "s/\"DIGEST\"/\"$${DIGEST-}\"/" >"$$dir/kustomization.yaml" &&

.PHONY: kubernetes-apply kubernetes-delete e2e kubectl-check cluster-check

# Before anything is applied, release verify resolves $(TAG) to a digest and
# has cosign verify its signature for $(TAG) in this repository and its SBOM
# attestation with one key of VERIFY_KEY; it refuses, on one line, an image
# that is unsigned, signed by another key, signed for another repository (copied)
# or another tag (the tag was moved), or without an SBOM attestation by that key.
#
# Then, when the cluster runs sigstore policy-controller (it serves
# $(ADMISSION_API)), the cluster checks every pod too
# (docs/kubernetes.md#admission): first the two ClusterImagePolicies that
# release policy writes, applied and Ready (only a running webhook makes
# them Ready); only then the namespace's opt-in label, with the rest of k8s/,
# so no pod of hello's is ever checked before its policies are in force.
# Without that API, one line says so, and the apply goes on.
#
# The Deployment names no replicas, so a first apply creates 1 pod; the
# autoscaler's first pass (within 15 s, with or without metrics) raises it to
# minReplicas. Waiting for that pass makes the rollout wait for all of them.
kubernetes-apply: cluster-check $(RELEASE) $(COSIGN_DEP) ## Deploy $(REGISTRY)/$(IMAGE):$(TAG) by its digest, once its signature and SBOM verify with VERIFY_KEY; with policy-controller, the cluster checks too
	@case "$(TAG)" in latest|"") echo "TAG='$(TAG)': deploy a version (make kubernetes-apply TAG=v1.2.3), never latest"; exit 1;; esac
	@for key in $(VERIFY_KEY); do case "$$key" in *://*) ;; *) test -f "$$key" || { echo "No public key at $$key (VERIFY_KEY=$(VERIFY_KEY)): set VERIFY_KEY to the key that signed the image (make docker-push makes a pair on first use)"; exit 1; };; esac; done
	@DIGEST=$$($(RELEASE) verify -cosign $(COSIGN) $(VERIFY_KEY:%=-key %) $(REGISTRY)/$(IMAGE):$(TAG)) && \
	echo "$(REGISTRY)/$(IMAGE):$(TAG) is $$DIGEST: signed for $(TAG), SBOM attested, by $(if $(word 2,$(VERIFY_KEY)),one of the keys,the key) $(VERIFY_KEY)" && \
	$(WITH_OVERLAY) $(HAS_ADMISSION) && if [ "$$admission" = yes ]; then \
		$(RELEASE) policy -name $(NAMESPACE) $(VERIFY_KEY:%=-key %) $(REGISTRY)/$(IMAGE) >"$$dir/policy.json" && \
		$(KUBECTL_CTX) apply -f "$$dir/policy.json" && \
		{ $(KUBECTL_CTX) wait --for=condition=Ready --timeout=1m $(POLICIES) || \
			{ echo "the image policies are not Ready: does policy-controller's webhook run? (kubectl -n cosign-system get pods)"; exit 1; }; } && \
		echo "$$OPT_IN" >>"$$dir/kustomization.yaml"; \
	else echo "this cluster does not enforce signatures (it serves no $(ADMISSION_API)): only make checked this image; install sigstore policy-controller to have every pod checked (docs/kubernetes.md#admission)"; fi && \
	$(KUBECTL_CTX) apply -k "$$dir"
	$(KUBECTL_CTX) -n $(NAMESPACE) wait horizontalpodautoscaler/hello --for=condition=AbleToScale --timeout=1m
	$(KUBECTL_CTX) -n $(NAMESPACE) rollout status deployment/hello --timeout=3m
	@echo "hello $(TAG) serves in namespace $(NAMESPACE). Reach it:"
	@echo "  through the Ingress:  curl http://$(HOST)/you"
	@echo "  from this machine:    $(KUBECTL_CTX) -n $(NAMESPACE) port-forward service/hello $(PORT):80"
	@echo "                        curl http://127.0.0.1:$(PORT)/you"

# The image policies go too: they are this namespace's (named for it), and
# left behind they would go on deciding, in every opted-in namespace, which
# images of $(REGISTRY)/$(IMAGE) run, by keys no deployment names any more.
kubernetes-delete: cluster-check ## Delete everything kubernetes-apply created: the namespace, and its image policies; fine when nothing is there
	@$(WITH_OVERLAY) $(KUBECTL_CTX) delete -k "$$dir" --ignore-not-found --wait && \
	$(HAS_ADMISSION) && if [ "$$admission" = yes ]; then $(KUBECTL_CTX) delete --ignore-not-found $(POLICIES); fi

kubectl-check:
	@command -v $(KUBECTL) >/dev/null || { echo "$(KUBECTL) not found: install kubectl or set KUBECTL=/path/to/kubectl"; exit 1; }

# Without a kubeconfig kubectl talks to localhost:8080, which may be hello
# itself (make go-run). Ask for the server's version, which only a Kubernetes
# API server gives, within 5 s; else say which cluster kubectl tried.
cluster-check: kubectl-check
	@$(KUBECTL_CTX) version --request-timeout=5s </dev/null >/dev/null 2>&1 && exit 0; \
	kubeconfig=$${KUBECONFIG:-$$HOME/.kube/config}; \
	ctx=$(or $(KUBE_CONTEXT),$$($(KUBECTL) config current-context 2>/dev/null)); \
	server=$$($(KUBECTL_CTX) config view --minify -o jsonpath='{.clusters[0].cluster.server}' 2>/dev/null); \
	if [ -z "$$ctx" ]; then where="no context in $$kubeconfig, so kubectl's default localhost:8080"; \
	elif [ -z "$$server" ]; then where="context $$ctx, which $$kubeconfig does not have"; \
	else where="context $$ctx at $$server, from $$kubeconfig"; fi; \
	echo "No Kubernetes cluster answers kubectl ($$where): name yours with KUBE_CONTEXT=<context> or KUBECONFIG=<file>, and try it with kubectl version"; exit 1

# The e2e suite builds its own cluster unless KUBECONFIG names one; then
# REGISTRY must be a registry that cluster pulls from, and HOST and
# INGRESS_URL are the Ingress's host and the cluster's ingress controller.
e2e: $(REGISTRY_BIN) $(COSIGN_BIN) $(CYCLONEDX) $(RELEASE) $(if $(KUBECONFIG),,$(K3S_DEP) $(K3S_TEMPLATE) traefik $(POLICY_CONTROLLER_BIN) $(POLICY_CONTROLLER_CONFIG)/kustomization.yaml) ## Build, push, deploy, serve, check the NetworkPolicy and admission, roll, autoscale, delete on a real cluster (k3s, built here unless KUBECONFIG is set)
	cd test/e2e && K3S=$(abspath $(K3S)) K3S_TEMPLATE=$(K3S_TEMPLATE) REGISTRY_BIN=$(REGISTRY_BIN) TRAEFIK_BIN=$(TRAEFIK_BIN) \
		POLICY_CONTROLLER_BIN=$(POLICY_CONTROLLER_BIN) POLICY_CONTROLLER_VERSION=$(POLICY_CONTROLLER_VERSION) \
		POLICY_CONTROLLER_CONFIG=$(POLICY_CONTROLLER_CONFIG) COSIGN_BIN=$(COSIGN_BIN) \
		E2E_REGISTRY=$(if $(filter command environment,$(origin REGISTRY)),$(REGISTRY)) E2E_KUBECTL=$(KUBECTL) \
		E2E_HOST=$(if $(filter command environment,$(origin HOST)),$(HOST)) E2E_INGRESS_URL=$(INGRESS_URL) \
		go test -count=1 -v -timeout 30m .

# k3s and its containerd shim, from the unpacked source with k3s's own
# go.mod (test/e2e/k3s/build says why), as k3s's scripts/build does.
$(K3S_BIN): test/e2e/k3s/build
	@echo "k3s: building $(K3S_SOURCE) once into $(@D); later runs reuse it"
	test/e2e/k3s/build $(K3S_SOURCE) $(K3S_SHA256) $(@D)

$(K3S_TEMPLATE): test/e2e/k3s/template test/e2e/k3s/containerd-template.diff
	test/e2e/k3s/template $(K3S_SOURCE) $(K3S_SHA256) $@

# policy-controller's module, fetched into the Go module cache (from /, so
# outside hello's module): its folder there, into $$src.
POLICY_CONTROLLER_SRC = src=$$(cd / && go mod download -json github.com/sigstore/policy-controller@$(POLICY_CONTROLLER_VERSION) | \
	awk -F'"' '$$2 == "Dir" {print $$4}'); test -n "$$src"

# policy-controller's go.mod has replace directives, so go install refuses
# it: it builds inside a copy of its own module, with that module's go.mod
# and go.sum, as its ko build does (CGO_ENABLED=0, -trimpath), only the
# webhook; the binary moves into place last.
$(POLICY_CONTROLLER_BIN):
	@echo "policy-controller: building sigstore policy-controller $(POLICY_CONTROLLER_VERSION) once into $(@D); later runs reuse it"
	@set -e; dir=$$(mktemp -d); trap 'chmod -R u+w "$$dir"; rm -rf "$$dir"' EXIT; $(POLICY_CONTROLLER_SRC); \
	cp -R "$$src" "$$dir/module"; chmod -R u+w "$$dir/module"; \
	(cd "$$dir/module" && CGO_ENABLED=0 go build -trimpath \
		-ldflags '-s -w -buildid= -X sigs.k8s.io/release-utils/version.gitVersion=$(POLICY_CONTROLLER_VERSION)' \
		-o "$$dir/policy-controller" ./cmd/webhook); \
	mkdir -p $(@D); mv "$$dir/policy-controller" $@

# Its manifests, as its module ships them; the suite's overlay adds the
# Deployment (webhook.yaml, which upstream's release resolves on its own) and
# the image.
$(POLICY_CONTROLLER_CONFIG)/kustomization.yaml:
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; $(POLICY_CONTROLLER_SRC); \
	cp -R "$$src/config" "$$dir/config"; chmod -R u+w "$$dir/config"; \
	mkdir -p $(POLICY_CONTROLLER_DIR); rm -rf $(@D); mv "$$dir/config" $(@D)

# Built once per version; the binary moves into place last. The recipe
# takes the version and the path into shell variables once, so go.mod is
# not read again at each mention.
.PHONY: traefik
traefik:
	@v=$(TRAEFIK_VERSION); bin=$(TRAEFIK_BIN); test -x "$$bin" && exit 0; \
	echo "traefik: building $$v once into $$bin; later runs reuse it"; \
	cd test/e2e/traefik && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$$v" \
		-o "$$bin.tmp" github.com/traefik/traefik/v3/cmd/traefik && \
	mv "$$bin.tmp" "$$bin"
