// Package e2e proves the whole walk of hello on a real Kubernetes: build,
// push, deploy, serve, roll with zero failed requests, delete.
//
// By default it runs one k3s server (cluster_test.go), the Kubernetes the
// seed deploys to, with a registry on 127.0.0.1, and removes both afterwards,
// also when a step fails. Traefik serves the Ingress there, as in k3s
// (traefik_test.go), and the walk's traffic goes through it too. With
// KUBECONFIG and E2E_REGISTRY (make e2e KUBECONFIG=... REGISTRY=...) it runs
// against that cluster instead and starts and stops no cluster; E2E_HOST sets
// the Ingress's host and E2E_INGRESS_URL names the cluster's own ingress
// (INGRESS_URL=http://<node>:80 for k3s's Traefik). Run it with `make e2e`.
package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	namespace = "hello-e2e"
	image     = "hello-e2e" // the IMAGE knob: a name no one else uses in the shared Docker engine
	greeting  = "Hello, TutorialHero!\n"
	host      = "hello-e2e.localhost" // the Ingress's host unless E2E_HOST says otherwise

	// The request streams during a rollout: steady, and bounded in count and time.
	loadMaxTime = 3 * time.Minute
)

// client gives up on a request after 2 s, which no answer here should take.
var client = &http.Client{Timeout: 2 * time.Second}

// walk is one run of the suite against one cluster.
type walk struct {
	t          *testing.T
	ctx        context.Context
	kubectl    string
	kubeconfig string
	context    string // the kubectl context; "" for the kubeconfig's current one
	registry   string
	host       string        // the Ingress's host (make's HOST)
	ingress    ingressClient // the cluster's ingress controller; no url: not checked
	repo       string        // the repository root, where make runs
	signingKey string        // docker-push's SIGNING_KEY, made by its first push
	cosign     string        // the pinned cosign make built, for what the suite signs itself
	builtIn    bool          // the suite's own cluster, which runs policy-controller
	steps      int
	timings    []string
}

func TestE2E(t *testing.T) {
	w := setup(t)
	stamp := time.Now().UTC().Format("20060102-150405")
	tag1, tag2 := "e2e-"+stamp+"-a", "e2e-"+stamp+"-b"
	unsigned, otherKey := "e2e-"+stamp+"-unsigned", "e2e-"+stamp+"-other-key"
	unattested, copied, canary := "e2e-"+stamp+"-unattested", "e2e-"+stamp+"-copied", "e2e-"+stamp+"-canary"
	multi, platforms := "e2e-"+stamp+"-index", "PLATFORMS=linux/amd64 linux/arm64"
	t.Cleanup(func() {
		w.ctx = context.WithoutCancel(w.ctx) // clean up also after a Ctrl-C
		for _, tag := range []string{tag1, tag2, unsigned, otherKey, unattested} {
			w.make("docker-clean", "TAG="+tag)
		}
		w.make("docker-clean", "IMAGE="+image+"-canary", "TAG="+canary)
		w.make("docker-clean", "TAG="+multi, platforms)
	})

	var pushed1, pushed2 string // the digests docker-push printed
	w.step("build and push "+tag1, func() { pushed1 = w.push(tag1) })
	w.step("kubernetes-apply "+tag1, func() {
		if out, err := w.makeOut("kubernetes-apply", "TAG=latest"); err == nil || !strings.Contains(out, "never latest") {
			t.Errorf("make kubernetes-apply TAG=latest: %v, want refused with a reason", err)
		}
		out, err := w.makeOut("kubernetes-apply", "TAG="+tag1)
		if err != nil {
			t.Fatalf("make kubernetes-apply TAG=%s: %v", tag1, err)
		}
		t.Logf("make kubernetes-apply TAG=%s:\n%s", tag1, indent(out))
		w.checkAdmissionApplied(out)
		w.checkDeployment(tag1, pushed1)
		w.checkPodImages(pushed1)
		// The pods are too new for metrics: the autoscaler ran them up to
		// minReplicas without.
		t.Logf("kubectl get hpa:\n%s", indent(w.kubectlRun("get", "horizontalpodautoscaler", "hello")))
		w.checkRuntimeLimits()
		w.checkPodSecurity(pushed1)
	})
	var direct, url string // the Service's ClusterIP, and the greeting there
	w.step("serve", func() {
		direct = "http://" + w.get("service", "hello", "{.spec.clusterIP}")
		url = direct + "/TutorialHero"
		// kube-proxy learns of the new endpoints a moment after the rollout.
		start := time.Now()
		for err := greet(client, url); err != nil; err = greet(client, url) {
			if time.Since(start) > 30*time.Second {
				t.Fatalf("through the Service's ClusterIP: %v (the ClusterIP must be reachable from this machine: run the suite on a node)", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("the Service answered after %s", since(start))
		w.checkPortForward()
		if got, want := w.get("ingress", "hello", "{.spec.ingressClassName} {.spec.rules[0].host}"), "traefik "+w.host; got != want {
			t.Errorf("Ingress class and host = %q, want %q", got, want)
		}
	})
	w.step("serve through Traefik", func() {
		if w.ingress.url == "" {
			t.Logf("through Traefik: SKIPPED: INGRESS_URL is unset; make e2e ... INGRESS_URL=http://<node>:80 sends the walk through the cluster's ingress")
			return
		}
		w.checkIngress(direct)
	})
	w.step("NetworkPolicy: hello's pods reach nothing, take their port only", w.checkNetworkPolicy)
	w.step("rollout restart under load", func() {
		w.underLoad(url, loadMaxTime, func() {
			w.kubectlRun("rollout", "restart", "deployment/hello")
			w.kubectlRun("rollout", "status", "deployment/hello", "--timeout=3m")
		})
	})
	w.step("build and push "+tag2, func() { pushed2 = w.push(tag2) })
	w.step("image update to "+tag2+" under load", func() {
		if pushed2 == pushed1 {
			t.Fatalf("%s and %s pushed one digest %s: the update would change nothing", tag1, tag2, pushed1)
		}
		w.underLoad(url, loadMaxTime, func() { w.make("kubernetes-apply", "TAG="+tag2) })
		w.checkPodImages(pushed2)
	})
	w.step("kubernetes-apply refuses what it cannot verify", func() {
		w.docker("tag", image+":"+tag2, w.registry+"/"+image+":"+unsigned)
		w.docker("push", w.registry+"/"+image+":"+unsigned)
		w.make("go-build", "docker-build", "docker-push", "TAG="+otherKey, "VERSION="+otherKey,
			"SIGNING_KEY="+filepath.Join(t.TempDir(), "other.key"))
		w.moveTag(pushed2, tag1) // tag1 now names tag2's image, signed for tag2
		for _, tc := range []struct{ tag, why string }{
			{unsigned, "it is unsigned"},
			{otherKey, "no signature verifies with the key"},
			{tag1, "it was signed as tag " + tag2 + ", not " + tag1 + ": the tag was moved"},
		} {
			generation := w.get("deployment", "hello", "{.metadata.generation}")
			out, err := w.makeOut("kubernetes-apply", "TAG="+tc.tag)
			if err == nil || !strings.Contains(out, tc.why) {
				t.Errorf("make kubernetes-apply TAG=%s: %v, want refused saying %q", tc.tag, err, tc.why)
			}
			if g := w.get("deployment", "hello", "{.metadata.generation}"); g != generation {
				t.Errorf("make kubernetes-apply TAG=%s was refused, but the Deployment went from generation %s to %s", tc.tag, generation, g)
			}
		}
		w.checkPodImages(pushed2)
	})
	w.step("the cluster refuses what the key did not sign", func() {
		if !w.hasAdmission() {
			t.Logf("admission: SKIPPED: this cluster serves no %s (no policy-controller)", admissionAPI)
			return
		}
		repo := w.registry + "/" + image
		w.signOnly(w.cosign, w.signingKey, image+":"+tag2, repo+":"+unattested, unattested)
		// Signed and attested by the walk's key, as make docker-push does,
		// but in another repository; then copied here with both.
		w.make("go-build", "docker-build", "docker-push", "IMAGE="+image+"-canary", "TAG="+canary, "VERSION="+canary)
		w.cosignCopy(w.cosign, repo+"-canary:"+canary, repo+":"+copied)
		w.checkRefusals([]refusal{
			{what: "an unsigned image", image: repo + ":" + unsigned, want: []string{"failed policy: " + namespace + "-signed", "no signatures found"}},
			{what: "an image signed by another key", image: repo + ":" + otherKey, want: []string{"failed policy: " + namespace + "-signed", "no matching signatures"}},
			{what: "a signed image with no SBOM attestation", image: repo + ":" + unattested,
				want: []string{"failed policy: " + namespace + "-sbom", "no matching attestations"}, not: "failed policy: " + namespace + "-signed"},
			{what: "an image of another repository, signed and attested by the key", image: repo + "-canary:" + canary, want: []string{"no matching policies"}},
			{what: "that image copied here with its signature and attestation", image: repo + ":" + copied,
				want: []string{"failed policy: " + namespace + "-sbom", "failed evaluating cue policy"}, not: "failed policy: " + namespace + "-signed"},
		}, pushed2)
		// hello's own images pass: the Deployment's, and an index (its pod
		// names the index's digest, whose attestation lists its images).
		index := w.push(multi, platforms)
		if out, err := w.kubectlInOut(restrictedPod("index", repo+"@"+index), "create", "-f", "-", "--dry-run=server"); err != nil {
			t.Errorf("admission: a pod of hello's own index %s@%s: %v %s; want admitted", repo, index, err, out)
		} else {
			t.Logf("admission: admitted a pod of hello's own index (linux/amd64, linux/arm64) %s@%s", repo, index)
		}
	})
	w.step("the cluster refuses a rollout undo to an unsigned revision", func() {
		if !w.hasAdmission() {
			t.Logf("admission: SKIPPED: this cluster serves no %s (no policy-controller)", admissionAPI)
			return
		}
		w.checkUndoUnsigned(w.registry+"/"+image+":"+unsigned, tag2, pushed2)
	})
	w.step("admission fails closed: webhook stopped, no new pod, no failed request", func() {
		if !w.builtIn {
			t.Logf("admission: SKIPPED on your cluster: stopping its webhook would stop every opted-in namespace's pods from starting")
			return
		}
		w.checkFailClosed(url, pushed2)
	})
	w.step("autoscale under load", func() { w.autoscale(url, tag2) })
	w.step("kubernetes-delete", func() {
		w.make("kubernetes-delete")
		if left := w.kubectlRun("get", "all,ingress,poddisruptionbudget,configmap,secret,serviceaccount", "-o", "name"); left != "" {
			t.Errorf("after kubernetes-delete, namespace %s holds:\n%s", namespace, left)
		}
		if out, err := w.kubectlOut("get", "namespace", namespace); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("after kubernetes-delete: kubectl get namespace %s: %v %q, want NotFound", namespace, err, out)
		}
		if w.hasAdmission() {
			for _, p := range w.policies() {
				if out, err := w.kubectlOut("get", p); err == nil || !strings.Contains(out, "NotFound") {
					t.Errorf("after kubernetes-delete: kubectl get %s: %v %q, want NotFound", p, err, out)
				}
			}
		}
		w.make("kubernetes-delete") // nothing there: must still succeed
	})
}

// setup returns a walk on the built-in cluster, or on the user's when
// KUBECONFIG is set. Missing prerequisites skip the suite, or fail it under
// CI=true, with what to install or set.
func setup(t *testing.T) *walk {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	t.Cleanup(stop)
	if deadline, ok := t.Deadline(); ok {
		// Leave time for the teardown before go test's own timeout kills
		// the test without running any cleanup.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-2*time.Minute))
		t.Cleanup(cancel)
	}
	repo, err := filepath.Abs("../..")
	must(t, err)
	w := &walk{t: t, ctx: ctx, repo: repo, host: host, signingKey: filepath.Join(t.TempDir(), "cosign.key"), cosign: os.Getenv("COSIGN_BIN")}
	if w.cosign == "" {
		require(t, []string{"COSIGN_BIN unset: run the suite with make e2e, which builds cosign and sets it"})
	}
	t.Cleanup(func() {
		if len(w.timings) > 0 {
			t.Logf("step timings:\n  %s", strings.Join(w.timings, "\n  "))
		}
	})

	if kubeconfig := os.Getenv("KUBECONFIG"); kubeconfig != "" {
		w.kubeconfig, w.registry, w.context = kubeconfig, os.Getenv("E2E_REGISTRY"), os.Getenv("KUBE_CONTEXT")
		w.host = cmp.Or(os.Getenv("E2E_HOST"), host)
		w.ingress = ingressClient{client: keepAlive(), url: os.Getenv("E2E_INGRESS_URL"), host: w.host}
		if w.registry == "" {
			t.Fatal("KUBECONFIG names a cluster: set REGISTRY too, to a registry that cluster pulls from (make e2e KUBECONFIG=... REGISTRY=host:port)")
		}
		w.kubectl = cmp.Or(os.Getenv("E2E_KUBECTL"), "kubectl")
		require(t, prerequisites(map[string]string{
			w.kubectl: "install kubectl or set KUBECTL", "docker": "install docker.io (.ci/dockerd)", "make": "install make",
		}))
		if _, err := w.kubectlOut("get", "namespace", namespace); err == nil {
			t.Fatalf("namespace %s exists in that cluster: the suite deploys there and deletes it; remove it first", namespace)
		}
		t.Logf("existing cluster: KUBECONFIG=%s, registry %s, host %s, ingress %q", kubeconfig, w.registry, w.host, w.ingress.url)
		t.Cleanup(func() {
			if t.Failed() {
				w.ctx = context.WithoutCancel(w.ctx)
				w.make("kubernetes-delete")
			}
		})
		return w
	}

	tools := clusterTools{k3s: os.Getenv("K3S"), template: os.Getenv("K3S_TEMPLATE"), registry: os.Getenv("REGISTRY_BIN"), traefik: os.Getenv("TRAEFIK_BIN"),
		policyController: os.Getenv("POLICY_CONTROLLER_BIN"), policyVersion: os.Getenv("POLICY_CONTROLLER_VERSION"), policyConfig: os.Getenv("POLICY_CONTROLLER_CONFIG")}
	if tools.k3s == "" || tools.template == "" || tools.registry == "" || tools.traefik == "" ||
		tools.policyController == "" || tools.policyVersion == "" || tools.policyConfig == "" {
		require(t, []string{"K3S, K3S_TEMPLATE, REGISTRY_BIN, TRAEFIK_BIN or POLICY_CONTROLLER_BIN, _VERSION, _CONFIG unset: run the suite with make e2e, which builds k3s, its containerd template, the registry, Traefik and policy-controller and sets them"})
	}
	needs := map[string]string{
		tools.k3s:              "run the suite with make e2e: it builds k3s into the tools cache, or set K3S to a k3s binary",
		tools.registry:         "run the suite with make e2e: it installs the registry into REGISTRY_BIN",
		tools.traefik:          "run the suite with make e2e: it builds Traefik into TRAEFIK_BIN",
		tools.policyController: "run the suite with make e2e: it builds policy-controller into POLICY_CONTROLLER_BIN",
		"go":                   "install Go",
	}
	for pkg, cmds := range map[string][]string{ // Debian's packages
		"runc":                        {"runc"},
		"containernetworking-plugins": {cniBinDir + "/bridge", cniBinDir + "/host-local", cniBinDir + "/loopback"},
		"iptables":                    {"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"},
		"ipset":                       {"ipset"},
		"iproute2":                    {"ip", "ss"},
		"conntrack":                   {"conntrack"},
		"docker.io":                   {"docker"},
		"make":                        {"make"},
	} {
		for _, cmd := range cmds {
			needs[cmd] = "apt-get install " + pkg
		}
	}
	missing := prerequisites(needs)
	if !exists(tools.template) {
		missing = append(missing, tools.template+" missing: run the suite with make e2e: it makes the containerd template from K3S_SOURCE")
	}
	if !exists(tools.policyConfig + "/kustomization.yaml") {
		missing = append(missing, tools.policyConfig+" missing: run the suite with make e2e: it copies policy-controller's manifests there")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "the built-in cluster needs root (mounts, links, iptables, ipsets)")
	}
	require(t, missing)
	if err := exec.Command("docker", "info").Run(); err != nil {
		require(t, []string{"no Docker engine answers `docker info`: start one (.ci/dockerd)"})
	}
	t.Setenv("KUBECACHEDIR", stateDir+"/kubectl-cache") // not ~/.kube/cache
	start := time.Now()
	var ingressURL string
	w.kubeconfig, w.registry, ingressURL = startCluster(ctx, t, tools)
	w.builtIn = true
	w.kubectl = stateDir + "/bin/kubectl" // k3s's own
	w.ingress = ingressClient{client: keepAlive(), url: ingressURL, host: w.host}
	w.context = "default" // the one context of k3s's kubeconfig, named to exercise KUBE_CONTEXT
	w.timings = append(w.timings, fmt.Sprintf("0 %-50s %s", "start the cluster", since(start)))
	return w
}

// prerequisites lists the commands and files in needs that are missing, with
// how to get them.
func prerequisites(needs map[string]string) []string {
	var missing []string
	for cmd, how := range needs {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, fmt.Sprintf("%s missing: %s", cmd, how))
		}
	}
	slices.Sort(missing)
	return missing
}

func require(t *testing.T, missing []string) {
	t.Helper()
	if len(missing) == 0 {
		return
	}
	why := "prerequisites missing:\n  " + strings.Join(missing, "\n  ")
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip("SKIPPED, not run: " + why + "\n(under CI=true this fails)")
}

// step runs one step of the walk, logs its time and stops the walk when it
// failed.
func (w *walk) step(name string, run func()) {
	w.t.Helper()
	start := time.Now()
	w.steps++
	w.t.Logf("step %d: %s", w.steps, name)
	run()
	w.timings = append(w.timings, fmt.Sprintf("%d %-50s %s", w.steps, name, since(start)))
	w.t.Logf("step %d: %s: done in %s", w.steps, name, since(start))
	if w.t.Failed() {
		w.t.FailNow()
	}
}

// make runs a target of the repository's Makefile on the walk's cluster,
// registry and namespace, and fails the test if it fails.
func (w *walk) make(args ...string) {
	w.t.Helper()
	if out, err := w.makeOut(args...); err != nil {
		w.t.Fatalf("make %s: %v", strings.Join(args, " "), err)
	} else {
		w.t.Logf("make %s:\n%s", strings.Join(args, " "), indent(out))
	}
}

func (w *walk) makeOut(args ...string) (string, error) {
	// #nosec G204 -- the suite exists to run the Makefile's targets
	cmd := exec.CommandContext(w.ctx, "make", append([]string{"-C", w.repo, "--no-print-directory",
		"IMAGE=" + image, "REGISTRY=" + w.registry, "NAMESPACE=" + namespace, "HOST=" + w.host,
		"KUBECTL=" + w.kubectl, "KUBE_CONTEXT=" + w.context, "SIGNING_KEY=" + w.signingKey}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+w.kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Logf("make %s:\n%s", strings.Join(args, " "), indent(string(out)))
	}
	return string(out), err
}

// push builds, pushes and signs tag with make (and its knobs), and returns
// the digest of the pushed image from the line docker-push ends with.
func (w *walk) push(tag string, knobs ...string) string {
	w.t.Helper()
	out, err := w.makeOut(append([]string{"go-build", "docker-build", "docker-push", "TAG=" + tag, "VERSION=" + tag}, knobs...)...)
	if err != nil {
		w.t.Fatalf("make docker-push TAG=%s: %v", tag, err)
	}
	last := lastLine([]byte(out))
	repo, digest, _ := strings.Cut(last, "@")
	if repo != w.registry+"/"+image || !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(digest) {
		w.t.Fatalf("make docker-push TAG=%s ended with %q, want %s/%s@sha256:<64 hex>:\n%s", tag, last, w.registry, image, indent(out))
	}
	w.t.Logf("make docker-push TAG=%s: %s", tag, last)
	return digest
}

func (w *walk) docker(args ...string) {
	w.t.Helper()
	if out, err := exec.CommandContext(w.ctx, "docker", args...).CombinedOutput(); err != nil { // #nosec G204 -- the suite's own image names
		w.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// moveTag points tag at the image of digest in the registry, as anyone who
// may push there can.
func (w *walk) moveTag(digest, tag string) {
	w.t.Helper()
	const manifest = "application/vnd.docker.distribution.manifest.v2+json"
	scheme := "https" // as make docker-push speaks to the registry
	if strings.HasPrefix(w.registry, "localhost:") || strings.HasPrefix(w.registry, "127.") {
		scheme = "http"
	}
	base := scheme + "://" + w.registry + "/v2/" + image + "/manifests/"
	req, err := http.NewRequestWithContext(w.ctx, http.MethodGet, base+digest, nil)
	must(w.t, err)
	req.Header.Set("Accept", manifest)
	resp, err := client.Do(req)
	must(w.t, err)
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // read to the end
	must(w.t, err)
	req, err = http.NewRequestWithContext(w.ctx, http.MethodPut, base+tag, bytes.NewReader(body))
	must(w.t, err)
	req.Header.Set("Content-Type", manifest)
	if resp, err = client.Do(req); err == nil {
		_ = resp.Body.Close() // the status is all there is
	}
	if err != nil || resp.StatusCode != http.StatusCreated {
		w.t.Fatalf("PUT %s%s: %v, want 201", base, tag, cmp.Or(err, error(fmt.Errorf("%s", resp.Status))))
	}
}

// kubectlArgs puts the walk's cluster, context and namespace before args.
func (w *walk) kubectlArgs(args ...string) []string {
	flags := []string{"--kubeconfig", w.kubeconfig, "--namespace", namespace}
	if w.context != "" {
		flags = append(flags, "--context", w.context)
	}
	return append(flags, args...)
}

func (w *walk) kubectlOut(args ...string) (string, error) {
	out, err := exec.CommandContext(w.ctx, w.kubectl, w.kubectlArgs(args...)...).CombinedOutput() // #nosec G204 -- the suite's kubectl
	return strings.TrimSpace(string(out)), err
}

// kubectlIn runs kubectl with stdin as its input, and fails the test if it fails.
func (w *walk) kubectlIn(stdin string, args ...string) string {
	w.t.Helper()
	cmd := exec.CommandContext(w.ctx, w.kubectl, w.kubectlArgs(args...)...) // #nosec G204 -- the suite's kubectl
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func (w *walk) kubectlRun(args ...string) string {
	w.t.Helper()
	out, err := w.kubectlOut(args...)
	if err != nil {
		w.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// get returns a jsonpath of one object in the namespace.
func (w *walk) get(kind, name, jsonpath string) string {
	w.t.Helper()
	return w.kubectlRun("get", kind, name, "-o", "jsonpath="+jsonpath)
}

// checkDeployment asserts what the Deployment must guarantee once applied:
// the image by digest, the version label with the tag, the replicas and the
// grace period.
func (w *walk) checkDeployment(tag, digest string) {
	w.t.Helper()
	var d struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct {
			Template struct {
				Spec struct {
					TerminationGracePeriodSeconds int
					Containers                    []struct {
						Image string
						Args  []string
					}
				}
			}
		}
		Status struct{ ReadyReplicas, UpdatedReplicas int }
	}
	must(w.t, json.Unmarshal([]byte(w.kubectlRun("get", "deployment", "hello", "-o", "json")), &d))
	pod := d.Spec.Template.Spec
	if want := w.registry + "/" + image + "@" + digest; pod.Containers[0].Image != want {
		w.t.Errorf("image = %s, want %s", pod.Containers[0].Image, want)
	}
	if v := d.Metadata.Labels["app.kubernetes.io/version"]; v != tag {
		w.t.Errorf("label app.kubernetes.io/version = %q, want the tag %s", v, tag)
	}
	if d.Status.ReadyReplicas != 2 || d.Status.UpdatedReplicas != 2 {
		w.t.Errorf("ready, updated replicas = %d, %d after the rollout, want 2, 2", d.Status.ReadyReplicas, d.Status.UpdatedReplicas)
	}
	// The kubelet must not kill a pod that is still draining.
	var delay, timeout time.Duration
	for _, arg := range pod.Containers[0].Args {
		if v, ok := strings.CutPrefix(arg, "-shutdown-delay="); ok {
			delay, _ = time.ParseDuration(v)
		}
		if v, ok := strings.CutPrefix(arg, "-shutdown-timeout="); ok {
			timeout, _ = time.ParseDuration(v)
		}
	}
	if delay == 0 || timeout == 0 || time.Duration(pod.TerminationGracePeriodSeconds)*time.Second < delay+timeout {
		w.t.Errorf("terminationGracePeriodSeconds %d, -shutdown-delay %s, -shutdown-timeout %s: want a delay, and a grace period covering delay plus timeout",
			pod.TerminationGracePeriodSeconds, delay, timeout)
	}
}

// checkPodSecurity asserts that the namespace enforces the restricted
// standard: it is labelled so, and the API server refuses a pod that does
// not meet it. The pod runs the signed image digest names, which admission
// lets through (its webhooks run too, the mutating one first, the validating
// one after the standard), so the refusal is the standard's alone.
func (w *walk) checkPodSecurity(digest string) {
	w.t.Helper()
	if got := w.kubectlRun("get", "namespace", namespace, "-o", `jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}`); got != "restricted" {
		w.t.Errorf("namespace %s enforces %q, want restricted", namespace, got)
	}
	out, err := w.kubectlOut("run", "not-restricted", "--image="+w.registry+"/"+image+"@"+digest, "--restart=Never", "--dry-run=server")
	if err == nil || !strings.Contains(out, "violates PodSecurity") {
		w.t.Errorf("a pod with no securityContext: err %v, %q; want refused for violating PodSecurity", err, out)
	}
}

// checkPortForward greets through kubectl port-forward to the Service.
func (w *walk) checkPortForward() {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.kubectl, w.kubectlArgs("port-forward", "--address=127.0.0.1", "service/hello", ":80")...) // #nosec G204 -- the suite's kubectl
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	must(w.t, err)
	must(w.t, cmd.Start())
	lines := bufio.NewScanner(stdout)
	forwarding := regexp.MustCompile(`^Forwarding from (127\.0\.0\.1:\d+) ->`)
	var addr string
	for addr == "" && lines.Scan() {
		if m := forwarding.FindStringSubmatch(lines.Text()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		_ = cmd.Wait() // it failed; its stderr says why
		w.t.Errorf("kubectl port-forward printed no address: %s", stderr.String())
		return
	}
	go io.Copy(io.Discard, stdout)
	if err := greet(client, "http://"+addr+"/TutorialHero"); err != nil {
		w.t.Errorf("through kubectl port-forward: %v", err)
	}
	cancel()
	_ = cmd.Wait() // cancel killed it: that kill is the error
}

// checkPodImages wants the runtime to report, as every pod's image ID, the
// image by digest. (Its status.image is then the config's digest, not the
// name the pod spec gives.)
func (w *walk) checkPodImages(digest string) {
	w.t.Helper()
	var pods struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				ContainerStatuses []struct{ ImageID string }
			}
		}
	}
	must(w.t, json.Unmarshal([]byte(w.kubectlRun("get", "pods", "-l", "app.kubernetes.io/name=hello", "-o", "json")), &pods))
	want := w.registry + "/" + image + "@" + digest
	for _, p := range pods.Items {
		for _, c := range p.Status.ContainerStatuses {
			if c.ImageID != want {
				w.t.Errorf("pod %s runs image ID %s, want %s", p.Metadata.Name, c.ImageID, want)
			}
		}
	}
	w.t.Logf("%d pods run %s", len(pods.Items), want)
}

// A stream is a steady flow of greetings during a rollout, bounded in count
// and time.
type stream struct {
	via  string       // the way the requests take, named in the log line
	rate int          // requests per second
	send func() error // one request, its answer checked
}

// streams returns what a rollout runs under: requests to the Service's
// ClusterIP (url), and through the ingress controller when there is one.
func (w *walk) streams(url string) []stream {
	// A new connection for every request: Go's client silently retries a
	// request that failed on a reused connection, which would hide failures.
	noReuse := &http.Client{Timeout: client.Timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	streams := []stream{{"through the Service's ClusterIP", 20, func() error { return greet(noReuse, url) }}}
	if w.ingress.url == "" {
		w.t.Logf("through Traefik: SKIPPED: INGRESS_URL is unset")
		return streams
	}
	// Over keep-alive connections, as browsers send them and as Traefik
	// keeps its own to the pods; greet counts a retry as a failure.
	return append(streams, stream{"through Traefik", 100, func() error { return w.ingress.greet("/TutorialHero") }})
}

// streamResult is what one stream counted.
type streamResult struct {
	stream
	sent, failed int
	errs         []string
}

// underLoad runs the streams while change runs and until the replaced pods
// are gone, for at most maxTime, then asserts that no request failed and
// returns the counts.
func (w *walk) underLoad(url string, maxTime time.Duration, change func()) []*streamResult {
	w.t.Helper()
	ctx, stop := context.WithTimeout(w.ctx, maxTime)
	defer stop()
	var (
		mu       sync.Mutex
		results  []*streamResult
		requests sync.WaitGroup
		senders  sync.WaitGroup
	)
	start := time.Now()
	for _, s := range w.streams(url) {
		r := &streamResult{stream: s}
		results = append(results, r)
		senders.Add(1)
		go func() {
			defer senders.Done()
			tick := time.NewTicker(time.Second / time.Duration(s.rate))
			defer tick.Stop()
			for range s.rate * int(maxTime/time.Second) {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				requests.Add(1)
				go func() {
					defer requests.Done()
					err := s.send()
					mu.Lock()
					defer mu.Unlock()
					r.sent++
					if err != nil {
						r.failed++
						r.errs = append(r.errs, fmt.Sprintf("%s: %v", since(start), err))
					}
				}()
			}
		}()
	}

	change()
	w.waitOldPodsGone()
	cut := ctx.Err()
	stop()
	senders.Wait()
	requests.Wait()
	for _, r := range results {
		w.t.Logf("%s: %d requests in %s at %d/s, %d failed", r.via, r.sent, since(start), r.rate, r.failed)
		if r.failed > 0 {
			w.t.Errorf("%s: %d of %d requests failed:\n  %s", r.via, r.failed, r.sent, strings.Join(r.errs[:min(len(r.errs), 20)], "\n  "))
		}
		if cut != nil || r.sent < 2*r.rate {
			w.t.Errorf("%s: the stream covered the rollout only partly (%d requests, cut: %v)", r.via, r.sent, cut)
		}
	}
	return results
}

// waitOldPodsGone waits until exactly the two new pods are left: a rollout
// is reported done while the old pods still drain.
func (w *walk) waitOldPodsGone() {
	w.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
		names := strings.Fields(w.kubectlRun("get", "pods", "-l", "app.kubernetes.io/name=hello", "-o", "name"))
		if len(names) == 2 {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("pods after the rollout: %v, want 2", names)
		}
	}
}

// greet asks url for the greeting and checks the answer.
func greet(client *http.Client, url string) error {
	code, body, err := get(context.Background(), client, url, "")
	if err != nil {
		return err
	}
	if code != http.StatusOK || body != greeting {
		return fmt.Errorf("GET %s = %d %q, want 200 %q", url, code, body, greeting)
	}
	return nil
}

// get sends one GET to url, with a Host header when host is set, and returns
// the status and the body.
func get(ctx context.Context, client *http.Client, url, host string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func indent(out string) string {
	return "  " + strings.ReplaceAll(strings.TrimSpace(out), "\n", "\n  ")
}
