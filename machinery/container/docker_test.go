package container

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// root is the repository the suite builds from: make runs there.
var root, _ = filepath.Abs("../..")

// run runs a command in root and returns its trimmed stdout; a failure stops
// the test with the command, its exit status and its output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runEnv(t, nil, name, args...)
}

// runEnv is run with variables added to the environment.
func runEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := tryRunEnv(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// tryRun runs a command in root; on error it returns stdout and stderr together.
func tryRun(name string, args ...string) (string, error) {
	return tryRunEnv(nil, name, args...)
}

// tryRunEnv is tryRun with variables added to the environment.
func tryRunEnv(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...) // #nosec G204 G702 -- the suite exists to run docker, make and the tools make built
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return strings.TrimSpace(stdout.String()), nil
}

// docker runs the docker CLI on the default engine; see run.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	return dockerOn(t, nil, args...)
}

// dockerOn runs the docker CLI on the engine env names (nil: the default
// one; startDocker28 returns another's); see run.
func dockerOn(t *testing.T, env []string, args ...string) string {
	t.Helper()
	return runEnv(t, env, "docker", args...)
}

// image is one image the suite builds with make, under names no one else uses,
// from a binary built into bin, in a temporary folder of its own.
type image struct {
	name, tag, version, bin string
	config                  string // XDG_CONFIG_HOME, where docker-push makes a key on first use
}

// newImage picks unique names and removes every image made under them when
// the test ends, passed or failed: every tag of the name, and of the name in
// each of registries, which the test pushes to or pulls from.
func newImage(t *testing.T, registries ...string) image {
	t.Helper()
	id := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	img := image{name: "hello-ctest-" + id, tag: "t" + id, version: "v0.0.0-ctest." + id,
		bin: filepath.Join(t.TempDir(), "hello"), config: t.TempDir()}
	t.Cleanup(func() {
		var ids []string
		for _, repo := range append([]string{""}, registries...) {
			out, err := tryRun("docker", "image", "ls", "-q", "--no-trunc", path.Join(repo, img.name))
			if err != nil {
				t.Errorf("cleanup: docker image ls %s: %v\n%s", path.Join(repo, img.name), err, out)
			}
			ids = append(ids, strings.Fields(out)...)
		}
		slices.Sort(ids)
		if ids = slices.Compact(ids); len(ids) > 0 {
			if out, err := tryRun("docker", append([]string{"rmi", "-f"}, ids...)...); err != nil {
				t.Errorf("cleanup: docker rmi -f %v: %v\n%s", ids, err, out)
			}
		}
	})
	return img
}

func (img image) ref() string { return img.name + ":" + img.tag }

// makeArgs are make's arguments for target with this image's knobs and extra
// ones. XDG_CONFIG_HOME is a folder of the image's, so the signing key that
// docker-push makes on first use goes there, never into the user's.
func (img image) makeArgs(target string, knobs ...string) []string {
	return append([]string{"-s", target, "IMAGE=" + img.name, "TAG=" + img.tag,
		"VERSION=" + img.version, "SOURCE=" + testSource, "BIN=" + img.bin,
		"XDG_CONFIG_HOME=" + img.config}, knobs...)
}

// make runs a target of the Makefile with this image's knobs and extra ones,
// and returns its output. It wants the working tree's ./hello as it was: a
// run killed halfway must not leave a binary of another build, or another
// architecture, behind.
func (img image) make(t *testing.T, target string, knobs ...string) string {
	t.Helper()
	return img.makeOn(t, nil, target, knobs...)
}

// makeOn is make with variables added to make's environment: the engine's
// of startDocker28, for one.
func (img image) makeOn(t *testing.T, env []string, target string, knobs ...string) string {
	t.Helper()
	call := strings.Join(append([]string{target}, knobs...), " ")
	before := workingBinary()
	start := time.Now()
	out, err := tryRunEnv(env, "make", img.makeArgs(target, knobs...)...)
	if err != nil {
		t.Fatalf("make %s: %v\n%s", call, err, out)
	}
	t.Logf("make %s: %.1fs", call, time.Since(start).Seconds())
	if after := workingBinary(); after != before {
		t.Errorf("make %s: the working tree's ./hello was %s, is %s; want it untouched", call, before, after)
	}
	return out
}

// workingBinary describes the working tree's ./hello: its size and hash, or
// why it cannot be read.
func workingBinary() string {
	b, err := os.ReadFile(filepath.Join(root, "hello")) // #nosec G304 -- the working tree's ./hello
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d bytes, sha256 %x", len(b), sha256.Sum256(b))
}

// tryMake is make for a target that may fail; see tryRun.
func (img image) tryMake(target string, knobs ...string) (string, error) {
	return tryRun("make", img.makeArgs(target, knobs...)...)
}

// testSource is the address the suite passes as SOURCE, to find in the label.
const testSource = "https://example.invalid/hello"

// container starts a detached container from ref with docker run's flags,
// and args for hello, and removes it when the test ends. It returns the
// container's name.
func container(t *testing.T, ref string, flags []string, args ...string) string {
	t.Helper()
	return containerOn(t, nil, ref, flags, args...)
}

// containerOn is container on the engine env names; see dockerOn.
func containerOn(t *testing.T, env []string, ref string, flags []string, args ...string) string {
	t.Helper()
	name := fmt.Sprintf("hello-ctest-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	t.Cleanup(func() {
		if _, err := tryRunEnv(env, "docker", "container", "inspect", name); err == nil {
			if out, err := tryRunEnv(env, "docker", "rm", "-f", name); err != nil {
				t.Errorf("cleanup: docker rm -f %s: %v\n%s", name, err, out)
			}
		}
	})
	argv := append([]string{"run", "-d", "--name", name}, flags...)
	dockerOn(t, env, append(append(argv, ref), args...)...)
	return name
}

// lockedDown are the docker run flags of production: nothing writable, no
// capabilities, no privilege gain.
var lockedDown = []string{"--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"}

// locked is lockedDown and a port published on loopback only.
func locked(port string) []string {
	return append(slices.Clip(lockedDown), "-p", "127.0.0.1::"+port)
}

// hostAddr is where Docker published the container's port on 127.0.0.1.
func hostAddr(t *testing.T, name, port string) string {
	t.Helper()
	return hostAddrOn(t, nil, name, port)
}

// hostAddrOn is hostAddr on the engine env names; see dockerOn.
func hostAddrOn(t *testing.T, env []string, name, port string) string {
	t.Helper()
	for _, addr := range strings.Fields(dockerOn(t, env, "port", name, port+"/tcp")) {
		if strings.HasPrefix(addr, "127.0.0.1:") {
			return addr
		}
	}
	t.Fatalf("docker port %s %s: no address on 127.0.0.1", name, port)
	return ""
}

// greet asks addr for /name until it answers or 10 s pass, and checks the answer.
func greet(t *testing.T, addr, name string) {
	t.Helper()
	url := "http://" + addr + "/" + name
	want := "Hello, " + name + "!\n"
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		code, body, _, err := get(url, "")
		if err != nil {
			last = err.Error()
			continue
		}
		if code != http.StatusOK || string(body) != want {
			t.Fatalf("GET %s = %d %q, want 200 %q", url, code, body, want)
		}
		return
	}
	t.Fatalf("GET %s: no answer within 10 s: %s", url, last)
}

// get fetches url with an optional Accept header, giving up after 5 s, and
// returns the status, body and headers.
func get(url, accept string) (int, []byte, http.Header, error) {
	return getWith(http.DefaultClient, url, accept)
}

// getWith is get with a client of the caller's.
func getWith(client *http.Client, url, accept string) (int, []byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, resp.Header, err
}

// freePort returns a loopback port that nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// process is a command running beside the test, in a process group of its own.
type process struct {
	*exec.Cmd
	exited chan struct{} // closed once the command has exited; err is set then
	err    error
}

// start starts cmd and kills its whole group when the test ends, if it still runs.
func start(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{Cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // fails only when the group is gone, and exited is closed then
		<-p.exited
	})
	return p
}

// stop sends sig to the process group, as a terminal's Ctrl-C does, and
// returns how the command exited; it fails the test if that takes over 5 s.
func (p *process) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	_ = syscall.Kill(-p.Process.Pid, sig) // fails only when the group is gone, and exited is closed then
	select {
	case <-p.exited:
		return p.err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still runs 5 s after %v", strings.Join(p.Args, " "), sig)
		return nil
	}
}
