package e2e

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// A goImage is a Go command that the suite builds into a FROM scratch image
// and pushes to the registry the cluster pulls from: no image can be pulled
// from outside, so every image a pod runs is made here.
type goImage struct {
	ref     string // repository:tag under the registry, as the cluster asks for it
	dir     string // the folder (under machinery/e2e) of the go.mod that pins the command
	pkg     string // the command's package
	module  string // the module whose version the tag must be, read from that go.mod; "" for none
	ldflags string // on top of -s -w
	bin     string // a binary make built already (its tools cache), instead of building pkg here
	user    string // the image's USER, a uid:gid; "" for none (root)
}

// pushGoImage builds img with CGO_ENABLED=0 (or takes img.bin), puts the
// binary alone in a FROM scratch image whose entry point it is, pushes that
// to registry and returns the pushed digest. The local image is removed
// again: the shared Docker engine keeps nothing of the suite's.
func pushGoImage(ctx context.Context, t *testing.T, registry string, img goImage) string {
	t.Helper()
	name, tag, _ := strings.Cut(img.ref, ":")
	if img.module != "" {
		list := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", img.module) // #nosec G204 -- go, and a module of the suite's own table
		list.Dir = img.dir
		out, err := list.Output()
		if got := strings.TrimSpace(string(out)); err != nil || strings.TrimPrefix(got, "v") != strings.TrimPrefix(tag, "v") {
			t.Fatalf("image %s: %s/go.mod pins %s %q (%v): the tag and the version must agree", img.ref, img.dir, img.module, got, err)
		}
	}

	dir := t.TempDir()
	bin := path.Base(img.pkg)
	build := []string{"go", "build", "-trimpath", "-ldflags=-s -w " + img.ldflags, "-o", filepath.Join(dir, bin), img.pkg}
	if img.bin != "" {
		bin = filepath.Base(img.bin)
		build = []string{"cp", img.bin, dir}
		t.Logf("image %s: %s FROM scratch, as make built it once", img.ref, img.bin)
	} else {
		cache, _ := exec.CommandContext(ctx, "go", "env", "GOCACHE").Output()
		t.Logf("image %s: building %s FROM scratch; compiled once into Go's build cache (%s), later runs only link it",
			img.ref, img.pkg, strings.TrimSpace(string(cache)))
	}
	dockerfile := "FROM scratch\nCOPY " + bin + " /" + bin + "\n"
	if img.user != "" {
		dockerfile += "USER " + img.user + "\n"
	}
	dockerfile += "ENTRYPOINT [\"/" + bin + "\"]\n"
	must(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o600))
	local := registry + "/" + img.ref
	for _, args := range [][]string{
		build,
		{"docker", "build", "-q", "-t", local, dir},
		{"docker", "push", "-q", local},
	} {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...) // #nosec G204 -- go and docker, with the suite's own arguments
		cmd.Dir = img.dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("image %s: %s: %v: %s", img.ref, strings.Join(args, " "), err, out)
		}
	}
	// RepoDigests holds the digest the push made: <registry>/<name>@sha256:...
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "-f", "{{range .RepoDigests}}{{println .}}{{end}}", local).Output() // #nosec G204 -- the image just pushed
	if err != nil {
		t.Fatalf("image %s: docker image inspect: %v", img.ref, err)
	}
	var digest string
	for _, line := range strings.Fields(string(out)) {
		if d, ok := strings.CutPrefix(line, registry+"/"+name+"@"); ok {
			digest = d
		}
	}
	if out, err := exec.CommandContext(ctx, "docker", "rmi", local).CombinedOutput(); err != nil { // #nosec G204 -- as above
		t.Fatalf("image %s: docker rmi: %v: %s", img.ref, err, out)
	}
	if digest == "" {
		t.Fatalf("image %s: docker pushed no digest for %s", img.ref, registry+"/"+name)
	}
	t.Logf("image %s: pushed %s@%s", img.ref, registry+"/"+name, digest)
	return digest
}
