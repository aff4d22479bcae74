package container

import (
	"archive/tar"
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestImage builds the amd64 image with `make docker-build` and checks what it
// holds, how it is configured, and how it runs.
func TestImage(t *testing.T) {
	needEngine(t)
	img := newImage(t)
	img.make(t, "docker-build")

	t.Run("one layer, one file", func(t *testing.T) {
		onlyBinary(t, img)
	})

	t.Run("build context is the binary alone", func(t *testing.T) {
		// make docker-build's default context is the repository, BIN=hello's
		// folder. An image that copies the whole context shows what
		// .dockerignore lets in: ./hello, if a build left one, and nothing else.
		probe := newImage(t)
		cmd := exec.Command("docker", "build", "-q", "-t", probe.ref(), "-f", "-", ".") // #nosec G204 -- the suite's own image name
		cmd.Dir = root
		cmd.Stdin = strings.NewReader("FROM scratch\nCOPY . /context/\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker build: %v\n%s", err, out)
		}
		got := slices.DeleteFunc(names(layerFiles(t, probe.ref())), func(n string) bool {
			return n == "context/" || n == "context/hello"
		})
		if len(got) != 0 {
			t.Errorf("the build context holds %v besides hello, want only hello", got)
		}
	})

	t.Run("config", func(t *testing.T) {
		checkConfig(t, []byte(docker(t, "image", "inspect", "-f", "{{json .}}", img.ref())), "linux/amd64", img.version)
	})

	t.Run("-version", func(t *testing.T) {
		out := docker(t, "run", "--rm", img.ref(), "-version")
		if !strings.Contains(out, img.version) {
			t.Errorf("docker run IMAGE -version = %q, want it to name %s", out, img.version)
		}
	})

	t.Run("runs locked down, healthy, stops on SIGTERM", func(t *testing.T) {
		name := container(t, img.ref(), locked("8080"))
		greet(t, hostAddr(t, name, "8080"), "Gopher")
		waitHealthy(t, name)
		want := "Welcome, user! Curl me (locally with Port 8080) with your name as path :-D"
		if logs := run(t, "docker", "logs", name); !strings.HasPrefix(logs, want+"\n") && logs != want {
			t.Errorf("docker logs start %q, want first line %q", firstLine(logs), want)
		}
		stop(t, name)
	})

	t.Run("PORT=9090", func(t *testing.T) {
		name := container(t, img.ref(), append(locked("9090"), "-e", "PORT=9090"))
		greet(t, hostAddr(t, name, "9090"), "Port")
		waitHealthy(t, name) // the healthcheck finds the port through $PORT too
	})

	// The healthcheck runs /hello -healthcheck with the container's
	// environment but none of hello's arguments: it reads them from the
	// hello that serves, PID 1, or tini's child under --init.
	for _, flags := range [][]string{nil, {"--init"}, {"-e", "PORT=8080"}} {
		t.Run(strings.Join(append(flags, "-addr :9090"), " "), func(t *testing.T) {
			name := container(t, img.ref(), append(locked("9090"), flags...), "-addr", ":9090")
			greet(t, hostAddr(t, name, "9090"), "Addr")
			waitHealthy(t, name)
		})
	}

	// A hello that stops answering (SIGSTOP: its listener still accepts,
	// into the kernel's queue) becomes unhealthy, and each failed probe says
	// why itself, within its 2 s, before Docker's 3 s timeout cuts it off.
	// One failed probe is enough here, not the image's three.
	t.Run("stops answering", func(t *testing.T) {
		name := container(t, img.ref(), append(locked("9090"), "--health-retries", "1"), "-addr", ":9090")
		waitHealthy(t, name)
		docker(t, "kill", "-s", "STOP", name)
		deadline := time.Now().Add(20 * time.Second)
		for docker(t, "inspect", "-f", "{{.State.Health.Status}}", name) != "unhealthy" {
			if time.Now().After(deadline) {
				t.Fatalf("a stopped hello: not unhealthy 20 s later; docker inspect .State.Health:\n%s",
					docker(t, "inspect", "-f", "{{json .State.Health}}", name))
			}
			time.Sleep(250 * time.Millisecond)
		}
		var health struct {
			Log []struct {
				ExitCode int
				Output   string
			}
		}
		if err := json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .State.Health}}", name)), &health); err != nil {
			t.Fatal(err)
		}
		last := health.Log[len(health.Log)-1]
		if last.ExitCode != 1 || !strings.Contains(last.Output, "healthcheck:") {
			t.Errorf("the last failed probe of a stopped hello: exit %d, %q; want exit 1 and the probe's own line", last.ExitCode, last.Output)
		}
		t.Logf("a stopped hello's probe: %s", strings.TrimSpace(last.Output))
	})

	// Go 1.25's runtime (go.mod's go line) sizes GOMAXPROCS from the CPU
	// limit: rounded up, at least 2, at most the CPUs there are.
	t.Run("GOMAXPROCS from --cpus", func(t *testing.T) {
		cpus, err := strconv.Atoi(docker(t, "info", "--format", "{{.NCPU}}"))
		if err != nil {
			t.Fatal(err)
		}
		for _, limit := range []float64{0.5, 1.5} {
			name := container(t, img.ref(), append(slices.Clip(lockedDown), "--cpus", strconv.FormatFloat(limit, 'f', -1, 64)))
			want := min(cpus, max(2, int(math.Ceil(limit))))
			if got := startLine(t, name).GOMAXPROCS; got != want {
				t.Errorf("docker run --cpus %g on %d CPUs: gomaxprocs %d, want %d", limit, cpus, got, want)
			}
		}
	})
}

// startLine is the start line a container's hello logged, read from
// docker logs once it is there (within 10 s).
func startLine(t *testing.T, name string) (line struct {
	Msg        string
	GOMAXPROCS int `json:"gomaxprocs"`
}) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for _, l := range strings.Split(run(t, "docker", "logs", name), "\n") {
			if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "listening" {
				return line
			}
		}
	}
	t.Fatalf("container %s logged no start line within 10 s", name)
	return line
}

// checkConfig wants an image config, as docker inspect or a registry gives
// it, to say what the Dockerfile says: the platform, numeric non-root user,
// one port, the exec-form entrypoint, the healthcheck and the OCI labels.
func checkConfig(t *testing.T, raw []byte, platform, version string) {
	t.Helper()
	var got struct {
		Os, Architecture string
		Config           struct {
			User         string
			ExposedPorts map[string]struct{}
			Entrypoint   []string
			Cmd          []string
			Labels       map[string]string
			Healthcheck  struct {
				Test     []string
				Interval time.Duration
			}
		}
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	c := got.Config
	if p := got.Os + "/" + got.Architecture; p != platform {
		t.Errorf("platform %s, want %s", p, platform)
	}
	if c.User != "65534:65534" {
		t.Errorf("User %q, want numeric non-root 65534:65534", c.User)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok || len(c.ExposedPorts) != 1 {
		t.Errorf("ExposedPorts %v, want only 8080/tcp", c.ExposedPorts)
	}
	if !slices.Equal(c.Entrypoint, []string{"/hello"}) || len(c.Cmd) != 0 {
		t.Errorf("Entrypoint %q Cmd %q, want exec form [/hello] and no Cmd", c.Entrypoint, c.Cmd)
	}
	if want := []string{"CMD", "/hello", "-healthcheck"}; !slices.Equal(c.Healthcheck.Test, want) {
		t.Errorf("Healthcheck %q, want %q", c.Healthcheck.Test, want)
	}
	if c.Healthcheck.Interval <= 0 || c.Healthcheck.Interval > 5*time.Second {
		t.Errorf("Healthcheck interval %v, want at most 5s so a fresh container is healthy soon", c.Healthcheck.Interval)
	}
	revision := run(t, "git", "rev-parse", "HEAD")
	for key, want := range map[string]string{
		"source":      testSource,
		"version":     version,
		"revision":    revision,
		"title":       "hello",
		"description": "",
		"licenses":    "",
	} {
		v, ok := c.Labels["org.opencontainers.image."+key]
		if !ok || v == "" || want != "" && v != want {
			t.Errorf("label org.opencontainers.image.%s = %q, want %q", key, v, cmp.Or(want, "non-empty"))
		}
	}
}

// TestDockerRun runs `make docker-run` on a port of its own, checks that the
// banner names that port, greets it there, and stops it as Ctrl-C does.
func TestDockerRun(t *testing.T) {
	needEngine(t)
	img := newImage(t)
	img.make(t, "docker-build") // so that docker-run's own build is quick
	port := freePort(t)
	cmd := exec.Command("make", img.makeArgs("docker-run", "PORT="+port)...) // #nosec G204 -- the target under test
	cmd.Dir = root
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	t.Cleanup(func() {
		// --rm has no turn when make is killed.
		ids, _ := tryRun("docker", "ps", "-aq", "--filter", "ancestor="+img.ref())
		for _, id := range strings.Fields(ids) {
			if out, err := tryRun("docker", "rm", "-f", id); err != nil {
				t.Errorf("cleanup: docker rm -f %s: %v\n%s", id, err, out)
			}
		}
	})
	makeRun := start(t, cmd)
	if err := w.Close(); err != nil { // make has its own copy
		t.Fatal(err)
	}

	// Read make's output line by line; hand over hello's banner when it comes.
	var mu sync.Mutex
	var said strings.Builder
	output := func() string { mu.Lock(); defer mu.Unlock(); return said.String() }
	banner, ended := make(chan string, 1), make(chan struct{})
	go func() {
		defer close(ended)
		defer r.Close()
		for s := bufio.NewScanner(r); s.Scan(); {
			mu.Lock()
			said.WriteString(s.Text() + "\n")
			mu.Unlock()
			if strings.HasPrefix(s.Text(), "Welcome") {
				select {
				case banner <- s.Text():
				default:
				}
			}
		}
	}()
	want := "Welcome, user! Curl me (locally with Port " + port + ") with your name as path :-D"
	select {
	case line := <-banner:
		if line != want {
			t.Errorf("make docker-run PORT=%s printed %q, want %q", port, line, want)
		}
	case <-ended:
		t.Fatalf("make docker-run PORT=%s ended before hello's banner; it said:\n%s", port, output())
	case <-time.After(time.Minute):
		t.Fatalf("make docker-run PORT=%s printed no banner within a minute; it said:\n%s", port, output())
	}

	greet(t, "127.0.0.1:"+port, "Make")
	_ = makeRun.stop(t, syscall.SIGINT) // make exits non-zero on Ctrl-C; what counts is that no container is left
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left := run(t, "docker", "ps", "-aq", "--filter", "ancestor="+img.ref())
		if left == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containers %s still exist 5 s after Ctrl-C, want them removed (--rm); make said:\n%s", left, output())
		}
	}
}

// onlyBinary wants img to be the binary: one layer holding one file, /hello,
// root's and 0755 (so user 65534 cannot rewrite it), equal to the img.bin
// that make built, and an image size within 1% of the binary's.
// It returns the binary.
func onlyBinary(t *testing.T, img image) []byte {
	t.Helper()
	ref := img.ref()
	binary, err := os.ReadFile(img.bin)
	if err != nil {
		t.Fatal(err)
	}
	onlyFile(t, layerFiles(t, ref), binary)
	size, _ := strconv.ParseFloat(docker(t, "image", "inspect", "-f", "{{.Size}}", ref), 64)
	if diff := math.Abs(size-float64(len(binary))) / float64(len(binary)); diff > 0.01 {
		t.Errorf("image size %.0f bytes, binary %d bytes: %.1f%% apart, want within 1%%", size, len(binary), 100*diff)
	}
	t.Logf("image %.0f bytes, binary %d bytes", size, len(binary))
	return binary
}

// onlyFile wants a layer's files to be exactly /hello, a regular file owned
// by root with mode 0755, equal to binary.
func onlyFile(t *testing.T, files []file, binary []byte) {
	t.Helper()
	if len(files) != 1 || files[0].Name != "hello" {
		t.Fatalf("the layer holds %v, want exactly [hello]", names(files))
	}
	f := files[0]
	if f.Typeflag != tar.TypeReg || f.Mode&0o777 != 0o755 || f.Uid != 0 || f.Gid != 0 {
		t.Errorf("/hello: type %c mode %o owner %d:%d, want a regular file, 755, 0:0", f.Typeflag, f.Mode, f.Uid, f.Gid)
	}
	if !bytes.Equal(f.body, binary) {
		t.Errorf("/hello in the image (%d bytes) differs from the binary make built (%d bytes)", len(f.body), len(binary))
	}
}

// waitHealthy wants Docker to call the container healthy within 15 s of its start.
func waitHealthy(t *testing.T, name string) {
	t.Helper()
	waitHealthyOn(t, nil, name)
}

// waitHealthyOn is waitHealthy on the engine env names; see dockerOn.
func waitHealthyOn(t *testing.T, env []string, name string) {
	t.Helper()
	started, err := time.Parse(time.RFC3339Nano, dockerOn(t, env, "inspect", "-f", "{{.State.StartedAt}}", name))
	if err != nil {
		t.Fatal(err)
	}
	for {
		status := dockerOn(t, env, "inspect", "-f", "{{.State.Health.Status}}", name)
		if status == "healthy" {
			t.Logf("healthy %.1fs after start", time.Since(started).Seconds())
			return
		}
		if time.Since(started) > 15*time.Second {
			t.Fatalf("health %q 15 s after start, want healthy; docker inspect .State.Health:\n%s",
				status, dockerOn(t, env, "inspect", "-f", "{{json .State.Health}}", name))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stop runs docker stop and wants hello to exit 0 on SIGTERM at once, well
// before Docker's 10 s SIGKILL (which would make the exit code 137).
func stop(t *testing.T, name string) {
	t.Helper()
	start := time.Now()
	docker(t, "stop", "-t", "10", name)
	t.Logf("docker stop returned after %.1fs", time.Since(start).Seconds())
	var state struct {
		ExitCode   int
		FinishedAt time.Time
	}
	if err := json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .State}}", name)), &state); err != nil {
		t.Fatal(err)
	}
	if state.ExitCode != 0 {
		t.Errorf("exit code after docker stop = %d, want 0", state.ExitCode)
	}
	// Timed by the container's own end, not by the CLI, which also waits for
	// the daemon to tear down the network: slow on a busy machine.
	if took := state.FinishedAt.Sub(start); took > 3*time.Second {
		t.Errorf("hello exited %v after docker stop began, want well under Docker's 10 s kill", took)
	}
}

// file is one entry of an image layer, with its content.
type file struct {
	*tar.Header
	body []byte
}

// layerFiles saves ref with docker save, wants exactly one layer, and returns
// the files in it.
func layerFiles(t *testing.T, ref string) []file {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	docker(t, "save", "-o", archive, ref)
	var manifest []struct{ Layers []string }
	if err := json.Unmarshal(member(t, archive, "manifest.json"), &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 {
		t.Fatalf("docker save manifest.json %+v, want one image with exactly one layer", manifest)
	}
	return tarFiles(t, bytes.NewReader(member(t, archive, manifest[0].Layers[0])))
}

// tarFiles returns the files in a tar stream.
func tarFiles(t *testing.T, layer io.Reader) []file {
	t.Helper()
	var files []file
	r := tar.NewReader(layer)
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file{h, body})
	}
}

// member returns the content of one file in a tar archive.
func member(t *testing.T, archive, name string) []byte {
	t.Helper()
	f, err := os.Open(archive) // #nosec G304 -- the archive docker save wrote into the test's folder
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := tar.NewReader(f)
	for {
		h, err := r.Next()
		if err != nil {
			t.Fatalf("%s in %s: %v", name, archive, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func names(files []file) []string {
	var n []string
	for _, f := range files {
		n = append(n, f.Name)
	}
	return n
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
