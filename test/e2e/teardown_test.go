package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The binaries whose processes the cluster runs; teardown kills a process
// only if it runs one of these and its command line names stateDir.
var clusterBinaries = []string{
	"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
	"kube-proxy", "containerd", "containerd-shim-runc-v2", "registry", "traefik", "metrics-server",
}

// Host settings the kubelet, kube-proxy and the bridge plugin may change; the
// teardown puts back what they were.
var sysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "net/ipv6/conf/all/forwarding",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
	"net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
}

// Host folders the cluster's components create outside stateDir when they
// are missing (innermost first). Docker's containerd shares /run/containerd/s,
// so a run removes only those it found missing, and only when empty.
var hostDirs = []string{
	"/run/containerd/s", "/run/containerd", "/var/log/containers", "/var/lib/cni/results", "/var/lib/cni",
	"/var/lib/kubelet/device-plugins", "/var/lib/kubelet",
}

// hostState is how the host was before the cluster: the sysctls it may
// change and the hostDirs that were missing. It is saved in stateDir, so the
// teardown after a killed run restores it too.
type hostState struct {
	Sysctls map[string]string
	Missing []string
}

const (
	hostStateFile = stateDir + "/host-state.json"
	lockFile      = stateDir + ".lock"
)

// hostFiles lists what the cluster leaves in hostDirs when it is killed: the
// kubelet's log links and device plugin socket, the CNI library's result
// cache. Each names or links into stateDir, except the socket, which only a
// kubelet that runs (and so is not another Kubernetes) would need.
func hostFiles() []string {
	var files []string
	links, _ := filepath.Glob("/var/log/containers/*")
	for _, link := range links {
		if target, err := os.Readlink(link); err == nil && strings.HasPrefix(target, stateDir+"/") {
			files = append(files, link)
		}
	}
	results, _ := filepath.Glob("/var/lib/cni/results/*")
	for _, result := range results {
		if strings.Contains(readString(result), `"sandbox":"`+stateDir+"/") {
			files = append(files, result)
		}
	}
	if _, err := os.Stat("/var/lib/kubelet/device-plugins/kubelet.sock"); err == nil {
		files = append(files, "/var/lib/kubelet/device-plugins/kubelet.sock")
	}
	return files
}

// teardown removes every trace of the built-in cluster, of this run or of an
// earlier one that was killed: processes (found by binary and stateDir, and
// by the pods' cgroups), shim sockets, mounts, network namespaces, links,
// iptables chains, cgroups and folders. It logs what fails and goes on.
func teardown(logf func(string, ...any), kubeBin string) {
	// The kubelet first, so it restarts nothing; then the containers, so
	// their shims have nothing left to wait for; then the rest.
	procs := clusterProcesses()
	slices.SortStableFunc(procs, func(a, b process) int {
		rank := func(p process) int {
			switch {
			case p.exe == "kubelet":
				return 0
			case p.exe == "":
				return 1
			}
			return 2
		}
		return rank(a) - rank(b)
	})
	for _, p := range procs {
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			logf("teardown: kill %d (%s): %v", p.pid, p.exe, err)
		}
		if p.shimSocket != "" {
			_ = os.Remove(p.shimSocket) // what a killed shim leaves; already gone is fine
		}
	}
	for _, p := range procs {
		waitGone(p.pid)
	}

	// Mounts: the pods' root file systems and shared memory, the network
	// namespaces, the kubelet's own. Innermost first; detach, since nothing
	// that used them runs any more.
	for range 5 {
		mounts := mountsUnder(stateDir)
		if len(mounts) == 0 {
			break
		}
		for _, m := range mounts {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				logf("teardown: unmount %s: %v", m, err)
			}
		}
	}

	// The pods' veth ends vanish with their network namespaces; then the
	// bridges (and the route into nodeBridge with them).
	for range 50 {
		if len(portsOf(podBridge)) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, link := range append(portsOf(podBridge), podBridge, nodeBridge) {
		if linkExists(link) {
			if out, err := exec.Command("ip", "link", "del", link).CombinedOutput(); err != nil { // #nosec G204 -- the cluster's own links
				logf("teardown: ip link del %s: %v: %s", link, err, out)
			}
		}
	}

	// kube-proxy removes its own rules; the kubelet's and CNI's chains go
	// by name. Only a machine that runs no other Kubernetes gets here.
	if _, err := os.Stat(kubeBin + "/kube-proxy"); err == nil { // #nosec G703 -- the kube-proxy make e2e built into KUBE_BIN
		if out, err := exec.Command(kubeBin+"/kube-proxy", "--cleanup").CombinedOutput(); err != nil { // #nosec G204 G702 -- as above
			logf("teardown: kube-proxy --cleanup: %v: %s", err, lastLine(out))
		}
	}
	for _, family := range []string{"iptables", "ip6tables"} {
		if err := removeChains(family); err != nil {
			logf("teardown: %s: %v", family, err)
		}
	}

	// Otherwise the cluster's connections linger in conntrack for minutes.
	for _, flag := range []string{"--src", "--dst"} {
		_ = exec.Command("conntrack", "-D", flag, ourRange).Run() // #nosec G204 -- fixed flags; fails when there is no flow
	}

	for _, dir := range kubepodsCgroups() {
		if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
			logf("teardown: rmdir %s: %v", dir, err)
		}
	}

	for _, file := range hostFiles() {
		if err := os.Remove(file); err != nil {
			logf("teardown: %v", err)
		}
	}
	var before hostState
	if data, err := os.ReadFile(hostStateFile); err == nil && json.Unmarshal(data, &before) == nil {
		restoreSysctls(logf, before.Sysctls)
		for _, dir := range before.Missing {
			_ = syscall.Rmdir(dir) // only when empty: files of others stay
		}
	}

	// Never delete through a mount that is still there: it could lead
	// outside stateDir.
	if m := mountsUnder(stateDir); len(m) > 0 {
		logf("teardown: keeping %s, still mounted: %v", stateDir, m)
		return
	}
	if err := os.RemoveAll(stateDir); err != nil {
		logf("teardown: %v", err)
	}
}

// leftovers lists what teardown must remove; empty means the machine is clean.
func leftovers() []string {
	var left []string
	for _, p := range clusterProcesses() {
		left = append(left, fmt.Sprintf("process %d %s", p.pid, p.cmdline))
	}
	for _, m := range mountsUnder(stateDir) {
		left = append(left, "mount "+m)
	}
	for _, link := range append(portsOf(podBridge), podBridge, nodeBridge) {
		if linkExists(link) {
			left = append(left, "link "+link)
		}
	}
	for _, family := range []string{"iptables", "ip6tables"} {
		chains := kubernetesChains(family)
		for _, ch := range chains {
			left = append(left, family+" chain "+ch)
		}
	}
	if out, err := exec.Command("nft", "list", "tables").Output(); err == nil && strings.Contains(string(out), "kube-proxy") {
		left = append(left, "nftables table kube-proxy")
	}
	for _, flag := range []string{"--src", "--dst"} {
		if out, _ := exec.Command("conntrack", "-L", flag, ourRange).Output(); len(out) > 0 { // #nosec G204 -- fixed flags
			left = append(left, "conntrack flows "+flag+" "+ourRange)
		}
	}
	for _, dir := range kubepodsCgroups() {
		left = append(left, "cgroup "+dir)
	}
	if _, err := os.Stat(stateDir); err == nil {
		left = append(left, "folder "+stateDir)
	}
	for _, file := range hostFiles() {
		left = append(left, "file "+file)
	}
	return left
}

// foreignKubernetes names the sign of a Kubernetes that is not ours: its
// iptables chains or pod cgroups while no trace of our cluster exists.
func foreignKubernetes() string {
	if _, err := os.Stat(stateDir); err == nil || linkExists(nodeBridge) {
		return ""
	}
	if chains := kubernetesChains("iptables"); len(chains) > 0 {
		return "iptables chain " + chains[0]
	}
	if dirs := kubepodsCgroups(); len(dirs) > 0 {
		return "cgroup " + dirs[0]
	}
	return ""
}

type process struct {
	pid        int
	exe        string // base name of the binary; "" for a container's process
	cmdline    string
	shimSocket string // the socket a containerd shim leaves in /run/containerd/s when killed
}

// clusterProcesses finds the cluster's processes: a cluster binary whose
// command line names stateDir, or any process in a pod's cgroup.
func clusterProcesses() []process {
	var procs []process
	seen := map[int]bool{os.Getpid(): true}
	for _, dir := range kubepodsCgroups() {
		data, _ := os.ReadFile(dir + "/cgroup.procs") // #nosec G304 -- a cgroup of the cluster's pods
		for _, f := range strings.Fields(string(data)) {
			var pid int
			_, _ = fmt.Sscan(f, &pid) // cgroup.procs holds pids only
			if !seen[pid] {
				seen[pid] = true
				procs = append(procs, process{pid: pid, cmdline: cmdline(pid)})
			}
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || seen[pid] {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		args := strings.Split(strings.TrimSuffix(readString(fmt.Sprintf("/proc/%d/cmdline", pid)), "\x00"), "\x00")
		if !slices.Contains(clusterBinaries, filepath.Base(exe)) || !strings.Contains(strings.Join(args, " "), stateDir) {
			continue
		}
		p := process{pid: pid, exe: filepath.Base(exe), cmdline: strings.Join(args, " ")}
		if p.exe == "containerd-shim-runc-v2" {
			p.shimSocket = shimSocket(args)
		}
		procs = append(procs, p)
	}
	return procs
}

// shimSocket is where containerd 1.6 puts a shim's socket:
// /run/containerd/s/sha256(<containerd address>/<namespace>/<id>).
func shimSocket(args []string) string {
	flag := func(name string) string {
		if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	sum := sha256.Sum256([]byte(filepath.Join(flag("-address"), flag("-namespace"), flag("-id"))))
	return fmt.Sprintf("/run/containerd/s/%x", sum)
}

func cmdline(pid int) string {
	return strings.TrimSpace(strings.ReplaceAll(readString(fmt.Sprintf("/proc/%d/cmdline", pid)), "\x00", " "))
}

func readString(path string) string {
	data, _ := os.ReadFile(path) // #nosec G304 -- a /proc or /sys file teardown reads
	return string(data)
}

// waitGone waits up to 10 s for a killed process to disappear (or become a
// zombie, which holds nothing).
func waitGone(pid int) {
	for range 100 {
		stat := readString(fmt.Sprintf("/proc/%d/stat", pid))
		if stat == "" || strings.Contains(stat, ") Z ") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mountsUnder lists the mount points under dir, innermost first.
func mountsUnder(dir string) []string {
	var mounts []string
	for _, line := range strings.Split(readString("/proc/self/mountinfo"), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(mounts)
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// portsOf lists the links attached to a bridge.
func portsOf(bridge string) []string {
	entries, _ := os.ReadDir("/sys/class/net/" + bridge + "/brif")
	var ports []string
	for _, e := range entries {
		ports = append(ports, e.Name())
	}
	return ports
}

// kubepodsCgroups lists the kubelet's pod cgroups in every hierarchy,
// innermost first.
func kubepodsCgroups() []string {
	var dirs []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
	if root, err := filepath.Glob("/sys/fs/cgroup/kubepods*"); err == nil { // cgroup v2
		roots = append(roots, root...)
	}
	for _, root := range roots {
		// WalkDir returns what the callback does: always nil.
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return dirs
}

var tables = []string{"filter", "nat", "mangle", "raw"}

func isKubernetesChain(name string) bool {
	return strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "CNI-")
}

// kubernetesChains lists the chains the kubelet, kube-proxy and the CNI
// plugins create, as table/chain.
func kubernetesChains(family string) []string {
	var chains []string
	for _, table := range tables {
		save, _ := exec.Command(family+"-save", "-t", table).Output() // #nosec G204 -- iptables or ip6tables; no table, no chains
		for _, ch := range chainsIn(string(save)) {
			chains = append(chains, table+"/"+ch)
		}
	}
	return chains
}

// chainsIn lists the Kubernetes chains an iptables-save output declares.
func chainsIn(save string) []string {
	var chains []string
	for _, line := range strings.Split(save, "\n") {
		if name, ok := strings.CutPrefix(line, ":"); ok && isKubernetesChain(strings.Fields(name)[0]) {
			chains = append(chains, strings.Fields(name)[0])
		}
	}
	return chains
}

// removeChains deletes the rules that jump to a Kubernetes chain from every
// other chain, then the Kubernetes chains, in one iptables-restore per table
// (so docker's rules stay as they are).
func removeChains(family string) error {
	for _, table := range tables {
		save, _ := exec.Command(family+"-save", "-t", table).Output() // #nosec G204 -- iptables or ip6tables
		ours := chainsIn(string(save))
		if len(ours) == 0 {
			continue
		}
		var script []string
		for _, line := range strings.Split(string(save), "\n") {
			fields := strings.Fields(line)
			jump := slices.Index(fields, "-j")
			if len(fields) > 1 && fields[0] == "-A" && !isKubernetesChain(fields[1]) && jump > 0 && jump+1 < len(fields) && isKubernetesChain(fields[jump+1]) {
				script = append(script, "-D"+strings.TrimPrefix(line, "-A"))
			}
		}
		for _, ch := range ours {
			script = append(script, "-F "+ch)
		}
		for _, ch := range ours {
			script = append(script, "-X "+ch)
		}
		input := "*" + table + "\n" + strings.Join(script, "\n") + "\nCOMMIT\n"
		cmd := exec.Command(family+"-restore", "--noflush") // #nosec G204 -- iptables or ip6tables
		cmd.Stdin = strings.NewReader(input)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s-restore (table %s): %v: %s", family, table, err, out)
		}
	}
	return nil
}

func readSysctl(name string) string {
	return strings.TrimSpace(readString("/proc/sys/" + name))
}

func readSysctls() map[string]string {
	values := map[string]string{}
	for _, name := range sysctls {
		values[name] = readSysctl(name)
	}
	return values
}

func restoreSysctls(logf func(string, ...any), values map[string]string) {
	for name, value := range values {
		if value != "" && readSysctl(name) != value {
			if err := os.WriteFile("/proc/sys/"+name, []byte(value), 0o644); err != nil { // #nosec G306 -- /proc/sys files exist: the mode is unused
				logf("teardown: sysctl %s: %v", name, err)
			}
		}
	}
}
