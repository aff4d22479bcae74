package e2e

import (
	"bufio"
	"encoding/json"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// checkMemoryLimit asserts that each pod's Go runtime knows its container's
// memory limit: the Deployment sets GOMEMLIMIT from limits.memory, and hello
// logs the limit in force in its start line (the image has no shell to ask).
func (w *walk) checkMemoryLimit() {
	w.t.Helper()
	limit := w.get("deployment", "hello", "{.spec.template.spec.containers[0].resources.limits.memory}")
	q, err := resource.ParseQuantity(limit)
	if err != nil {
		w.t.Fatalf("the Deployment's memory limit %q: %v", limit, err)
	}
	pods := strings.Fields(w.kubectlRun("get", "pods", "-l", "app.kubernetes.io/name=hello", "-o", "jsonpath={.items[*].metadata.name}"))
	if len(pods) == 0 {
		w.t.Fatal("no hello pod to read the start line of")
	}
	for _, pod := range pods {
		var start struct {
			Msg        string
			GOMEMLIMIT int64 `json:"gomemlimit"`
		}
		lines := bufio.NewScanner(strings.NewReader(w.kubectlRun("logs", pod, "-c", "hello")))
		for lines.Scan() && start.Msg != "listening" {
			_ = json.Unmarshal(lines.Bytes(), &start) // the banner is not JSON
		}
		switch {
		case start.Msg != "listening":
			w.t.Errorf("pod %s logged no start line", pod)
		case start.GOMEMLIMIT != q.Value():
			w.t.Errorf("pod %s: gomemlimit %v in its start line, want the memory limit %s = %d bytes", pod, start.GOMEMLIMIT, limit, q.Value())
		}
	}
}
