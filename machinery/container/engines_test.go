package container

// Docker 28 beside the default engine. make container-test builds dockerd,
// docker-proxy and the buildx CLI plugin of Docker 28 from the Go module
// proxy (docker28/build) and names their folder in DOCKER28_DIR;
// startDocker28 starts that engine with everything of its own, so that the
// default engine, and whatever runs on it meanwhile, never notices.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemonConfigs are the daemon.json of each image store startDocker28 takes:
// the graphdriver store (overlay2), Docker 28's default, and the containerd
// image store, its default from Docker 29 on.
var daemonConfigs = map[string]string{
	"overlay2":   `{"storage-driver": "overlay2", "features": {"containerd-snapshotter": false}}`,
	"containerd": `{"features": {"containerd-snapshotter": true}}`,
}

// startDocker28 starts Docker 28's dockerd with the image store store
// ("overlay2" or "containerd") and stops it when the test ends, leaving
// nothing behind. It returns what the docker CLI and make need in their
// environment to use that engine: DOCKER_HOST, its socket, and
// DOCKER_CONFIG, a folder of its own whose cli-plugins/docker-buildx is
// buildx, so that docker build there goes through BuildKit while the
// default engine's builds stay as they are.
//
// The engine has its own socket, data root, exec root, pidfile and cgroup
// parent, and its own bridge on a /24 of 10.219.0.0/16 that no interface
// here uses: never --bridge none, with which dockerd deletes docker0, the
// default engine's. It writes no iptables rule, and publishes ports with
// its own docker-proxy (Debian's refuses dockerd 28's -use-listen-fd). It
// starts a containerd of its own (Debian's, from PATH), under its exec and
// data roots, which dies with it: no state is shared with the containerd
// of the default engine. Its containerd namespaces are its own too, in case
// dockerd finds a system containerd at /run/containerd and uses that.
func startDocker28(t *testing.T, store string) []string {
	t.Helper()
	config, ok := daemonConfigs[store]
	if !ok {
		t.Fatalf("startDocker28: store %q, want overlay2 or containerd", store)
	}
	bin := os.Getenv("DOCKER28_DIR")
	if bin == "" {
		lacking(t, "no DOCKER28_DIR: make container-test builds Docker 28 and sets it")
	}
	for _, f := range []string{"dockerd", "docker-proxy", "cli-plugins/docker-buildx"} {
		if _, err := os.Stat(filepath.Join(bin, f)); err != nil { // #nosec G703 -- the folder make built Docker 28 into
			lacking(t, fmt.Sprintf("DOCKER28_DIR=%s holds no %s: make container-test builds it", bin, f))
		}
	}
	for _, c := range []string{"docker", "containerd", "ip"} {
		if _, err := exec.LookPath(c); err != nil {
			lacking(t, c+" not found: install Debian's docker.io, containerd and iproute2 (.ci/run does)")
		}
	}
	if os.Geteuid() != 0 {
		lacking(t, "not root: dockerd and its bridge need root")
	}

	// Short paths: a unix socket's path holds at most 107 bytes, and
	// containerd's sockets lie deep in the exec root.
	dir, err := os.MkdirTemp("", "hc28-")
	if err != nil {
		t.Fatal(err)
	}
	id := "hello-ctest-" + filepath.Base(dir)
	t.Cleanup(func() { removeEngine(t, dir, id) })
	conf := filepath.Join(dir, "config")
	if err := os.MkdirAll(filepath.Join(conf, "cli-plugins"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(bin, "cli-plugins", "docker-buildx"), filepath.Join(conf, "cli-plugins", "docker-buildx")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "dockerd.log")) // #nosec G304 -- in the engine's own temporary folder
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()

	bridge := newBridge(t)
	sock := filepath.Join(dir, "docker.sock")
	cmd := exec.Command(filepath.Join(bin, "dockerd"), // #nosec G204 G702 -- the dockerd make built
		"--config-file", filepath.Join(dir, "daemon.json"),
		"--host", "unix://"+sock, "--pidfile", filepath.Join(dir, "docker.pid"),
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--containerd-namespace", id, "--containerd-plugins-namespace", id+"-plugins",
		"--cgroup-parent", id, "--bridge", bridge, "--iptables=false", "--ip6tables=false",
		"--userland-proxy-path", filepath.Join(bin, "docker-proxy"))
	cmd.Stdout, cmd.Stderr = log, log
	p := start(t, cmd)
	// Registered after start's cleanup, so it runs first: dockerd gets
	// SIGTERM, stops its containers and its containerd, and exits; start's
	// SIGKILL is left only for a dockerd that did not.
	t.Cleanup(func() {
		_ = syscall.Kill(p.Process.Pid, syscall.SIGTERM) // fails only when dockerd is gone, and exited is closed then
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("cleanup: dockerd (pid %d) still runs 30 s after SIGTERM; killing it", p.Process.Pid)
		}
	})

	env := []string{"DOCKER_HOST=unix://" + sock, "DOCKER_CONFIG=" + conf}
	var version string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if version, err = tryRunEnv(env, "docker", "info", "--format", "{{.ServerVersion}}"); err == nil {
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("dockerd exited (%v) before it answered:\n%s", p.err, tail(filepath.Join(dir, "dockerd.log")))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not answer docker info within a minute: %v\n%s", err, tail(filepath.Join(dir, "dockerd.log")))
		}
	}
	if !strings.HasPrefix(version, "28.") {
		t.Fatalf("%s/dockerd is Docker %s, want 28", bin, version)
	}
	switch store {
	case "overlay2":
		if d := dockerOn(t, env, "info", "--format", "{{.Driver}}"); d != "overlay2" {
			t.Fatalf("docker info: storage driver %q, want overlay2", d)
		}
	case "containerd":
		if s := dockerOn(t, env, "info", "--format", "{{json .DriverStatus}}"); !strings.Contains(s, `"io.containerd.snapshotter.v1"`) {
			t.Fatalf("docker info: driver status %s, want driver-type io.containerd.snapshotter.v1", s)
		}
	}
	buildx := dockerOn(t, env, "buildx", "version")
	if inspect := dockerOn(t, env, "buildx", "inspect"); !strings.Contains(inspect, "BuildKit version:") {
		t.Fatalf("docker buildx inspect names no BuildKit:\n%s", inspect)
	}
	t.Logf("Docker %s, %s store, bridge %s, buildx %s: %s", version, store, bridge, buildx, env)
	return env
}

// newBridge creates a bridge for one engine, on the first 10.219.N.0/24
// that no interface here has an address in, and deletes it when the test
// ends. Its name, hc28-N, is the lock on N: ip link add fails when another
// engine, of this run or another, holds it.
func newBridge(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for n := range 256 {
		_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.219.%d.0/24", n))
		if slices.ContainsFunc(addrs, func(a net.Addr) bool {
			ipnet, ok := a.(*net.IPNet)
			return ok && (subnet.Contains(ipnet.IP) || ipnet.Contains(subnet.IP))
		}) {
			continue
		}
		name := fmt.Sprintf("hc28-%d", n)
		if out, err := tryRun("ip", "link", "add", name, "type", "bridge"); err != nil {
			if strings.Contains(out, "File exists") {
				continue
			}
			t.Fatalf("ip link add %s type bridge: %v\n%s", name, err, out)
		}
		t.Cleanup(func() {
			if out, err := tryRun("ip", "link", "del", name); err != nil {
				t.Errorf("cleanup: ip link del %s: %v\n%s", name, err, out)
			}
		})
		run(t, "ip", "addr", "add", fmt.Sprintf("10.219.%d.1/24", n), "dev", name)
		run(t, "ip", "link", "set", name, "up")
		return name
	}
	t.Fatal("no 10.219.N.0/24 free for a bridge")
	return ""
}

// removeEngine removes what an engine of startDocker28 left once it
// stopped: processes (its containerd and shims name dir; its containers'
// are in its cgroups), mounts under dir (a dockerd that had to be killed
// leaves its containers' and its roots'), and its cgroups, named id; then
// dir. Anything left is an error: a clean stop leaves nothing.
func removeEngine(t *testing.T, dir, id string) {
	if t.Failed() {
		t.Logf("dockerd's log:\n%s", tail(filepath.Join(dir, "dockerd.log")))
	}
	cgroups := cgroupsNamed(id)
	var pids []int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if pids = leftovers(dir, cgroups); len(pids) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, pid := range pids {
		t.Errorf("cleanup: pid %d, started by the engine in %s, still runs; killing it", pid, dir)
		_ = syscall.Kill(pid, syscall.SIGKILL) // fails only when it exited meanwhile
	}
	mounts := mountsUnder(t, dir)
	for _, m := range slices.Backward(mounts) { // the deepest first
		t.Errorf("cleanup: %s is still mounted; unmounting it", m)
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("cleanup: umount %s: %v", m, err)
		}
	}
	// A cgroup can be removed once the processes killed above have left it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := removeCgroups(cgroups)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			t.Errorf("cleanup: %v", err)
			break
		}
	}
	if left := mountsUnder(t, dir); len(left) > 0 {
		t.Errorf("cleanup: still mounted: %q; leaving %s", left, dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// mountsUnder lists the mount points under dir, in the order they were
// mounted.
func mountsUnder(t *testing.T, dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mounts []string
	for s := bufio.NewScanner(f); s.Scan(); {
		// The mount point is the fifth field, with space, tab, newline
		// and backslash escaped in octal.
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		m, err := strconv.Unquote(`"` + strings.ReplaceAll(fields[4], `"`, `\"`) + `"`)
		if err != nil {
			m = fields[4]
		}
		if strings.HasPrefix(m, dir+"/") {
			mounts = append(mounts, m)
		}
	}
	return mounts
}

// cgroupsNamed lists the cgroups named id, in every hierarchy: runc puts
// a relative --cgroup-parent under dockerd's own cgroup of each hierarchy,
// which is not always the hierarchy's root.
func cgroupsNamed(id string) []string {
	var found []string
	_ = filepath.WalkDir("/sys/fs/cgroup", func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil || !d.IsDir():
			return nil
		case d.Name() == id:
			found = append(found, path)
			return filepath.SkipDir
		case strings.Count(path, "/") > 6: // /sys/fs/cgroup/HIERARCHY/A/B/id at the deepest
			return filepath.SkipDir
		}
		return nil
	})
	return found
}

// leftovers lists the processes an engine left: those whose command line
// names dir (its containerd and shims name its exec root) and those in its
// cgroups or below them (its containers').
func leftovers(dir string, cgroups []string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")) // #nosec G304 -- /proc/PID/cmdline
		if err == nil && bytes.Contains(cmdline, []byte(dir+"/")) {
			pids = append(pids, pid)
		}
	}
	for _, c := range cgroups {
		_ = filepath.WalkDir(c, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.Name() != "cgroup.procs" {
				return nil
			}
			procs, _ := os.ReadFile(path) // #nosec G304 G122 -- cgroupfs, where only root makes folders and none is a symlink
			for _, f := range strings.Fields(string(procs)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

// removeCgroups removes the cgroups and those below them, the deepest first.
func removeCgroups(cgroups []string) error {
	var dirs []string
	for _, c := range cgroups {
		_ = filepath.WalkDir(c, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	for _, d := range slices.Backward(dirs) {
		if err := os.Remove(d); err != nil {
			return err
		}
	}
	return nil
}

// tail is the last 40 lines of a log, or why it cannot be read.
func tail(path string) string {
	b, err := os.ReadFile(path) // #nosec G304 -- a log the suite writes
	if errors.Is(err, os.ErrNotExist) {
		return "(no log)"
	}
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// TestDocker28Walk walks the image on Docker 28, with each image store:
// make docker-build through buildx and BuildKit, then the image runs
// locked down, greets over its port on 127.0.0.1 and is healthy.
func TestDocker28Walk(t *testing.T) {
	for _, store := range []string{"overlay2", "containerd"} {
		t.Run(store, func(t *testing.T) {
			env := startDocker28(t, store)
			img := newImage(t)
			img.makeOn(t, env, "docker-build")
			// BuildKit notes itself in every history entry it writes; the
			// classic builder writes "#(nop)" instead.
			if history := dockerOn(t, env, "history", "--no-trunc", "--format", "{{.CreatedBy}}", img.ref()); !strings.Contains(history, "# buildkit") {
				t.Errorf("docker history %s names no BuildKit step:\n%s", img.ref(), history)
			}
			name := containerOn(t, env, img.ref(), locked("8080"))
			greet(t, hostAddrOn(t, env, name, "8080"), "Docker28")
			waitHealthyOn(t, env, name)
		})
	}
}
