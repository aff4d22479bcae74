package container

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReproducible pushes one commit from two clones that differ in all a
// build should not depend on, and wants one digest; then a changed hello.go,
// and wants another.
func TestReproducible(t *testing.T) {
	needEngine(t)
	registry := startRegistry(t)
	img := newImage(t, registry)
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first"), filepath.Join(dir, "elsewhere", "second")
	run(t, "git", "clone", "-q", root, first)
	run(t, "git", "clone", "-q", first, second) // another folder, another origin
	// VERSION and SOURCE as make finds them: from git, and the default.
	push := func(clone string, env []string, knobs ...string) string {
		t.Helper()
		args := append([]string{"-c", `umask "$UMASK" && exec make "$@"`, "sh", "-s", "docker-push",
			"IMAGE=" + img.name, "TAG=" + img.tag, "BIN=" + filepath.Join(clone, "hello"),
			"REGISTRY=" + registry, "SIGNING_KEY=" + filepath.Join(dir, "cosign.key")}, knobs...)
		cmd := exec.Command("sh", args...) // #nosec G204 -- make docker-push with the suite's knobs
		cmd.Dir = clone
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in %s with %v: make docker-push: %v\n%s", clone, env, err, out)
		}
		return checkPushed(t, lastLine(string(out)), registry, img.name)
	}
	a := push(first, []string{"UMASK=022", "TZ=UTC"})
	docker(t, "rmi", img.ref())                                    // else the second build takes the first's steps from Docker's build cache
	b := push(second, []string{"UMASK=077", "TZ=Pacific/Chatham"}) // and a few seconds later
	if a != b {
		t.Errorf("one commit pushed from two clones: %s and %s, want one digest", a, b)
	}
	t.Logf("one commit, two clones: %s", a)

	hello := filepath.Join(second, "hello.go")
	src, err := os.ReadFile(hello) // #nosec G304 -- the clone's own hello.go
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.Replace(src, []byte("const maxName = 256"), []byte("const maxName = 255"), 1)
	if bytes.Equal(changed, src) {
		t.Fatal("hello.go has no `const maxName = 256` to change")
	}
	if err := os.WriteFile(hello, changed, 0o600); err != nil { // #nosec G703 -- the clone in the test's own folder
		t.Fatal(err)
	}
	docker(t, "rmi", img.ref())
	version := run(t, "git", "-C", first, "describe", "--tags", "--always", "--abbrev=12") // as if hello.go were committed unchanged
	if c := push(second, []string{"UMASK=022", "TZ=UTC"}, "VERSION="+version); c == a {
		t.Errorf("a changed hello.go pushed %s, the digest of the unchanged one", c)
	}
}

// TestSigned checks what make docker-push signs and attests, and what
// `release verify`, which make kubernetes-apply runs before applying, accepts
// and refuses: an unsigned image, one signed by another key, and a tag moved
// to another image signed by the right key.
func TestSigned(t *testing.T) {
	needEngine(t)
	cosign, release := os.Getenv("COSIGN_BIN"), os.Getenv("RELEASE_BIN")
	if cosign == "" || release == "" {
		t.Fatal("COSIGN_BIN or RELEASE_BIN is not set: run the suite with `make container-test`, which builds them")
	}
	registry := startRegistry(t)
	img := newImage(t, registry)
	keys := t.TempDir()
	ours, pub := filepath.Join(keys, "ours.key"), filepath.Join(keys, "ours.pub")
	repo := registry + "/" + img.name
	push := func(tag, version, key string) string {
		t.Helper()
		line := lastLine(img.make(t, "docker-push", "REGISTRY="+registry, "TAG="+tag, "VERSION="+version, "SIGNING_KEY="+key))
		return checkPushed(t, line, registry, img.name)
	}
	verify := func(tag string) (string, error) {
		return tryRun(release, "verify", "-cosign", cosign, "-key", pub, repo+":"+tag)
	}

	signed := push("signed", img.version, ours)
	if got, err := verify("signed"); err != nil || got != signed {
		t.Fatalf("release verify of what make docker-push signed: %v %q, want %s", err, got, signed)
	}
	checkSBOM(t, cosign, pub, repo+"@"+signed, img)

	docker(t, "tag", img.name+":signed", repo+":unsigned")
	docker(t, "push", repo+":unsigned")
	push("other-key", img.version+".other", filepath.Join(keys, "other.key")) // another image: one commit and version would be the signed one
	moved := push("moved", img.version+".2", ours)
	putManifest(t, registry, img.name, moved, "signed") // "signed" now names another image

	for _, tc := range []struct{ tag, want string }{
		{"unsigned", "it is unsigned"},
		{"other-key", "no signature verifies with the key " + pub},
		{"signed", "it was signed as tag moved, not signed: the tag was moved"},
	} {
		out, err := verify(tc.tag)
		if err == nil || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("release verify %s: %v %q, want refused in one line saying %q", tc.tag, err, out, tc.want)
		}
	}
}

// checkSBOM verifies the CycloneDX attestation of ref with cosign and wants
// its SBOM to name hello at img's version and the Go that built the binary.
func checkSBOM(t *testing.T, cosign, pub, ref string, img image) {
	t.Helper()
	out := run(t, cosign, "verify-attestation", "--key", pub, "--insecure-ignore-tlog=true", "--type", "cyclonedx", ref)
	var envelope struct{ Payload string }
	var statement struct {
		PredicateType string
		Predicate     struct {
			BOMFormat string
			Metadata  struct {
				Component struct{ Name, Version string }
			}
			Components []struct{ Name, Version string }
		}
	}
	if err := json.Unmarshal([]byte(firstLine(out)), &envelope); err != nil {
		t.Fatalf("cosign verify-attestation printed %q: %v", out, err)
	}
	payload, err := base64.StdEncoding.DecodeString(envelope.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(payload, &statement); err != nil {
		t.Fatal(err)
	}
	goVersion := strings.Fields(firstLine(run(t, "go", "version", img.bin)))[1] // "BIN: go1.26.8"
	sbom := statement.Predicate
	component := sbom.Metadata.Component
	if statement.PredicateType != "https://cyclonedx.org/bom" || sbom.BOMFormat != "CycloneDX" ||
		component.Name != "hello" || component.Version != img.version {
		t.Errorf("attestation %s of a %s SBOM of %s %s, want a CycloneDX SBOM of hello %s",
			statement.PredicateType, sbom.BOMFormat, component.Name, component.Version, img.version)
	}
	if !slices.Contains(sbom.Components, struct{ Name, Version string }{"std", goVersion}) {
		t.Errorf("SBOM components %v, want std at %s, the Go that built %s", sbom.Components, goVersion, img.bin)
	}
	t.Logf("SBOM: %s %s, std %s", component.Name, component.Version, goVersion)
}

// putManifest points tag at the manifest of digest, as anyone who may push
// to the repository can.
func putManifest(t *testing.T, registry, name, digest, tag string) {
	t.Helper()
	base := "http://" + registry + "/v2/" + name + "/manifests/"
	_, body, header := fetch(t, base+digest, dockerManifest)
	req, err := http.NewRequest(http.MethodPut, base+tag, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", header.Get("Content-Type"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s%s = %d, want 201", base, tag, resp.StatusCode)
	}
}
