package container

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPushLANRegistry pushes to a registry that speaks plain HTTP under a
// LAN host name, as the README's k3s users run one (registry.lan:5000): here
// a name mapped to 127.0.0.1, so no traffic leaves the machine. With
// REGISTRY_INSECURE empty, Docker's insecure-registries decides, and its
// default 127.0.0.0/8 holds that address: docker-push pushes, signs and
// attests, and kubernetes-apply verifies and deploys the digest. With
// REGISTRY_INSECURE=false it refuses on one line, having pushed nothing.
func TestPushLANRegistry(t *testing.T) {
	needEngine(t)
	registry := startRegistry(t)
	_, port, _ := net.SplitHostPort(registry)
	lan := mapHost(t, "127.0.0.1") + ":" + port
	img := newImage(t, lan)

	out, err := img.tryMake("docker-push", "REGISTRY="+lan, "REGISTRY_INSECURE=false")
	if line := oneLine(out); err == nil || !strings.Contains(line, "speaks plain HTTP") || !strings.Contains(line, "REGISTRY_INSECURE=true") {
		t.Errorf("make docker-push REGISTRY=%s REGISTRY_INSECURE=false: %v, want one line that says it speaks plain HTTP and names REGISTRY_INSECURE=true; output:\n%s", lan, err, out)
	}
	t.Logf("REGISTRY_INSECURE=false: %s", oneLine(out))
	wantCatalog(t, http.DefaultClient, "http://"+registry)

	pushed := lastLine(img.make(t, "docker-push", "REGISTRY="+lan))
	digest := checkPushed(t, pushed, lan, img.name)
	wantCatalog(t, http.DefaultClient, "http://"+registry, img.name)
	applied := kubernetesApply(t, img, lan)
	if !strings.Contains(applied, "newName: "+lan+"/"+img.name+", digest: \""+digest+"\"") {
		t.Errorf("make kubernetes-apply REGISTRY=%s applied an overlay that does not name %s@%s:\n%s", lan, lan+"/"+img.name, digest, applied)
	}
}

// TestPushUntrustedTLS pushes to a registry that speaks HTTPS with a
// self-signed certificate, under a host name mapped to ::1, which Docker's
// default insecure-registries (127.0.0.0/8) does not hold: docker-push
// stops on one line that says the certificate is not trusted and names
// REGISTRY_INSECURE, having pushed nothing. With REGISTRY_INSECURE=true it
// pushes, signs and attests without checking the certificate, as docker
// push does for an insecure registry, and release verify accepts the image.
func TestPushUntrustedTLS(t *testing.T) {
	needEngine(t)
	addr, host := loopback6(t)
	_, port, _ := net.SplitHostPort(addr)
	tlsHost := host + ":" + port
	cert := certify(t, serverCert(host), nil)
	client := &http.Client{Transport: trusting(cert.cert)}
	serveRegistry(t, addr, tlsSection(cert), "", client)
	img := newImage(t, tlsHost)

	out, err := img.tryMake("docker-push", "REGISTRY="+tlsHost)
	if line := oneLine(out); err == nil || !strings.Contains(line, "certificate this machine does not trust") || !strings.Contains(line, "REGISTRY_INSECURE=true") {
		t.Errorf("make docker-push REGISTRY=%s (self-signed): %v, want one line that says its certificate is not trusted and names REGISTRY_INSECURE=true; output:\n%s", tlsHost, err, out)
	}
	t.Logf("self-signed: %s", oneLine(out))
	wantCatalog(t, client, "https://"+addr)

	pushed := lastLine(img.make(t, "docker-push", "REGISTRY="+tlsHost, "REGISTRY_INSECURE=true"))
	digest := checkPushed(t, pushed, tlsHost, img.name)
	wantCatalog(t, client, "https://"+addr, img.name)
	cmd := []string{os.Getenv("RELEASE_BIN"), "verify", "-cosign", os.Getenv("COSIGN_BIN"),
		"-key", filepath.Join(img.config, "hello", "cosign.pub"), tlsHost + "/" + img.ref()}
	if got, err := tryRunEnv([]string{"REGISTRY_INSECURE=true"}, cmd[0], cmd[1:]...); err != nil || got != digest {
		t.Errorf("REGISTRY_INSECURE=true release verify %s: %v %q, want %s", tlsHost+"/"+img.ref(), err, got, digest)
	}
}

// kubernetesApply runs make kubernetes-apply for img in registry with a
// kubectl that answers version, records what apply -k is given and
// succeeds at the waits: the whole target but the cluster. It returns the
// overlay kubectl would have applied.
func kubernetesApply(t *testing.T, img image, registry string, knobs ...string) string {
	t.Helper()
	dir := t.TempDir()
	kubectl, record := filepath.Join(dir, "kubectl"), filepath.Join(dir, "applied")
	script := "#!/bin/sh\ncase \"$1\" in\nversion) exit 0;;\napply) cat \"$3/kustomization.yaml\" >>" + record + ";;\nesac\n"
	if err := os.WriteFile(kubectl, []byte(script), 0o700); err != nil { // #nosec G306 -- an executable of the test's own, in its folder
		t.Fatal(err)
	}
	out := img.make(t, "kubernetes-apply", append([]string{"REGISTRY=" + registry, "KUBECTL=" + kubectl}, knobs...)...)
	if !strings.Contains(out, "signed for "+img.tag+", SBOM attested") {
		t.Errorf("make kubernetes-apply REGISTRY=%s printed no verified digest:\n%s", registry, out)
	}
	applied, err := os.ReadFile(record) // #nosec G304 -- the file the test's kubectl wrote
	if err != nil {
		t.Fatalf("make kubernetes-apply REGISTRY=%s applied nothing: %v\n%s", registry, err, out)
	}
	return string(applied)
}

// mapHost maps a new host name to ip in /etc/hosts for the test and removes
// the line when it ends, passed or failed.
func mapHost(t *testing.T, ip string) string {
	t.Helper()
	name := fmt.Sprintf("hello-ctest-%d-%d.test", os.Getpid(), time.Now().UnixNano()%1e9)
	line := ip + " " + name + " # hello's container test: removed when it ends\n"
	f, err := os.OpenFile("/etc/hosts", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: the test maps a host name in /etc/hosts: %v", err)
		}
		t.Skipf("SKIPPED, the test maps a host name in /etc/hosts: %v", err)
	}
	_, err = f.WriteString(line) // one short append: other lines stay as they are
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	t.Cleanup(func() {
		hosts, err := os.ReadFile("/etc/hosts")
		if err == nil {
			err = os.WriteFile("/etc/hosts", bytes.Replace(hosts, []byte(line), nil, 1), 0o644) // #nosec G306 G703 -- /etc/hosts, less the test's own line; WriteFile keeps an existing file's mode
		}
		if err != nil {
			t.Errorf("cleanup: removing %q from /etc/hosts: %v", strings.TrimSpace(line), err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// loopback6 is a free port on ::1 and a new host name mapped to ::1 (see
// mapHost): an address outside Docker's default insecure-registries,
// 127.0.0.0/8, so every tool checks the registry's certificate there.
func loopback6(t *testing.T) (addr, host string) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("no IPv6 loopback to serve the TLS registry on: %v", err)
	}
	addr = ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr, mapHost(t, "::1")
}

// certified is a certificate and its key, written into a folder of the
// test's.
type certified struct {
	cert              *x509.Certificate
	key               *ecdsa.PrivateKey
	certFile, keyFile string
}

// certify makes a key and a certificate from template, valid for the hour
// around now, signed by parent, or by its own key (self-signed) when parent
// is nil. No machine trusts it unless the test says so.
func certify(t *testing.T, template *x509.Certificate, parent *certified) certified {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template.SerialNumber = big.NewInt(time.Now().UnixNano())
	template.NotBefore, template.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signer, signerKey := template, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := certified{cert: cert, key: key, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	for file, block := range map[string]*pem.Block{c.certFile: {Type: "CERTIFICATE", Bytes: der}, c.keyFile: {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// serverCert is the template of a registry's certificate, for host and ::1.
func serverCert(host string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: host},
		DNSNames:    []string{host},
		IPAddresses: []net.IP{net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// tlsSection is the registry's http.tls section (see serveRegistry) for the
// certificate c.
func tlsSection(c certified) string {
	return fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", c.certFile, c.keyFile)
}

// trusting is a transport for the test's own client that trusts root, a
// certificate the machine does not.
func trusting(root *x509.Certificate) *http.Transport {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
}

// wantCatalog wants the registry at base to hold exactly the repositories
// named.
func wantCatalog(t *testing.T, client *http.Client, base string, repos ...string) {
	t.Helper()
	code, body, _, err := getWith(client, base+"/v2/_catalog", "")
	var catalog struct{ Repositories []string }
	if err == nil {
		err = json.Unmarshal(body, &catalog)
	}
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s/v2/_catalog = %d %v", base, code, err)
	}
	if strings.Join(catalog.Repositories, " ") != strings.Join(repos, " ") {
		t.Errorf("the registry holds %q, want %q", catalog.Repositories, repos)
	}
}

// oneLine is what a failed make printed besides make's own lines, when that
// is one line; otherwise it is empty.
func oneLine(out string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "make: ") && !strings.HasPrefix(l, "make[") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		return ""
	}
	return lines[0]
}
