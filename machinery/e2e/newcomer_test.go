package e2e

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestNoCluster runs make kubernetes-apply and kubernetes-delete as a newcomer
// does before any cluster is set up: each must stop before touching anything,
// with a first line that names the context and kubeconfig it tried and the
// knobs that point elsewhere. It needs no cluster: the kubeconfig is the
// test's own, and its servers are on 127.0.0.1 and not Kubernetes: a closed
// port, and a server that answers every path as hello does (make go-run on
// 8080 is where kubectl goes when nothing is configured).
func TestNoCluster(t *testing.T) {
	// k3s's kubectl (k3s run by that name) when make e2e gives a k3s, else KUBECTL's.
	kubectl := cmp.Or(os.Getenv("E2E_KUBECTL"), "kubectl")
	if k3s := os.Getenv("K3S"); k3s != "" && exists(k3s) {
		kubectl = filepath.Join(t.TempDir(), "kubectl")
		must(t, os.Symlink(k3s, kubectl))
	}
	require(t, prerequisites(map[string]string{kubectl: "install kubectl or set KUBECTL", "make": "install make"}))
	repo, err := filepath.Abs("../..")
	must(t, err)

	var mu sync.Mutex
	var asked []string // what the hello-like server was asked
	hello := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Hello, World!\n") // what a client that sent no name gets
	}))
	t.Cleanup(hello.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	closed := "http://" + ln.Addr().String()
	must(t, ln.Close()) // nothing listens there now

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- {name: closed, cluster: {server: %q}}
- {name: hello, cluster: {server: %q}}
users: [{name: nobody, user: {}}]
contexts:
- {name: closed, context: {cluster: closed, user: nobody}}
- {name: hello, context: {cluster: hello, user: nobody}}
current-context: closed
`, closed, hello.URL), 0o600))

	for _, tc := range []struct {
		name, context string
		want          []string // in the first line, besides the kubeconfig and the knobs
	}{
		{"current context, closed port", "", []string{"context closed", closed}},
		{"KUBE_CONTEXT of a server that is hello", "hello", []string{"context hello", hello.URL}},
		{"KUBE_CONTEXT not in the kubeconfig", "nowhere", []string{"context nowhere"}},
	} {
		for _, target := range []string{"kubernetes-apply", "kubernetes-delete"} {
			t.Run(tc.name+"/"+target, func(t *testing.T) {
				args := []string{target, "KUBECTL=" + kubectl, "KUBECONFIG=" + kubeconfig, "KUBE_CONTEXT=" + tc.context}
				cmd := exec.CommandContext(t.Context(), "make", append([]string{"-C", repo, "--no-print-directory", "-s"}, args...)...) // #nosec G204 G702 -- make and the kubectl that make e2e names
				cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "KUBECONFIG=") })
				out, err := cmd.CombinedOutput()
				line, _, _ := strings.Cut(string(out), "\n")
				for _, want := range append(tc.want, kubeconfig, "KUBE_CONTEXT=", "KUBECONFIG=") {
					if err == nil || !strings.Contains(line, want) {
						t.Fatalf("make %s: err %v, first line %q; want a failure whose first line has %q. Output:\n%s",
							strings.Join(args, " "), err, line, want, indent(string(out)))
					}
				}
			})
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, req := range asked {
		if req != "GET /version" {
			t.Errorf("the hello-like server was asked %q; want only GET /version, nothing applied or deleted", asked)
			break
		}
	}
}
