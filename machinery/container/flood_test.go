package container

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestFlood floods the image as the Deployment runs it, 64 MiB and no swap,
// with bench's connection flood at its default size, make soak's (bench
// flood, floodConns in machinery/bench/flood.go; its line tells what it saw):
// hello must not be OOM-killed, must still run and greet, and docker stop
// must end it with exit code 0.
//
// The container shares the host's network and hello listens on 127.0.0.1
// only, so the flood reaches hello as a Service's traffic reaches a pod:
// straight. A published port would put docker-proxy in between, which
// holds six files per connection (two sockets, two splice pipes) and dies
// at ~3,300 connections under a 20,000-file limit, and which, slowed by the
// flood, forwards a fresh client's request so late that hello has closed
// that connection as the longest silent one.
func TestFlood(t *testing.T) {
	needEngine(t)
	img := newImage(t)
	img.make(t, "docker-build")
	addr := "127.0.0.1:" + freePort(t)
	// No healthcheck: its probe every 5 s would be one more client amid the
	// flood's, against a hello that holds its cap of connections.
	flags := append(slices.Clip(lockedDown), "--network", "host", "--no-healthcheck",
		"--memory", "64m", "--memory-swap", "64m")
	name := container(t, img.ref(), flags, "-addr", addr)
	greet(t, addr, "Flood")

	pid := docker(t, "inspect", "-f", "{{.State.Pid}}", name)
	out, err := tryRun("go", "-C", "machinery/bench", "run", ".", "flood", "-addr", addr, "-pid", pid)
	t.Logf("go -C machinery/bench run . flood: %s", out)
	if err != nil {
		t.Errorf("the flood saw socket errors or could not run: %v", err)
	}

	var state struct {
		Status    string
		Running   bool
		OOMKilled bool
		ExitCode  int
	}
	if err := json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .State}}", name)), &state); err != nil {
		t.Fatal(err)
	}
	if state.OOMKilled || !state.Running {
		t.Fatalf("after the flood: status %s, OOMKilled %v, exit code %d; want it running and not OOM-killed",
			state.Status, state.OOMKilled, state.ExitCode)
	}
	greet(t, addr, "Flood")
	stop(t, name)
}
