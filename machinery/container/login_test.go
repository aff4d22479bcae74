package container

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPushLogin pushes to a registry that wants a login (htpasswd, bcrypt)
// and speaks HTTPS with a certificate from a CA of the test's own, under a
// host name mapped to ::1, outside Docker's default insecure-registries, so
// every tool checks the certificate: the Docker engine trusts the CA by
// /etc/docker/certs.d, release and cosign by SSL_CERT_FILE, as they would by
// the machine's trust store. Each DOCKER_CONFIG is a folder of the test's,
// never the user's. With no credentials, and with a wrong password, make
// docker-push stops on one line that says so, before anything is built, and
// the registry holds nothing. After docker login it pushes, signs and
// attests; release verify, cosign verify-attestation and make
// kubernetes-apply accept the image with those credentials, and without
// them, or with the wrong password, release verify and cosign read nothing.
func TestPushLogin(t *testing.T) {
	needEngine(t)
	release, cosign := releaseTools(t)
	if _, err := exec.LookPath("htpasswd"); err != nil {
		t.Fatalf("htpasswd (Debian's apache2-utils) writes the registry's password file: %v", err)
	}
	addr, host := loopback6(t)
	_, port, _ := net.SplitHostPort(addr)
	registry := host + ":" + port
	ca := certify(t, &x509.Certificate{Subject: pkix.Name{CommonName: "hello's container test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil)
	dockerTrusts(t, registry, ca.certFile)
	t.Setenv("SSL_CERT_FILE", ca.certFile) // for release and cosign, and only the CA: every address is local

	const user, password = "hello", "the-right-password"
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(run(t, "htpasswd", "-Bbn", user, password)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: basicAuth{user, password, trusting(ca.cert)}}
	auth := fmt.Sprintf("auth:\n  htpasswd:\n    realm: hello-ctest\n    path: %s\n", htpasswd)
	serveRegistry(t, addr, tlsSection(certify(t, serverCert(host), &ca)), auth, client)
	img := newImage(t, registry)

	none, wrong := t.TempDir(), t.TempDir()
	wrongAuth := base64.StdEncoding.EncodeToString([]byte(user + ":wrong-password"))
	if err := os.WriteFile(filepath.Join(wrong, "config.json"), []byte(`{"auths": {"`+registry+`": {"auth": "`+wrongAuth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	refusals := []struct{ config, line string }{
		{none, "release: " + registry + " wants a login (401 Unauthorized), and docker login stored no credentials for it: log in with docker login " + registry},
		{wrong, "release: " + registry + " refused the credentials docker login stored for it (401 Unauthorized): log in again with docker login " + registry},
	}
	for _, r := range refusals {
		t.Setenv("DOCKER_CONFIG", r.config)
		out, err := img.tryMake("docker-push", "REGISTRY="+registry)
		if line := oneLine(out); err == nil || line != r.line {
			t.Errorf("DOCKER_CONFIG=%s make docker-push REGISTRY=%s: %v, want the one line %q; output:\n%s", r.config, registry, err, r.line, out)
		}
		t.Logf("make docker-push: %s", oneLine(out))
		if _, err := tryRun("docker", "image", "inspect", img.ref()); err == nil {
			t.Errorf("make docker-push, refused, built %s; want it stopped before the build", img.ref())
		}
		wantCatalog(t, client, "https://"+addr)
	}

	login := t.TempDir()
	t.Setenv("DOCKER_CONFIG", login)
	cmd := exec.Command("docker", "login", "-u", user, "--password-stdin", registry) // #nosec G204 -- docker login to the test's own registry
	cmd.Stdin = strings.NewReader(password)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker login %s: %v\n%s", registry, err, out)
	}
	pushed := lastLine(img.make(t, "docker-push", "REGISTRY="+registry))
	digest := checkPushed(t, pushed, registry, img.name)
	wantCatalog(t, client, "https://"+addr, img.name)
	pub := filepath.Join(img.config, "hello", "cosign.pub")
	ref := registry + "/" + img.ref()
	if got, err := tryRun(release, "verify", "-cosign", cosign, "-key", pub, ref); err != nil || got != digest {
		t.Errorf("release verify %s after docker login: %v %q, want %s", ref, err, got, digest)
	}
	checkSBOM(t, cosign, pub, pushed, img)
	if applied := kubernetesApply(t, img, registry); !strings.Contains(applied, "newName: "+registry+"/"+img.name+", digest: \""+digest+"\"") {
		t.Errorf("make kubernetes-apply REGISTRY=%s applied an overlay that does not name %s:\n%s", registry, pushed, applied)
	}

	for _, r := range refusals {
		env := []string{"DOCKER_CONFIG=" + r.config}
		if out, err := tryRunEnv(env, release, "verify", "-cosign", cosign, "-key", pub, ref); err == nil || strings.TrimSpace(out) != r.line {
			t.Errorf("DOCKER_CONFIG=%s release verify %s: %v %q, want the one line %q", r.config, ref, err, out, r.line)
		}
		out, err := tryRunEnv(env, cosign, "verify", "--key", pub, "--insecure-ignore-tlog=true",
			"--trusted-root", filepath.Join(root, "machinery", "release", "trusted-root.json"), pushed)
		if err == nil || !strings.Contains(out, "UNAUTHORIZED") {
			t.Errorf("DOCKER_CONFIG=%s cosign verify %s: %v, want refused as UNAUTHORIZED\n%s", r.config, pushed, err, out)
		}
		t.Logf("DOCKER_CONFIG=%s cosign verify: %s", filepath.Base(r.config), lastLine(out))
	}
}

// dockerTrusts has the Docker engine trust the CA in caFile for registry
// (host:port) until the test ends: the engine reads
// /etc/docker/certs.d/REGISTRY/ca.crt at each request. The folder goes when
// the test ends, and certs.d too when the test made it.
func dockerTrusts(t *testing.T, registry, caFile string) {
	t.Helper()
	certsD := "/etc/docker/certs.d"
	_, err := os.Stat(certsD)
	made := errors.Is(err, fs.ErrNotExist)
	dir := filepath.Join(certsD, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil { // #nosec G301 -- as Docker's documentation makes it: the engine reads it, nothing in it is secret
		t.Fatalf("the Docker engine trusts a registry's CA from %s: %v", dir, err)
	}
	t.Cleanup(func() {
		err := os.RemoveAll(dir)
		if err == nil && made {
			err = os.Remove(certsD)
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	pem, err := os.ReadFile(caFile) // #nosec G304 -- the test's own CA
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), pem, 0o644); err != nil { // #nosec G306 G703 -- a CA certificate, public, into the folder of the test's registry
		t.Fatal(err)
	}
}

// basicAuth adds a user and password to every request, for the test's own
// client to a registry that wants a login.
type basicAuth struct {
	user, password string
	next           http.RoundTripper
}

func (b basicAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.SetBasicAuth(b.user, b.password)
	return b.next.RoundTrip(req)
}
