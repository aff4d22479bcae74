// Command release is hello's release path between `docker build` and the
// cluster: it pushes reproducible images and, before a deploy, resolves a tag
// to a digest that cosign has verified. The Makefile runs it; it is a module of
// its own so that hello's go.mod stays empty.
//
//	release push -epoch SECONDS IMAGE.tar REGISTRY/IMAGE:TAG
//	release index REGISTRY/IMAGE:TAG REGISTRY/IMAGE:TAG-ARCH...
//	release verify -cosign PATH -key PUB REGISTRY/IMAGE:TAG
//	release registry [-q] REGISTRY
//
// push reads a `docker save` archive, rewrites what makes two builds of one
// commit differ (every timestamp becomes -epoch; the history and the classic
// builder's parent image ID go), pushes it and prints REGISTRY/IMAGE@DIGEST.
// index pushes one index over images already pushed. verify prints the
// digest TAG points at, once cosign has verified its signature (made for that
// tag) and its SBOM attestation with the public key; otherwise it says on one
// line why the image is refused, and exits 1. registry prints whether the
// rule below lets REGISTRY speak plain HTTP, true or false, once its /v2/
// has answered within 5 s; otherwise it says on one line why not.
//
// One rule (registry.go) decides how each command, and the cosign verify
// runs, speaks to the registry: REGISTRY_INSECURE in the environment, true
// or false; when it is empty, the Docker engine's insecure-registries.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: release push|index|verify|registry ... (see the doc comment of release/main.go)")
	}
	fs := flag.NewFlagSet("release "+args[0], flag.ContinueOnError)
	epoch := fs.Int64("epoch", 0, "push: every timestamp in the image, in seconds since 1970 (SOURCE_DATE_EPOCH)")
	cosign := fs.String("cosign", "cosign", "verify: the cosign binary")
	key := fs.String("key", "", "verify: the public key the signature and the SBOM attestation must verify with")
	quiet := fs.Bool("q", false, "registry: print true or false only, not why")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	usage := fmt.Errorf("usage: release %s: wrong arguments %q (see the doc comment of release/main.go)", args[0], args[1:])
	if args[0] == "registry" && fs.NArg() == 1 {
		return registryCommand(ctx, fs.Arg(0), *quiet, getenv, stdout, os.Stderr)
	}
	target := fs.Arg(0) // the image written or read: its registry is the one the rule is asked about
	if args[0] == "push" {
		target = fs.Arg(1)
	}
	if target == "" {
		return usage
	}
	ref, err := name.ParseReference(target)
	if err != nil {
		return err
	}
	reg, err := reach(ctx, ref.Context().RegistryStr(), getenv("REGISTRY_INSECURE"))
	if err != nil {
		return err
	}
	opts := append([]remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, reg.options()...)
	switch {
	case args[0] == "push" && fs.NArg() == 2:
		err = push(fs.Arg(0), fs.Arg(1), time.Unix(*epoch, 0).UTC(), stdout, opts, reg)
	case args[0] == "index" && fs.NArg() >= 2:
		err = index(fs.Arg(0), fs.Args()[1:], stdout, opts, reg)
	case args[0] == "verify" && fs.NArg() == 1 && *key != "":
		err = verify(ctx, fs.Arg(0), *cosign, *key, stdout, opts, reg)
	default:
		return usage
	}
	return reg.explain(err)
}

// push normalises the image in a `docker save` archive and pushes it to tag.
func push(archive, tag string, epoch time.Time, stdout io.Writer, opts []remote.Option, reg registry) error {
	ref, err := name.NewTag(tag, reg.names...)
	if err != nil {
		return err
	}
	img, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		return err
	}
	built, err := img.ConfigFile()
	if err != nil {
		return err
	}
	// mutate.Time rebuilds the image from its layers: every file's mtime,
	// the config's created and the history's become epoch, and the
	// builder's container ID and Docker version are left behind.
	img, err = mutate.Time(img, epoch)
	if err != nil {
		return err
	}
	config, err := img.ConfigFile()
	if err != nil {
		return err
	}
	config = config.DeepCopy()
	config.Variant = built.Variant
	// The classic builder records the ID of an intermediate image, which
	// holds its build time; its history lines differ from BuildKit's. The
	// Dockerfile says what the image is; the history repeats it.
	config.Config.Image = ""
	config.History = nil
	if img, err = mutate.ConfigFile(img, config); err != nil {
		return err
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, ref.Context().Digest(digest.String()))
	return nil
}

// index pushes to tag one index of the images the other tags name, each
// under the platform its config records.
func index(tag string, images []string, stdout io.Writer, opts []remote.Option, reg registry) error {
	ref, err := name.NewTag(tag, reg.names...)
	if err != nil {
		return err
	}
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	for _, s := range images {
		r, err := name.ParseReference(s, reg.names...)
		if err != nil {
			return err
		}
		img, err := remote.Image(r, opts...)
		if err != nil {
			return err
		}
		config, err := img.ConfigFile()
		if err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: config.Platform()}})
	}
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, ref.Context().Digest(digest.String()))
	return nil
}

// verify prints the digest tag points at, once its signature and its SBOM
// attestation verify with key; for an index, the signature is the index's
// and the attestations are its images'.
func verify(ctx context.Context, tag, cosign, key string, stdout io.Writer, opts []remote.Option, reg registry) error {
	ref, err := name.NewTag(tag, reg.names...)
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return fmt.Errorf("no image %s in the registry (%w): push it with make docker-push", tag, err)
	}
	at := ref.Context().Digest(desc.Digest.String())
	what := fmt.Sprintf("refused %s (%s):", tag, desc.Digest)
	signed, err := hasSignature(at, opts)
	if err != nil {
		return err
	}
	if !signed {
		return fmt.Errorf("%s it is unsigned; make docker-push signs what it pushes", what)
	}
	out, err := cosignVerify(ctx, cosign, "verify", key, slices.Concat(reg.cosign, []string{at.String()})...)
	if err != nil {
		return fmt.Errorf("%s no signature verifies with the key %s (signed by another key?): %w", what, key, err)
	}
	var payloads []struct {
		Optional map[string]any `json:"optional"`
	}
	if err := json.Unmarshal(out, &payloads); err != nil {
		return fmt.Errorf("%s reading cosign's verified signatures: %w", what, err)
	}
	var tags []string
	for _, p := range payloads {
		if t, ok := p.Optional["tag"].(string); ok && !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	if !slices.Contains(tags, ref.TagStr()) {
		signedAs := "(none)"
		if len(tags) > 0 {
			signedAs = strings.Join(tags, ", ")
		}
		return fmt.Errorf("%s it was signed as tag %s, not %s: the tag was moved to another image", what, signedAs, ref.TagStr())
	}
	images := []name.Digest{at}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		manifest, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		images = images[:0]
		for _, m := range manifest.Manifests {
			images = append(images, ref.Context().Digest(m.Digest.String()))
		}
	}
	for _, img := range images {
		if _, err := cosignVerify(ctx, cosign, "verify-attestation", key, slices.Concat(reg.cosign, []string{"--type", "cyclonedx", img.String()})...); err != nil {
			return fmt.Errorf("%s no SBOM attestation of %s verifies with the key %s: %w", what, img.DigestStr(), key, err)
		}
	}
	fmt.Fprintln(stdout, desc.Digest)
	return nil
}

// hasSignature says whether cosign's signature tag for the digest exists.
func hasSignature(at name.Digest, opts []remote.Option) (bool, error) {
	sig := at.Context().Tag(strings.Replace(at.DigestStr(), ":", "-", 1) + ".sig")
	_, err := remote.Head(sig, opts...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// cosignVerify runs `cosign verify` or `cosign verify-attestation` with a key
// and no transparency log, and returns what it printed on stdout. Its error
// holds the last line cosign printed on stderr.
func cosignVerify(ctx context.Context, cosign, command, key string, args ...string) ([]byte, error) {
	args = append([]string{command, "--key", key, "--insecure-ignore-tlog=true", "--output", "json"}, args...)
	cmd := exec.CommandContext(ctx, cosign, args...) // #nosec G204 G702 -- the cosign the Makefile pinned, on the reference being deployed
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		return nil, fmt.Errorf("%v: %s", err, lines[len(lines)-1])
	}
	return stdout.Bytes(), nil
}
