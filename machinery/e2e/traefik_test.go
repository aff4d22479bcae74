package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"
)

// startTraefik runs Traefik as the built-in cluster's ingress controller, the
// way k3s runs it but as a host process (k3s's Traefik chart is downloaded at
// build time): the kubernetesIngress provider with its defaults, on the entry
// point web. It listens on the node IP only, at a free port, and watches the
// API server with a token of its own ServiceAccount (traefik/traefik.yaml),
// never the admin certificate, checking the API server's certificate with
// k3s's server CA. It reaches the pods from the node, as the kubelet's probes
// do: hello's NetworkPolicy lets both in. The API, the dashboard, ping and
// metrics stay off, as do the version check and the usage report, which
// would call out to traefik.io. It returns the entry point's URL.
func (c *cluster) startTraefik(ctx context.Context, traefikBin, kubeconfig string) string {
	// What Traefik's documented rights allow, and what they must not.
	token := c.serviceAccount(ctx, kubeconfig, "traefik/traefik.yaml", "traefik", []canI{
		{"watch", "ingresses.networking.k8s.io", "yes"},
		{"list", "endpointslices.discovery.k8s.io", "yes"},
		{"update", "ingresses.networking.k8s.io", "no"},
		{"create", "pods", "no"},
	})

	addr := c.freeAddr(nodeIP)
	// The token in a file only root reads, not on the command line, where
	// any local user could read it.
	config := fmt.Sprintf(`global: {checkNewVersion: false, sendAnonymousUsage: false}
entryPoints:
  web: {address: "%s"}
providers:
  kubernetesIngress:
    endpoint: "https://%s:6443"
    certAuthFilePath: "%s/server/tls/server-ca.crt"
    token: "%s"
log: {level: INFO, noColor: true}
`, addr, nodeIP, k3sDataDir, token)
	must(c.t, os.WriteFile(stateDir+"/traefik.yaml", []byte(config), 0o600)) // #nosec G303 -- stateDir is the cluster's own folder, made by startCluster
	pid := c.start("traefik", nil, traefikBin, "--configfile="+stateDir+"/traefik.yaml")
	url := "http://" + addr
	c.waitFor(ctx, "Traefik on "+addr, 30*time.Second, func() error {
		resp, err := client.Get(url + "/")
		if err != nil {
			return err
		}
		return resp.Body.Close() // any answer: no route serves / yet
	})
	if got := listening(pid); len(got) != 1 || got[0] != addr {
		c.t.Fatalf("Traefik listens on %v, want %s only", got, addr)
	}
	return url
}

// canI is a row of kubectl auth can-i: a verb, a resource, and "yes" or "no".
type canI struct{ verb, resource, want string }

// serviceAccount applies manifest, which holds the ServiceAccount name in
// kube-system and its rights, checks the rights against rights, and returns
// a token of that account for a process that runs on the host.
func (c *cluster) serviceAccount(ctx context.Context, kubeconfig, manifest, name string, rights []canI) string {
	if err := c.kubectlQuiet(ctx, kubeconfig, "apply", "-f", manifest); err != nil {
		c.t.Fatalf("%s: %v", manifest, err)
	}
	for _, tc := range rights {
		// #nosec G204 -- the suite's own kubectl, arguments from the suite's tables.
		out, _ := exec.CommandContext(ctx, c.kubectl, "--kubeconfig", kubeconfig, "auth", "can-i", tc.verb, tc.resource,
			"--all-namespaces", "--as=system:serviceaccount:kube-system:"+name).Output() // exits 1 for "no"
		if got := strings.TrimSpace(string(out)); got != tc.want {
			c.t.Fatalf("ServiceAccount %s: can-i %s %s = %q, want %q", name, tc.verb, tc.resource, got, tc.want)
		}
	}
	// #nosec G204 -- the suite's own kubectl and kubeconfig, the suite's account.
	token, err := exec.CommandContext(ctx, c.kubectl, "--kubeconfig", kubeconfig,
		"-n", "kube-system", "create", "token", name, "--duration=2h").Output()
	if err != nil {
		c.t.Fatalf("a token for ServiceAccount %s: %v", name, err)
	}
	return strings.TrimSpace(string(token))
}

// listening lists the local addresses of the TCP and UDP sockets process pid
// listens on, as ss prints them.
func listening(pid int) []string {
	out, _ := exec.Command("ss", "-H", "-l", "-n", "-p", "-t", "-u").Output()
	var addrs []string
	for _, line := range strings.Split(string(out), "\n") {
		// tcp LISTEN 0 4096 10.213.255.1:40719 0.0.0.0:* users:(("traefik",pid=1,fd=7))
		if fields := strings.Fields(line); len(fields) > 6 && strings.Contains(line, fmt.Sprintf(",pid=%d,", pid)) {
			addrs = append(addrs, fields[4])
		}
	}
	return addrs
}

// ingressClient sends requests to an ingress controller's entry point with
// the Host header of hello's Ingress.
type ingressClient struct {
	client *http.Client
	url    string // http://host:port of the entry point
	host   string
}

// keepAlive returns a client that keeps its connections open between
// requests, as browsers do.
func keepAlive() *http.Client {
	return &http.Client{Timeout: client.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
}

// greet asks for the greeting at path and checks the answer. Go's client
// silently retries a request on a new connection when a reused one failed;
// that counts as a failure here.
func (ic ingressClient) greet(path string) error {
	var conns atomic.Int32
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { conns.Add(1) },
	})
	code, body, err := get(ctx, ic.client, ic.url+path, ic.host)
	switch {
	case err != nil:
		return err
	case code != http.StatusOK || body != greeting:
		return fmt.Errorf("GET %s%s Host: %s = %d %q, want 200 %q", ic.url, path, ic.host, code, body, greeting)
	case conns.Load() > 1:
		return fmt.Errorf("GET %s%s Host: %s took %d connections: a reused one failed", ic.url, path, ic.host, conns.Load())
	}
	return nil
}

// checkIngress walks through the cluster's ingress controller once the
// Ingress is applied: the greeting by the Ingress's host, Traefik's 404 for
// another, and hello's own answers through it, each the same as hello gives
// through the Service's ClusterIP (direct): the path reaches hello unchanged.
func (w *walk) checkIngress(direct string) {
	w.t.Helper()
	// Traefik learns of the Ingress a moment after the rollout.
	start := time.Now()
	for err := w.ingress.greet("/TutorialHero"); err != nil; err = w.ingress.greet("/TutorialHero") {
		if time.Since(start) > 30*time.Second {
			w.t.Fatalf("through Traefik: %v after %s: it serves no route for the Ingress (its ingressClassName, host, Traefik's log?)", err, since(start))
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.t.Logf("Traefik served the Ingress after %s", since(start))

	notFound := "not found: the name is a single path segment, like /TutorialHero\n"
	for _, tc := range []struct {
		host, path string
		code       int
		body       string
	}{
		{w.host, "/TutorialHero", http.StatusOK, greeting},
		{w.host, "/J%C3%BCrgen", http.StatusOK, "Hello, Jürgen!\n"},
		{w.host, "/a/b", http.StatusNotFound, notFound},
		{"other." + w.host, "/TutorialHero", http.StatusNotFound, "404 page not found\n"}, // Traefik's own
		// The names Traefik treats specially. v3.6.4 to v3.6.6 answered 400
		// to each by default; since v3.6.7, v3.7 too, its entry point's
		// encodedCharacters options allow them unless set to false.
		{w.host, "/a%2Fb", http.StatusOK, "Hello, a/b!\n"},
		{w.host, "/a%25b", http.StatusOK, "Hello, a%b!\n"},
		{w.host, "/a%3Fb", http.StatusOK, "Hello, a?b!\n"},
		{w.host, "/a%3Bb", http.StatusOK, "Hello, a;b!\n"},
		{w.host, "/a%5Cb", http.StatusOK, "Hello, a\\b!\n"},
		{w.host, "/a%00b", http.StatusBadRequest, "bad name: holds a control character\n"},
		{w.host, "/a%23b", http.StatusOK, "Hello, a#b!\n"},
	} {
		code, body, err := get(context.Background(), w.ingress.client, w.ingress.url+tc.path, tc.host)
		if err != nil || code != tc.code || body != tc.body {
			w.t.Errorf("through Traefik: GET %s Host: %s = %d %q (%v), want %d %q", tc.path, tc.host, code, body, err, tc.code, tc.body)
		}
		if tc.host != w.host {
			continue
		}
		if code, body, err := get(context.Background(), client, direct+tc.path, ""); err != nil || code != tc.code || body != tc.body {
			w.t.Errorf("through the ClusterIP: GET %s = %d %q (%v), want %d %q", tc.path, code, body, err, tc.code, tc.body)
		}
	}
}
