package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"time"
)

// startMetricsServer runs metrics-server for the built-in cluster the way k3s
// runs it, behind the API server's aggregation layer, but as a host process:
// the APIService v1beta1.metrics.k8s.io names a selector-less Service whose
// EndpointSlice points at the node IP, where metrics-server listens on a free
// port with a certificate of the cluster's CA. It reads each kubelet's
// /metrics/resource every 15 s (the --metric-resolution of upstream's manifests),
// checking the kubelet's certificate, with a token of its own ServiceAccount
// (metrics-server/metrics-server.yaml), never the admin certificate.
func (c *cluster) startMetricsServer(ctx context.Context, metricsServerBin, kubeconfig string) {
	token := c.serviceAccount(ctx, kubeconfig, "metrics-server/metrics-server.yaml", "metrics-server", []canI{
		{"get", "nodes/metrics", "yes"},
		{"list", "pods", "yes"},
		{"create", "tokenreviews.authentication.k8s.io", "yes"},
		{"create", "pods", "no"},
		{"get", "secrets", "no"},
	})
	pki := stateDir + "/pki/"
	// The token in a file only root reads, as Traefik's.
	own := `apiVersion: v1
kind: Config
clusters: [{name: ` + nodeName + `, cluster: {server: "https://` + nodeIP + `:6443", certificate-authority: ` + pki + `ca.crt}}]
users: [{name: metrics-server, user: {token: "` + token + `"}}]
contexts: [{name: ` + nodeName + `, context: {cluster: ` + nodeName + `, user: metrics-server}}]
current-context: ` + nodeName + `
`
	must(c.t, os.WriteFile(stateDir+"/metrics-server.kubeconfig", []byte(own), 0o600)) // #nosec G303 -- stateDir is the cluster's own folder, made by startCluster

	addr := c.freeAddr(nodeIP)
	port := addr[strings.LastIndex(addr, ":")+1:]
	pid := c.start("metrics-server", metricsServerBin,
		"--kubeconfig", stateDir+"/metrics-server.kubeconfig",
		"--authentication-kubeconfig", stateDir+"/metrics-server.kubeconfig",
		"--authorization-kubeconfig", stateDir+"/metrics-server.kubeconfig",
		"--bind-address", nodeIP, "--secure-port", port,
		"--tls-cert-file", pki+"metrics-server.crt", "--tls-private-key-file", pki+"metrics-server.key",
		"--kubelet-certificate-authority", pki+"ca.crt",
		"--kubelet-preferred-address-types", "InternalIP", "--kubelet-use-node-status-port",
		"--metric-resolution", "15s")

	ca, err := os.ReadFile(pki + "ca.crt")
	must(c.t, err)
	api := fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {kubernetes.io/service-name: metrics-server, endpointslice.kubernetes.io/managed-by: hello-e2e}
addressType: IPv4
ports: [{name: https, port: %s, protocol: TCP}]
endpoints: [{addresses: ["%s"], conditions: {ready: true}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  service: {name: metrics-server, namespace: kube-system}
  group: metrics.k8s.io
  version: v1beta1
  caBundle: %s
  groupPriorityMinimum: 100
  versionPriority: 100
`, port, nodeIP, base64.StdEncoding.EncodeToString(ca))
	must(c.t, os.WriteFile(stateDir+"/metrics-api.yaml", []byte(api), 0o600)) // #nosec G303 G703 -- a fixed path in the cluster's own folder, made by startCluster
	if err := c.kubectlQuiet(ctx, kubeconfig, "apply", "-f", stateDir+"/metrics-api.yaml"); err != nil {
		c.t.Fatalf("metrics-server's EndpointSlice and APIService: %v", err)
	}
	c.waitFor(ctx, "metrics-server on "+addr, 60*time.Second, func() error {
		return c.kubectlQuiet(ctx, kubeconfig, "wait", "--for=condition=Available", "apiservice/v1beta1.metrics.k8s.io", "--timeout=2s")
	})
	if got := listening(pid); len(got) != 1 || got[0] != addr {
		c.t.Fatalf("metrics-server listens on %v, want %s only", got, addr)
	}
}
