package container

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPush pushes with `make docker-push` to a real registry, deletes the
// image here, pulls it back and runs it.
func TestPush(t *testing.T) {
	needEngine(t)
	registry := startRegistry(t)
	img := newImage(t, registry)
	img.make(t, "docker-push", "REGISTRY="+registry)

	remote := registry + "/" + img.ref()
	id := docker(t, "image", "inspect", "-f", "{{.Id}}", remote)
	pushed := repoDigests(t, remote)
	code, _, header := fetch(t, "http://"+registry+"/v2/"+img.name+"/manifests/"+img.tag, dockerManifest)
	if digest := header.Get("Docker-Content-Digest"); code != http.StatusOK || !slices.Equal(pushed, []string{digest}) {
		t.Fatalf("registry: GET manifest %s = %d digest %q; docker push recorded %q", img.tag, code, digest, pushed)
	}

	docker(t, "rmi", img.ref(), remote)
	if _, err := tryRun("docker", "image", "inspect", id); err == nil {
		t.Fatalf("image %s is still here after docker rmi; the pull would prove nothing", id)
	}
	docker(t, "pull", remote)
	if pulled := repoDigests(t, remote); !slices.Equal(pulled, pushed) {
		t.Errorf("pulled digest %q, pushed %q", pulled, pushed)
	}
	if got := docker(t, "image", "inspect", "-f", "{{.Id}}", remote); got != id {
		t.Errorf("pulled image %s, pushed %s", got, id)
	}
	name := container(t, remote, locked("8080"))
	greet(t, hostAddr(t, name, "8080"), "Registry")
}

// TestPushNoRegistry pushes to a registry that does not answer, as a newcomer
// does before starting one: make stops before building anything, with a line
// that names the registry and the REGISTRY knob.
func TestPushNoRegistry(t *testing.T) {
	registry := "127.0.0.1:" + freePort(t) // nothing listens there
	img := newImage(t, registry)
	out, err := img.tryMake("docker-push", "REGISTRY="+registry)
	if line := firstLine(out); err == nil || !strings.Contains(line, registry) || !strings.Contains(line, "REGISTRY=") {
		t.Fatalf("make docker-push REGISTRY=%s (closed port): err %v, first line %q; want a failure whose first line names %s and the REGISTRY knob. Output:\n%s",
			registry, err, line, registry, out)
	}
}

// TestPushMultiArch pushes with PLATFORMS for amd64 and arm64 and checks, in
// the registry itself, that the tag is one index naming both, each pointing at
// an image of its architecture; then pulls the arm64 one as a Pi would.
func TestPushMultiArch(t *testing.T) {
	needEngine(t)
	registry := startRegistry(t)
	img := newImage(t, registry)
	remote := registry + "/" + img.ref()
	t.Cleanup(func() { _, _ = tryRun("docker", "manifest", "rm", remote) }) // left only by a failed push: nothing to remove is the usual case
	img.make(t, "docker-push", "REGISTRY="+registry, "PLATFORMS=linux/amd64 linux/arm64")

	base := "http://" + registry + "/v2/" + img.name
	code, body, header := fetch(t, base+"/manifests/"+img.tag, ociIndex+", "+dockerList)
	var index struct {
		MediaType string
		Manifests []struct {
			Digest   string
			Platform struct{ OS, Architecture string }
		}
	}
	if err := json.Unmarshal(body, &index); code != http.StatusOK || err != nil {
		t.Fatalf("registry: GET index %s = %d %v:\n%s", img.tag, code, err, body)
	}
	if index.MediaType != ociIndex && index.MediaType != dockerList {
		t.Errorf("tag %s is a %q, want an index (%s or %s)", img.tag, index.MediaType, ociIndex, dockerList)
	}
	var platforms []string
	arm64 := "" // the arm64 image's ID: its config's digest
	for _, m := range index.Manifests {
		p := m.Platform.OS + "/" + m.Platform.Architecture
		platforms = append(platforms, p)
		got, config := imageConfig(t, base, m.Digest)
		if got != p {
			t.Errorf("index entry %s points at an image for %s", p, got)
		}
		if p == "linux/arm64" {
			arm64 = config
		}
	}
	slices.Sort(platforms)
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Fatalf("index lists %v, want %v", platforms, want)
	}

	docker(t, "pull", "--platform", "linux/arm64", remote)
	if p := docker(t, "image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", remote); p != "linux/arm64" {
		t.Errorf("docker pull --platform linux/arm64 %s brought %s", remote, p)
	}
	if got := repoDigests(t, remote); !slices.Contains(got, header.Get("Docker-Content-Digest")) {
		t.Errorf("docker pull %s recorded digests %q, want the index's %s among them", remote, got, header.Get("Docker-Content-Digest"))
	}
	if got := docker(t, "image", "inspect", "-f", "{{.Id}}", remote); got != arm64 {
		t.Errorf("docker pull --platform linux/arm64 brought image %s, want the index's arm64 image %s", got, arm64)
	}

	img.make(t, "clean", "REGISTRY="+registry, "PLATFORMS=linux/amd64 linux/arm64")
	for _, tag := range []string{img.tag, img.tag + "-amd64", img.tag + "-arm64"} {
		for _, ref := range []string{img.name + ":" + tag, registry + "/" + img.name + ":" + tag} {
			if _, err := tryRun("docker", "image", "inspect", ref); err == nil {
				t.Errorf("make clean left the image %s", ref)
			}
		}
	}
}

// Media types the registry is asked for.
const (
	ociIndex       = "application/vnd.oci.image.index.v1+json"
	dockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	ociManifest    = "application/vnd.oci.image.manifest.v1+json"
)

// imageConfig reads one image manifest and its config blob from the registry
// and returns the os/architecture the config records and the config's digest.
func imageConfig(t *testing.T, base, digest string) (platform, config string) {
	t.Helper()
	code, body, _ := fetch(t, base+"/manifests/"+digest, dockerManifest+", "+ociManifest)
	var manifest struct{ Config struct{ Digest string } }
	if err := json.Unmarshal(body, &manifest); code != http.StatusOK || err != nil {
		t.Fatalf("registry: GET manifest %s = %d %v:\n%s", digest, code, err, body)
	}
	code, body, _ = fetch(t, base+"/blobs/"+manifest.Config.Digest, "")
	var image struct{ OS, Architecture string }
	if err := json.Unmarshal(body, &image); code != http.StatusOK || err != nil {
		t.Fatalf("registry: GET config %s = %d %v:\n%s", manifest.Config.Digest, code, err, body)
	}
	return image.OS + "/" + image.Architecture, manifest.Config.Digest
}

// fetch is get for the registry's API: a failed request stops the test.
func fetch(t *testing.T, url, accept string) (int, []byte, http.Header) {
	t.Helper()
	code, body, header, err := get(url, accept)
	if err != nil {
		t.Fatal(err)
	}
	return code, body, header
}

// repoDigests are the registry digests Docker records for a pushed or pulled
// ref: one per manifest or index the image was pushed or pulled as.
func repoDigests(t *testing.T, ref string) []string {
	t.Helper()
	repo := ref[:strings.LastIndex(ref, ":")] // host:port/name:tag has its tag last
	var all, digests []string
	if err := json.Unmarshal([]byte(docker(t, "image", "inspect", "-f", "{{json .RepoDigests}}", ref)), &all); err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		if name, digest, _ := strings.Cut(d, "@"); name == repo {
			digests = append(digests, digest)
		}
	}
	return digests
}

// startRegistry runs CNCF Distribution's registry on a free loopback port with
// storage in a temporary folder, both gone when the test ends, and returns its
// host:port. `make container-test` builds it and sets REGISTRY_BIN.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("REGISTRY_BIN")
	if bin == "" {
		t.Fatal("REGISTRY_BIN is not set: run the suite with `make container-test`, which builds the registry")
	}
	dir := t.TempDir()
	addr := "127.0.0.1:" + freePort(t)
	config := filepath.Join(dir, "config.yml")
	err := os.WriteFile(config, fmt.Appendf(nil, `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
`, filepath.Join(dir, "storage"), addr), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", config)                   // #nosec G204 G702 -- the registry make container-test built
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none") // no tracing exporter to dial
	log, err := os.Create(filepath.Join(dir, "registry.log"))   // #nosec G304 -- in the test's own folder
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() }) // only the registry wrote to it: nothing of ours to flush
	cmd.Stdout, cmd.Stderr = log, log
	registry := start(t, cmd)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-registry.exited:
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("registry exited: %v\n%s", registry.err, out)
		default:
		}
		if code, _, _, err := get("http://"+addr+"/v2/", ""); err == nil && code == http.StatusOK {
			return addr
		}
	}
	t.Fatalf("registry on %s did not answer /v2/ within 10 s", addr)
	return ""
}
