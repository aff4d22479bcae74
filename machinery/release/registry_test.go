package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDecide: the knob first; when it is empty, Docker's list by name, then
// its CIDRs against the host's addresses; Docker's default without an engine.
func TestDecide(t *testing.T) {
	docker := func(config dockerRegistries, err error) func(context.Context) (dockerRegistries, error) {
		return func(context.Context) (dockerRegistries, error) { return config, err }
	}
	listed := dockerRegistries{
		IndexConfigs:          map[string]struct{ Secure bool }{"registry.lan:5000": {false}, "secure.lan:5000": {true}},
		InsecureRegistryCIDRs: []string{"127.0.0.0/8", "10.0.0.0/8"},
	}
	hosts := map[string][]string{"registry.lan": {"192.168.1.5"}, "secure.lan": {"127.0.0.1"},
		"loop.test": {"::1", "127.0.0.1"}, "v6.test": {"::1"}, "office.lan": {"10.1.2.3"}}
	lookup := func(_ context.Context, host string) ([]net.IPAddr, error) {
		ips, ok := hosts[host]
		if !ok {
			if ip := net.ParseIP(host); ip != nil {
				return []net.IPAddr{{IP: ip}}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var addrs []net.IPAddr
		for _, s := range ips {
			addrs = append(addrs, net.IPAddr{IP: net.ParseIP(s)})
		}
		return addrs, nil
	}
	noEngine := docker(dockerRegistries{}, errors.New("docker info: exit status 1"))
	podman, err := parseInfo([]byte(podmanInfo))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host, knob string
		docker     func(context.Context) (dockerRegistries, error)
		insecure   bool
		why        string
	}{
		{"registry.lan:5000", "true", noEngine, true, "REGISTRY_INSECURE=true"},
		{"127.0.0.1:5000", "false", docker(listed, nil), false, "REGISTRY_INSECURE=false"},
		{"registry.lan:5000", "", docker(listed, nil), true, "registry.lan:5000 is listed"},
		{"secure.lan:5000", "", docker(listed, nil), false, "secure.lan:5000 is listed"}, // though 127.0.0.1
		{"registry.lan:5001", "", docker(listed, nil), false, "holds no address of registry.lan"},
		{"office.lan:5000", "", docker(listed, nil), true, "10.0.0.0/8 holds 10.1.2.3"},
		{"loop.test:5000", "", docker(listed, nil), true, "127.0.0.0/8 holds 127.0.0.1"},
		{"v6.test:5000", "", docker(listed, nil), false, "holds no address of v6.test"},
		{"127.0.0.1:5000", "", noEngine, true, "no Docker engine answered"},
		{"office.lan:5000", "", noEngine, false, "no Docker engine answered"},
		{"nowhere.test:5000", "", docker(listed, nil), false, "does not resolve"},
		{"localhost:5000", "", docker(podman, nil), true, "Podman's registries.conf: localhost:5000 is listed, secure false"},
		{"reg.lan:5000", "", docker(podman, nil), false, "Podman's registries.conf: reg.lan:5000 is listed, secure true"},
		{"127.0.0.1:5000", "", docker(podman, nil), false, "Podman's registries.conf does not list 127.0.0.1:5000"},
	} {
		insecure, why, err := decide(context.Background(), tc.host, tc.knob, tc.docker, lookup)
		if err != nil || insecure != tc.insecure || !strings.Contains(why, tc.why) {
			t.Errorf("decide(%s, REGISTRY_INSECURE=%q) = %t %q %v, want %t, saying %q", tc.host, tc.knob, insecure, why, err, tc.insecure, tc.why)
		}
	}
	if _, _, err := decide(context.Background(), "x:1", "yes", noEngine, lookup); err == nil || !strings.Contains(err.Error(), "REGISTRY_INSECURE") {
		t.Errorf(`decide with REGISTRY_INSECURE="yes" = %v, want an error naming the knob`, err)
	}
}

// podmanInfo is what `docker info --format '{{json .}}'` prints where docker
// is Podman 4.3's CLI, cut to the registries: registries.conf's entries by
// prefix, and its unqualified-search list.
const podmanInfo = `{"host": {"arch": "amd64"}, "store": {"graphDriverName": "overlay"},
 "registries": {"localhost:5000": {"Prefix": "localhost:5000", "Location": "localhost:5000", "Insecure": true, "Blocked": false},
  "reg.lan:5000/team": {"Prefix": "reg.lan:5000/team", "Location": "reg.lan:5000/team", "Insecure": false},
  "search": ["docker.io"]}}`

// TestParseInfo reads Docker's and Podman's docker info alike.
func TestParseInfo(t *testing.T) {
	docker, err := parseInfo([]byte(`{"ID": "x", "RegistryConfig": {"IndexConfigs": {"docker.io": {"Secure": true}}, "InsecureRegistryCIDRs": ["127.0.0.0/8"]}}`))
	if err != nil || !docker.IndexConfigs["docker.io"].Secure || len(docker.InsecureRegistryCIDRs) != 1 || docker.source != "Docker's insecure-registries" {
		t.Errorf("parseInfo(Docker's info) = %+v, %v", docker, err)
	}
	podman, err := parseInfo([]byte(podmanInfo))
	if err != nil || podman.IndexConfigs["localhost:5000"].Secure || !podman.IndexConfigs["reg.lan:5000"].Secure ||
		len(podman.IndexConfigs) != 2 || len(podman.InsecureRegistryCIDRs) != 0 {
		t.Errorf("parseInfo(Podman's info) = %+v, %v; want localhost:5000 insecure, reg.lan:5000 secure, no CIDRs", podman, err)
	}
	if _, err := parseInfo([]byte(`{"ID": "x"}`)); err == nil {
		t.Error("parseInfo of an info with no registries: no error")
	}
}

// TestHTTPSOnly: a registry the rule calls secure is never spoken to in
// plain HTTP, even where go-containerregistry would fall back to it.
func TestHTTPSOnly(t *testing.T) {
	reg, err := reach(context.Background(), "127.0.0.1:1", "false")
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/v2/", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = reg.transport.RoundTrip(req) // refused before any request: no body to close
	if !errors.Is(err, errPlainHTTP) {
		t.Errorf("REGISTRY_INSECURE=false: GET http://127.0.0.1:1/v2/ = %v, want %v", err, errPlainHTTP)
	}
	if line := reg.explain(err).Error(); !strings.Contains(line, "REGISTRY_INSECURE=true") || strings.Contains(line, "\n") {
		t.Errorf("the refusal explained: %q, want one line naming REGISTRY_INSECURE=true", line)
	}
}

// TestCheckLogin: a registry that wants a login is asked with the
// credentials docker login stored for it; refused or missing credentials
// are one line that names it and says to run docker login.
func TestCheckLogin(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "hello" || pass != "right" {
			w.Header().Set("WWW-Authenticate", `Basic realm="hello"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	host := srv.Listener.Addr().String()
	reg := registry{host: host, transport: httpsOnly{srv.Client().Transport}}
	for _, tc := range []struct {
		name, config, want string
	}{
		{"logged in", `{"auths": {"` + host + `": {"auth": "aGVsbG86cmlnaHQ="}}}`, ""}, // hello:right
		{"wrong password", `{"auths": {"` + host + `": {"auth": "aGVsbG86d3Jvbmc="}}}`, // hello:wrong
			host + " refused the credentials docker login stored for it (401 Unauthorized): log in again with docker login " + host},
		{"no login", `{}`, host + " wants a login (401 Unauthorized), and docker login stored no credentials for it: log in with docker login " + host},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir() // where the keychain looks besides DOCKER_CONFIG: empty
			for _, v := range []string{"HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"} {
				t.Setenv(v, home)
			}
			t.Setenv("REGISTRY_AUTH_FILE", "")
			config := t.TempDir()
			if err := os.WriteFile(filepath.Join(config, "config.json"), []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv("DOCKER_CONFIG", config)
			err := reg.check(context.Background())
			if got := fmt.Sprint(err); tc.want == "" && err != nil || tc.want != "" && got != tc.want {
				t.Errorf("check with %s = %v, want %q", tc.config, err, tc.want)
			}
		})
	}
}
