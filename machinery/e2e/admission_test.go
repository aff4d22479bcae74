package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Where the built-in cluster runs sigstore policy-controller, as its
// manifests (config/) put it.
const (
	policyNamespace = "cosign-system"
	// The API a cluster serves once policy-controller is installed; make
	// kubernetes-apply looks for it too.
	admissionAPI = "policy.sigstore.dev/v1beta1"
)

// The webhook configurations policy-controller ships empty and fills in once
// it runs: the images' check (pods and what makes pods) and its policies' own.
var webhookConfigurations = []string{
	"validatingwebhookconfiguration/policy.sigstore.dev",
	"mutatingwebhookconfiguration/policy.sigstore.dev",
	"validatingwebhookconfiguration/validating.clusterimagepolicy.sigstore.dev",
	"mutatingwebhookconfiguration/defaulting.clusterimagepolicy.sigstore.dev",
}

// startPolicyController runs sigstore policy-controller (bin, the webhook
// make built at version, and config, the manifests its module ships) as the
// cluster's admission webhook, the way a k3s user installs it: kubectl apply
// -k of an overlay on its config/ that adds the Deployment (webhook.yaml,
// which upstream's release resolves on its own), names the image by digest
// and passes --disable-tuf (it would fetch Sigstore's TUF roots at start,
// which no key authority needs). The image is built here FROM scratch. One
// more container in its pod, a relay, makes the suite's registry answer there
// under the name the images carry (relay/main.go says why). It returns once
// the webhook is Ready and its four configurations have a CA and rules:
// before that, nothing is checked.
func (c *cluster) startPolicyController(ctx context.Context, kubeconfig, version, bin, config string) {
	start := time.Now()
	relayBin := stateDir + "/bin/relay"
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", relayBin, "./relay") // #nosec G204 -- the suite's own command
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		c.t.Fatalf("go build ./relay: %v: %s", err, out)
	}
	_, port, _ := strings.Cut(c.registry, ":")
	pid := c.start("relay", nil, relayBin, nodeIP+":"+port, c.registry)
	c.waitFor(ctx, "the registry at the node IP, through the relay", 30*time.Second, func() error {
		return httpOK("http://" + nodeIP + ":" + port + "/v2/")
	})
	if got := listening(pid); len(got) != 1 || got[0] != nodeIP+":"+port {
		c.t.Fatalf("the relay listens on %v, want %s:%s only", got, nodeIP, port)
	}
	relay := pushGoImage(ctx, c.t, c.registry, goImage{ref: "hello-e2e-relay:1", dir: ".", pkg: "./relay", user: "65532:65532"})
	webhook := pushGoImage(ctx, c.t, c.registry, goImage{ref: "sigstore/policy-controller:" + version, dir: ".", bin: bin, user: "65532:65532"})

	dir := stateDir + "/policy-controller"
	must(c.t, os.MkdirAll(dir, 0o755)) // #nosec G301 -- manifests, nothing secret
	// A copy, as kustomize reads no file outside the overlay's folder.
	cp := exec.CommandContext(ctx, "cp", "-R", config, dir+"/config") // #nosec G204 -- the folder make made
	if out, err := cp.CombinedOutput(); err != nil {
		c.t.Fatalf("cp %s: %v: %s", config, err, out)
	}
	// The relay in the webhook's pod: its 127.0.0.1:PORT to the node's relay.
	// Restricted as the webhook is, as uid 65532 (the image's USER).
	overlay := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [config, config/webhook.yaml]
images:
  - {name: "ko://github.com/sigstore/policy-controller/cmd/webhook", newName: "%[1]s/sigstore/policy-controller", digest: "%[2]s"}
patches:
  - target: {kind: Deployment, name: webhook}
    patch: |
      - {op: add, path: /spec/template/spec/containers/0/args, value: [--disable-tuf]}
      - op: add
        path: /spec/template/spec/containers/-
        value:
          name: registry-relay
          image: "%[1]s/hello-e2e-relay@%[3]s"
          args: ["%[1]s", "%[4]s:%[5]s"]
          resources: {requests: {cpu: 5m, memory: 8Mi}, limits: {cpu: 200m, memory: 32Mi}}
          securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
`, c.registry, webhook, relay, nodeIP, port)
	must(c.t, os.WriteFile(dir+"/kustomization.yaml", []byte(overlay), 0o600)) // #nosec G303 -- stateDir is the cluster's own folder, made by startCluster
	if err := c.kubectlQuiet(ctx, kubeconfig, "apply", "-k", dir); err != nil {
		c.t.Fatal(err)
	}
	c.waitFor(ctx, "policy-controller's webhook Ready", 3*time.Minute, func() error {
		return c.kubectlQuiet(ctx, kubeconfig, "-n", policyNamespace, "rollout", "status", "deployment/webhook", "--timeout=2s")
	})
	c.waitFor(ctx, "its webhook configurations with a CA and rules", time.Minute, func() error {
		for _, wc := range webhookConfigurations {
			// #nosec G204 -- the suite's kubectl, the names above
			out, err := exec.CommandContext(ctx, c.kubectl, "--kubeconfig", kubeconfig, "get", wc, "-o",
				"jsonpath={.webhooks[0].clientConfig.caBundle} {.webhooks[0].rules[0].operations}").Output()
			if ca, rules, _ := strings.Cut(string(out), " "); err != nil || ca == "" || rules == "" {
				return fmt.Errorf("%s: %v, CA %d bytes, rules %q", wc, err, len(ca), rules)
			}
		}
		return nil
	})
	c.t.Logf("cluster: sigstore policy-controller %s is the admission webhook (%s), ready after %s", version, policyNamespace, since(start))
}

// hasAdmission says whether the cluster serves policy-controller's API; the
// built-in cluster, which runs it, must.
func (w *walk) hasAdmission() bool {
	w.t.Helper()
	has := slices.Contains(strings.Fields(w.kubectlRun("api-versions")), admissionAPI)
	if !has && w.builtIn {
		w.t.Fatalf("the built-in cluster serves no %s: policy-controller is not installed", admissionAPI)
	}
	return has
}

// checkAdmissionApplied asserts what make kubernetes-apply made for
// admission: the namespace opted in, and its two image policies Ready; on a
// cluster without policy-controller, the one line that says the cluster does
// not enforce signatures.
func (w *walk) checkAdmissionApplied(out string) {
	w.t.Helper()
	const notEnforced = "this cluster does not enforce signatures"
	if !w.hasAdmission() {
		if strings.Count(out, notEnforced) != 1 {
			w.t.Errorf("make kubernetes-apply on a cluster without %s: want one line saying %q:\n%s", admissionAPI, notEnforced, indent(out))
		}
		w.t.Logf("admission: SKIPPED: this cluster serves no %s (no policy-controller)", admissionAPI)
		return
	}
	if strings.Contains(out, notEnforced) {
		w.t.Errorf("make kubernetes-apply said %q on a cluster that runs policy-controller", notEnforced)
	}
	if got := w.kubectlRun("get", "namespace", namespace, "-o", `jsonpath={.metadata.labels.policy\.sigstore\.dev/include}`); got != "true" {
		w.t.Errorf("namespace %s: label policy.sigstore.dev/include = %q, want true (opted in)", namespace, got)
	}
	for _, p := range w.policies() {
		if got := w.kubectlRun("get", p, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`); got != "True" {
			w.t.Errorf("%s: Ready %q, want True", p, got)
		}
	}
	w.t.Logf("admission: namespace %s opted in; %s Ready", namespace, strings.Join(w.policies(), ", "))
}

// policies are the image policies make kubernetes-apply names for the namespace.
func (w *walk) policies() []string {
	return []string{"clusterimagepolicy/" + namespace + "-signed", "clusterimagepolicy/" + namespace + "-sbom"}
}

// A refusal is an image the cluster must not run in the namespace, and what
// policy-controller's message must say.
type refusal struct {
	what, image string
	want        []string // in the message, each
	not         string   // not in it: the other policy passed; "" for none
}

// checkRefusals asserts that the API server refuses, for each image, a pod
// and a Deployment update (kubectl set image) in the namespace, with
// policy-controller's reason, and that the Deployment is left as it was. The
// pods meet the restricted standard, so that only the image is wrong.
func (w *walk) checkRefusals(refusals []refusal, running string) {
	w.t.Helper()
	generation := w.get("deployment", "hello", "{.metadata.generation}")
	for i, r := range refusals {
		pod := fmt.Sprintf("refused-%d", i)
		out, err := w.kubectlInOut(restrictedPod(pod, r.image), "create", "-f", "-")
		if err == nil {
			w.kubectlRun("delete", "pod", pod, "--wait=false")
		}
		w.checkRefused("a pod of "+r.what, out, err, r)
		out, err = w.kubectlOut("set", "image", "deployment/hello", "hello="+r.image)
		w.checkRefused("kubectl set image to "+r.what, out, err, r)
	}
	if g := w.get("deployment", "hello", "{.metadata.generation}"); g != generation {
		w.t.Errorf("every update was to be refused, but the Deployment went from generation %s to %s", generation, g)
	}
	w.checkPodImages(running)
}

// checkRefused wants out, err to be policy-controller's refusal of r, and
// prints it on one line.
func (w *walk) checkRefused(what, out string, err error, r refusal) {
	w.t.Helper()
	const denied = `admission webhook "policy.sigstore.dev" denied the request`
	msg := strings.Join(strings.Fields(out), " ")
	if i := strings.Index(msg, denied); i >= 0 {
		msg = msg[i:]
	}
	ok := err != nil && strings.HasPrefix(msg, denied) && (r.not == "" || !strings.Contains(msg, r.not))
	for _, want := range r.want {
		ok = ok && strings.Contains(msg, want)
	}
	if !ok {
		w.t.Errorf("admission: %s (%s): %v %q; want refused by policy-controller saying %q", what, r.image, err, msg, r.want)
		return
	}
	w.t.Logf("admission: refused %s: %s", what, msg)
}

// restrictedPod is a pod of image that meets the restricted standard.
func restrictedPod(name, image string) string {
	return fmt.Sprintf(`{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": %q},
 "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
  "containers": [{"name": "hello", "image": %q,
   "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}`, name, image)
}

// checkUndoUnsigned makes a revision of the Deployment that runs an unsigned
// image, as one made before the namespace was opted in (the label taken off
// for it), rolls forward to the signed tag with make kubernetes-apply (which
// opts the namespace in again), and then wants kubectl rollout undo, back to
// the unsigned revision, refused.
func (w *walk) checkUndoUnsigned(unsigned, tag, digest string) {
	w.t.Helper()
	w.kubectlRun("label", "namespace", namespace, "policy.sigstore.dev/include-")
	w.kubectlRun("set", "image", "deployment/hello", "hello="+unsigned)
	w.kubectlRun("rollout", "status", "deployment/hello", "--timeout=3m")
	w.waitOldPodsGone()
	w.t.Logf("admission: with the namespace opted out, the Deployment rolled out the unsigned %s", unsigned)
	w.make("kubernetes-apply", "TAG="+tag)
	w.waitOldPodsGone()
	w.checkPodImages(digest)
	generation := w.get("deployment", "hello", "{.metadata.generation}")
	out, err := w.kubectlOut("rollout", "undo", "deployment/hello")
	w.checkRefused("kubectl rollout undo to the unsigned revision", out, err, refusal{image: unsigned, want: []string{"no signatures found"}})
	if g := w.get("deployment", "hello", "{.metadata.generation}"); g != generation {
		w.t.Errorf("kubectl rollout undo was to be refused, but the Deployment went from generation %s to %s", generation, g)
	}
	w.checkPodImages(digest)
}

// checkFailClosed stops the webhook (its Deployment scaled to 0, until its
// pod is gone) and wants a new pod of hello's own signed image refused,
// since no webhook answers, while the running pods serve url without a
// failed request; then starts it again and waits until it admits that pod.
func (w *walk) checkFailClosed(url, digest string) {
	w.t.Helper()
	ref := w.registry + "/" + image + "@" + digest
	w.underLoad(url, loadMaxTime, func() {
		start := time.Now()
		w.kubectlRun("-n", policyNamespace, "scale", "deployment/webhook", "--replicas=0")
		w.kubectlRun("-n", policyNamespace, "wait", "--for=delete", "pod", "-l", "role=webhook", "--timeout=5m")
		w.t.Logf("admission: the webhook is stopped (0 pods) after %s", since(start))
		out, err := w.kubectlInOut(restrictedPod("while-stopped", ref), "create", "-f", "-")
		const failed = `failed calling webhook "policy.sigstore.dev"`
		msg := strings.Join(strings.Fields(out), " ")
		if i := strings.Index(msg, failed); i >= 0 {
			msg = msg[i:]
		}
		if err == nil || !strings.HasPrefix(msg, failed) {
			if err == nil {
				w.kubectlRun("delete", "pod", "while-stopped", "--wait=false")
			}
			w.t.Errorf("admission: with the webhook stopped, a pod of %s: %v %q; want refused, failing closed", ref, err, msg)
		} else {
			w.t.Logf("admission: with the webhook stopped, refused a pod of hello's own signed image: %s", msg)
		}
		w.kubectlRun("-n", policyNamespace, "scale", "deployment/webhook", "--replicas=1")
		w.kubectlRun("-n", policyNamespace, "rollout", "status", "deployment/webhook", "--timeout=3m")
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
			out, err := w.kubectlInOut(restrictedPod("after-restart", ref), "create", "-f", "-", "--dry-run=server")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				w.t.Fatalf("admission: the webhook is back, but a pod of %s: %v %s", ref, err, out)
			}
		}
		w.t.Logf("admission: the webhook is back and admits hello's image, %s after it was stopped", since(start))
	})
}

// kubectlInOut runs kubectl with stdin as its input and returns its output
// and error.
func (w *walk) kubectlInOut(stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(w.ctx, w.kubectl, w.kubectlArgs(args...)...) // #nosec G204 -- the suite's kubectl
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// signOnly pushes a variant of the local image from (another digest, by a
// label) as to, and signs it for tag with key as make docker-push does, but
// attests nothing. It returns the digest.
func (w *walk) signOnly(cosign, key, from, to, tag string) string {
	w.t.Helper()
	cmd := exec.CommandContext(w.ctx, "docker", "build", "-q", "-t", to, "-f", "-", w.t.TempDir()) // #nosec G204 -- the suite's own image names
	cmd.Stdin = strings.NewReader("FROM " + from + "\nLABEL variant=unattested\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		w.t.Fatalf("docker build %s: %v\n%s", to, err, out)
	}
	w.docker("push", to)
	// RepoDigests name the repository: to up to the tag's colon, not the port's.
	repo := to[:strings.LastIndex(to, ":")]
	out, err := exec.CommandContext(w.ctx, "docker", "image", "inspect", "-f", "{{range .RepoDigests}}{{println .}}{{end}}", to).Output() // #nosec G204 -- the image just pushed
	var digest string
	for _, line := range strings.Fields(string(out)) {
		if d, ok := strings.CutPrefix(line, repo+"@"); ok {
			digest = d
		}
	}
	if err != nil || digest == "" {
		w.t.Fatalf("docker pushed no digest for %s (%v)", to, err)
	}
	sign := exec.CommandContext(w.ctx, cosign, "sign", "--key", key, "--tlog-upload=false", "--yes", "-a", "tag="+tag, repo+"@"+digest) // #nosec G204 -- the pinned cosign, the suite's image
	sign.Env = append(os.Environ(), "COSIGN_PASSWORD=")
	if out, err := sign.CombinedOutput(); err != nil {
		w.t.Fatalf("cosign sign %s: %v\n%s", to, err, out)
	}
	return digest
}

// cosignCopy copies an image with its signature and attestation, as cosign
// copy does for anyone who may push.
func (w *walk) cosignCopy(cosign, from, to string) {
	w.t.Helper()
	if out, err := exec.CommandContext(w.ctx, cosign, "copy", from, to).CombinedOutput(); err != nil { // #nosec G204 -- the pinned cosign, the suite's images
		w.t.Fatalf("cosign copy %s %s: %v\n%s", from, to, err, out)
	}
}
