package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicy: release policy writes the two policies for the repository, by
// its full name, with one authority per key (a file's PEM, or a KMS URI),
// the CycloneDX attestation and its subject check in the -sbom one only; and
// refuses a key file that holds no public key, naming it.
func TestPolicy(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "cosign.pub")
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	notKey := filepath.Join(dir, "cosign.key")
	for path, data := range map[string]string{pub: pemKey, notKey: "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var out bytes.Buffer
	args := []string{"policy", "-name", "hello", "-key", pub, "-key", "awskms:///alias/hello", "hello"}
	if err := run(context.Background(), args, func(string) string { return "" }, &out); err != nil {
		t.Fatalf("release %s: %v", strings.Join(args, " "), err)
	}
	var list struct {
		Kind  string
		Items []clusterImagePolicy
	}
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || list.Kind != "List" || len(list.Items) != 2 {
		t.Fatalf("release policy printed %v, %d items of a %q, want a List of two:\n%s", err, len(list.Items), list.Kind, out.String())
	}
	const repo = "index.docker.io/library/hello" // what go-containerregistry, and so the webhook, calls "hello"
	for i, want := range []string{"hello-signed", "hello-sbom"} {
		p := list.Items[i]
		if p.Kind != "ClusterImagePolicy" || p.Metadata.Name != want {
			t.Errorf("item %d: %s %s, want ClusterImagePolicy %s", i, p.Kind, p.Metadata.Name, want)
		}
		if got := p.Spec.Images; len(got) != 2 || got[0].Glob != repo+"@**" || got[1].Glob != repo+":**" {
			t.Errorf("%s: images %v, want %s@** and %s:**", want, got, repo, repo)
		}
		a := p.Spec.Authorities
		if len(a) != 2 || a[0].Name != "cosign.pub" || a[0].Key.Data != pemKey || a[1].Key.KMS != "awskms:///alias/hello" || a[1].Key.Data != "" {
			t.Fatalf("%s: authorities %+v, want cosign.pub's PEM, then the KMS key", want, a)
		}
		for _, auth := range a {
			switch n := len(auth.Attestations); {
			case want == "hello-signed" && n != 0:
				t.Errorf("%s: authority %s checks %d attestations, want none (a signature)", want, auth.Name, n)
			case want == "hello-sbom" && (n != 1 || auth.Attestations[0].PredicateType != "https://cyclonedx.org/bom" ||
				auth.Attestations[0].Policy.Data != `subject: [{name: "`+repo+`"}]`):
				t.Errorf("%s: authority %s attestations %+v, want the CycloneDX one, its subject %s", want, auth.Name, auth.Attestations, repo)
			}
		}
	}

	args = []string{"policy", "-name", "hello", "-key", notKey, "localhost:5000/hello"}
	if err := run(context.Background(), args, func(string) string { return "" }, &out); err == nil || !strings.Contains(err.Error(), notKey+" holds no PEM public key") {
		t.Errorf("release %s: %v, want refused: %s holds no PEM public key", strings.Join(args, " "), err, notKey)
	}
}
