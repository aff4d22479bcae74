// Command bench measures hello against floor, a bare net/http server that
// writes the same bytes (make bench), and checks the promises hello makes
// under load and hostile clients (make soak).
//
//	bench bench [flags]  print the markdown table; exit 1 if a budget is missed
//	bench soak [flags]   run the reliability checks; exit 1 if a promise breaks
//	bench flood [flags]  soak's connection flood against a running server
//	                     (machinery/container floods the image with it)
//
// It is a module of its own, so that hello's is one package; make builds it
// and runs it from the repository root. It needs wrk, ab and valgrind on PATH (make
// installs them), and sends traffic only to 127.0.0.1, bounded in count and time.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// name is the path every benchmark asks for; floor answers every path with its greeting.
const name = "TutorialHero"

func main() {
	commands := map[string]func([]string) error{"bench": runBench, "soak": runSoak, "flood": runFlood}
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: bench bench|soak|flood [flags]  (-h lists the flags)")
		os.Exit(2)
	}
	run := commands[os.Args[1]]
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// server is a binary and the arguments that make it listen on an address.
type server struct {
	name string
	bin  string
	args func(addr string) []string
}

func helloServer(bin string, extra ...string) server {
	name := strings.Join(append([]string{"hello"}, extra...), " ")
	return server{name, bin, func(addr string) []string { return append([]string{"-addr", addr}, extra...) }}
}

func floorServer(bin string) server {
	return server{"floor", bin, func(addr string) []string { return []string{addr} }}
}

// proc is a running server on a 127.0.0.1 port of its own.
type proc struct {
	cmd     *exec.Cmd
	addr    string
	started time.Time
	exited  chan error // receives the process's Wait result, then closes
}

// start runs s, behind wrap (taskset, valgrind) if given, with extra
// environment variables. Its stdout is a pipe that this process reads and
// discards, as a container runtime reads a container's: the access log's
// writes, and the reader's wake-ups, are part of the cost measured. Its
// stderr goes to /dev/null.
func start(s server, wrap []string, env ...string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	argv := append(slices.Clone(wrap), s.bin)
	argv = append(argv, s.args(addr)...)
	cmd := exec.Command(argv[0], argv[1:]...) // #nosec G204 -- bench exists to run the servers it measures
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = io.Discard // os/exec makes the pipe and reads it
	p := &proc{cmd: cmd, addr: addr, started: time.Now(), exited: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	go func() { p.exited <- cmd.Wait(); close(p.exited) }()
	return p, nil
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (p *proc) url() string { return "http://" + p.addr + "/" + name }

// ready polls the greeting until it is a 200 and returns the time from exec to then.
func (p *proc) ready(limit time.Duration) (time.Duration, error) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for time.Since(p.started) < limit {
		select {
		case err := <-p.exited:
			return 0, fmt.Errorf("%s exited before answering: %v", p.cmd.Path, err)
		default:
		}
		resp, err := client.Get(p.url())
		if err == nil {
			_ = resp.Body.Close() // only the status counts here
			if resp.StatusCode == http.StatusOK {
				return time.Since(p.started), nil
			}
		}
		time.Sleep(500 * time.Microsecond)
	}
	return 0, fmt.Errorf("%s did not answer 200 on %s within %v", p.cmd.Path, p.url(), limit)
}

// kill ends the process with SIGKILL and reaps it.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill() // fails only when it has exited already; exited says so either way
	<-p.exited
}

// rss is the process's resident set in bytes, from /proc.
func (p *proc) rss() (int64, error) { return vmRSS(p.cmd.Process.Pid) }

// vmRSS is a process's resident set in bytes, from /proc.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if kb, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), 10, 64)
			return n << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// cpu is the CPU time, user and system, the process used from exec to its
// end; call it after kill.
func (p *proc) cpu() time.Duration {
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
}

// wrkResult holds the figures this program reads from wrk's report.
type wrkResult struct {
	requests     int64
	perSecond    float64
	p99          time.Duration
	socketErrors int64 // connect + read + write + timeout
	non2xx       int64 // wrk counts non-2xx-or-3xx; hello never redirects
}

// wrk runs wrk with --latency against url and parses its report. taskset, if
// not empty, pins wrk to those CPUs.
func wrk(url string, threads, conns int, d time.Duration, cpus string) (wrkResult, error) {
	secs := strconv.Itoa(max(1, int(d.Round(time.Second).Seconds()))) + "s" // wrk takes whole seconds, not Go's "1m0s"
	argv := []string{"wrk", "--latency", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", secs, url}
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput() // #nosec G204 -- bench exists to run wrk
	if err != nil {
		return wrkResult{}, fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRequests, haveP99 bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			r.requests, haveRequests = n, err == nil
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.perSecond, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "99%":
			d, err := time.ParseDuration(f[1])
			r.p99, haveP99 = d, err == nil
		case strings.HasPrefix(strings.TrimSpace(line), "Socket errors:"):
			var c, rd, w, t int64
			if _, err := fmt.Sscanf(strings.TrimSpace(line), "Socket errors: connect %d, read %d, write %d, timeout %d", &c, &rd, &w, &t); err != nil {
				return r, fmt.Errorf("wrk: cannot read %q: %v", line, err)
			}
			r.socketErrors = c + rd + w + t
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			r.non2xx, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		}
	}
	if !haveRequests || !haveP99 || r.perSecond == 0 {
		return r, fmt.Errorf("wrk: no request count, rate or p99 in its report:\n%s", out)
	}
	return r, nil
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// timedGet greets over a fresh connection and returns how long the answer took.
func timedGet(url string) (time.Duration, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t0 := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s = %d, want 200", url, resp.StatusCode)
	}
	return time.Since(t0), nil
}

// every calls fn every interval until stop closes.
func every(interval time.Duration, stop <-chan struct{}, fn func()) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			fn()
		}
	}
}

// mib is n bytes in MiB.
func mib(n int64) float64 { return float64(n) / (1 << 20) }
