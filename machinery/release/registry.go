package main

// The one rule for how release, and the cosign it runs, speak to a registry.
//
// A registry is insecure (plain HTTP allowed, and an HTTPS certificate not
// verified, as an entry of Docker's insecure-registries means) when
// REGISTRY_INSECURE says true; it is secure (HTTPS with a certificate this
// machine trusts, nothing else) when it says false. When it is empty, the
// engine `docker` speaks to decides as it does for its own push. Docker
// (docker info's RegistryConfig): a registry it lists by name is what it
// lists it as; otherwise the registry is insecure when an address its host
// resolves to is in one of Docker's insecure CIDRs, 127.0.0.0/8 by default.
// Podman, where `docker` is Podman's CLI (its info's registries, from
// registries.conf): a registry listed with insecure = true is insecure, any
// other secure. Without an engine that answers, Docker's default applies.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// registry is how to reach one registry, as the rule decided: the round
// tripper and name options for go-containerregistry, the flags for cosign.
type registry struct {
	host      string // host[:port], as in the image reference
	insecure  bool
	why       string // what decided it, for messages
	transport http.RoundTripper
	names     []name.Option
	cosign    []string
}

// options are go-containerregistry's request options for the registry.
func (r registry) options() []remote.Option {
	return []remote.Option{remote.WithTransport(r.transport)}
}

// dockerRegistries is what `docker info` says of registries, in Docker's
// terms; source names where the engine keeps them.
type dockerRegistries struct {
	IndexConfigs          map[string]struct{ Secure bool }
	InsecureRegistryCIDRs []string
	source                string
}

// dockerDefault is the Docker engine's own when nothing is configured.
var dockerDefault = dockerRegistries{InsecureRegistryCIDRs: []string{"127.0.0.0/8"}, source: "Docker's default insecure-registries"}

// reach applies the rule to host with the knob's value, asking the Docker
// engine only when the knob is empty.
func reach(ctx context.Context, host, knob string) (registry, error) {
	insecure, why, err := decide(ctx, host, knob, askDocker, net.DefaultResolver.LookupIPAddr)
	if err != nil {
		return registry{}, err
	}
	r := registry{host: host, insecure: insecure, why: why, transport: httpsOnly{remote.DefaultTransport}}
	if insecure {
		tr := remote.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // #nosec G402 -- the rule says so: REGISTRY_INSECURE=true or Docker's insecure-registries, as docker push does
		r.transport, r.names = tr, []name.Option{name.Insecure}
		// In cosign v2.6.5 --allow-http-registry is plain HTTP
		// (name.Insecure) and --allow-insecure-registry an unverified
		// certificate: Docker's insecure is both.
		r.cosign = []string{"--allow-http-registry", "--allow-insecure-registry"}
	}
	return r, nil
}

// decide is the rule, with the Docker engine and the resolver passed in.
func decide(ctx context.Context, host, knob string, docker func(context.Context) (dockerRegistries, error),
	lookup func(context.Context, string) ([]net.IPAddr, error)) (bool, string, error) {
	switch knob {
	case "true", "false":
		return knob == "true", "REGISTRY_INSECURE=" + knob, nil
	case "":
	default:
		return false, "", fmt.Errorf("REGISTRY_INSECURE=%q: want true, false, or empty to ask the Docker engine", knob)
	}
	config, err := docker(ctx)
	asked := config.source
	if err != nil {
		config, asked = dockerDefault, fmt.Sprintf("no Docker engine answered (%v), so %s", err, dockerDefault.source)
	}
	if index, ok := config.IndexConfigs[host]; ok {
		return !index.Secure, fmt.Sprintf("%s: %s is listed, secure %t", asked, host, index.Secure), nil
	}
	hostname, _, err := net.SplitHostPort(host)
	if err != nil {
		hostname = host // no port
	}
	addrs, err := lookup(ctx, hostname)
	if err != nil {
		return false, fmt.Sprintf("%s: %s does not resolve (%v)", asked, hostname, err), nil
	}
	for _, cidr := range config.InsecureRegistryCIDRs {
		_, block, err := net.ParseCIDR(cidr)
		if err != nil {
			continue // Docker validated its own configuration
		}
		for _, a := range addrs {
			if block.Contains(a.IP) {
				return true, fmt.Sprintf("%s: %s holds %s, the address of %s", asked, cidr, a.IP, hostname), nil
			}
		}
	}
	if len(config.InsecureRegistryCIDRs) == 0 {
		return false, fmt.Sprintf("%s does not list %s", asked, host), nil
	}
	return false, fmt.Sprintf("%s %v holds no address of %s", asked, config.InsecureRegistryCIDRs, hostname), nil
}

// askDocker runs docker info for the engine's registry configuration:
// Docker's RegistryConfig, or Podman's registries where `docker` is Podman's
// CLI, in Docker's terms.
func askDocker(ctx context.Context) (dockerRegistries, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", "info", "--format", "{{json .}}")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return dockerRegistries{}, fmt.Errorf("docker info: %v %s", err, strings.TrimSpace(stderr.String()))
	}
	return parseInfo(stdout.Bytes())
}

// parseInfo reads the registry configuration from docker info's JSON.
func parseInfo(info []byte) (dockerRegistries, error) {
	var engine struct {
		RegistryConfig *dockerRegistries          // Docker's
		Registries     map[string]json.RawMessage // Podman's, by prefix, and "search"
	}
	if err := json.Unmarshal(info, &engine); err != nil {
		return dockerRegistries{}, fmt.Errorf("docker info's JSON: %w", err)
	}
	if engine.RegistryConfig != nil {
		config := *engine.RegistryConfig
		config.source = "Docker's insecure-registries"
		return config, nil
	}
	if engine.Registries == nil {
		return dockerRegistries{}, errors.New("docker info says nothing of registries: neither Docker's RegistryConfig nor Podman's registries")
	}
	config := dockerRegistries{IndexConfigs: map[string]struct{ Secure bool }{}, source: "Podman's registries.conf"}
	for prefix, raw := range engine.Registries {
		var r struct{ Insecure bool }
		if prefix == "search" || json.Unmarshal(raw, &r) != nil {
			continue // the unqualified-search list, not a registry
		}
		host, _, _ := strings.Cut(prefix, "/")
		if _, ok := config.IndexConfigs[host]; !ok || prefix == host {
			config.IndexConfigs[host] = struct{ Secure bool }{!r.Insecure}
		}
	}
	return config, nil
}

// errPlainHTTP is httpsOnly's refusal.
var errPlainHTTP = errors.New("plain HTTP refused")

// httpsOnly refuses plain HTTP, which go-containerregistry falls back to by
// itself for localhost, 127.*, private addresses and *.local.
type httpsOnly struct{ next http.RoundTripper }

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), errPlainHTTP)
	}
	return h.next.RoundTrip(req)
}

// check asks the registry's /v2/ for an answer within 5 s, as the rule says
// to speak to it, with the credentials docker login stored for it (or none):
// a registry that wants a login is asked with them, as a push would be.
func (r registry) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reg, auth, err := r.login()
	if err != nil {
		return err
	}
	// The handshake pings /v2/ and, for a token registry, fetches a token:
	// wrong credentials are refused there or by the GET after it.
	tr, err := transport.NewWithContext(ctx, reg, auth, r.transport, []string{reg.Scope(transport.PullScope)})
	if err == nil {
		err = getV2(ctx, reg, tr)
	}
	var dns *net.DNSError
	var op *net.OpError
	if errors.As(err, &dns) || errors.As(err, &op) && op.Op == "dial" || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no registry answers at %s within 5 s (%v): start it, or push elsewhere with REGISTRY=host:port", r.host, err)
	}
	return r.explain(err)
}

// getV2 asks reg's /v2/ through tr, which chose the scheme and adds the
// credentials; anything but 200 is a *transport.Error.
func getV2(ctx context.Context, reg name.Registry, tr http.RoundTripper) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+reg.RegistryStr()+"/v2/", nil) // #nosec G704 -- the registry REGISTRY names, which the user pushes to
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusOK)
}

// explain turns a registry's refusal to speak as the rule says, or to let in
// the credentials docker login stored for it, into one line that says what
// to do; other errors pass unchanged.
func (r registry) explain(err error) error {
	var cert *tls.CertificateVerificationError
	var status *transport.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &status) && (status.StatusCode == http.StatusUnauthorized || status.StatusCode == http.StatusForbidden):
		return r.refused(status.StatusCode)
	case r.insecure:
		return err
	case errors.As(err, &cert):
		return fmt.Errorf("%s speaks HTTPS with a certificate this machine does not trust (%v); nothing was pushed or read. "+
			"Trust its CA (/usr/local/share/ca-certificates, then update-ca-certificates), or set REGISTRY_INSECURE=true "+
			"to skip the check, as Docker's insecure-registries does", r.host, cert.Err)
	case errors.Is(err, errPlainHTTP) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%s speaks plain HTTP, and the rule says HTTPS for it (%s); nothing was sent over plain HTTP. "+
			"List it as insecure where your engine keeps registries (Docker: insecure-registries in /etc/docker/daemon.json; "+
			"Podman: insecure = true in registries.conf) or set REGISTRY_INSECURE=true", r.host, r.why)
	}
	return err
}

// login is the registry and the credentials docker login stored for it:
// authn.DefaultKeychain reads DOCKER_CONFIG's config.json, else ~/.docker's,
// as cosign does; authn.Anonymous when there are none.
func (r registry) login() (name.Registry, authn.Authenticator, error) {
	reg, err := name.NewRegistry(r.host, r.names...)
	if err != nil {
		return name.Registry{}, nil, err
	}
	auth, err := authn.DefaultKeychain.Resolve(reg)
	return reg, auth, err
}

// refused is the line for a registry that answered code (401 or 403): it
// refused the credentials docker login stored for it, or, when there are
// none, it wants a login.
func (r registry) refused(code int) error {
	_, auth, err := r.login()
	if err != nil {
		return err
	}
	if auth == authn.Anonymous {
		return fmt.Errorf("%s wants a login (%d %s), and docker login stored no credentials for it: log in with docker login %s",
			r.host, code, http.StatusText(code), r.host)
	}
	return fmt.Errorf("%s refused the credentials docker login stored for it (%d %s): log in again with docker login %s",
		r.host, code, http.StatusText(code), r.host)
}

// registryCommand is `release registry HOST`: once HOST's /v2/ has
// answered as the rule says to speak to it, it prints true on stdout when
// the rule lets it speak plain HTTP, false when not, and why on stderr
// unless quiet.
func registryCommand(ctx context.Context, host string, quiet bool, getenv func(string) string, stdout, stderr io.Writer) error {
	r, err := reach(ctx, host, getenv("REGISTRY_INSECURE"))
	if err != nil {
		return err
	}
	if err := r.check(ctx); err != nil {
		return err
	}
	if !quiet {
		how := "HTTPS with a trusted certificate only"
		if r.insecure {
			how = "plain HTTP allowed, the certificate not checked"
		}
		fmt.Fprintf(stderr, "release: %s answers; %s, by %s\n", host, how, r.why)
	}
	_, err = fmt.Fprintln(stdout, strconv.FormatBool(r.insecure))
	return err
}
