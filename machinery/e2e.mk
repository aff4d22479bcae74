# The e2e suite and the cluster it builds: one k3s server with Traefik and
# sigstore policy-controller, all built here from pinned sources
# (machinery/e2e/README.md). Included by the top Makefile.

# The cluster's ingress controller, for make e2e KUBECONFIG=...: its streams
# go there (k3s: http://<node>:80). The built-in cluster runs its own Traefik.
INGRESS_URL  ?=
# The built-in e2e cluster is one k3s server (machinery/e2e/README.md), built
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
KNOBS += INGRESS_URL K3S_SOURCE K3S_SHA256 K3S POLICY_CONTROLLER_VERSION
# What make e2e needs built first: the pinned k3s, unless K3S names another.
K3S_DEP = $(filter $(K3S_BIN),$(K3S))

# machinery/e2e/traefik/go.mod pins the Traefik that serves the e2e cluster's
# Ingress (machinery/e2e/README.md says why that version). Only recipes name these
# (a prerequisite or a rule's name is expanded on every make call), so no
# other make call reads the file.
TRAEFIK_VERSION = $(shell awk '$$1 == "require" && $$2 == "github.com/traefik/traefik/v3" {print $$3}' machinery/e2e/traefik/go.mod)
TRAEFIK_BIN = $(TOOLS)/traefik-$(TRAEFIK_VERSION)/traefik

.PHONY: e2e

# The e2e suite builds its own cluster unless KUBECONFIG names one; then
# REGISTRY must be a registry that cluster pulls from, and HOST and
# INGRESS_URL are the Ingress's host and the cluster's ingress controller.
e2e: $(REGISTRY_BIN) $(COSIGN_BIN) $(CYCLONEDX) $(RELEASE) $(if $(KUBECONFIG),,$(K3S_DEP) $(K3S_TEMPLATE) traefik $(POLICY_CONTROLLER_BIN) $(POLICY_CONTROLLER_CONFIG)/kustomization.yaml) ## Build, push, deploy, serve, check the NetworkPolicy and admission, roll, autoscale, delete on a real cluster (k3s, built here unless KUBECONFIG is set)
	cd machinery/e2e && K3S=$(abspath $(K3S)) K3S_TEMPLATE=$(K3S_TEMPLATE) REGISTRY_BIN=$(REGISTRY_BIN) TRAEFIK_BIN=$(TRAEFIK_BIN) \
		POLICY_CONTROLLER_BIN=$(POLICY_CONTROLLER_BIN) POLICY_CONTROLLER_VERSION=$(POLICY_CONTROLLER_VERSION) \
		POLICY_CONTROLLER_CONFIG=$(POLICY_CONTROLLER_CONFIG) COSIGN_BIN=$(COSIGN_BIN) \
		E2E_REGISTRY=$(if $(filter command environment,$(origin REGISTRY)),$(REGISTRY)) E2E_KUBECTL=$(KUBECTL) \
		E2E_HOST=$(if $(filter command environment,$(origin HOST)),$(HOST)) E2E_INGRESS_URL=$(INGRESS_URL) \
		go test -count=1 -v -timeout 30m .

# k3s and its containerd shim, from the unpacked source with k3s's own
# go.mod (machinery/e2e/k3s/build says why), as k3s's scripts/build does.
$(K3S_BIN): machinery/e2e/k3s/build
	@echo "k3s: building $(K3S_SOURCE) once into $(@D); later runs reuse it"
	machinery/e2e/k3s/build $(K3S_SOURCE) $(K3S_SHA256) $(@D)

$(K3S_TEMPLATE): machinery/e2e/k3s/template machinery/e2e/k3s/containerd-template.diff
	machinery/e2e/k3s/template $(K3S_SOURCE) $(K3S_SHA256) $@

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
	cd machinery/e2e/traefik && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$$v" \
		-o "$$bin.tmp" github.com/traefik/traefik/v3/cmd/traefik && \
	mv "$$bin.tmp" "$$bin"
