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
// only if it runs one of these and also runs in stateDir (the suite starts
// each there; k3s moves into its data-dir) or names stateDir or k3sRun on its
// command line. k3s runs the
// API server, the kubelet, kube-proxy and the network policy controller in
// its own process, which it renames `k3s server`, hiding its flags, and
// containerd as a child of the same binary; a shim per pod outlives them both
// and names only its containerd's socket. relay carries the registry to the
// node IP for policy-controller's webhook (relay/main.go).
var clusterBinaries = []string{"k3s", "containerd-shim-runc-v2", "registry", "traefik", "relay"}

// Host settings the kubelet, kube-proxy and the bridge plugin may change; the
// teardown puts back what they were.
var sysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "net/ipv4/conf/default/forwarding",
	"net/ipv6/conf/all/forwarding", "net/ipv6/conf/default/forwarding", "net/core/devconf_inherit_init_net",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
	"net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
}

// Host folders the cluster creates outside stateDir when they are missing
// (innermost first). Docker's containerd shares /run/containerd/s, so a run
// removes only those it found missing, and only when empty.
var hostDirs = []string{
	"/run/containerd/s", "/run/containerd", "/var/log/containers", "/var/lib/cni/results", "/var/lib/cni",
	"/var/lib/kubelet/device-plugins", "/var/lib/kubelet",
}

// Host folders of k3s's own that it makes whatever its data-dir: the node's
// password and a link to the kubeconfig. A run removes those it found missing
// with everything in them. k3sRun, its containerd's state, is always the
// suite's: a run refuses to start beside one it did not make.
var k3sDirs = []string{"/etc/rancher/node", "/etc/rancher", "/var/lib/rancher"}

// hostState is how the host was before the cluster: the sysctls it may
// change and the hostDirs and k3sDirs that were missing. It is saved in
// stateDir, so the teardown after a killed run restores it too.
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
// cache. Each links into stateDir or names a network namespace in k3sRun,
// except the socket, which only a kubelet that runs (and so is not another
// Kubernetes) would need.
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
		if strings.Contains(readString(result), `"sandbox":"`+k3sRun+"/") {
			files = append(files, result)
		}
	}
	if _, err := os.Stat("/var/lib/kubelet/device-plugins/kubelet.sock"); err == nil {
		files = append(files, "/var/lib/kubelet/device-plugins/kubelet.sock")
	}
	return files
}

// teardown removes every trace of the built-in cluster, of this run or of an
// earlier one that was killed: processes (found by binary and stateDir or
// k3sRun, and by the pods' cgroups), shim sockets, mounts, network
// namespaces, links, iptables chains, ipsets, cgroups and folders. It logs
// what fails and goes on.
func teardown(logf func(string, ...any)) {
	// k3s first (its kubelet and its containerd), so nothing restarts a
	// container; then the containers, so their shims have nothing left to
	// wait for; then the rest.
	procs := clusterProcesses()
	slices.SortStableFunc(procs, func(a, b process) int {
		rank := func(p process) int {
			switch {
			case p.exe == "k3s":
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
	for pass := range 10 {
		mounts := ourMounts()
		if len(mounts) == 0 {
			break
		}
		for _, m := range mounts {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && (pass == 9 || !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT)) {
				logf("teardown: unmount %s (pass %d): %v", m, pass, err)
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

	if guarded() {
		if out, err := exec.Command("ip", "route", "del", "unreachable", ourRange).CombinedOutput(); err != nil { // #nosec G204 -- the fixed route network adds
			logf("teardown: ip route del unreachable %s: %v: %s", ourRange, err, out)
		}
	}

	// The chains of kube-proxy, the kubelet, the network policy controller
	// and CNI go by name, then the policy controller's ipsets, which those
	// chains used. Only a machine that runs no other Kubernetes gets here.
	for _, family := range []string{"iptables", "ip6tables"} {
		if err := removeChains(family); err != nil {
			logf("teardown: %s: %v", family, err)
		}
	}
	for _, set := range ourIPSets() {
		if out, err := exec.Command("ipset", "destroy", set).CombinedOutput(); err != nil { // #nosec G204 -- a set named as the policy controller names its own
			logf("teardown: ipset destroy %s: %v: %s", set, err, out)
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
	before, found := readHostState()
	if found {
		restoreSysctls(logf, before.Sysctls)
		for _, dir := range before.Missing {
			_ = syscall.Rmdir(dir) // only when empty: files of others stay
		}
	}
	// Never delete through a mount that is still there: it could lead
	// outside the folder.
	if m := ourMounts(); len(m) > 0 {
		logf("teardown: keeping %s and %s, still mounted: %v", stateDir, k3sRun, m)
		return
	}
	for _, dir := range before.Missing {
		if slices.Contains(k3sDirs, dir) {
			if err := os.RemoveAll(dir); err != nil {
				logf("teardown: %v", err)
			}
		}
	}
	for _, dir := range []string{k3sRun, stateDir} {
		if err := os.RemoveAll(dir); err != nil {
			logf("teardown: %v", err)
		}
	}
}

// readHostState reads the host's state as the run that made stateDir found
// it, if there is one.
func readHostState() (hostState, bool) {
	var s hostState
	data, err := os.ReadFile(hostStateFile)
	return s, err == nil && json.Unmarshal(data, &s) == nil
}

// ourMounts lists the mount points of the cluster, innermost first: the
// pods' volumes and the kubelet's in stateDir, and the containers' root file
// systems, shared memory and network namespaces in k3sRun.
func ourMounts() []string {
	return slices.Concat(mountsUnder(stateDir), mountsUnder(k3sRun))
}

// ourIPSets lists the ipsets of k3s's network policy controller (kube-router's):
// KUBE-SRC-* and KUBE-DST-*, and inet6: ones for IPv6.
func ourIPSets() []string {
	out, _ := exec.Command("ipset", "list", "-n").Output()
	var sets []string
	for _, name := range strings.Fields(string(out)) {
		if strings.HasPrefix(strings.TrimPrefix(name, "inet6:"), "KUBE-") {
			sets = append(sets, name)
		}
	}
	return sets
}

// leftovers lists what teardown must remove; empty means the machine is clean.
func leftovers() []string {
	var left []string
	for _, p := range clusterProcesses() {
		left = append(left, fmt.Sprintf("process %d %s", p.pid, p.cmdline))
	}
	for _, m := range ourMounts() {
		left = append(left, "mount "+m)
	}
	for _, link := range append(portsOf(podBridge), podBridge, nodeBridge) {
		if linkExists(link) {
			left = append(left, "link "+link)
		}
	}
	if guarded() {
		left = append(left, "route unreachable "+ourRange)
	}
	for _, family := range []string{"iptables", "ip6tables"} {
		chains := kubernetesChains(family)
		for _, ch := range chains {
			left = append(left, family+" "+ch)
		}
	}
	if out, err := exec.Command("nft", "list", "tables").Output(); err == nil && strings.Contains(string(out), "kube-proxy") {
		left = append(left, "nftables table kube-proxy")
	}
	for _, set := range ourIPSets() {
		left = append(left, "ipset "+set)
	}
	for _, flag := range []string{"--src", "--dst"} {
		if out, _ := exec.Command("conntrack", "-L", flag, ourRange).Output(); len(out) > 0 { // #nosec G204 -- fixed flags
			left = append(left, "conntrack flows "+flag+" "+ourRange)
		}
	}
	for _, dir := range kubepodsCgroups() {
		left = append(left, "cgroup "+dir)
	}
	for _, dir := range []string{stateDir, k3sRun} {
		if exists(dir) {
			left = append(left, "folder "+dir)
		}
	}
	for _, file := range hostFiles() {
		left = append(left, "file "+file)
	}
	// Those folders of k3s's that a run made: the one whose state is still
	// in stateDir.
	before, _ := readHostState()
	for _, dir := range before.Missing {
		if slices.Contains(k3sDirs, dir) && exists(dir) {
			left = append(left, "folder "+dir)
		}
	}
	return left
}

// foreignKubernetes names the sign of a Kubernetes that is not ours: its
// iptables chains, ipsets, pod cgroups or a k3s's containerd state while no
// trace of our cluster exists.
func foreignKubernetes() string {
	if _, err := os.Stat(stateDir); err == nil || linkExists(nodeBridge) || guarded() {
		return ""
	}
	if _, err := os.Stat(k3sRun); err == nil {
		return "folder " + k3sRun
	}
	if sets := ourIPSets(); len(sets) > 0 {
		return "ipset " + sets[0]
	}
	if chains := kubernetesChains("iptables"); len(chains) > 0 {
		return "iptables " + chains[0]
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

// clusterProcesses finds the cluster's processes: a cluster binary that runs
// in stateDir or whose command line names it or k3sRun, or any process in a
// pod's cgroup.
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
		line := strings.Join(args, " ")
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		ours := under(cwd, stateDir) || strings.Contains(line, stateDir+"/") || strings.Contains(line, k3sRun+"/")
		if !slices.Contains(clusterBinaries, filepath.Base(exe)) || !ours {
			continue
		}
		p := process{pid: pid, exe: filepath.Base(exe), cmdline: line}
		if p.exe == "containerd-shim-runc-v2" {
			p.shimSocket = shimSocket(args)
		}
		procs = append(procs, p)
	}
	return procs
}

// shimSocket is where containerd (1.6 to 2.1) puts a shim's socket:
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
	return exists("/sys/class/net/" + name)
}

// guarded says whether the route that makes ourRange unreachable is there.
func guarded() bool {
	out, _ := exec.Command("ip", "route", "show", "type", "unreachable", ourRange).Output() // #nosec G204 -- the fixed route network adds
	return len(strings.TrimSpace(string(out))) > 0
}

// under says whether path is dir or in it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func exists(path string) bool {
	_, err := os.Stat(path) // #nosec G703 -- the suite's own paths and the k3s make e2e names
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

// kubernetesChains lists the chains the kubelet, kube-proxy, the network
// policy controller and the CNI plugins create, and the rules they add to
// other chains.
func kubernetesChains(family string) []string {
	var chains []string
	for _, table := range tables {
		save, _ := exec.Command(family+"-save", "-t", table).Output() // #nosec G204 -- iptables or ip6tables; no table, no chains
		for _, ch := range chainsIn(string(save)) {
			chains = append(chains, "chain "+table+"/"+ch)
		}
		for _, rule := range rulesIn(string(save)) {
			chains = append(chains, "rule in "+table+": "+rule)
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

// rulesIn lists the rules of an iptables-save output that Kubernetes added to
// chains not its own: jumps to its chains, and the network policy
// controller's ACCEPTs, which name KUBE-ROUTER in their comment. Nothing
// else (Docker's rules) mentions KUBE- or CNI-.
func rulesIn(save string) []string {
	var rules []string
	for _, line := range strings.Split(save, "\n") {
		fields := strings.Fields(line)
		if len(fields) > 1 && fields[0] == "-A" && !isKubernetesChain(fields[1]) &&
			(strings.Contains(line, "KUBE-") || strings.Contains(line, "CNI-")) {
			rules = append(rules, line)
		}
	}
	return rules
}

// removeChains deletes the rules Kubernetes added to other chains, then the
// Kubernetes chains, in one iptables-restore per table (so Docker's rules
// stay as they are).
func removeChains(family string) error {
	for _, table := range tables {
		save, _ := exec.Command(family+"-save", "-t", table).Output() // #nosec G204 -- iptables or ip6tables
		ours, rules := chainsIn(string(save)), rulesIn(string(save))
		if len(ours) == 0 && len(rules) == 0 {
			continue
		}
		var script []string
		for _, rule := range rules {
			script = append(script, "-D"+strings.TrimPrefix(rule, "-A"))
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
