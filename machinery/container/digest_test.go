package container

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOneDigest builds and pushes one commit, under one tag, through every
// engine the suite runs, as the teammates of a mixed team would, and wants
// one digest: the pushed image depends on the commit and the Go toolchain,
// never on the builder. Each push after the first finds the tag signed
// already, for the same digest, and is not refused.
func TestOneDigest(t *testing.T) {
	needEngine(t)
	registry := startRegistry(t)
	img := newImage(t, registry)
	key := filepath.Join(t.TempDir(), "cosign.key")
	engines := []struct {
		name string
		env  []string
	}{
		{"Docker 20.10, classic builder", nil},
		{"Docker 28.5.2, BuildKit, overlay2 store", startDocker28(t, "overlay2")},
		{"Docker 28.5.2, BuildKit, containerd store", startDocker28(t, "containerd")},
		{"Podman 4.3, docker as Podman's CLI", podman(t, img, registry)},
	}
	var first string
	for _, e := range engines {
		out := img.makeOn(t, e.env, "docker-push", "REGISTRY="+registry, "SIGNING_KEY="+key)
		digest := checkPushed(t, lastLine(out), registry, img.name)
		t.Logf("%s: %s", e.name, digest)
		if first == "" {
			first = digest
		} else if digest != first {
			t.Errorf("%s pushed %s, %s pushed %s: want one digest", e.name, digest, engines[0].name, first)
		}
	}
}

// podman returns the environment in which `docker` is Podman's CLI, as
// podman-docker or an alias makes it, with a registries.conf of the test's
// own that lists registry as insecure, as a Podman user does for a
// plain-HTTP registry. It removes the images Podman built when the test
// ends. Without that entry, docker-push stops before building, with a
// line that says where to list the registry or which knob to set.
func podman(t *testing.T, img image, registry string) []string {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatalf("podman not found: .ci/run installs Debian's podman (%v)", err)
	}
	dir := t.TempDir()
	shim := filepath.Join(dir, "bin", "docker")
	if err := os.MkdirAll(filepath.Dir(shim), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shim, []byte("#!/bin/sh\nexec podman \"$@\"\n"), 0o700); err != nil { // #nosec G306 -- the test's own shim, run by this user only
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "registries.conf")
	path := "PATH=" + filepath.Dir(shim) + string(os.PathListSeparator) + os.Getenv("PATH")
	env := []string{path, "CONTAINERS_REGISTRIES_CONF=" + conf}
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := tryRunEnv(env, "make", img.makeArgs("docker-push", "REGISTRY="+registry)...)
	if line := oneLine(out); err == nil || !strings.Contains(line, "registries.conf") || !strings.Contains(line, "REGISTRY_INSECURE=true") {
		t.Errorf("Podman, %s not in registries.conf: make docker-push = %v, %q; want a failure, on one line, that names registries.conf and REGISTRY_INSECURE=true:\n%s",
			registry, err, line, out)
	}
	if err := os.WriteFile(conf, []byte("[[registry]]\nlocation = \""+registry+"\"\ninsecure = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		out, err := tryRun("podman", "image", "ls", "-q", "--filter", "reference=*/"+img.name)
		if ids := strings.Fields(out); err == nil && len(ids) > 0 {
			out, err = tryRun("podman", append([]string{"rmi", "-f"}, ids...)...)
		}
		if err != nil {
			t.Errorf("cleanup: podman's images of %s: %v\n%s", img.name, err, out)
		}
	})
	return env
}
