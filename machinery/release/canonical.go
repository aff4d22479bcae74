package main

// The canonical image: what `release push` pushes, whichever engine built it.
//
// The classic builder, BuildKit (Docker 28 and later, with the overlay2 or
// the containerd store) and Podman write one Dockerfile into images that
// differ in what no Dockerfile line says: a layer's tar headers (the file
// type in the mode, the owner's names, the format), the config's defaults
// (BuildKit's WorkingDir "/", an empty Cmd for none) and their own stamps
// (buildah's io.buildah.version label, container IDs, history). canonical
// rebuilds the image from what the Dockerfile decides, and only that, so
// one commit built by one Go toolchain is one digest on every engine.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// canonical returns img rebuilt from its files and from the config fields a
// Dockerfile sets; labels only where the Dockerfile declares them (labels),
// every timestamp epoch. The result is a Docker v2 image, as every engine
// pushes one.
func canonical(img v1.Image, labels []string, epoch time.Time) (v1.Image, error) {
	built, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.DockerManifestSchema2), types.DockerConfigJSON)
	for _, l := range layers {
		files, err := canonicalLayer(l, epoch)
		if err != nil {
			return nil, err
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(files)), nil })
		if err != nil {
			return nil, err
		}
		if out, err = mutate.AppendLayers(out, layer); err != nil {
			return nil, err
		}
	}
	appended, err := out.ConfigFile()
	if err != nil {
		return nil, err
	}
	c := built.Config
	config := v1.ConfigFile{
		Architecture: built.Architecture,
		OS:           built.OS,
		Variant:      built.Variant,
		Created:      v1.Time{Time: epoch},
		RootFS:       appended.RootFS,
		Config: v1.Config{
			User:         c.User,
			ExposedPorts: nonEmpty(c.ExposedPorts),
			Env:          nonEmpty(c.Env),
			Entrypoint:   nonEmpty(c.Entrypoint),
			Cmd:          nonEmpty(c.Cmd),
			Healthcheck:  c.Healthcheck,
			Volumes:      nonEmpty(c.Volumes),
			WorkingDir:   strings.TrimSuffix(c.WorkingDir, "/"), // "/" is no WORKDIR: BuildKit writes it, the others leave it out
			StopSignal:   c.StopSignal,
			OnBuild:      nonEmpty(c.OnBuild),
			Shell:        nonEmpty(c.Shell),
		},
	}
	for k, v := range c.Labels {
		if slices.Contains(labels, k) {
			if config.Config.Labels == nil {
				config.Config.Labels = map[string]string{}
			}
			config.Config.Labels[k] = v
		}
	}
	return mutate.ConfigFile(out, &config)
}

// nonEmpty is v, or nil when v is empty: Podman writes an empty Cmd where
// Docker writes none.
func nonEmpty[S ~[]string | ~map[string]struct{}](v S) S {
	if len(v) == 0 {
		return nil
	}
	return v
}

// canonicalLayer rewrites a layer's tar, uncompressed: each entry keeps its
// name, type, link target, permission bits and bytes; every other header
// field is one fixed value (owner 0:0, no owner names, mtime epoch), in the
// format Go's archive/tar picks for such a header.
func canonicalLayer(l v1.Layer, epoch time.Time) ([]byte, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	r, w := tar.NewReader(rc), tar.NewWriter(&buf)
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue // the root itself: no builder needs it, some write it
		}
		if h.Typeflag == tar.TypeDir {
			name += "/"
		}
		if err := w.WriteHeader(&tar.Header{Typeflag: h.Typeflag, Name: name, Linkname: h.Linkname,
			Size: h.Size, Mode: h.Mode & 0o7777, ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := io.Copy(w, r); err != nil { // #nosec G110 -- a layer of the image this machine built, not an upload
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// dockerfileLabels returns the keys of the labels the Dockerfile at path
// declares (LABEL k=v ..., and the old LABEL k v), so that no other label
// reaches the pushed image.
func dockerfileLabels(path string) ([]string, error) {
	f, err := os.Open(path) // #nosec G304 G703 -- the Dockerfile the Makefile names
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var keys []string
	var line string
	s := bufio.NewScanner(f)
	for s.Scan() {
		text := strings.TrimSpace(s.Text())
		if strings.HasPrefix(text, "#") {
			continue // a comment, also inside a continued instruction
		}
		if cont, ok := strings.CutSuffix(text, `\`); ok {
			line += cont + " "
			continue
		}
		line += text
		instruction, args, _ := strings.Cut(line, " ")
		line = ""
		if !strings.EqualFold(instruction, "LABEL") {
			continue
		}
		words := shellWords(args)
		if len(words) > 0 && !strings.Contains(words[0], "=") {
			keys = append(keys, words[0])
			continue
		}
		for _, w := range words {
			k, _, _ := strings.Cut(w, "=")
			keys = append(keys, k)
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	if line != "" {
		return nil, fmt.Errorf("%s ends inside a continued line", path)
	}
	return keys, nil
}

// shellWords splits s at blanks outside quotes and drops the quotes, as the
// Dockerfile parser does with LABEL's arguments.
func shellWords(s string) []string {
	var words []string
	var word strings.Builder
	var quote rune
	inWord := false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			word.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words, inWord = append(words, word.String()), false
				word.Reset()
			}
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words
}
