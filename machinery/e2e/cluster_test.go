package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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

// The built-in cluster: one k3s server, the Kubernetes the seed deploys to,
// with every address on this machine. The names and addresses are fixed, so
// there is one such cluster per machine and a run that was killed is found
// and removed by the next one.
const (
	stateDir    = "/tmp/hello-e2e" // everything the cluster writes, k3s's data-dir included
	k3sDataDir  = stateDir + "/k3s"
	k3sRun      = "/run/k3s" // where k3s's containerd keeps its state, whatever the data-dir
	nodeName    = "hello-e2e"
	nodeBridge  = "hello-node0"   // holds the node IP; it has no ports, so nothing sent there leaves the machine
	podBridge   = "hello-cni0"    // the CNI bridge the pods hang on
	ourRange    = "10.213.0.0/16" // holds every address below
	nodeIP      = "10.213.255.1"
	podCIDR     = "10.213.0.0/24"
	serviceCIDR = "10.213.128.0/24"
	clusterDNS  = "10.213.128.10"
	cniBinDir   = "/usr/lib/cni" // Debian's containernetworking-plugins
)

// The images k3s v1.34.3 runs (its --pause-image default and the images of
// the CoreDNS and metrics-server manifests it deploys), each built here from
// the go.mod that pins it. k3s asks for docker.io/rancher/...; the
// registries.yaml mirror sends that to the suite's registry.
var clusterImages = []goImage{
	{ref: "rancher/mirrored-pause:3.6", dir: ".", pkg: "./pause"},
	{ref: "rancher/mirrored-coredns-coredns:1.13.1", dir: "coredns", pkg: "github.com/coredns/coredns",
		module: "github.com/coredns/coredns"},
	{ref: "rancher/mirrored-metrics-server:v0.8.0", dir: "metrics-server", pkg: "sigs.k8s.io/metrics-server/cmd/metrics-server",
		module: "sigs.k8s.io/metrics-server", ldflags: "-X k8s.io/client-go/pkg/version.gitVersion=v0.8.0"},
}

// clusterTools are what make e2e built for the built-in cluster: binaries,
// and the files they take.
type clusterTools struct {
	k3s, template    string // k3s, and its containerd config template
	registry         string // CNCF Distribution
	traefik          string
	policyController string // sigstore policy-controller's webhook,
	policyVersion    string // at this version,
	policyConfig     string // and the manifests its module ships (config/)
}

type cluster struct {
	t        *testing.T
	kubectl  string // k3s, by the name kubectl
	registry string // host:port of the registry the node pulls from
	mu       sync.Mutex
	exited   []string // processes that stopped while the cluster should run
}

// startCluster brings up the built-in cluster (k3s with the containerd
// config template made from its source, a registry on 127.0.0.1, Traefik as
// its ingress controller, sigstore policy-controller as its admission
// webhook) and returns the admin kubeconfig, the registry's host:port and
// the URL of Traefik's entry point. Its cleanup removes every trace, also
// when the test fails, and fails the test when something is left.
func startCluster(ctx context.Context, t *testing.T, tools clusterTools) (kubeconfig, registry, ingress string) {
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
	// The host as the earliest run whose traces are left found it: its
	// teardown is only as good as what that run saw.
	before, found := readHostState()
	if left := leftovers(); len(left) > 0 {
		t.Logf("removing what an earlier run left behind:\n  %s", strings.Join(left, "\n  "))
		teardown(t.Logf)
	}
	if !found {
		before = hostState{Sysctls: readSysctls()}
		for _, dir := range append(hostDirs, k3sDirs...) {
			if !exists(dir) {
				before.Missing = append(before.Missing, dir)
			}
		}
	}
	must(t, os.MkdirAll(stateDir, 0o755)) // #nosec G301 -- k3s writes its keys 0600 below it
	state, _ := json.Marshal(before)
	must(t, os.WriteFile(hostStateFile, state, 0o600)) // #nosec G303 -- a fixed path, so the next run finds what a killed one left; the lock guards it
	c := &cluster{t: t, kubectl: stateDir + "/bin/kubectl"}
	t.Cleanup(func() {
		start := time.Now()
		if t.Failed() {
			c.printLogs()
			c.mu.Lock()
			t.Logf("processes that stopped: %v", c.exited)
			c.mu.Unlock()
		}
		teardown(t.Logf)
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

	for _, dir := range []string{"logs", "registry", "cni", "bin", "k3s/agent/etc/containerd"} {
		must(t, os.MkdirAll(filepath.Join(stateDir, dir), 0o755)) // #nosec G301 -- k3s writes its keys 0600 below it
	}
	c.registry = c.startRegistry(ctx, tools.registry)
	digests := map[string]string{}
	for _, img := range clusterImages {
		digests[img.ref] = pushGoImage(ctx, t, c.registry, img)
	}
	c.writeConfigs(tools.k3s, tools.template)
	c.network()

	kubeconfig = c.startK3s(ctx, tools.k3s, digests)
	ingress = c.startTraefik(ctx, tools.traefik, kubeconfig)
	c.startPolicyController(ctx, kubeconfig, tools.policyVersion, tools.policyController, tools.policyConfig)
	return kubeconfig, c.registry, ingress
}

// startK3s starts k3s server on the files writeConfigs wrote, waits until its
// node is Ready and its CoreDNS and metrics-server run the images pushed
// (digests, by reference), logs its version and its node's, and returns its
// admin kubeconfig.
func (c *cluster) startK3s(ctx context.Context, k3s string, digests map[string]string) string {
	out, err := exec.CommandContext(ctx, k3s, "--version").Output() // #nosec G204 G702 -- the k3s make e2e built or was given
	if err != nil {
		c.t.Fatalf("%s --version: %v", k3s, err)
	}
	c.t.Logf("cluster: %s", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "; "))
	// k3s finds containerd, kubectl and the shim on PATH: itself under those
	// names first, then the shim built beside it.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "K3S_") || strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "PATH=")
	})
	env = append(env, "PATH="+stateDir+"/bin:"+filepath.Dir(k3s)+":"+os.Getenv("PATH"))
	c.start("k3s", env, k3s, "server", "--config", stateDir+"/k3s.yaml")
	kubeconfig := stateDir + "/admin.kubeconfig"
	c.waitFor(ctx, "k3s's API server", 2*time.Minute, func() error {
		return c.kubectlQuiet(ctx, kubeconfig, "get", "--raw", "/readyz")
	})
	c.waitFor(ctx, "node "+nodeName+" Ready", 2*time.Minute, func() error {
		return c.kubectlQuiet(ctx, kubeconfig, "wait", "--for=condition=Ready", "node/"+nodeName, "--timeout=2s")
	})
	node, _ := exec.CommandContext(ctx, c.kubectl, "--kubeconfig", kubeconfig, "get", "node", nodeName, "-o", // #nosec G204 -- the suite's kubectl
		"jsonpath=kubelet {.status.nodeInfo.kubeletVersion}, container runtime {.status.nodeInfo.containerRuntimeVersion}").Output()
	c.t.Logf("cluster: node %s: %s", nodeName, node)

	// k3s applies its manifests a moment after its API server is up: wait
	// for the Deployments, then check they run the images pushed above.
	for _, name := range []string{"coredns", "metrics-server"} {
		c.waitFor(ctx, "k3s's Deployment "+name, 3*time.Minute, func() error {
			return c.kubectlQuiet(ctx, kubeconfig, "-n", "kube-system", "wait", "--for=condition=Available", "deployment/"+name, "--timeout=2s")
		})
	}
	c.waitFor(ctx, "the metrics API", time.Minute, func() error {
		return c.kubectlQuiet(ctx, kubeconfig, "wait", "--for=condition=Available", "apiservice/v1beta1.metrics.k8s.io", "--timeout=2s")
	})
	ids, err := exec.CommandContext(ctx, c.kubectl, "--kubeconfig", kubeconfig, "-n", "kube-system", "get", "pods", "-o", // #nosec G204 -- the suite's kubectl
		`jsonpath={range .items[*]}{.status.containerStatuses[0].imageID}{"\n"}{end}`).Output()
	must(c.t, err)
	for _, img := range clusterImages[1:] { // after the pause image, which is no container's
		name, _, _ := strings.Cut(img.ref, ":")
		if want := "docker.io/" + name + "@" + digests[img.ref]; !slices.Contains(strings.Fields(string(ids)), want) {
			c.t.Fatalf("no pod in kube-system runs %s, the image built here; image IDs:\n%s", want, indent(string(ids)))
		}
	}
	c.t.Logf("cluster: CoreDNS and metrics-server run the images built here, pulled through the registries.yaml mirror")
	return kubeconfig
}

// writeConfigs writes k3s's configuration (k3s.yaml: what would be its
// command line), the kubelet's drop-in, the registry mirror, the DNS server
// the node names, the CNI network and the containerd config template, and
// links containerd, kubectl, crictl and ctr to k3s, which tells them apart by
// the name it is run as.
func (c *cluster) writeConfigs(k3s, template string) {
	tmpl, err := os.ReadFile(template) // #nosec G304 G703 -- the template make e2e made
	must(c.t, err)
	mirror := `{endpoint: ["http://` + c.registry + `"]}`
	files := map[string]string{
		// flannel-backend none: k3s's flannel gives pods a default route and
		// masquerading; the CNI network below gives them neither. Traefik is
		// the suite's (k3s's chart is downloaded at build time), servicelb and
		// local-storage are not needed. The kubelet and kube-proxy leave the
		// host's OOM scores and conntrack settings alone (root here lacks
		// CAP_SYS_RESOURCE), and node ports listen on the node IP only.
		"k3s.yaml": `data-dir: ` + k3sDataDir + `
write-kubeconfig: ` + stateDir + `/admin.kubeconfig
write-kubeconfig-mode: "0600"
node-name: ` + nodeName + `
node-ip: ` + nodeIP + `
bind-address: ` + nodeIP + `
advertise-address: ` + nodeIP + `
cluster-cidr: ` + podCIDR + `
service-cidr: ` + serviceCIDR + `
cluster-dns: ` + clusterDNS + `
flannel-backend: none
disable-helm-controller: true
disable: [traefik, servicelb, local-storage]
private-registry: ` + stateDir + `/registries.yaml
disable-default-registry-endpoint: true
resolv-conf: ` + stateDir + `/resolv.conf
kubelet-arg: [root-dir=` + stateDir + `/kubelet, config=` + stateDir + `/kubelet.yaml]
kube-proxy-arg: [oom-score-adj=0, conntrack-max-per-core=0, conntrack-min=0,
  conntrack-tcp-timeout-established=0s, conntrack-tcp-timeout-close-wait=0s,
  iptables-localhost-nodeports=false, nodeport-addresses=` + nodeIP + `/32]
`,
		// Copied into k3s's drop-in folder, after its own defaults. This
		// machine has cgroup v1 only.
		"kubelet.yaml": `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
oomScoreAdj: 0
podLogsDir: ` + stateDir + `/pod-logs
volumePluginDir: ` + stateDir + `/volume-plugins
`,
		// The form the README gives k3s users, for the suite's registry;
		// docker.io (the rancher/* images) and every other registry go there
		// too, and with disable-default-registry-endpoint containerd never
		// falls back to the real ones.
		"registries.yaml": "mirrors:\n  \"" + c.registry + "\": " + mirror + "\n  docker.io: " + mirror + "\n  \"*\": " + mirror + "\n",
		// CoreDNS forwards what is not the cluster's to the node's resolver:
		// the node IP, where nothing answers.
		"resolv.conf": "nameserver " + nodeIP + "\n",
		// Routes to the cluster's range only (Services, the node IP); no
		// default route and no masquerading, so nothing a pod sends can
		// leave the machine.
		"cni/10-hello-e2e.conflist": `{
  "cniVersion": "1.0.0",
  "name": "hello-e2e",
  "plugins": [{
    "type": "bridge", "bridge": "` + podBridge + `", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "` + podCIDR + `"}]], "routes": [{"dst": "` + ourRange + `"}],
             "dataDir": "` + stateDir + `/cni-ipam"}
  }]
}
`,
		"k3s/agent/etc/containerd/config-v3.toml.tmpl": string(tmpl),
	}
	for name, text := range files {
		must(c.t, os.WriteFile(filepath.Join(stateDir, name), []byte(text), 0o600)) // #nosec G303 -- a fixed path, so the next run finds what a killed one left; the lock guards it
	}
	for _, name := range []string{"containerd", "kubectl", "crictl", "ctr"} {
		must(c.t, os.Symlink(k3s, filepath.Join(stateDir, "bin", name)))
	}
}

// start runs one process in stateDir (where teardown finds it again) and in
// its own process group (a Ctrl-C reaches the test, which then tears the
// cluster down in order) with its output in logs/<name>.log, and returns its
// process ID. A nil env is the suite's.
func (c *cluster) start(name string, env []string, args ...string) int {
	log, err := os.Create(filepath.Join(stateDir, "logs", name+".log")) // #nosec G303 G304 -- a fixed path, so the next run finds what a killed one left; the lock guards it
	must(c.t, err)
	cmd := exec.Command(args[0], args[1:]...) // #nosec G204 G702 -- the cluster's processes, built or installed for it
	cmd.Stdout, cmd.Stderr, cmd.Env, cmd.Dir = log, log, env, stateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := cmd.Wait()
		_ = log.Close() // only the process wrote to it: nothing of ours to flush
		c.mu.Lock()
		c.exited = append(c.exited, fmt.Sprintf("%s (%v)", name, err))
		c.mu.Unlock()
	}()
	return cmd.Process.Pid
}

// waitFor polls ready until it succeeds, and fails the test when the time is
// up or a process stopped.
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
	cmd := exec.CommandContext(ctx, c.kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...) // #nosec G204 -- the suite's kubectl
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startRegistry runs CNCF Distribution on a free port of 127.0.0.1.
func (c *cluster) startRegistry(ctx context.Context, registryBin string) string {
	addr := c.freeAddr("127.0.0.1")
	config := fmt.Sprintf("version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s/registry}}\nhttp: {addr: %s}\n", stateDir, addr)
	must(c.t, os.WriteFile(stateDir+"/registry.yaml", []byte(config), 0o600)) // #nosec G303 -- a fixed path, so the next run finds what a killed one left; the lock guards it
	// Without OTEL_TRACES_EXPORTER=none the registry sends traces to localhost:4318.
	c.start("registry", append(os.Environ(), "OTEL_TRACES_EXPORTER=none"), registryBin, "serve", stateDir+"/registry.yaml")
	c.waitFor(ctx, "registry on "+addr, 30*time.Second, func() error { return httpOK("http://" + addr + "/v2/") })
	return addr
}

// freeAddr returns host:port with a port that is free on host just now, for
// a process to listen on.
func (c *cluster) freeAddr(host string) string {
	l, err := net.Listen("tcp", host+":0")
	must(c.t, err)
	_ = l.Close() // only its port was wanted; were it still bound, the process would say so
	return l.Addr().String()
}

// network puts the node IP on a bridge with no ports and routes the service
// range into it: a packet to a Service address that kube-proxy does not
// rewrite ends there instead of on the default route. The rest of ourRange
// is unreachable, so that a packet to a pod or the node IP never takes the
// default route either, not even while a killed run's k3s outlives its
// bridges.
func (c *cluster) network() {
	for _, args := range [][]string{
		{"route", "add", "unreachable", ourRange},
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

// printLogs shows the end of every process's log, and of containerd's, which
// k3s writes in its data-dir: what CI needs to see when the cluster
// misbehaved.
func (c *cluster) printLogs() {
	logs, _ := filepath.Glob(stateDir + "/logs/*.log")
	for _, path := range append(logs, k3sDataDir+"/agent/containerd/containerd.log") {
		data, _ := os.ReadFile(path) // #nosec G304 -- a log of the cluster's
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		c.t.Logf("last lines of %s:\n%s", path, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
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
