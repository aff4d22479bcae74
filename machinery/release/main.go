// Command release is hello's release path between `docker build` and the
// cluster: it pushes reproducible images and, before a deploy, resolves a tag
// to a digest that cosign has verified. The Makefile runs it; it is a module of
// its own so that hello's go.mod stays empty.
//
//	release push -epoch SECONDS -dockerfile FILE -cosign PATH -key PUB IMAGE.tar REGISTRY/IMAGE:TAG
//	release index -cosign PATH -key PUB -sbom FILE REGISTRY/IMAGE:TAG REGISTRY/IMAGE:TAG-ARCH...
//	release tag REGISTRY/IMAGE@DIGEST TAG
//	release verify -cosign PATH -key PUB [-key PUB...] REGISTRY/IMAGE:TAG
//	release registry [-q] REGISTRY
//	release policy -name NAME -key PUB [-key PUB...] REGISTRY/IMAGE
//
// push reads a `docker save` archive, makes it the canonical image of what
// the Dockerfile says (canonical.go: one digest whichever engine built it,
// every timestamp -epoch), pushes it by digest and prints
// REGISTRY/IMAGE@DIGEST. index pushes one index over images already pushed,
// by digest too, and writes the index's CycloneDX SBOM (its images) to FILE
// for cosign to attest. Neither moves TAG, and both refuse, before pushing
// anything, when TAG names another digest that the key signed: a tag names
// one build.
// tag points TAG at the digest once the Makefile has signed it. verify prints
// the digest TAG points at, once cosign has verified with one of the keys its
// signature, made for that tag in that repository, and its SBOM attestation;
// otherwise it says on one line why the image is refused, and exits 1.
// registry prints whether the rule below lets REGISTRY speak plain HTTP,
// true or false, once its /v2/ has answered within 5 s to the credentials
// docker login stored for it, if any; otherwise it says on one line why not.
// Every command asks with those credentials, and so does the cosign it runs;
// a registry that refuses them, or wants some, gets one line that says to
// run docker login. policy prints the ClusterImagePolicies NAME-signed and
// NAME-sbom that make the cluster's admission webhook (sigstore
// policy-controller) want the same of every image of REGISTRY/IMAGE: a
// signature and an SBOM attestation by one of the keys (policy.go).
//
// One rule (registry.go) decides how each command, and the cosign it runs,
// speaks to the registry: REGISTRY_INSECURE in the environment, true or
// false; when it is empty, the Docker engine's insecure-registries.
package main

import (
	"bytes"
	"context"
	_ "embed"
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
	"github.com/google/go-containerregistry/pkg/v1/partial"
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
		return errors.New("usage: release push|index|tag|verify|registry|policy ... (see the doc comment of release/main.go)")
	}
	fs := flag.NewFlagSet("release "+args[0], flag.ContinueOnError)
	epoch := fs.Int64("epoch", 0, "push: every timestamp in the image, in seconds since 1970 (SOURCE_DATE_EPOCH)")
	dockerfile := fs.String("dockerfile", "Dockerfile", "push: the Dockerfile the image was built from; only the labels it declares are pushed")
	ring := keyring{cosign: "cosign"}
	fs.StringVar(&ring.cosign, "cosign", ring.cosign, "push, index, verify: the cosign binary")
	fs.Func("key", "push, index: the signer's public key, and any other trusted one; verify: a public key the signature and the SBOM attestation must verify with (repeat it to trust several)",
		func(key string) error { ring.keys = append(ring.keys, key); return nil })
	quiet := fs.Bool("q", false, "registry: print true or false only, not why")
	prefix := fs.String("name", "", "policy: the policies' names are NAME-signed and NAME-sbom")
	sbom := fs.String("sbom", "", "index: where to write the index's CycloneDX SBOM, which lists its images")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	usage := fmt.Errorf("usage: release %s: wrong arguments %q (see the doc comment of release/main.go)", args[0], args[1:])
	if args[0] == "registry" && fs.NArg() == 1 {
		return registryCommand(ctx, fs.Arg(0), *quiet, getenv, stdout, os.Stderr)
	}
	if args[0] == "policy" && fs.NArg() == 1 && *prefix != "" && len(ring.keys) > 0 {
		return policy(*prefix, fs.Arg(0), ring.keys, stdout) // it speaks to no registry
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
	ring.flags = reg.cosign
	opts := append([]remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, reg.options()...)
	switch {
	case args[0] == "push" && fs.NArg() == 2 && len(ring.keys) > 0:
		err = push(ctx, fs.Arg(0), *dockerfile, fs.Arg(1), time.Unix(*epoch, 0).UTC(), reg, ring, stdout, opts)
	case args[0] == "index" && fs.NArg() >= 2 && len(ring.keys) > 0 && *sbom != "":
		err = index(ctx, fs.Arg(0), fs.Args()[1:], *sbom, reg, ring, stdout, opts)
	case args[0] == "tag" && fs.NArg() == 2:
		err = tag(fs.Arg(0), fs.Arg(1), reg, opts)
	case args[0] == "verify" && fs.NArg() == 1 && len(ring.keys) > 0:
		err = verify(ctx, fs.Arg(0), reg, ring, stdout, opts)
	default:
		return usage
	}
	return reg.explain(err)
}

// push reads a `docker save` archive, makes its image canonical
// (canonical.go) and pushes it by digest (pushByDigest).
func push(ctx context.Context, archive, dockerfile, tag string, epoch time.Time, reg registry, ring keyring, stdout io.Writer, opts []remote.Option) error {
	ref, err := name.NewTag(tag, reg.names...)
	if err != nil {
		return err
	}
	labels, err := dockerfileLabels(dockerfile)
	if err != nil {
		return err
	}
	img, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		return err
	}
	if img, err = canonical(img, labels, epoch); err != nil {
		return err
	}
	return pushByDigest(ctx, ref, img, ring, stdout, opts)
}

// index pushes by digest (pushByDigest) one index of the images the other
// tags name, each under the platform its config records, and writes to sbom
// the index's SBOM (indexSBOM).
func index(ctx context.Context, tag string, images []string, sbom string, reg registry, ring keyring, stdout io.Writer, opts []remote.Option) error {
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
	if err := indexSBOM(ref.Context(), idx, sbom); err != nil {
		return err
	}
	return pushByDigest(ctx, ref, idx, ring, stdout, opts)
}

// indexSBOM writes to path a CycloneDX SBOM of the index idx of repo: one
// container component per image, by digest and platform. Each image carries
// the SBOM of its binary; this one is what the index itself is made of, so
// that a check that reads the attestations of the digest a pod names (the
// cluster's admission webhook does) finds one for an index too.
func indexSBOM(repo name.Repository, idx v1.ImageIndex, path string) error {
	manifest, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	type property struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	type component struct {
		Type       string     `json:"type"`
		Name       string     `json:"name"`
		Version    string     `json:"version"`
		Properties []property `json:"properties,omitempty"`
	}
	bom := struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Version     int    `json:"version"`
		Metadata    struct {
			Component struct {
				Type string `json:"type"`
				Name string `json:"name"`
			} `json:"component"`
		} `json:"metadata"`
		Components []component `json:"components"`
	}{BOMFormat: "CycloneDX", SpecVersion: "1.5", Version: 1}
	bom.Metadata.Component.Type, bom.Metadata.Component.Name = "container", repo.Name()
	for _, m := range manifest.Manifests {
		bom.Components = append(bom.Components, component{Type: "container", Name: repo.Name(), Version: m.Digest.String(),
			Properties: []property{{Name: "platform", Value: m.Platform.String()}}})
	}
	out, err := json.MarshalIndent(bom, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(out, '\n'), 0o600) // #nosec G703 -- the file the Makefile names, in its own temporary folder
}

// pushByDigest pushes what, an image or an index, into tag's repository by
// its digest, once ring.claim has said that the digest may be signed for
// tag, and prints REGISTRY/IMAGE@DIGEST. The tag does not move here: release
// tag moves it once the Makefile has signed the digest.
func pushByDigest(ctx context.Context, tag name.Tag, what remote.Taggable, ring keyring, stdout io.Writer, opts []remote.Option) error {
	digest, err := partial.Digest(what)
	if err != nil {
		return err
	}
	if err := ring.claim(ctx, tag, digest, opts); err != nil {
		return err
	}
	at := tag.Context().Digest(digest.String())
	if err := remote.Push(at, what, opts...); err != nil {
		return err
	}
	fmt.Fprintln(stdout, at)
	return nil
}

// tag points tagName, in the repository of the digest reference at, at that
// digest.
func tag(at, tagName string, reg registry, opts []remote.Option) error {
	ref, err := name.NewDigest(at, reg.names...)
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return err
	}
	return remote.Tag(ref.Context().Tag(tagName), desc, opts...)
}

// verify prints the digest tag points at, once one of the keys verifies its
// signature, made for tag in tag's repository, and its SBOM attestation; for
// an index, the signature is the index's and the attestations are its
// images'. With several keys (while one is rotated out), one key must verify
// both: the reasons each key gave are joined on the refusal's line.
func verify(ctx context.Context, tag string, reg registry, ring keyring, stdout io.Writer, opts []remote.Option) error {
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
	signed, err := attached(at, ".sig", opts)
	if err != nil {
		return err
	}
	if !signed {
		return fmt.Errorf("%s it is unsigned; make docker-push signs what it pushes", what)
	}
	var reasons []string
	for _, key := range ring.keys {
		reason, err := ring.refusal(ctx, key, ref, at, images, opts)
		if err != nil {
			return err
		}
		if reason == "" {
			fmt.Fprintln(stdout, desc.Digest)
			return nil
		}
		reasons = append(reasons, reason)
	}
	return fmt.Errorf("%s %s", what, strings.Join(reasons, "; "))
}

// keyring is the public keys images must verify with, the cosign that
// verifies them, and the flags that make cosign speak to the registry as the
// rule says (registry.go).
type keyring struct {
	cosign string
	keys   []string
	flags  []string
}

// refusal says why key does not verify the image at as tag's, or "" when it
// does. cosign decides whether a signature by key is this digest's and
// records this tag (-a tag=TAG). It does not compare the repository the
// signature was made for (critical.identity.docker-reference) with the one
// the image is in, so that is decided here: else a signed image copied with
// its signature from another repository would verify.
func (k keyring) refusal(ctx context.Context, key string, tag name.Tag, at name.Digest, images []name.Digest, opts []remote.Option) (string, error) {
	sigs, err := k.signatures(ctx, key, at, "-a", "tag="+tag.TagStr())
	if err != nil {
		return k.unverified(ctx, key, tag, at), nil
	}
	repo := tag.Context().Name()
	if !slices.ContainsFunc(sigs, func(s signature) bool { return s.repository() == repo }) {
		return copied(sigs, repo), nil
	}
	for _, img := range images {
		attested, err := attached(img, ".att", opts)
		if err != nil {
			return "", err
		}
		if !attested {
			return fmt.Sprintf("no SBOM attestation is attached to %s; make docker-push attests what it pushes", img.DigestStr()), nil
		}
		if _, err := cosignVerify(ctx, k.cosign, "verify-attestation", key, slices.Concat(k.flags, []string{"--type", "cyclonedx", img.String()})...); err != nil {
			return fmt.Sprintf("no SBOM attestation of %s verifies with the key %s (attested by another key?): %v", img.DigestStr(), key, err), nil
		}
	}
	return "", nil
}

// claim refuses to push digest for tag when the tag names another digest
// that one of the keys has signed (the signer's, and while a key is rotated
// the others that deployers trust). A signature cannot be taken back: once
// two digests are signed for one tag, whoever may push can point the tag at
// either, and both verify. So a tag names one build, and a rebuild gets a
// new tag (docs/image.md).
func (k keyring) claim(ctx context.Context, tag name.Tag, digest v1.Hash, opts []remote.Option) error {
	desc, err := head(tag, opts)
	if err != nil || desc == nil || desc.Digest == digest {
		return err
	}
	other := tag.Context().Digest(desc.Digest.String())
	for _, key := range k.keys {
		// An image that no signature by key verifies for may be replaced.
		if sigs, err := k.signatures(ctx, key, other); err == nil {
			return fmt.Errorf("refused to sign %s for %s: the tag names %s, already signed as %s by a trusted key; a tag names one build: push this build under a new TAG",
				tag, digest, desc.Digest, strings.Join(tagsOf(sigs), ", "))
		}
	}
	return nil
}

// signature is what a cosign signature says, once verified: the repository
// it was made for and the tag make docker-push recorded (-a tag=TAG).
type signature struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// repository is the repository the signature was made for, as go-containerregistry
// names it ("index.docker.io/library/hello" for "hello").
func (s signature) repository() string {
	ref, err := name.ParseReference(s.Critical.Identity.DockerReference)
	if err != nil {
		return s.Critical.Identity.DockerReference
	}
	return ref.Context().Name()
}

// signatures runs `cosign verify` with key on the image at, and returns the
// signatures that verified.
func (k keyring) signatures(ctx context.Context, key string, at name.Digest, args ...string) ([]signature, error) {
	out, err := cosignVerify(ctx, k.cosign, "verify", key, slices.Concat(k.flags, args, []string{at.String()})...)
	if err != nil {
		return nil, err
	}
	var sigs []signature
	if err := json.Unmarshal(out, &sigs); err != nil {
		return nil, fmt.Errorf("reading cosign's verified signatures: %w", err)
	}
	return sigs, nil
}

// unverified says why no signature by key verified as tag's: cosign's own
// error does not say what the image was signed for.
func (k keyring) unverified(ctx context.Context, key string, tag name.Tag, at name.Digest) string {
	sigs, err := k.signatures(ctx, key, at)
	if err != nil {
		return fmt.Sprintf("no signature verifies with the key %s (signed by another key?): %v", key, err)
	}
	repo := tag.Context().Name()
	here := slices.DeleteFunc(slices.Clone(sigs), func(s signature) bool { return s.repository() != repo })
	if len(here) == 0 {
		return copied(sigs, repo)
	}
	return fmt.Sprintf("it was signed as tag %s, not %s: the tag was moved to another image", strings.Join(tagsOf(here), ", "), tag.TagStr())
}

// copied is the refusal of signatures made for other repositories than repo.
func copied(sigs []signature, repo string) string {
	var repos []string
	for _, s := range sigs {
		if !slices.Contains(repos, s.repository()) {
			repos = append(repos, s.repository())
		}
	}
	return fmt.Sprintf("it was signed for the repository %s, not %s: it was copied from another repository", strings.Join(repos, ", "), repo)
}

// tagsOf lists the tags the signatures were made for, once each; "(none)"
// stands for a signature without one.
func tagsOf(sigs []signature) []string {
	var tags []string
	for _, s := range sigs {
		t, ok := s.Optional["tag"].(string)
		if !ok {
			t = "(none)"
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	return tags
}

// attached says whether cosign's tag for the digest with suffix (".sig" for
// its signatures, ".att" for its attestations) exists.
func attached(at name.Digest, suffix string, opts []remote.Option) (bool, error) {
	desc, err := head(at.Context().Tag(strings.Replace(at.DigestStr(), ":", "-", 1)+suffix), opts)
	return desc != nil, err
}

// head is what the registry says tag names, or nil when the tag does not exist.
func head(tag name.Tag, opts []remote.Option) (*v1.Descriptor, error) {
	desc, err := remote.Head(tag, opts...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	return desc, err
}

// keyOnly is a sigstore trusted root that trusts nothing (no Fulcio, no
// Rekor, no timestamp authority): a signature verifies by the key alone.
// Without --trusted-root, cosign v2.6.5's verify and verify-attestation
// fetch Sigstore's public one through TUF, a look-up of
// tuf-repo-cdn.sigstore.dev, before they read the key, even with
// --insecure-ignore-tlog, and use nothing of it for a key. With it, the
// release path sends nothing off this machine.
//
//go:embed trusted-root.json
var keyOnly string

// cosignVerify runs `cosign verify` or `cosign verify-attestation` with a key
// and no transparency log, offline (keyOnly, read from stdin), and returns
// what it printed on stdout. Its error holds the last line cosign printed on
// stderr.
func cosignVerify(ctx context.Context, cosign, command, key string, args ...string) ([]byte, error) {
	args = append([]string{command, "--key", key, "--insecure-ignore-tlog=true", "--trusted-root", "/dev/stdin", "--output", "json"}, args...)
	cmd := exec.CommandContext(ctx, cosign, args...) // #nosec G204 G702 -- the cosign the Makefile pinned, on the reference being deployed
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(keyOnly), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		return nil, fmt.Errorf("%v: %s", err, lines[len(lines)-1])
	}
	return stdout.Bytes(), nil
}
