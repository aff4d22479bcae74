package container

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	// Under a tag of its own: the first tag names one build already.
	if c := push(second, []string{"UMASK=022", "TZ=UTC"}, "VERSION="+version, "TAG="+img.tag+"-changed"); c == a {
		t.Errorf("a changed hello.go pushed %s, the digest of the unchanged one", c)
	}
}

// TestSigned checks what make docker-push signs and attests, and what
// `release verify`, which make kubernetes-apply runs before applying, accepts
// and refuses, as someone who may push to the registry but has no key would
// try: an unsigned image, one signed by another key, a tag moved to another
// image signed by the right key, an image copied with its signature and
// attestation from another repository, and images the right key signed for
// the right tag with no SBOM attestation, or with another key's.
func TestSigned(t *testing.T) {
	needEngine(t)
	release, cosign := releaseTools(t)
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

	kubectl, applied := fakeKubectl(t)
	apply := func(tag string, keys ...string) (string, error) {
		return img.tryMake("kubernetes-apply", "REGISTRY="+registry, "TAG="+tag, "COSIGN="+cosign,
			"VERIFY_KEY="+strings.Join(keys, " "), "KUBECTL="+kubectl)
	}

	signed := push("signed", img.version, ours)
	if got, err := verify("signed"); err != nil || got != signed {
		t.Fatalf("release verify of what make docker-push signed: %v %q, want %s", err, got, signed)
	}
	checkSBOM(t, cosign, pub, repo+"@"+signed, img)

	docker(t, "tag", img.name+":signed", repo+":unsigned")
	docker(t, "push", repo+":unsigned")
	otherKey := filepath.Join(keys, "other.key")
	push("other-key", img.version+".other", otherKey) // another image: one commit and version would be the signed one
	otherPub := filepath.Join(keys, "other.pub")
	// While a key is rotated, VERIFY_KEY lists both: the old one still verifies.
	if out, err := apply("signed", otherPub, pub); err != nil || !strings.Contains(applied(), "apply -k") {
		t.Errorf("make kubernetes-apply VERIFY_KEY=%q of what make docker-push signed: %v, kubectl ran %q; want applied\n%s",
			otherPub+" "+pub, err, applied(), out)
	}
	moved := push("moved", img.version+".2", ours)
	putManifest(t, registry, img.name, moved, "signed") // "signed" now names another image

	// Pushed to another repository by make docker-push, and copied here with
	// its signature and attestation, as cosign copy does.
	elsewhere := newImage(t, registry)
	elsewhere.make(t, "docker-push", "REGISTRY="+registry, "TAG=copied", "SIGNING_KEY="+ours)
	run(t, cosign, "copy", registry+"/"+elsewhere.name+":copied", repo+":copied")

	// Signed by our key for their tag, as make docker-push signs, but
	// attested by no key, or by another key only.
	sbom := filepath.Join(keys, "sbom.json")
	if err := os.WriteFile(sbom, []byte(`{"bomFormat": "CycloneDX", "specVersion": "1.6"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	signOnly := func(tag string) string {
		t.Helper()
		digest := pushVariant(t, img.name+":signed", repo+":"+tag)
		run(t, "env", "COSIGN_PASSWORD=", cosign, "sign", "--key", ours, "--tlog-upload=false", "--yes", "-a", "tag="+tag, repo+"@"+digest)
		return digest
	}
	unattested := signOnly("unattested")
	otherAttested := signOnly("other-attester")
	run(t, "env", "COSIGN_PASSWORD=", cosign, "attest", "--key", otherKey, "--tlog-upload=false", "--yes",
		"--type", "cyclonedx", "--predicate", sbom, repo+"@"+otherAttested)

	before := applied()
	for _, tc := range []struct{ tag, want string }{
		{"unsigned", "it is unsigned"},
		{"other-key", "no signature verifies with the key " + pub},
		{"signed", "it was signed as tag moved, not signed: the tag was moved"},
		{"copied", "it was signed for the repository " + registry + "/" + elsewhere.name + ", not " + repo + ": it was copied from another repository"},
		{"unattested", "no SBOM attestation is attached to " + unattested},
		{"other-attester", "no SBOM attestation of " + otherAttested + " verifies with the key " + pub + " (attested by another key?)"},
	} {
		out, err := verify(tc.tag)
		if err == nil || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("release verify %s: %v %q, want refused in one line saying %q", tc.tag, err, out, tc.want)
		}
		t.Logf("release verify %s: %s", tc.tag, strings.TrimSpace(out))
		if out, err := apply(tc.tag, pub); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("make kubernetes-apply TAG=%s: %v, want refused saying %q\n%s", tc.tag, err, tc.want, out)
		}
	}
	// With both keys, one must verify both the signature and the SBOM.
	want := []string{"no signature verifies with the key " + otherPub, "no SBOM attestation of " + otherAttested + " verifies with the key " + pub}
	if out, err := apply("other-attester", otherPub, pub); err == nil || !strings.Contains(out, want[0]) || !strings.Contains(out, want[1]) {
		t.Errorf("make kubernetes-apply TAG=other-attester VERIFY_KEY=%q: %v, want refused saying %q and %q\n%s", otherPub+" "+pub, err, want[0], want[1], out)
	}
	for _, line := range strings.Split(strings.TrimPrefix(applied(), before), "\n") {
		if line != "" && !strings.HasPrefix(line, "version ") { // cluster-check's
			t.Errorf("make kubernetes-apply refused every image, but ran kubectl %s", line)
		}
	}
}

// releaseTools are the release tool and the cosign `make container-test` built.
func releaseTools(t *testing.T) (release, cosign string) {
	t.Helper()
	release, cosign = os.Getenv("RELEASE_BIN"), os.Getenv("COSIGN_BIN")
	if cosign == "" || release == "" {
		t.Fatal("COSIGN_BIN or RELEASE_BIN is not set: run the suite with `make container-test`, which builds them")
	}
	return release, cosign
}

// TestTagNamesOneBuild pushes one build twice under one tag, which changes
// nothing, then another build under that tag, which make docker-push must
// refuse before pushing anything: once two digests are signed for one tag,
// anyone who may push can point the tag at either.
func TestTagNamesOneBuild(t *testing.T) {
	needEngine(t)
	release, cosign := releaseTools(t)
	registry := startRegistry(t)
	img := newImage(t, registry)
	repo := registry + "/" + img.name
	base := "http://" + registry + "/v2/" + img.name + "/manifests/"
	push := func(knobs ...string) (string, error) {
		return img.tryMake("docker-push", append([]string{"REGISTRY=" + registry}, knobs...)...)
	}
	out, err := push()
	if err != nil {
		t.Fatalf("make docker-push: %v\n%s", err, out)
	}
	first := checkPushed(t, lastLine(out), registry, img.name)
	if out, err = push(); err != nil || lastLine(out) != repo+"@"+first {
		t.Fatalf("make docker-push of the same build again: %v, want it to succeed with %s@%s\n%s", err, repo, first, out)
	}
	for _, suffix := range []string{".sig", ".att"} {
		var manifest struct{ Layers []any }
		_, body, _ := fetch(t, base+strings.Replace(first, ":", "-", 1)+suffix, ociManifest)
		if err := json.Unmarshal(body, &manifest); err != nil || len(manifest.Layers) != 1 {
			t.Errorf("after two pushes of one build, its %s holds %d entries (%v), want 1", suffix, len(manifest.Layers), err)
		}
	}

	out, err = push("VERSION=" + img.version + ".rebuilt")
	var refused []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "refused") {
			refused = append(refused, line)
		}
	}
	m := regexp.MustCompile(`^release: refused to sign ` + regexp.QuoteMeta(repo+":"+img.tag) + ` for (sha256:[0-9a-f]{64}): the tag names ` +
		first + `, already signed as ` + img.tag + ` by a trusted key; a tag names one build: push this build under a new TAG$`).FindStringSubmatch(strings.Join(refused, "\n"))
	if err == nil || m == nil {
		t.Fatalf("make docker-push of another build under %s: %v, lines saying refused %q; want one line refusing it\n%s", img.tag, err, refused, out)
	}
	t.Logf("make docker-push of another build: %s", refused[0])
	rebuilt := m[1]
	for _, ref := range []string{rebuilt, strings.Replace(rebuilt, ":", "-", 1) + ".sig"} {
		if code, _, _ := fetch(t, base+ref, dockerManifest+", "+ociManifest); code != http.StatusNotFound {
			t.Errorf("refused, make docker-push left %s in the registry (GET = %d), want nothing pushed", ref, code)
		}
	}
	pub := filepath.Join(img.config, "hello", "cosign.pub")
	if got, err := tryRun(release, "verify", "-cosign", cosign, "-key", pub, repo+":"+img.tag); err != nil || got != first {
		t.Errorf("release verify %s after the refused push: %v %q, want the first build %s", img.tag, err, got, first)
	}
	// Redone on purpose: the rebuild under a tag of its own.
	out, err = push("VERSION="+img.version+".rebuilt", "TAG="+img.tag+"-2")
	if err != nil || lastLine(out) != repo+"@"+rebuilt {
		t.Errorf("make docker-push of the rebuild under a new tag: %v, want %s@%s\n%s", err, repo, rebuilt, out)
	}
}

// pushVariant builds, from the local image from, one that differs by a label
// only (another digest), and pushes it with docker push as to; it returns the
// digest the registry holds. The variant is removed when the test ends,
// before newImage removes from, which it depends on.
func pushVariant(t *testing.T, from, to string) string {
	t.Helper()
	cmd := exec.Command("docker", "build", "-q", "-t", to, "-f", "-", t.TempDir()) // #nosec G204 -- the suite's own image names
	cmd.Stdin = strings.NewReader("FROM " + from + "\nLABEL variant=" + to + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build %s: %v\n%s", to, err, out)
	}
	t.Cleanup(func() {
		if out, err := tryRun("docker", "rmi", to); err != nil {
			t.Errorf("cleanup: docker rmi %s: %v\n%s", to, err, out)
		}
	})
	docker(t, "push", to)
	host, rest, _ := strings.Cut(to, "/")
	name, tag, _ := strings.Cut(rest, ":")
	_, _, header := fetch(t, "http://"+host+"/v2/"+name+"/manifests/"+tag, dockerManifest)
	return header.Get("Docker-Content-Digest")
}

// fakeKubectl writes a kubectl that answers every command with success and
// notes it, for make kubernetes-apply to run without a cluster. It returns
// its path and a function that reads the commands it was given so far.
func fakeKubectl(t *testing.T) (string, func() string) {
	t.Helper()
	dir := t.TempDir()
	bin, log := filepath.Join(dir, "kubectl"), filepath.Join(dir, "kubectl.log")
	script := "#!/bin/sh\necho \"$*\" >>'" + log + "'\n"
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil { // #nosec G306 -- make runs it; in the test's own folder
		t.Fatal(err)
	}
	return bin, func() string {
		b, err := os.ReadFile(log) // #nosec G304 -- in the test's own folder
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return string(b)
	}
}

// checkSBOM verifies the CycloneDX attestation of ref with cosign and wants
// its SBOM to name hello at img's version and the Go that built the binary.
func checkSBOM(t *testing.T, cosign, pub, ref string, img image) {
	t.Helper()
	predicateType, predicate := attestation(t, cosign, pub, ref)
	var sbom struct {
		BOMFormat string
		Metadata  struct {
			Component struct{ Name, Version string }
		}
		Components []struct{ Name, Version string }
	}
	if err := json.Unmarshal(predicate, &sbom); err != nil {
		t.Fatal(err)
	}
	goVersion := strings.Fields(firstLine(run(t, "go", "version", img.bin)))[1] // "BIN: go1.26.8"
	component := sbom.Metadata.Component
	if predicateType != "https://cyclonedx.org/bom" || sbom.BOMFormat != "CycloneDX" ||
		component.Name != "hello" || component.Version != img.version {
		t.Errorf("attestation %s of a %s SBOM of %s %s, want a CycloneDX SBOM of hello %s",
			predicateType, sbom.BOMFormat, component.Name, component.Version, img.version)
	}
	if !slices.Contains(sbom.Components, struct{ Name, Version string }{"std", goVersion}) {
		t.Errorf("SBOM components %v, want std at %s, the Go that built %s", sbom.Components, goVersion, img.bin)
	}
	t.Logf("SBOM: %s %s, std %s", component.Name, component.Version, goVersion)
}

// attestation verifies the CycloneDX attestation of ref with cosign and the
// key pub, offline (release/trusted-root.json), and returns the signed
// statement's predicate type and predicate.
func attestation(t *testing.T, cosign, pub, ref string) (string, json.RawMessage) {
	t.Helper()
	out := run(t, cosign, "verify-attestation", "--key", pub, "--insecure-ignore-tlog=true",
		"--trusted-root", filepath.Join(root, "machinery", "release", "trusted-root.json"), "--type", "cyclonedx", ref)
	var envelope struct{ Payload string }
	var statement struct {
		PredicateType string
		Predicate     json.RawMessage
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
	return statement.PredicateType, statement.Predicate
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
