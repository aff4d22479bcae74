package e2e

import (
	"bufio"
	"encoding/json"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// checkRuntimeLimits asserts that each pod's Go runtime knows its
// container's limits, from hello's start line (the image has no shell to
// ask): GOMEMLIMIT, which the Deployment sets from limits.memory, and
// GOMAXPROCS, which Go (1.25 and later, by go.mod's go line) derives from
// the CPU limit itself: the limit rounded up, at least 2, at most the
// node's CPUs (runtime.defaultGOMAXPROCS).
func (w *walk) checkRuntimeLimits() {
	w.t.Helper()
	limits := map[string]resource.Quantity{}
	for _, r := range []string{"memory", "cpu"} {
		s := w.get("deployment", "hello", "{.spec.template.spec.containers[0].resources.limits."+r+"}")
		q, err := resource.ParseQuantity(s)
		if err != nil {
			w.t.Fatalf("the Deployment's %s limit %q: %v", r, s, err)
		}
		limits[r] = q
	}
	memory, cpu := limits["memory"], limits["cpu"]
	pods := strings.Fields(w.kubectlRun("get", "pods", "-l", "app.kubernetes.io/name=hello", "-o", "jsonpath={.items[*].metadata.name}"))
	if len(pods) == 0 {
		w.t.Fatal("no hello pod to read the start line of")
	}
	for _, pod := range pods {
		node := w.get("pod", pod, "{.spec.nodeName}")
		cpus, err := resource.ParseQuantity(w.kubectlRun("get", "node", node, "-o", "jsonpath={.status.capacity.cpu}"))
		if err != nil {
			w.t.Fatalf("node %s's CPU capacity: %v", node, err)
		}
		procs := min(cpus.Value(), max(2, cpu.Value())) // Value rounds up: 500m is 1
		var start struct {
			Msg        string
			GOMEMLIMIT int64 `json:"gomemlimit"`
			GOMAXPROCS int64 `json:"gomaxprocs"`
		}
		lines := bufio.NewScanner(strings.NewReader(w.kubectlRun("logs", pod, "-c", "hello")))
		for lines.Scan() && start.Msg != "listening" {
			_ = json.Unmarshal(lines.Bytes(), &start) // the banner is not JSON
		}
		switch {
		case start.Msg != "listening":
			w.t.Errorf("pod %s logged no start line", pod)
			continue
		case start.GOMEMLIMIT != memory.Value():
			w.t.Errorf("pod %s: gomemlimit %v in its start line, want the memory limit %s = %d bytes", pod, start.GOMEMLIMIT, memory.String(), memory.Value())
		}
		if start.GOMAXPROCS != procs {
			w.t.Errorf("pod %s: gomaxprocs %d in its start line, want %d: the CPU limit %s rounded up, at least 2, at most node %s's %s CPUs",
				pod, start.GOMAXPROCS, procs, cpu.String(), node, cpus.String())
		}
		w.t.Logf("pod %s on %s (%s CPUs): gomaxprocs %d, gomemlimit %d", pod, node, cpus.String(), start.GOMAXPROCS, start.GOMEMLIMIT)
	}
}
