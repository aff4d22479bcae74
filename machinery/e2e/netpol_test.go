package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The NetworkPolicy check runs in a namespace of its own, so that none of
// its pods is taken for one of hello's (by the Service, the autoscaler or
// the walk's pod counts).
const (
	netpolNamespace = "hello-e2e-netpol"
	// How long the network policy controller may take to apply a change:
	// a policy on a new pod was seen to take a moment.
	netpolMaxTime = 90 * time.Second
)

// A netTarget is an address a pod may or may not reach, and what it is.
type netTarget struct{ addr, what string }

// netpolCheck is the check's pods and what they try.
type netpolCheck struct {
	probe, peer string      // pod IPs: the pod with hello's labels and ports, and one without
	port, other int         // hello's port, and one that hello does not serve
	targets     []netTarget // what the probe tries to reach: every kind of thing of the cluster's
}

// checkNetworkPolicy proves that the NetworkPolicies kubernetes-apply made
// are enforced, both ways: a pod with the labels and ports of hello's pods
// (the probe) reaches something of each kind the cluster has (a pod, a
// Service, the DNS, the API server) without them, and none of it once they
// apply; it takes connections on hello's port from another pod and from the
// node (where Traefik runs and the kubelet's probes come from), and on no
// other port from a pod. Removing the policies lifts all that again. It
// never tries an address outside the cluster. The probe runs netcheck,
// built here FROM scratch.
func (w *walk) checkNetworkPolicy() {
	w.t.Helper()
	image := w.registry + "/hello-e2e-netcheck@" + pushGoImage(w.ctx, w.t, w.registry, goImage{ref: "hello-e2e-netcheck:1", dir: ".", pkg: "./netcheck"})
	var pod struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct {
			Containers []struct {
				Ports []struct {
					Name          string `json:"name"`
					ContainerPort int    `json:"containerPort"`
				}
			}
		}
	}
	must(w.t, json.Unmarshal([]byte(w.get("deployment", "hello", "{.spec.template}")), &pod))
	n := netpolCheck{}
	for _, p := range pod.Spec.Containers[0].Ports {
		if p.Name == "http" {
			n.port = p.ContainerPort
		}
	}
	if n.port == 0 {
		w.t.Fatalf("the Deployment's container has no port named http: %+v", pod.Spec.Containers[0].Ports)
	}
	n.other = n.port + 1
	labels, _ := json.Marshal(pod.Metadata.Labels)
	ports, _ := json.Marshal(pod.Spec.Containers[0].Ports)

	w.t.Cleanup(func() {
		w.ctx = context.WithoutCancel(w.ctx) // clean up also after a Ctrl-C
		// Best effort: the step removes it when it passes.
		_, _ = w.kubectlOut("delete", "namespace", netpolNamespace, "--ignore-not-found", "--wait=false")
	})
	w.kubectlIn(netpolManifest(image, labels, ports, n.port, n.other), "-n", netpolNamespace, "apply", "-f", "-")
	w.kubectlRun("-n", netpolNamespace, "wait", "--for=condition=Ready", "pod/probe", "pod/peer", "--timeout=2m")

	n.probe = w.kubectlRun("-n", netpolNamespace, "get", "pod", "probe", "-o", "jsonpath={.status.podIP}")
	n.peer = w.kubectlRun("-n", netpolNamespace, "get", "pod", "peer", "-o", "jsonpath={.status.podIP}")
	helloPod := strings.Fields(w.kubectlRun("get", "pods", "-l", "app.kubernetes.io/name=hello", "-o", "jsonpath={.items[*].status.podIP}"))[0]
	apiEndpoint := w.kubectlRun("-n", "default", "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes", "-o",
		"jsonpath={.items[0].endpoints[0].addresses[0]}:{.items[0].ports[0].port}")
	n.targets = []netTarget{
		{net.JoinHostPort(n.peer, "8080"), "another pod"},
		{net.JoinHostPort(helloPod, strconv.Itoa(n.port)), "one of hello's pods"},
		{w.serviceAddr(netpolNamespace, "peer", "80"), "a Service"},
		{w.serviceAddr(namespace, "hello", "80"), "hello's Service"},
		{w.serviceAddr("kube-system", "kube-dns", "53"), "the DNS Service, over TCP"},
		{"dns:kubernetes.default", "a DNS look-up"},
		{w.serviceAddr("default", "kubernetes", "443"), "the API server, through its Service"},
		{apiEndpoint, "the API server itself"},
	}

	start := time.Now()
	if err := w.waitNet(n, false); err != nil {
		w.t.Fatalf("NetworkPolicy: with none in %s yet, %v", netpolNamespace, err)
	}
	w.t.Logf("NetworkPolicy: without it, the probe (hello's labels) reached all %d targets after %s: %s", len(n.targets), since(start), n.list())

	var policies struct{ Items []map[string]any }
	must(w.t, json.Unmarshal([]byte(w.kubectlRun("get", "networkpolicies", "-o", "json")), &policies))
	var names []string
	for _, p := range policies.Items {
		meta := p["metadata"].(map[string]any)
		names = append(names, meta["name"].(string))
		p["metadata"] = map[string]any{"name": meta["name"], "namespace": netpolNamespace}
	}
	if len(policies.Items) > 0 { // with none, the wait below says what that lets through
		list, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": policies.Items})
		w.kubectlIn(string(list), "-n", netpolNamespace, "apply", "-f", "-")
	}
	start = time.Now()
	if err := w.waitNet(n, true); err != nil {
		if os.Getenv("KUBECONFIG") != "" { // the built-in cluster enforces them: never skip there
			w.t.Logf("NetworkPolicy: SKIPPED: this cluster does not enforce NetworkPolicy (its network plugin?): %v", err)
			return
		}
		w.t.Fatalf("NetworkPolicy: with the NetworkPolicies of %s applied (%d: %v), %v", namespace, len(names), names, err)
	}
	w.t.Logf("NetworkPolicy %v: enforced after %s: the probe reached none of %s; it took port %d from a pod and from the node, and port %d from no pod",
		names, since(start), n.list(), n.port, n.other)

	w.kubectlRun("-n", netpolNamespace, "delete", "networkpolicies", "--all")
	start = time.Now()
	if err := w.waitNet(n, false); err != nil {
		w.t.Fatalf("NetworkPolicy: removed again, %v", err)
	}
	w.t.Logf("NetworkPolicy: removed, lifted after %s", since(start))
	w.kubectlRun("delete", "namespace", netpolNamespace, "--wait")
}

// netpolManifest is the check's namespace, the probe (with labels and ports,
// those of hello's pods, serving port and other) and its peer, with a
// Service, all running image.
func netpolManifest(image string, labels, ports []byte, port, other int) string {
	// Restricted, as hello's namespace, and so the probe and its peer.
	secure := `securityContext: {runAsNonRoot: true, runAsUser: 65534, runAsGroup: 65534, seccompProfile: {type: RuntimeDefault}}
  automountServiceAccountToken: false
  enableServiceLinks: false`
	container := `securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}`
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s, labels: {pod-security.kubernetes.io/enforce: restricted}}
---
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: %[1]s, labels: %[2]s}
spec:
  %[3]s
  containers:
    - name: netcheck
      image: %[4]s
      args: [serve, "%[5]d", "%[6]d"]
      ports: %[7]s
      readinessProbe: {tcpSocket: {port: %[5]d}, periodSeconds: 2}
      %[8]s
---
apiVersion: v1
kind: Pod
metadata: {name: peer, namespace: %[1]s, labels: {app.kubernetes.io/name: netcheck-peer}}
spec:
  %[3]s
  containers:
    - name: netcheck
      image: %[4]s
      args: [serve, "8080"]
      readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
      %[8]s
---
apiVersion: v1
kind: Service
metadata: {name: peer, namespace: %[1]s}
spec:
  selector: {app.kubernetes.io/name: netcheck-peer}
  ports: [{port: 80, targetPort: 8080}]
`, netpolNamespace, labels, secure, image, port, other, ports, container)
}

// waitNet polls what the pods reach until it is what it must be with the
// policies enforced, or without; after netpolMaxTime it returns what differs.
func (w *walk) waitNet(n netpolCheck, enforced bool) error {
	w.t.Helper()
	start := time.Now()
	for {
		wrong := w.netWrong(n, enforced)
		if len(wrong) == 0 {
			return nil
		}
		if time.Since(start) > netpolMaxTime || w.ctx.Err() != nil {
			return fmt.Errorf("after %s:\n  %s", since(start), strings.Join(wrong, "\n  "))
		}
		time.Sleep(time.Second)
	}
}

// netWrong lists how what the pods reach now differs from what they must
// with the policies enforced, or without.
func (w *walk) netWrong(n netpolCheck, enforced bool) []string {
	var wrong []string
	var addrs []string
	for _, tg := range n.targets {
		addrs = append(addrs, tg.addr)
	}
	got := w.reach("probe", addrs...)
	for _, tg := range n.targets {
		switch result := got[tg.addr]; {
		case enforced && result == "reached":
			wrong = append(wrong, fmt.Sprintf("a pod with hello's labels reached %s (%s), want it blocked", tg.addr, tg.what))
		case !enforced && result != "reached":
			wrong = append(wrong, fmt.Sprintf("a pod with hello's labels did not reach %s (%s): %s", tg.addr, tg.what, result))
		}
	}
	port, other := net.JoinHostPort(n.probe, strconv.Itoa(n.port)), net.JoinHostPort(n.probe, strconv.Itoa(n.other))
	got = w.reach("peer", port, other)
	if got[port] != "reached" {
		wrong = append(wrong, fmt.Sprintf("a pod did not reach %s, hello's port on the probe: %s", port, got[port]))
	}
	switch result := got[other]; {
	case enforced && result == "reached":
		wrong = append(wrong, fmt.Sprintf("a pod reached %s, a port of the probe that is not hello's, want it blocked", other))
	case !enforced && result != "reached":
		wrong = append(wrong, fmt.Sprintf("a pod did not reach %s, a port of the probe that is not hello's: %s", other, result))
	}
	if conn, err := net.DialTimeout("tcp", port, 2*time.Second); err != nil {
		wrong = append(wrong, fmt.Sprintf("the node did not reach %s, hello's port on the probe, as Traefik and the kubelet must: %v", port, err))
	} else {
		_ = conn.Close() // it opened: that is the answer
	}
	return wrong
}

// reach runs netcheck reach in pod and returns its answer per target.
func (w *walk) reach(pod string, targets ...string) map[string]string {
	w.t.Helper()
	out := w.kubectlRun(append([]string{"-n", netpolNamespace, "exec", pod, "--", "/netcheck", "reach"}, targets...)...)
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if target, result, ok := strings.Cut(line, " "); ok {
			got[target] = result
		}
	}
	return got
}

// serviceAddr is a Service's ClusterIP with port, as host:port.
func (w *walk) serviceAddr(ns, name, port string) string {
	w.t.Helper()
	return net.JoinHostPort(w.kubectlRun("-n", ns, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}"), port)
}

func (n netpolCheck) list() string {
	var s []string
	for _, tg := range n.targets {
		s = append(s, tg.addr+" ("+tg.what+")")
	}
	return strings.Join(s, ", ")
}
