package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// built is an image as an engine writes it: one file in one layer, with the
// engine's own header fields and config.
func built(t *testing.T, header tar.Header, body string, config v1.ConfigFile) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	header.Size = int64(len(body))
	if err := w.WriteHeader(&header); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, body); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	config.RootFS = cf.RootFS
	img, err = mutate.ConfigFile(img, &config)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestCanonical builds one Dockerfile's image as the classic builder,
// BuildKit and Podman write it, and wants one digest once canonical; and
// another digest when what the Dockerfile decides changes.
func TestCanonical(t *testing.T) {
	epoch := time.Unix(1700000000, 0).UTC()
	labels := []string{"org.opencontainers.image.title"}
	health := &v1.HealthConfig{Test: []string{"CMD", "/hello", "-healthcheck"}, Interval: 5 * time.Second, Timeout: 3 * time.Second, Retries: 3}
	config := func(c v1.Config) v1.ConfigFile {
		c.User, c.Entrypoint, c.Healthcheck = "65534:65534", []string{"/hello"}, health
		c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		c.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		if _, ok := c.Labels["org.opencontainers.image.title"]; !ok {
			c.Labels["org.opencontainers.image.title"] = "hello"
		}
		return v1.ConfigFile{Architecture: "amd64", OS: "linux", Config: c}
	}
	classic := built(t, tar.Header{Typeflag: tar.TypeReg, Name: "hello", Mode: 0o100755, Uname: "root", Gname: "root",
		ModTime: time.Now(), Format: tar.FormatUSTAR}, "binary", func() v1.ConfigFile {
		c := config(v1.Config{Image: "sha256:0123"})
		c.Created, c.Container = v1.Time{Time: time.Now()}, "4f1c"
		c.History = []v1.History{{CreatedBy: "/bin/sh -c #(nop) COPY file:abc in /hello"}}
		return c
	}())
	engines := map[string]v1.Image{
		"BuildKit": built(t, tar.Header{Typeflag: tar.TypeReg, Name: "hello", Mode: 0o755, ModTime: time.Unix(1, 0),
			Format: tar.FormatPAX}, "binary", func() v1.ConfigFile {
			c := config(v1.Config{WorkingDir: "/"})
			c.History = []v1.History{{CreatedBy: "COPY hello /hello # buildkit", Comment: "buildkit.dockerfile.v0"}}
			return c
		}()),
		"Podman": built(t, tar.Header{Typeflag: tar.TypeReg, Name: "./hello", Mode: 0o100755, ModTime: time.Now(),
			Format: tar.FormatPAX}, "binary", config(v1.Config{Cmd: []string{}, Volumes: map[string]struct{}{}, Hostname: "ae32",
			Labels: map[string]string{"io.buildah.version": "1.28.2"}})),
	}
	want, err := canonical(classic, labels, epoch)
	if err != nil {
		t.Fatal(err)
	}
	for name, img := range engines {
		got, err := canonical(img, labels, epoch)
		if err != nil {
			t.Fatal(err)
		}
		if digestOf(t, got) != digestOf(t, want) {
			gc, _ := got.RawConfigFile()
			wc, _ := want.RawConfigFile()
			t.Errorf("%s's image is %s once canonical, the classic builder's %s:\n%s\n%s", name, digestOf(t, got), digestOf(t, want), gc, wc)
		}
	}

	// What the Dockerfile or the binary decides still tells images apart.
	changed := map[string]v1.Image{
		"the file's bytes": built(t, tar.Header{Typeflag: tar.TypeReg, Name: "hello", Mode: 0o755}, "binarY", config(v1.Config{})),
		"its permissions":  built(t, tar.Header{Typeflag: tar.TypeReg, Name: "hello", Mode: 0o700}, "binary", config(v1.Config{})),
		"its name":         built(t, tar.Header{Typeflag: tar.TypeReg, Name: "hi", Mode: 0o755}, "binary", config(v1.Config{})),
		"USER": built(t, tar.Header{Typeflag: tar.TypeReg, Name: "hello", Mode: 0o755}, "binary", func() v1.ConfigFile {
			c := config(v1.Config{})
			c.Config.User = "0"
			return c
		}()),
		"a declared label": built(t, tar.Header{Typeflag: tar.TypeReg, Name: "hello", Mode: 0o755}, "binary",
			config(v1.Config{Labels: map[string]string{"org.opencontainers.image.title": "other"}})),
	}
	for what, img := range changed {
		got, err := canonical(img, labels, epoch)
		if err != nil {
			t.Fatal(err)
		}
		if digestOf(t, got) == digestOf(t, want) {
			t.Errorf("an image with another %s is %s once canonical, the same digest", what, digestOf(t, got))
		}
	}

	cf, err := want.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Equal(epoch) || len(cf.History) != 0 || cf.Container != "" || cf.Config.Image != "" {
		t.Errorf("canonical config: created %s, %d history entries, container %q, image %q; want %s and none of the rest",
			cf.Created, len(cf.History), cf.Container, cf.Config.Image, epoch)
	}
}

func TestDockerfileLabels(t *testing.T) {
	got, err := dockerfileLabels("../../Dockerfile")
	want := []string{"org.opencontainers.image.title", "org.opencontainers.image.description", "org.opencontainers.image.licenses",
		"org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.revision"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("dockerfileLabels(../../Dockerfile) = %q, %v, want %q", got, err, want)
	}
	path := filepath.Join(t.TempDir(), "Dockerfile")
	text := "FROM scratch\nlabel old value with blanks\n# LABEL commented=out\nLABEL \"quoted key\"='a = b' \\\n  # a comment inside\n  next=\"x y\"\nENV LABEL=no\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = dockerfileLabels(path)
	if want := []string{"old", "quoted key", "next"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("dockerfileLabels(%q) = %q, %v, want %q", text, got, err, want)
	}
}
