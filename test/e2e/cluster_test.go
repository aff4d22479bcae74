package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The built-in cluster: one node, every component a host process, every
// address on this machine. The names and addresses are fixed, so there is one
// such cluster per machine and a run that was killed is found and removed by
// the next one.
const (
	stateDir    = "/tmp/hello-e2e" // everything the cluster writes, mounts included
	nodeName    = "hello-e2e"
	nodeBridge  = "hello-node0"   // holds the node IP; it has no ports, so nothing sent there leaves the machine
	podBridge   = "hello-cni0"    // the CNI bridge the pods hang on
	ourRange    = "10.213.0.0/16" // holds every address below
	nodeIP      = "10.213.255.1"
	podCIDR     = "10.213.0.0/24"
	serviceCIDR = "10.213.128.0/24"
	apiServerIP = "10.213.128.1" // the first address of serviceCIDR: the kubernetes Service
	cniBinDir   = "/usr/lib/cni" // Debian's containernetworking-plugins
)

type cluster struct {
	t        *testing.T
	bin      string // the Kubernetes binaries
	registry string // host:port of the registry the node pulls from
	mu       sync.Mutex
	exited   []string // components that stopped while the cluster should run
}

// startCluster brings up the built-in cluster with a registry on 127.0.0.1,
// Traefik as its ingress controller and metrics-server, and returns the admin
// kubeconfig, the registry's host:port and the URL of Traefik's entry point.
// Its cleanup removes every trace, also when the test fails, and fails the
// test when something is left.
func startCluster(ctx context.Context, t *testing.T, kubeBin, registryBin, traefikBin, metricsServerBin string) (kubeconfig, registry, ingress string) {
	// Without the lock, a second run would take the first one's cluster for
	// leftovers and remove it. The kernel drops the lock when a run dies.
	lock, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	must(t, err)
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("another make e2e runs its cluster on this machine (%s is locked): wait for it", lockFile)
	}
	t.Cleanup(func() {
		_ = os.Remove(lockFile) // the flock is the lock, not the file: a file left behind is harmless
		_ = lock.Close()        // closing drops the flock; nothing was written
	})
	if other := foreignKubernetes(); other != "" {
		t.Fatalf("another Kubernetes runs on this machine (%s): point the suite at it with KUBECONFIG and REGISTRY instead", other)
	}
	if left := leftovers(); len(left) > 0 {
		t.Logf("removing what an earlier run left behind:\n  %s", strings.Join(left, "\n  "))
		teardown(t.Logf, kubeBin)
	}
	before := hostState{Sysctls: readSysctls()}
	for _, dir := range hostDirs {
		if _, err := os.Stat(dir); err != nil {
			before.Missing = append(before.Missing, dir)
		}
	}
	must(t, os.MkdirAll(stateDir, 0o755)) // #nosec G301 -- no secret below it: writePEM writes the keys 0600
	state, _ := json.Marshal(before)
	must(t, os.WriteFile(hostStateFile, state, 0o600)) // #nosec G303 -- a fixed path, so the next run finds what a killed one left; the lock guards it
	c := &cluster{t: t, bin: kubeBin}
	t.Cleanup(func() {
		start := time.Now()
		if t.Failed() {
			c.printLogs()
			c.mu.Lock()
			t.Logf("components that stopped: %v", c.exited)
			c.mu.Unlock()
		}
		teardown(t.Logf, kubeBin)
		left := leftovers()
		for _, name := range sysctls {
			if was, now := before.Sysctls[name], readSysctl(name); was != now {
				left = append(left, fmt.Sprintf("sysctl %s = %s, was %s", name, now, was))
			}
		}
		for _, dir := range before.Missing {
			if _, err := os.Stat(dir); err == nil {
				left = append(left, "folder "+dir)
			}
		}
		if len(left) > 0 {
			t.Errorf("teardown left:\n  %s", strings.Join(left, "\n  "))
		}
		t.Logf("cluster torn down in %s", since(start))
	})

	for _, dir := range []string{"logs", "pki", "cni/net.d", "certs.d", "registry"} {
		must(t, os.MkdirAll(filepath.Join(stateDir, dir), 0o755)) // #nosec G301 -- no secret below it: writePEM writes the keys 0600
	}
	c.registry = c.startRegistry(ctx, registryBin)
	must(t, writePKI(filepath.Join(stateDir, "pki")))
	c.writeConfigs()
	c.network()
	c.startContainerd(ctx)

	c.start("etcd", "etcd", "--name", nodeName, "--data-dir", stateDir+"/etcd",
		"--listen-client-urls", "http://"+nodeIP+":2379", "--advertise-client-urls", "http://"+nodeIP+":2379",
		"--listen-peer-urls", "http://"+nodeIP+":2380", "--initial-advertise-peer-urls", "http://"+nodeIP+":2380",
		"--initial-cluster", nodeName+"=http://"+nodeIP+":2380")
	c.waitFor(ctx, "etcd", 30*time.Second, func() error { return httpOK("http://" + nodeIP + ":2379/health") })

	pki := stateDir + "/pki/"
	c.start("kube-apiserver", kubeBin+"/kube-apiserver",
		"--etcd-servers", "http://"+nodeIP+":2379",
		"--bind-address", nodeIP, "--advertise-address", nodeIP, "--secure-port", "6443",
		"--cert-dir", stateDir+"/apiserver",
		"--tls-cert-file", pki+"apiserver.crt", "--tls-private-key-file", pki+"apiserver.key",
		"--client-ca-file", pki+"ca.crt",
		"--kubelet-client-certificate", pki+"admin.crt", "--kubelet-client-key", pki+"admin.key",
		"--kubelet-certificate-authority", pki+"ca.crt",
		// The node IP, never its name: a name would be looked up in DNS,
		// off this machine.
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-cluster-ip-range", serviceCIDR,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", pki+"sa.pub", "--service-account-signing-key-file", pki+"sa.key",
		"--authorization-mode", "Node,RBAC",
		// The aggregation layer, as k3s configures it, for metrics-server:
		// the API server passes a request on with the front proxy's client
		// certificate and the user in these headers, straight to the
		// Service's endpoint (routing), not through its ClusterIP.
		"--requestheader-client-ca-file", pki+"front-proxy-ca.crt", "--requestheader-allowed-names", "front-proxy-client",
		"--requestheader-username-headers", "X-Remote-User", "--requestheader-group-headers", "X-Remote-Group",
		"--requestheader-extra-headers-prefix", "X-Remote-Extra-",
		"--proxy-client-cert-file", pki+"front-proxy-client.crt", "--proxy-client-key-file", pki+"front-proxy-client.key",
		"--enable-aggregator-routing")
	kubeconfig = stateDir + "/admin.kubeconfig"
	c.waitFor(ctx, "kube-apiserver", 60*time.Second, func() error {
		return c.kubectlQuiet(ctx, kubeconfig, "get", "--raw", "/readyz")
	})

	c.start("kube-controller-manager", kubeBin+"/kube-controller-manager",
		"--kubeconfig", kubeconfig, "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
		"--bind-address", nodeIP, "--leader-elect=false",
		"--service-account-private-key-file", pki+"sa.key", "--root-ca-file", pki+"ca.crt",
		"--service-cluster-ip-range", serviceCIDR)
	c.start("kube-scheduler", kubeBin+"/kube-scheduler",
		"--kubeconfig", kubeconfig, "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
		"--bind-address", nodeIP, "--leader-elect=false")
	c.start("kube-proxy", kubeBin+"/kube-proxy", "--config", stateDir+"/kube-proxy.yaml")
	c.start("kubelet", kubeBin+"/kubelet", "--config", stateDir+"/kubelet.yaml", "--kubeconfig", kubeconfig,
		"--root-dir", stateDir+"/kubelet", "--hostname-override", nodeName, "--node-ip", nodeIP)
	c.waitFor(ctx, "node "+nodeName+" Ready", 90*time.Second, func() error {
		return c.kubectlQuiet(ctx, kubeconfig, "wait", "--for=condition=Ready", "node/"+nodeName, "--timeout=2s")
	})
	ingress = c.startTraefik(ctx, traefikBin, kubeconfig)
	c.startMetricsServer(ctx, metricsServerBin, kubeconfig)
	return kubeconfig, c.registry, ingress
}

// start runs one component in its own process group (a Ctrl-C reaches the
// test, which then tears the cluster down in order) with its output in
// logs/<name>.log, and returns its process ID.
func (c *cluster) start(name string, args ...string) int {
	log, err := os.Create(filepath.Join(stateDir, "logs", name+".log")) // #nosec G303 G304 -- a fixed path, so the next run finds what a killed one left; the lock guards it
	must(c.t, err)
	cmd := exec.Command(args[0], args[1:]...) // #nosec G204 G702 -- the cluster's components, built or installed for it
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := cmd.Wait()
		_ = log.Close() // only the component wrote to it: nothing of ours to flush
		c.mu.Lock()
		c.exited = append(c.exited, fmt.Sprintf("%s (%v)", name, err))
		c.mu.Unlock()
	}()
	return cmd.Process.Pid
}

// waitFor polls ready until it succeeds, and fails the test when the time is
// up or a component stopped.
func (c *cluster) waitFor(ctx context.Context, what string, timeout time.Duration, ready func() error) {
	start := time.Now()
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			c.t.Logf("cluster: %s after %s", what, since(start))
			return
		}
		c.mu.Lock()
		exited := slices.Clone(c.exited)
		c.mu.Unlock()
		if len(exited) > 0 {
			c.t.Fatalf("waiting for %s: stopped: %s", what, strings.Join(exited, ", "))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.t.Fatalf("%s not ready after %s: %v", what, since(start), err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (c *cluster) kubectlQuiet(ctx context.Context, kubeconfig string, args ...string) error {
	cmd := exec.CommandContext(ctx, c.bin+"/kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...) // #nosec G204 -- the kubectl make e2e built
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// canI is a row of kubectl auth can-i: a verb, a resource, and "yes" or "no".
type canI struct{ verb, resource, want string }

// serviceAccount applies manifest, which holds the ServiceAccount name in
// kube-system and its rights, checks the rights against rights, and returns
// a token of that account for a component that runs as a host process.
func (c *cluster) serviceAccount(ctx context.Context, kubeconfig, manifest, name string, rights []canI) string {
	if err := c.kubectlQuiet(ctx, kubeconfig, "apply", "-f", manifest); err != nil {
		c.t.Fatalf("%s: %v", manifest, err)
	}
	for _, tc := range rights {
		// #nosec G204 -- the suite's own kubectl, arguments from the suite's tables.
		out, _ := exec.CommandContext(ctx, c.bin+"/kubectl", "--kubeconfig", kubeconfig, "auth", "can-i", tc.verb, tc.resource,
			"--all-namespaces", "--as=system:serviceaccount:kube-system:"+name).Output() // exits 1 for "no"
		if got := strings.TrimSpace(string(out)); got != tc.want {
			c.t.Fatalf("ServiceAccount %s: can-i %s %s = %q, want %q", name, tc.verb, tc.resource, got, tc.want)
		}
	}
	// #nosec G204 -- the suite's own kubectl and kubeconfig, the suite's account.
	token, err := exec.CommandContext(ctx, c.bin+"/kubectl", "--kubeconfig", kubeconfig,
		"-n", "kube-system", "create", "token", name, "--duration=2h").Output()
	if err != nil {
		c.t.Fatalf("a token for ServiceAccount %s: %v", name, err)
	}
	return strings.TrimSpace(string(token))
}

// startRegistry runs CNCF Distribution on a free port of 127.0.0.1.
func (c *cluster) startRegistry(ctx context.Context, registryBin string) string {
	addr := c.freeAddr("127.0.0.1")
	config := fmt.Sprintf("version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s/registry}}\nhttp: {addr: %s}\n", stateDir, addr)
	must(c.t, os.WriteFile(stateDir+"/registry.yaml", []byte(config), 0o600)) // #nosec G303 -- a fixed path, so the next run finds what a killed one left; the lock guards it
	// Without OTEL_TRACES_EXPORTER=none the registry sends traces to localhost:4318.
	c.start("registry", "env", "OTEL_TRACES_EXPORTER=none", registryBin, "serve", stateDir+"/registry.yaml")
	c.waitFor(ctx, "registry on "+addr, 30*time.Second, func() error { return httpOK("http://" + addr + "/v2/") })
	return addr
}

// network puts the node IP on a bridge with no ports and routes the service
// range into it: a packet to a Service address that kube-proxy does not
// rewrite ends there instead of on the default route.
// freeAddr returns host:port with a port that is free on host just now, for
// a component to listen on.
func (c *cluster) freeAddr(host string) string {
	l, err := net.Listen("tcp", host+":0")
	must(c.t, err)
	_ = l.Close() // only its port was wanted; were it still bound, the component would say so
	return l.Addr().String()
}

func (c *cluster) network() {
	for _, args := range [][]string{
		{"link", "add", nodeBridge, "type", "bridge"},
		{"addr", "add", nodeIP + "/32", "dev", nodeBridge},
		{"link", "set", nodeBridge, "up"},
		{"route", "add", serviceCIDR, "dev", nodeBridge, "src", nodeIP},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil { // #nosec G204 -- the fixed commands above
			c.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// startContainerd runs a containerd of the cluster's own (root, state, socket
// and config in stateDir) and builds the sandbox image into the registry.
func (c *cluster) startContainerd(ctx context.Context) {
	c.start("containerd", "containerd", "--config", stateDir+"/containerd.toml")
	c.waitFor(ctx, "containerd", 30*time.Second, func() error {
		return exec.Command("ctr", "--address", stateDir+"/containerd.sock", "version").Run()
	})
	dir := stateDir + "/pause"
	must(c.t, os.MkdirAll(dir, 0o755)) // #nosec G301 -- the pause image's build context: a Dockerfile and a binary
	dockerfile := "FROM scratch\nCOPY pause /pause\nENTRYPOINT [\"/pause\"]\n"
	must(c.t, os.WriteFile(dir+"/Dockerfile", []byte(dockerfile), 0o600))
	image := c.registry + "/hello-e2e-pause:1"
	for _, args := range [][]string{
		{"go", "build", "-trimpath", "-ldflags=-s -w", "-o", dir + "/pause", "./pause"},
		{"docker", "build", "-q", "-t", image, dir},
		{"docker", "push", "-q", image},
		{"docker", "rmi", image},
	} {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...) // #nosec G204 -- the fixed commands above
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			c.t.Fatalf("sandbox image: %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// writeConfigs writes the kubeconfig and the configuration files of
// containerd, the CNI network, the kubelet and kube-proxy.
func (c *cluster) writeConfigs() {
	pki := stateDir + "/pki/"
	files := map[string]string{
		"admin.kubeconfig": `apiVersion: v1
kind: Config
clusters: [{name: ` + nodeName + `, cluster: {server: "https://` + nodeIP + `:6443", certificate-authority: ` + pki + `ca.crt}}]
users: [{name: admin, user: {client-certificate: ` + pki + `admin.crt, client-key: ` + pki + `admin.key}}]
contexts: [{name: ` + nodeName + `, context: {cluster: ` + nodeName + `, user: admin}}]
current-context: ` + nodeName + `
`,
		// restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE. The
		// runc root and the network namespaces live in stateDir, and the
		// node pulls from the test registry only, over plain HTTP.
		"containerd.toml": `version = 2
root = "` + stateDir + `/containerd/root"
state = "` + stateDir + `/containerd/state"
[grpc]
  address = "` + stateDir + `/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "` + stateDir + `/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + c.registry + `/hello-e2e-pause:1"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "` + stateDir + `/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "` + cniBinDir + `"
    conf_dir = "` + stateDir + `/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "` + stateDir + `/certs.d"
`,
		"certs.d/" + c.registry + "/hosts.toml": `server = "http://` + c.registry + `"
[host."http://` + c.registry + `"]
  capabilities = ["pull", "resolve"]
`,
		// No routes and no masquerading: a pod reaches its own subnet only,
		// so nothing it sends can leave the machine.
		"cni/net.d/10-hello-e2e.conflist": `{
  "cniVersion": "1.0.0",
  "name": "hello-e2e",
  "plugins": [{
    "type": "bridge", "bridge": "` + podBridge + `", "isGateway": true, "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "` + podCIDR + `"}]], "dataDir": "` + stateDir + `/cni/ipam"}
  }]
}
`,
		// This machine has cgroup v1 only (failCgroupV1: false), and root
		// cannot lower OOM scores (oomScoreAdj: 0). Every port listens on
		// the node IP, every folder is in stateDir.
		"kubelet.yaml": `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
oomScoreAdj: 0
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://` + stateDir + `/containerd.sock
address: ` + nodeIP + `
healthzBindAddress: ` + nodeIP + `
readOnlyPort: 0
tlsCertFile: ` + pki + `kubelet.crt
tlsPrivateKeyFile: ` + pki + `kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ` + pki + `ca.crt}
authorization: {mode: Webhook}
resolvConf: ""
podLogsDir: ` + stateDir + `/pod-logs
volumePluginDir: ` + stateDir + `/volume-plugins
`,
		// Conntrack zeros leave the host's conntrack settings alone;
		// localhostNodePorts: false leaves route_localnet alone.
		"kube-proxy.yaml": `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: ` + stateDir + `/admin.kubeconfig}
hostnameOverride: ` + nodeName + `
mode: iptables
clusterCIDR: ` + podCIDR + `
detectLocalMode: ClusterCIDR
nodePortAddresses: ["` + nodeIP + `/32"]
healthzBindAddress: ` + nodeIP + `:10256
metricsBindAddress: ` + nodeIP + `:10249
oomScoreAdj: 0
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`,
	}
	for name, text := range files {
		path := filepath.Join(stateDir, name)
		must(c.t, os.MkdirAll(filepath.Dir(path), 0o755)) // #nosec G301 -- no secret below it: writePEM writes the keys 0600
		must(c.t, os.WriteFile(path, []byte(text), 0o600))
	}
}

// printLogs shows the end of every component's log: what CI needs to see
// when the cluster misbehaved.
func (c *cluster) printLogs() {
	logs, _ := filepath.Glob(stateDir + "/logs/*.log")
	for _, path := range logs {
		data, _ := os.ReadFile(path) // #nosec G304 -- a log the cluster's components wrote
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		c.t.Logf("last lines of %s:\n%s", path, strings.Join(lines[max(0, len(lines)-25):], "\n"))
	}
}

// writePKI writes a throwaway CA, the serving certificates of the API server,
// the kubelet and metrics-server, one admin client certificate
// (system:masters) that every component uses, and the service account
// signing key. A second CA, the front proxy's, signs the one certificate the
// API server shows aggregated API servers (metrics-server) when it passes a
// request on: it is trusted for that and nothing else.
func writePKI(dir string) error {
	ca, caKey, err := newCA(dir, "ca", "hello-e2e-ca")
	if err != nil {
		return err
	}
	proxyCA, proxyCAKey, err := newCA(dir, "front-proxy-ca", "hello-e2e-front-proxy-ca")
	if err != nil {
		return err
	}
	issue := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, subject pkix.Name, usage x509.ExtKeyUsage, ips []string, dns []string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		template := &x509.Certificate{
			SerialNumber: serial, Subject: subject, DNSNames: dns,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		for _, ip := range ips {
			template.IPAddresses = append(template.IPAddresses, net.ParseIP(ip))
		}
		der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return errors.Join(writePEM(dir+"/"+name+".crt", "CERTIFICATE", der), writePEM(dir+"/"+name+".key", "EC PRIVATE KEY", keyDER))
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saDER, _ := x509.MarshalECPrivateKey(saKey)
	saPub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	return errors.Join(
		issue(ca, caKey, "apiserver", pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
			[]string{nodeIP, apiServerIP, "127.0.0.1"},
			[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}),
		issue(ca, caKey, "kubelet", pkix.Name{CommonName: nodeName}, x509.ExtKeyUsageServerAuth, []string{nodeIP}, []string{nodeName}),
		// The API server checks the name of the Service the APIService names.
		issue(ca, caKey, "metrics-server", pkix.Name{CommonName: "metrics-server"}, x509.ExtKeyUsageServerAuth,
			[]string{nodeIP}, []string{"metrics-server.kube-system.svc"}),
		issue(ca, caKey, "admin", pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, x509.ExtKeyUsageClientAuth, nil, nil),
		issue(proxyCA, proxyCAKey, "front-proxy-client", pkix.Name{CommonName: "front-proxy-client"}, x509.ExtKeyUsageClientAuth, nil, nil),
		writePEM(dir+"/sa.key", "EC PRIVATE KEY", saDER),
		writePEM(dir+"/sa.pub", "PUBLIC KEY", saPub),
	)
}

// newCA writes a self-signed CA's certificate as dir/name.crt and returns it
// with its key, which stays in memory only.
func newCA(dir, name, commonName string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: commonName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key, writePEM(dir+"/"+name+".crt", "CERTIFICATE", der)
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

func httpOK(url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	_ = resp.Body.Close() // only the status counts
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func since(start time.Time) time.Duration {
	return time.Since(start).Round(100 * time.Millisecond)
}
