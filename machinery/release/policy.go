package main

// release policy: what the cluster's admission webhook (sigstore
// policy-controller) must check before it runs an image of the repository.
// The same two checks as release verify, in the cluster: a signature and a
// CycloneDX attestation by one of the keys.

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// clusterImagePolicy is a policy.sigstore.dev/v1beta1 ClusterImagePolicy,
// with the fields hello's policies use.
type clusterImagePolicy struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Images      []imageGlob `json:"images"`
		Authorities []authority `json:"authorities"`
	} `json:"spec"`
}

type imageGlob struct {
	Glob string `json:"glob"`
}

type authority struct {
	Name string `json:"name"`
	Key  struct {
		Data string `json:"data,omitempty"` // a PEM public key
		KMS  string `json:"kms,omitempty"`  // or a KMS URI (awskms://..., hashivault://...)
	} `json:"key"`
	Attestations []attestation `json:"attestations,omitempty"`
}

type attestation struct {
	Name          string `json:"name"`
	PredicateType string `json:"predicateType"`
	Policy        struct {
		Type string `json:"type"`
		Data string `json:"data"`
	} `json:"policy"`
}

// policy prints, as one JSON List for kubectl apply, the two policies that
// admit an image of repo: NAME-signed wants a signature by one of keys,
// NAME-sbom a CycloneDX attestation by one of them whose subject is repo.
//
// Two policies, since an authority with attestations checks only those,
// and every policy that matches an image must pass: so the image needs
// both. The keys are ORed within each (a key rotation trusts both). The
// attestation's subject is the one place where admission sees the
// repository an image was signed for: without it, an image copied with its
// .sig and .att from another repository would pass. Globs match the image's
// full name (go-containerregistry's Name(), as here); `**` after `@` or `:`
// and not after the name, so REPO-canary is not covered.
func policy(prefix, repo string, keys []string, stdout io.Writer) error {
	r, err := name.NewRepository(repo)
	if err != nil {
		return err
	}
	var authorities []authority
	for _, key := range keys {
		a := authority{Name: filepath.Base(key)}
		if strings.Contains(key, "://") {
			a.Name, a.Key.KMS = key, key
		} else if a.Key.Data, err = publicKey(key); err != nil {
			return err
		}
		authorities = append(authorities, a)
	}
	var sbom attestation
	sbom.Name, sbom.PredicateType = "cyclonedx", "https://cyclonedx.org/bom" // what cosign attest --type cyclonedx writes
	sbom.Policy.Type, sbom.Policy.Data = "cue", fmt.Sprintf("subject: [{name: %q}]", r.Name())
	attested := make([]authority, len(authorities))
	for i, a := range authorities {
		a.Attestations = []attestation{sbom}
		attested[i] = a
	}

	list := struct {
		APIVersion string               `json:"apiVersion"`
		Kind       string               `json:"kind"`
		Items      []clusterImagePolicy `json:"items"`
	}{APIVersion: "v1", Kind: "List"}
	for _, p := range []struct {
		suffix      string
		authorities []authority
	}{{"-signed", authorities}, {"-sbom", attested}} {
		var cip clusterImagePolicy
		cip.APIVersion, cip.Kind = "policy.sigstore.dev/v1beta1", "ClusterImagePolicy"
		cip.Metadata.Name = prefix + p.suffix
		cip.Metadata.Labels = map[string]string{
			"app.kubernetes.io/name": "hello", "app.kubernetes.io/component": "image-policy", "app.kubernetes.io/managed-by": "kubectl",
		}
		cip.Spec.Images = []imageGlob{{r.Name() + "@**"}, {r.Name() + ":**"}}
		cip.Spec.Authorities = p.authorities
		list.Items = append(list.Items, cip)
	}
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// publicKey reads a PEM public key from path, as cosign wrote it, and
// returns it; anything else is an error that says what path holds.
func publicKey(path string) (string, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the key VERIFY_KEY names
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return "", fmt.Errorf("%s holds no PEM public key (a cosign.pub, as cosign generate-key-pair writes it)", path)
	}
	if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return string(pem.EncodeToMemory(block)), nil
}
