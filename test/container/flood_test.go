package container

import (
	"encoding/json"
	"testing"
)

// floodConns is the flood's size per phase: this many connections send a
// GET and stay open, then this many more send nothing (as make soak).
const floodConns = "6000"

// TestFlood floods the image as the Deployment runs it, 64 MiB and no swap,
// with bench's connection flood (go run ./bench flood; its line tells what
// it saw): hello must not be OOM-killed, must still run and greet, and
// docker stop must end it with exit code 0.
func TestFlood(t *testing.T) {
	needEngine(t)
	img := newImage(t)
	img.make(t, "docker-build")
	name := container(t, img.ref(), append(locked("8080"), "--memory", "64m", "--memory-swap", "64m")...)
	addr := hostAddr(t, name, "8080")
	greet(t, addr, "Flood")

	pid := docker(t, "inspect", "-f", "{{.State.Pid}}", name)
	out, err := tryRun("go", "run", "./bench", "flood", "-addr", addr, "-conns", floodConns, "-pid", pid)
	t.Logf("go run ./bench flood -conns %s: %s", floodConns, out)
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
