# hello: build, run, test and ship the greeter.
# `make` (or `make help`) lists every target and knob; override a knob per call:
#   make docker-run PORT=9090
# This file is the walk, in the README's order. What stands behind it (the
# release tool, the pinned tools, the suites, the bench and the e2e cluster)
# is in machinery/, included below; machinery/README.md maps it.

# Knobs of the walk.
IMAGE     ?= hello
# --abbrev=12: a fixed length, so every clone of one commit names it alike.
VERSION   ?= $(shell git describe --tags --always --dirty --abbrev=12 2>/dev/null || echo dev)
TAG       ?= $(VERSION)
REGISTRY  ?= localhost:5000
GOARCH    ?= amd64
PORT      ?= 8080
# Where go-build writes the binary.
BIN       ?= hello
# Space-separated linux/<GOARCH> list: docker-push then pushes one image per
# platform (as $(TAG)-<arch>) and one index under $(TAG) that lists them all.
PLATFORMS ?=
NAMESPACE ?= hello
# The kubectl context to deploy to; empty means kubectl's current context.
KUBE_CONTEXT ?=
# The host name the Ingress answers to.
HOST      ?= hello.localhost
KUBECTL   ?= kubectl
KNOBS := IMAGE VERSION TAG REGISTRY GOARCH PORT BIN PLATFORMS NAMESPACE KUBE_CONTEXT HOST KUBECTL

REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# -trimpath and a version from git (not from the build's VCS stamp) make two
# builds of one commit byte-identical; -s -w drop the symbol and debug tables.
GOBUILD := CGO_ENABLED=0 go build -trimpath -buildvcs=false \
	-ldflags '-s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)'

# The supply chain (signing, the registry rule, the overlay), the tests and
# the e2e cluster: their knobs and targets.
include machinery/release.mk machinery/test.mk machinery/e2e.mk

.DEFAULT_GOAL := help
.PHONY: help go-run go-build docker-build docker-run docker-push kubernetes-apply kubernetes-delete clean test

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

# release push pushes the canonical image of what the Dockerfile says, by
# digest (docs/image.md): one commit, one digest, whichever engine built it.
# It refuses when $(TAG) names another digest that a trusted key signed: a
# tag names one build. cosign signs the digest for $(TAG) and attests the
# binary's CycloneDX SBOM; only then does $(TAG) move to it, so the tag
# never names an unsigned image. With PLATFORMS: docker-push-index.
docker-push: registry-check signing-key $(RELEASE) $(CYCLONEDX) $(if $(ARCHS),docker-push-index,docker-build) ## Push $(REGISTRY)/$(IMAGE):$(TAG) reproducibly, sign it, attest its SBOM; with PLATFORMS, one index
ifeq ($(ARCHS),)
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; $(SIGNER_PUB); \
	insecure=$$($(RELEASE) registry -q $(REGISTRY_HOST)); \
	docker save -o "$$dir/image.tar" $(IMAGE):$(TAG); \
	$(CYCLONEDX) bin -json -std -noserial -notimestamp -version $(VERSION) -output "$$dir/sbom.json" $(BIN); \
	ref=$$($(RELEASE) push -epoch $(SOURCE_DATE_EPOCH) -dockerfile Dockerfile -cosign $(COSIGN) \
		-key "$$dir/signer.pub" $(VERIFY_KEY:%=-key %) "$$dir/image.tar" $(REGISTRY)/$(IMAGE):$(TAG)); \
	$(SIGN_ATTEST_TAG)
endif

# Nothing is applied until release verify has resolved $(TAG) to a digest
# whose signature for $(TAG) in this repository, and SBOM attestation,
# verify with a key of VERIFY_KEY; it refuses on one line. A cluster that
# runs sigstore policy-controller checks every pod too: its image policies
# are applied and Ready before the namespace opts in (POLICY_OPT_IN). The
# autoscaler's first pass raises the first apply's 1 pod to minReplicas;
# waiting for it makes the rollout wait for all of them.
kubernetes-apply: cluster-check $(RELEASE) $(COSIGN_DEP) ## Deploy $(REGISTRY)/$(IMAGE):$(TAG) by its digest, once its signature and SBOM verify with VERIFY_KEY; with policy-controller, the cluster checks too
	@case "$(TAG)" in latest|"") echo "TAG='$(TAG)': deploy a version (make kubernetes-apply TAG=v1.2.3), never latest"; exit 1;; esac
	@for key in $(VERIFY_KEY); do case "$$key" in *://*) ;; *) test -f "$$key" || { echo "No public key at $$key (VERIFY_KEY=$(VERIFY_KEY)): set VERIFY_KEY to the key that signed the image (make docker-push makes a pair on first use)"; exit 1; };; esac; done
	@DIGEST=$$($(RELEASE) verify -cosign $(COSIGN) $(VERIFY_KEY:%=-key %) $(REGISTRY)/$(IMAGE):$(TAG)) && \
	echo "$(REGISTRY)/$(IMAGE):$(TAG) is $$DIGEST: signed for $(TAG), SBOM attested, by $(if $(word 2,$(VERIFY_KEY)),one of the keys,the key) $(VERIFY_KEY)" && \
	$(WITH_OVERLAY) $(POLICY_OPT_IN) && $(KUBECTL_CTX) apply -k "$$dir"
	$(KUBECTL_CTX) -n $(NAMESPACE) wait horizontalpodautoscaler/hello --for=condition=AbleToScale --timeout=1m
	$(KUBECTL_CTX) -n $(NAMESPACE) rollout status deployment/hello --timeout=3m
	@echo "hello $(TAG) serves in namespace $(NAMESPACE). Reach it:"
	@echo "  through the Ingress:  curl http://$(HOST)/you"
	@echo "  from this machine:    $(KUBECTL_CTX) -n $(NAMESPACE) port-forward service/hello $(PORT):80"
	@echo "                        curl http://127.0.0.1:$(PORT)/you"

# The image policies go too: left behind, they would go on deciding which
# images of $(REGISTRY)/$(IMAGE) run, by keys no deployment names any more.
kubernetes-delete: cluster-check ## Delete everything kubernetes-apply created: the namespace, and its image policies; fine when nothing is there
	@$(WITH_OVERLAY) $(KUBECTL_CTX) delete -k "$$dir" --ignore-not-found --wait && \
	$(HAS_ADMISSION) && if [ "$$admission" = yes ]; then $(KUBECTL_CTX) delete --ignore-not-found $(POLICIES); fi

# The machinery's .mk files add their own clean-up (docker-clean, floor-clean).
clean: ## Remove the built binary, the images as docker-clean does, and ./floor
	rm -f $(BIN)

test: lint unit container-test soak-short ## Everything a change must pass: lint, unit, container-test, soak-short
