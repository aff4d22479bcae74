# The supply chain behind docker-push and kubernetes-apply: the pinned tools,
# the signing key, the registry rule, the multi-platform index, and the
# overlay kubernetes-apply deploys through. Included by the top Makefile.

# Where the e2e cluster's pinned parts (k3s, Traefik, ...) are built.
TOOLS    ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hello
# The cosign binary: the pinned one, built on first use, or your own.
COSIGN   ?= $(COSIGN_BIN)
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
# lists REGISTRY with insecure = true. One rule, in
# machinery/release/registry.go: registry-check, release push, index and
# verify, and cosign sign, attest and verify all follow it.
REGISTRY_INSECURE ?=
KNOBS += TOOLS COSIGN SOURCE SOURCE_DATE_EPOCH SIGNING_KEY VERIFY_KEY REGISTRY_INSECURE
export COSIGN_PASSWORD ?=
export REGISTRY_INSECURE
# REGISTRY may name a path in the registry (registry.lan:5000/team): its host.
REGISTRY_HOST = $(firstword $(subst /, ,$(REGISTRY)))

# The tools make runs. Each is pinned, with its dependencies, by a module of
# its own: machinery/tools/NAME/go.mod, a tool directive whose go line is the
# tool's own (and so are its GODEBUG defaults). In one module they would
# fight, and each would build with dependency versions its release was never
# tested with. To move one: go -C machinery/tools/NAME get -tool
# PACKAGE@VERSION, then go -C machinery/tools/NAME mod tidy. go tool builds a
# tool once into Go's build cache, which every clone shares; make keeps a
# copy in .cache/bin, so a run costs no more than the tool itself and the
# cache's trimming of unused entries cannot take it.
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
# machinery/release (a module of its own, on go-containerregistry) pushes
# canonical images and resolves a tag to a verified digest.
RELEASE := $(TOOL_BIN)/release

# go tool -n builds NAME when Go's cache lacks it and prints its path there.
# A first build compiles the whole tool: one line says so before it starts.
$(TOOL_BIN)/%: machinery/tools/%/go.mod machinery/tools/%/go.sum
	@echo "$*: building it once, as machinery/tools/$*/go.mod pins it, into Go's build cache ($$(go env GOCACHE)) and .cache/bin; later runs reuse it"
	@mkdir -p $(@D) && built=$$(go -C machinery/tools/$* tool -n $*) && cp "$$built" $@.tmp && mv -f $@.tmp $@

$(RELEASE): machinery/release/go.mod machinery/release/go.sum $(filter-out %_test.go,$(wildcard machinery/release/*.go))
	@echo "release: building machinery/release once into .cache/bin; later runs reuse it until it changes"
	@cd machinery/release && CGO_ENABLED=0 go build -trimpath -o $@ .

# Where `docker` is Podman's CLI, its build writes Docker's image format:
# in its default, OCI's, the HEALTHCHECK is dropped.
PODMAN_FORMAT = $(if $(findstring podman,$(shell docker --version 2>/dev/null)),--format docker)

ARCHS := $(PLATFORMS:linux/%=%)
# Every name docker-build gives an image for $(TAG), and the names a pull of
# what docker-push pushed brings.
IMAGE_REFS = $(foreach t,$(TAG) $(ARCHS:%=$(TAG)-%),$(IMAGE):$(t) $(REGISTRY)/$(IMAGE):$(t))

# docker-push's recipes set $$dir (a temporary folder), $$insecure (from
# release registry, for cosign's flags) and $$ref (what was pushed, by
# digest). No transparency log is written: docs/image.md says what one adds.
COSIGN_KEYED = --key $(SIGNING_KEY) --tlog-upload=false --yes \
	--allow-http-registry=$$insecure --allow-insecure-registry=$$insecure
# The signer's public key, from SIGNING_KEY itself (a file or a KMS URI), into "$$dir".
SIGNER_PUB = out=$$($(COSIGN) public-key --key $(SIGNING_KEY) --outfile "$$dir/signer.pub" 2>&1) || \
	{ echo "$$out"; echo "cosign cannot read SIGNING_KEY=$(SIGNING_KEY): is COSIGN_PASSWORD its password?"; exit 1; }
# Sign $$ref for $(TAG), attest "$$dir/sbom.json" (--replace: pushing again
# leaves one, not one more), then point $(TAG) at it, and print it.
SIGN_ATTEST_TAG = echo "pushed $$ref"; \
	$(COSIGN) sign $(COSIGN_KEYED) -a tag=$(TAG) "$$ref"; \
	$(COSIGN) attest $(COSIGN_KEYED) --replace --type cyclonedx --predicate "$$dir/sbom.json" "$$ref"; \
	$(RELEASE) tag "$$ref" $(TAG); echo "tagged $(REGISTRY)/$(IMAGE):$(TAG)"; \
	echo "$$ref"

.PHONY: docker-push-index docker-clean registry-check signing-key kubectl-check cluster-check

# With PLATFORMS: each platform's image as $(TAG)-<arch>, then one index of
# them, signed and attested with an SBOM that lists its images (release
# index), as the cluster's admission checks the digest a pod names: the index's.
docker-push-index: registry-check signing-key $(RELEASE)
	set -e; for arch in $(ARCHS); do \
		$(MAKE) docker-push PLATFORMS= GOARCH=$$arch TAG=$(TAG)-$$arch; \
	done
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; $(SIGNER_PUB); \
	insecure=$$($(RELEASE) registry -q $(REGISTRY_HOST)); \
	ref=$$($(RELEASE) index -cosign $(COSIGN) -key "$$dir/signer.pub" $(VERIFY_KEY:%=-key %) -sbom "$$dir/sbom.json" \
		$(REGISTRY)/$(IMAGE):$(TAG) $(ARCHS:%=$(REGISTRY)/$(IMAGE):$(TAG)-%)); \
	$(SIGN_ATTEST_TAG)

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

# ---- kubernetes-apply's overlay and checks ----
KUBECTL_CTX = $(KUBECTL)$(if $(KUBE_CONTEXT), --context $(KUBE_CONTEXT))

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
# When the cluster runs policy-controller (docs/kubernetes.md#admission): the
# two ClusterImagePolicies release policy writes, applied and Ready (only a
# running webhook makes them Ready), then the namespace's opt-in in the
# overlay, so no pod of hello's is checked before its policies are in force.
# Without that API, one line says so, and the apply goes on.
POLICY_OPT_IN = $(HAS_ADMISSION) && if [ "$$admission" = yes ]; then \
		$(RELEASE) policy -name $(NAMESPACE) $(VERIFY_KEY:%=-key %) $(REGISTRY)/$(IMAGE) >"$$dir/policy.json" && \
		$(KUBECTL_CTX) apply -f "$$dir/policy.json" && \
		{ $(KUBECTL_CTX) wait --for=condition=Ready --timeout=1m $(POLICIES) || \
			{ echo "the image policies are not Ready: does policy-controller's webhook run? (kubectl -n cosign-system get pods)"; exit 1; }; } && \
		echo "$$OPT_IN" >>"$$dir/kustomization.yaml"; \
	else echo "this cluster does not enforce signatures (it serves no $(ADMISSION_API)): only make checked this image; install sigstore policy-controller to have every pod checked (docs/kubernetes.md\#admission)"; fi

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
