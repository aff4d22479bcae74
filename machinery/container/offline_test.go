package container

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestOffline runs the release path as a user does, each make under strace:
// make docker-push, the same build again, another build under that tag
// (refused: release push asks cosign whether the tag names a signed build)
// and make kubernetes-apply (release verify: cosign verify and
// verify-attestation). It wants every connection any of their processes
// opens, and every datagram one sends, to stay on this machine (loopback,
// local sockets), and none to be a DNS look-up, wherever the resolver is:
// signing and verifying with a key need nothing from the network but the
// registry. cosign v2.6.5 looks up tuf-repo-cdn.sigstore.dev before it
// verifies unless it is given a trusted root (release/main.go).
func TestOffline(t *testing.T) {
	needEngine(t)
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is missing: apt-get install strace")
	}
	registry := startRegistry(t)
	img := newImage(t, registry)
	kubectl, applied := fakeKubectl(t)
	traces := t.TempDir()
	for i, call := range []struct {
		knobs  []string
		refuse string // what a make that must fail says; "" for none
	}{
		{knobs: []string{"docker-push", "REGISTRY=" + registry}},
		{knobs: []string{"docker-push", "REGISTRY=" + registry}},
		{knobs: []string{"docker-push", "REGISTRY=" + registry, "VERSION=" + img.version + ".rebuilt"}, refuse: "a tag names one build"},
		{knobs: []string{"kubernetes-apply", "REGISTRY=" + registry, "KUBECTL=" + kubectl}},
	} {
		target := call.knobs[0]
		trace := filepath.Join(traces, fmt.Sprintf("%d-%s", i+1, target))
		args := append([]string{"-f", "-qq", "--seccomp-bpf", "-e", traced, "-o", trace, "make"}, img.makeArgs(target, call.knobs[1:]...)...)
		out, err := tryRun(strace, args...)
		if (err != nil) != (call.refuse != "") || !strings.Contains(out, call.refuse) {
			t.Fatalf("make %s under strace: %v, want refused %q (none: succeed)\n%s", strings.Join(call.knobs, " "), err, call.refuse, out)
		}
		for _, left := range leaks(t, trace) {
			t.Errorf("make %s sent something off this machine: %s", target, left)
		}
		if target == "kubernetes-apply" {
			checkNotEnforced(t, out, applied())
		}
	}
}

// The system calls the trace records: how a process starts (to name the
// command in a failure), and every way it can address a peer.
const traced = "trace=execve,clone,clone3,fork,vfork,connect,sendto,sendmsg,sendmmsg"

// leaks reads a trace of strace -f -e $traced and returns, once each, every
// destination that is not on this machine, or is port 53, with the command
// that sent to it. strace names a thread by its own ID: a child, thread or
// process, runs its parent's command until it starts another.
func leaks(t *testing.T, trace string) []string {
	t.Helper()
	data, err := os.ReadFile(trace) // #nosec G304 -- the trace the test just wrote
	if err != nil {
		t.Fatal(err)
	}
	var (
		execve = regexp.MustCompile(`^(\d+) +execve\("([^"]*)", \[([^]]*)`)
		child  = regexp.MustCompile(`^(\d+) +(?:<\.\.\. )?v?(?:clone3?|fork)[( ].* = (\d+)$`)
		port   = regexp.MustCompile(`sin6?_port=htons\((\d+)\)`)
		addr   = regexp.MustCompile(`(?:inet_addr\(|inet_pton\(AF_INET6, )"([^"]+)"`)
		arg    = regexp.MustCompile(`"([^"]*)"`)
	)
	commands := map[string]string{} // thread ID: the command it runs
	var found []string
	for _, line := range strings.Split(string(data), "\n") {
		if m := execve.FindStringSubmatch(line); m != nil {
			command := filepath.Base(m[2])
			if args := arg.FindAllStringSubmatch(m[3], 2); len(args) == 2 {
				command += " " + args[1][1]
			}
			commands[m[1]] = command
			continue
		}
		// A child's own execve may come before its parent's clone returns.
		if m := child.FindStringSubmatch(line); m != nil && commands[m[2]] == "" {
			commands[m[2]] = commands[m[1]]
			continue
		}
		p, a := port.FindStringSubmatch(line), addr.FindStringSubmatch(line)
		if p == nil || a == nil {
			continue // a local socket (AF_UNIX, AF_NETLINK), or a send on a connected one
		}
		ip, err := netip.ParseAddr(a[1])
		if err != nil {
			t.Fatalf("strace line %q: %v", line, err)
		}
		if ip.IsLoopback() && p[1] != "53" {
			continue
		}
		what := a[1] + ":" + p[1]
		if p[1] == "53" {
			what += " (a DNS look-up)"
		}
		tid, _, _ := strings.Cut(line, " ")
		if left := commands[tid] + ": to " + what; !slices.Contains(found, left) {
			found = append(found, left)
		}
	}
	return found
}

// checkNotEnforced wants make kubernetes-apply, on a cluster without
// policy-controller (the stand-in kubectl lists no API), to say so in one
// line and to apply all the same.
func checkNotEnforced(t *testing.T, out, kubectl string) {
	t.Helper()
	const line = "this cluster does not enforce signatures"
	if strings.Count(out, line) != 1 || !strings.Contains(kubectl, "apply -k") {
		t.Errorf("make kubernetes-apply on a cluster without policy-controller: want one line saying %q and kubectl apply -k; kubectl ran %q:\n%s",
			line, kubectl, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, line) {
			t.Logf("make kubernetes-apply on a cluster without policy-controller: %s", l)
		}
	}
}
