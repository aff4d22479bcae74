package container

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPush pushes with `make docker-push` to a real registry, as a new user
// does: the signing key is made on first use. It reads the image back from
// the registry, not from the engine, then pulls it by digest and runs it.
func TestPush(t *testing.T) {
	needEngine(t)
	registry := startRegistry(t)
	img := newImage(t, registry)
	pushed := lastLine(img.make(t, "docker-push", "REGISTRY="+registry))
	for _, key := range []string{"cosign.key", "cosign.pub"} {
		if _, err := os.Stat(filepath.Join(img.config, "hello", key)); err != nil {
			t.Errorf("make docker-push with no key: %v, want a key pair made on first use", err)
		}
	}
	digest := checkPushed(t, pushed, registry, img.name)
	base := "http://" + registry + "/v2/" + img.name
	if code, _, header := fetch(t, base+"/manifests/"+img.tag, dockerManifest); code != http.StatusOK || header.Get("Docker-Content-Digest") != digest {
		t.Fatalf("registry: GET manifest %s = %d digest %q, want 200 %s, the digest make printed", img.tag, code, header.Get("Docker-Content-Digest"), digest)
	}

	var manifest struct {
		Config struct{ Digest string }
		Layers []struct{ Digest, MediaType string }
	}
	code, body, _ := fetch(t, base+"/manifests/"+digest, dockerManifest)
	if err := json.Unmarshal(body, &manifest); code != http.StatusOK || err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("registry: GET manifest %s = %d %v, want one layer:\n%s", digest, code, err, body)
	}
	_, body, _ = fetch(t, base+"/blobs/"+manifest.Config.Digest, "")
	checkConfig(t, body, "linux/amd64", img.version)
	var config struct {
		Created time.Time
		History []any
	}
	if err := json.Unmarshal(body, &config); err != nil {
		t.Fatal(err)
	}
	commit, _ := strconv.ParseInt(run(t, "git", "log", "-1", "--format=%ct"), 10, 64)
	if !config.Created.Equal(time.Unix(commit, 0)) || len(config.History) != 0 {
		t.Errorf("pushed config: created %s, %d history entries; want the commit's time %s and none",
			config.Created, len(config.History), time.Unix(commit, 0).UTC())
	}
	_, layer, _ := fetch(t, base+"/blobs/"+manifest.Layers[0].Digest, "")
	unzipped, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatalf("layer %s (%s): %v", manifest.Layers[0].Digest, manifest.Layers[0].MediaType, err)
	}
	binary, err := os.ReadFile(img.bin)
	if err != nil {
		t.Fatal(err)
	}
	onlyFile(t, tarFiles(t, unzipped), binary)

	docker(t, "rmi", img.ref())
	docker(t, "pull", pushed)
	t.Cleanup(func() { _, _ = tryRun("docker", "rmi", pushed) }) // newImage's cleanup removes it too
	if id := docker(t, "image", "inspect", "-f", "{{.Id}}", pushed); id != manifest.Config.Digest {
		t.Errorf("docker pull %s brought image %s, want the pushed config %s", pushed, id, manifest.Config.Digest)
	}
	name := container(t, pushed, locked("8080"))
	greet(t, hostAddr(t, name, "8080"), "Registry")
	waitHealthy(t, name)
}

// checkPushed wants the line docker-push ends with to name the image in
// registry by digest, and returns the digest.
func checkPushed(t *testing.T, line, registry, name string) string {
	t.Helper()
	repo, digest, _ := strings.Cut(line, "@")
	if repo != registry+"/"+name || !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(digest) {
		t.Fatalf("make docker-push's last line %q, want %s/%s@sha256:<64 hex>", line, registry, name)
	}
	return digest
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
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
	pushed := lastLine(img.make(t, "docker-push", "REGISTRY="+registry, "PLATFORMS=linux/amd64 linux/arm64"))
	digest := checkPushed(t, pushed, registry, img.name)

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

	if header.Get("Docker-Content-Digest") != digest {
		t.Errorf("registry: the index %s is %s, make docker-push printed %s", img.tag, header.Get("Docker-Content-Digest"), digest)
	}
	release, cosign := os.Getenv("RELEASE_BIN"), os.Getenv("COSIGN_BIN")
	pub := filepath.Join(img.config, "hello", "cosign.pub")
	if got, err := tryRun(release, "verify", "-cosign", cosign, "-key", pub, remote); err != nil || got != digest {
		t.Errorf("release verify %s (what kubernetes-apply runs): %v %q, want the index %s, signed, each image with its SBOM", remote, err, got, digest)
	}
	// The index's own SBOM, signed: its images. Admission reads it.
	var sbom struct {
		Components []struct{ Name, Version string }
	}
	_, predicate := attestation(t, cosign, pub, registry+"/"+img.name+"@"+digest)
	if err := json.Unmarshal(predicate, &sbom); err != nil {
		t.Fatalf("the index's attestation: %v\n%s", err, predicate)
	}
	var listed []string
	for _, c := range sbom.Components {
		if c.Name == registry+"/"+img.name {
			listed = append(listed, c.Version)
		}
	}
	var images []string
	for _, m := range index.Manifests {
		images = append(images, m.Digest)
	}
	slices.Sort(listed)
	slices.Sort(images)
	if !slices.Equal(listed, images) {
		t.Errorf("the index's SBOM, attested by the key, lists %v of %s, want its images %v", listed, registry+"/"+img.name, images)
	}

	img.make(t, "clean", "REGISTRY="+registry, "PLATFORMS=linux/amd64 linux/arm64")
	for _, tag := range []string{img.tag, img.tag + "-amd64", img.tag + "-arm64"} {
		for _, ref := range []string{img.name + ":" + tag, registry + "/" + img.name + ":" + tag} {
			if _, err := tryRun("docker", "image", "inspect", ref); err == nil {
				t.Errorf("make clean left the image %s", ref)
			}
		}
	}
	// Rebuilt from scratch (make clean took the images Docker could build
	// from), later: the same index.
	if again := lastLine(img.make(t, "docker-push", "REGISTRY="+registry, "PLATFORMS=linux/amd64 linux/arm64")); again != pushed {
		t.Errorf("make docker-push PLATFORMS=... again: %s, want the first push's %s", again, pushed)
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

// startRegistry runs CNCF Distribution's registry on a free loopback port,
// speaking plain HTTP, and returns its host:port; see serveRegistry.
func startRegistry(t *testing.T) string {
	t.Helper()
	addr := "127.0.0.1:" + freePort(t)
	serveRegistry(t, addr, "", "", http.DefaultClient)
	return addr
}

// serveRegistry runs CNCF Distribution's registry on addr with storage in a
// temporary folder, both gone when the test ends, and returns once it answers
// /v2/ to client with 200. tls, when not empty, is its http.tls section
// (YAML, indented for it): then it speaks HTTPS. auth, when not empty, is its
// auth section (YAML, from "auth:"). `make container-test` builds it and sets
// REGISTRY_BIN.
func serveRegistry(t *testing.T, addr, tls, auth string, client *http.Client) {
	t.Helper()
	bin := os.Getenv("REGISTRY_BIN")
	if bin == "" {
		t.Fatal("REGISTRY_BIN is not set: run the suite with `make container-test`, which builds the registry")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	err := os.WriteFile(config, fmt.Appendf(nil, `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: "%s"
%s%s`, filepath.Join(dir, "storage"), addr, tls, auth), 0o600)
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
	url := "http://" + addr + "/v2/"
	if tls != "" {
		url = "https://" + addr + "/v2/"
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-registry.exited:
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("registry exited: %v\n%s", registry.err, out)
		default:
		}
		if code, _, _, err := getWith(client, url, ""); err == nil && code == http.StatusOK {
			return
		}
	}
	t.Fatalf("registry on %s did not answer %s within 10 s", addr, url)
}
