package main

import (
	"bufio"
	"cmp"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The most hello may cost relative to floor. log/slog alone grows the binary
// about 5% (290 KB), which the size budget allows.
const (
	instructionBudget = 1.03
	sizeBudget        = 1.08
)

// accessLogBudget is the most instructions a logged greeting may cost
// against an unlogged one: the Deployment runs -access-log, so its cost is
// part of every request's. It is a budget on instructions, not CPU time:
// CPU time on a shared machine moves from run to run by more than a change
// worth catching, so the CPU row is printed, never gated.
const accessLogBudget = 1.25

// row is one figure of the table: a value per server (hello, hello
// -access-log, floor) and three ratios: hello/floor, hello
// -access-log/floor and hello -access-log/hello.
type row struct {
	figure    string
	format    func(float64) string
	v         [3]float64
	ratio     [3]float64 // set by wrk rows (median of per-round ratios); else from v
	budget    float64    // the most hello/floor may be; 0 for none
	logBudget float64    // the most hello -access-log/hello may be; 0 for none
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	helloBin := fs.String("hello", "./hello", "hello `binary`")
	floorBin := fs.String("floor", "./floor", "floor `binary`, built with hello's flags")
	n1 := fs.Int("n1", 500, "keep-alive requests in callgrind's first run")
	n2 := fs.Int("n2", 2500, "keep-alive requests in callgrind's second run")
	reps := fs.Int("reps", 3, "callgrind runs per server and request count; the least counts")
	rounds := fs.Int("rounds", 3, "wrk rounds per server, interleaved")
	duration := fs.Duration("duration", 10*time.Second, "length of one wrk run")
	conns := fs.Int("conns", 64, "wrk connections")
	cpuRounds := fs.Int("cpu-rounds", 9, "rounds per server for CPU per request, interleaved")
	cpuRequests := fs.Int("cpu-requests", 200000, "keep-alive requests per round for CPU per request")
	cpuConns := fs.Int("cpu-conns", 8, "ab connections for CPU per request")
	starts := fs.Int("starts", 10, "starts per server for the exec-to-first-200 time")
	serverCPU := fs.String("server-cpu", "0", "CPU the server is pinned to under callgrind and wrk")
	clientCPU := fs.String("client-cpu", "1", "CPU ab and wrk are pinned to")
	count := fs.Int("count", 5, "go test -bench runs per package, interleaved")
	helloBench := fs.String("hello-bench", ".:^BenchmarkGreet$", "folder:benchmark of hello's greeting path")
	helloLogBench := fs.String("hello-log-bench", ".:^BenchmarkGreetAccessLog$", "folder:benchmark of the greeting path with the access log")
	floorBench := fs.String("floor-bench", "machinery/bench/floor:^BenchmarkGreet$", "folder:benchmark of floor's handler")
	if err := fs.Parse(args); err != nil {
		return err
	}

	servers := [3]server{helloServer(*helloBin), helloServer(*helloBin, "-access-log"), floorServer(*floorBin)}
	if err := sameBytes(servers[0], servers[2]); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "hello-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fmt.Fprintf(os.Stderr, "bench: callgrind, %d x %d and %d keep-alive requests per server...\n", *reps, *n1, *n2)
	instr, err := instructionsPerGreeting(servers, *n1, *n2, *reps, *serverCPU, *clientCPU, tmp)
	if err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "bench: wrk, %d rounds of %v per server...\n", *rounds, *duration)
	wrkRows, err := wrkRounds(servers, *rounds, *conns, *duration, *serverCPU, *clientCPU)
	if err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "bench: CPU per request, %d rounds of %d requests per server...\n", *cpuRounds, *cpuRequests)
	cpu, err := cpuPerRequest(servers, *cpuRounds, *cpuRequests, *cpuConns, *serverCPU, *clientCPU)
	if err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "bench: %d starts per server...\n", *starts)
	startup := row{figure: "start, exec to first 200 (median)", format: millis}
	var times [3][]float64
	for range *starts {
		for i, s := range servers {
			p, err := start(s, nil)
			if err != nil {
				return err
			}
			d, err := p.ready(10 * time.Second)
			p.kill()
			if err != nil {
				return err
			}
			times[i] = append(times[i], d.Seconds())
		}
	}
	for i := range times {
		startup.v[i] = median(times[i])
	}

	binary := row{figure: "binary size", format: mebibytes, budget: sizeBudget}
	for i, s := range servers {
		fi, err := os.Stat(s.bin)
		if err != nil {
			return err
		}
		binary.v[i] = float64(fi.Size())
	}

	fmt.Fprintln(os.Stderr, "bench: images...")
	image := row{figure: "image size (FROM scratch)", format: mebibytes, budget: sizeBudget}
	if image.v[0], image.v[2], err = imageSizes(*helloBin, *floorBin, tmp); err != nil {
		return err
	}
	image.v[1] = image.v[0]

	fmt.Fprintf(os.Stderr, "bench: go test -bench, %d runs per package...\n", *count)
	goRows, err := goBench([3]string{*helloBench, *helloLogBench, *floorBench}, *count, tmp)
	if err != nil {
		return err
	}

	rows := append([]row{instr, cpu}, wrkRows...)
	rows = append(rows, startup, binary, image)
	rows = append(rows, goRows...)
	for i, r := range rows {
		if r.ratio == [3]float64{} {
			rows[i].ratio = [3]float64{r.v[0] / r.v[2], r.v[1] / r.v[2], r.v[1] / r.v[0]}
		}
	}
	printTable(os.Stdout, rows, fmt.Sprintf("server on CPU %s, client on CPU %s, stdout a pipe that bench reads; callgrind %d-%d keep-alive requests (ab -k -c 1), least of %d runs; CPU per request over %d keep-alive requests (ab -k -c %d), the servers side by side, x %d rounds, median of per-round ratios; wrk -t1 -c%d %v x %d rounds, median of per-round ratios; %d starts; go test -bench median of %d",
		*serverCPU, *clientCPU, *n1, *n2, *reps, *cpuRequests, *cpuConns, *cpuRounds, *conns, *duration, *rounds, *starts, *count))

	var over []string
	for _, r := range rows {
		if r.budget != 0 && r.ratio[0] > r.budget {
			over = append(over, fmt.Sprintf("%s: hello/floor = %.3f > %.2f", r.figure, r.ratio[0], r.budget))
		}
		if r.logBudget != 0 && r.ratio[2] > r.logBudget {
			over = append(over, fmt.Sprintf("%s: hello -access-log/hello = %.3f > %.2f", r.figure, r.ratio[2], r.logBudget))
		}
	}
	if len(over) > 0 {
		return fmt.Errorf("over budget:\n  %s", strings.Join(over, "\n  "))
	}
	fmt.Printf("\nBudgets met: hello/floor <= %.2f for instructions per greeting, <= %.2f for binary and image size; hello -access-log/hello <= %.2f for instructions per greeting.\n",
		instructionBudget, sizeBudget, accessLogBudget)
	return nil
}

// sameBytes fails unless a and b answer the benchmark's request with the
// same bytes (Date aside): otherwise floor would not be hello's floor.
func sameBytes(a, b server) error {
	var got [2]string
	for i, s := range []server{a, b} {
		p, err := start(s, nil)
		if err != nil {
			return err
		}
		if _, err := p.ready(10 * time.Second); err != nil {
			p.kill()
			return err
		}
		got[i], err = rawGet(p.addr, "/"+name)
		p.kill()
		if err != nil {
			return err
		}
	}
	if got[0] != got[1] {
		return fmt.Errorf("%s and %s answer GET /%s differently, so floor is not hello's floor:\n--- %s\n%s\n--- %s\n%s", a.name, b.name, name, a.name, got[0], b.name, got[1])
	}
	return nil
}

var dateHeader = regexp.MustCompile(`(?m)^Date: .*\r$`)

// rawGet returns the response's bytes with the Date header's value blanked.
func rawGet(addr, path string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return dateHeader.ReplaceAllString(string(b), "Date: *\r"), err
}

// instructionsPerGreeting runs each server under callgrind with n1 and
// then n2 keep-alive requests and divides the difference in instructions by
// n2-n1, so that start-up cancels out. The server is pinned to one CPU (so
// Go runs one P and never wakes an idle one, whose cost varies with timing)
// and ab to another. A busy machine can still only add instructions, so of
// reps runs, interleaved across servers, the least counts.
func instructionsPerGreeting(servers [3]server, n1, n2, reps int, serverCPU, clientCPU string, dir string) (row, error) {
	r := row{figure: "CPU instructions per greeting (callgrind)", format: count0, budget: instructionBudget, logBudget: accessLogBudget}
	var least [3][2]float64
	for range reps {
		for i, s := range servers {
			for j, n := range []int{n1, n2} {
				total, err := callgrind(s, n, serverCPU, clientCPU, dir)
				if err != nil {
					return r, err
				}
				fmt.Fprintf(os.Stderr, "  %s, %d greetings: %.0f instructions\n", s.name, n, total)
				if least[i][j] == 0 || total < least[i][j] {
					least[i][j] = total
				}
			}
		}
	}
	for i := range servers {
		r.v[i] = (least[i][1] - least[i][0]) / float64(n2-n1)
	}
	return r, nil
}

// callgrind returns the instructions s executed from exec through n
// keep-alive greetings. Go's asynchronous preemption signals crash
// callgrind, and so does a SIGTERM handler: hence asyncpreemptoff, and a
// dump with callgrind_control before SIGKILL. valgrind 3.19 cannot decode
// RDTSCP, which Go's runtime uses where the CPU valgrind emulates offers it:
// hence cpu.rdtscp=off. A server that dies is an error that names it and
// quotes valgrind's log, never a figure.
func callgrind(s server, n int, serverCPU, clientCPU, dir string) (float64, error) {
	out := filepath.Join(dir, "callgrind.out")
	log := filepath.Join(dir, "valgrind.log")
	total, err := func() (float64, error) {
		p, err := start(s, []string{"taskset", "-c", serverCPU, "valgrind", "--tool=callgrind", "--log-file=" + log, "--callgrind-out-file=" + out}, "GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off")
		if err != nil {
			return 0, err
		}
		defer p.kill()
		if _, err := p.ready(2 * time.Minute); err != nil {
			return 0, err
		}
		if err := ab(p.url(), n, 1, clientCPU); err != nil {
			return 0, fmt.Errorf("ab: %v", err)
		}
		pid := strconv.Itoa(p.cmd.Process.Pid)
		if b, err := exec.Command("callgrind_control", "-d", pid).CombinedOutput(); err != nil { // #nosec G204 -- bench exists to run callgrind
			return 0, fmt.Errorf("callgrind_control -d %s: %v\n%s", pid, err, b)
		}
		dump := out + ".1"
		defer os.Remove(dump)
		return callgrindTotal(dump)
	}()
	if err != nil {
		return 0, fmt.Errorf("%s under callgrind, %d greetings: %v\nvalgrind's log ends:\n%s", s.name, n, err, tail(log, 20))
	}
	return total, nil
}

// tail returns the last n lines of the file at path, or why it cannot.
func tail(path string, n int) string {
	b, err := os.ReadFile(path) // #nosec G304 -- valgrind's log in bench's temporary folder
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// checkAB fails unless ab's report says all n requests completed with 2xx.
func checkAB(out string, n int) error {
	var complete, failed int = -1, -1
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "Complete" && f[1] == "requests:":
			complete, _ = strconv.Atoi(f[2])
		case len(f) == 3 && f[0] == "Failed" && f[1] == "requests:":
			failed, _ = strconv.Atoi(f[2])
		case strings.HasPrefix(line, "Non-2xx responses:"):
			return fmt.Errorf("%s", line)
		}
	}
	if complete != n || failed != 0 {
		return fmt.Errorf("%d of %d requests complete, %d failed:\n%s", complete, n, failed, out)
	}
	return nil
}

// callgrindTotal reads the instruction count from a callgrind dump's totals line.
func callgrindTotal(path string) (float64, error) {
	f, err := os.Open(path) // #nosec G304 -- the dump callgrind wrote into bench's temporary folder
	if err != nil {
		return 0, fmt.Errorf("callgrind dump: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "totals:"); ok {
			return strconv.ParseFloat(strings.Fields(v)[0], 64)
		}
	}
	return 0, fmt.Errorf("no totals line in %s", path)
}

// wrkRounds measures throughput, p99 and RSS (idle, after load) with the
// server and wrk pinned to different CPUs, one fresh server per run, the
// servers interleaved so that a noisy moment hits them all.
func wrkRounds(servers [3]server, rounds, conns int, d time.Duration, serverCPU, clientCPU string) ([]row, error) {
	rps := row{figure: "throughput, req/s (wrk)", format: count0}
	p99 := row{figure: "p99 latency (wrk)", format: millis}
	idle := row{figure: "RSS idle", format: mebibytes}
	loaded := row{figure: "RSS after load", format: mebibytes}
	var all [4][3][]float64 // figure, server, round
	for range rounds {
		for i, s := range servers {
			p, err := start(s, []string{"taskset", "-c", serverCPU})
			if err != nil {
				return nil, err
			}
			r, rssIdle, rssLoaded, err := wrkOnce(p, conns, d, clientCPU)
			p.kill()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			for f, v := range []float64{r.perSecond, r.p99.Seconds(), rssIdle, rssLoaded} {
				all[f][i] = append(all[f][i], v)
			}
		}
	}
	rows := []*row{&rps, &p99, &idle, &loaded}
	for f, r := range rows {
		r.v, r.ratio = medians(all[f])
	}
	return []row{rps, p99, idle, loaded}, nil
}

// medians returns the median of each server's figures, and the medians of
// the per-round ratios hello/floor, hello -access-log/floor and hello
// -access-log/hello: a noisy round moves both figures of its ratio.
func medians(all [3][]float64) (v, ratio [3]float64) {
	for i := range 3 {
		v[i] = median(all[i])
	}
	for i, pair := range [3][2]int{{0, 2}, {1, 2}, {1, 0}} {
		var ratios []float64
		for round := range all[0] {
			ratios = append(ratios, all[pair[0]][round]/all[pair[1]][round])
		}
		ratio[i] = median(ratios)
	}
	return v, ratio
}

// cpuPerRequest serves the three servers side by side on serverCPU, each
// with its own ab sending n keep-alive requests, conns at a time, and
// divides each server's CPU time, user and system, by n; rounds times, a
// fresh set of servers each time. Side by side, a noisy moment on a busy
// machine hits all three alike: one after the other, a round's
// logged/unlogged ratio moved by 0.3 either way and the median of 9 by
// 0.08 between runs; side by side, by 0.05 and 0.02. Longer rounds blur
// less: on an idle machine the logged/unlogged ratios of 9 rounds spread
// over 0.06 to 0.17 with 50,000 requests each, 0.04 to 0.06 with 200,000.
// The CPU time is the process's whole life; its start costs milliseconds,
// against seconds for n requests.
func cpuPerRequest(servers [3]server, rounds, n, conns int, serverCPU, clientCPU string) (row, error) {
	r := row{figure: fmt.Sprintf("server CPU per request (ab -k -c %d, side by side)", conns), format: micros}
	var all [3][]float64
	for range rounds {
		cpu, err := sideBySide(servers, n, conns, serverCPU, clientCPU)
		if err != nil {
			return r, err
		}
		for i := range all {
			all[i] = append(all[i], cpu[i].Seconds()/float64(n))
		}
	}
	r.v, r.ratio = medians(all)
	return r, nil
}

// sideBySide starts the servers, runs ab against all of them at once, and
// returns the CPU time each used.
func sideBySide(servers [3]server, n, conns int, serverCPU, clientCPU string) ([3]time.Duration, error) {
	var cpu [3]time.Duration
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.kill()
		}
	}()
	for _, s := range servers {
		p, err := start(s, []string{"taskset", "-c", serverCPU})
		if err != nil {
			return cpu, err
		}
		procs = append(procs, p)
		if _, err := p.ready(10 * time.Second); err != nil {
			return cpu, err
		}
	}
	errs := make(chan error, len(procs))
	for i, p := range procs {
		go func() {
			if err := ab(p.url(), n, conns, clientCPU); err != nil {
				errs <- fmt.Errorf("ab against %s: %v", servers[i].name, err)
				return
			}
			errs <- nil
		}()
	}
	var failed error
	for range procs {
		failed = cmp.Or(failed, <-errs)
	}
	for i, p := range procs {
		p.kill() // the deferred kill is then a no-op
		cpu[i] = p.cpu()
	}
	return cpu, failed
}

// ab sends n keep-alive requests to url, conns at a time, from cpu, and
// fails unless all of them were answered 2xx.
func ab(url string, n, conns int, cpu string) error {
	out, err := exec.Command("taskset", "-c", cpu, "ab", "-q", "-k", "-c", strconv.Itoa(conns), "-n", strconv.Itoa(n), url).CombinedOutput() // #nosec G204 -- bench exists to run ab
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return checkAB(string(out), n)
}

func wrkOnce(p *proc, conns int, d time.Duration, cpu string) (wrkResult, float64, float64, error) {
	if _, err := p.ready(10 * time.Second); err != nil {
		return wrkResult{}, 0, 0, err
	}
	time.Sleep(time.Second)
	idle, err := p.rss()
	if err != nil {
		return wrkResult{}, 0, 0, err
	}
	r, err := wrk(p.url(), 1, conns, d, cpu)
	if err != nil {
		return r, 0, 0, err
	}
	if r.socketErrors != 0 || r.non2xx != 0 {
		return r, 0, 0, fmt.Errorf("wrk saw %d socket errors and %d non-2xx responses", r.socketErrors, r.non2xx)
	}
	loaded, err := p.rss()
	return r, float64(idle), float64(loaded), err
}

// imageSizes builds hello's image from the repository's Dockerfile and
// floor's from machinery/bench/floor/Dockerfile, each in a context holding only its
// Dockerfile and the binary measured, returns their sizes and removes them.
func imageSizes(helloBin, floorBin, tmp string) (hello, floor float64, err error) {
	builds := []struct {
		name, bin, dockerfile string
		size                  *float64
	}{{"hello", helloBin, "Dockerfile", &hello}, {"floor", floorBin, "machinery/bench/floor/Dockerfile", &floor}}
	for _, b := range builds {
		image := fmt.Sprintf("hello-bench-%d-%s", os.Getpid(), b.name)
		ctx := filepath.Join(tmp, image)
		if err := os.MkdirAll(ctx, 0o750); err != nil {
			return 0, 0, err
		}
		for src, dst := range map[string]string{b.bin: b.name, b.dockerfile: "Dockerfile"} {
			if err := copyFile(src, filepath.Join(ctx, dst)); err != nil {
				return 0, 0, err
			}
		}
		out, err := exec.Command("docker", "build", "-q", "-t", image, ctx).CombinedOutput() // #nosec G204 -- bench exists to build the images it weighs
		if err != nil {
			return 0, 0, fmt.Errorf("docker build -t %s %s: %v\n%s", image, ctx, err, out)
		}
		// #nosec G204 -- the image bench built; a leftover costs only disk
		defer exec.Command("docker", "rmi", "-f", image).Run()
		// #nosec G204 -- the image bench built
		out, err = exec.Command("docker", "image", "inspect", "-f", "{{.Size}}", image).Output()
		if err != nil {
			return 0, 0, fmt.Errorf("docker image inspect %s: %v", image, err)
		}
		if *b.size, err = strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err != nil {
			return 0, 0, err
		}
	}
	return hello, floor, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src) // #nosec G304 -- a binary or Dockerfile bench was told to weigh
	if err != nil {
		return err
	}
	// The image keeps the mode: its user 65534 must be able to run the binary.
	return os.WriteFile(dst, b, 0o755) // #nosec G306 G703 -- dst is in bench's temporary folder
}

// goBench compiles each package's test binary once, runs the named
// benchmark count times interleaved, and returns the medians of ns/op, B/op
// and allocs/op. A spec is "folder:benchmark-regexp", the folder a
// package's; a benchmark that the package does not have is n/a.
func goBench(specs [3]string, count int, tmp string) ([]row, error) {
	var bins [3]string
	var benches [3]string
	for i, spec := range specs {
		dir, bench, ok := strings.Cut(spec, ":")
		if !ok {
			return nil, fmt.Errorf("benchmark %q is not folder:regexp", spec)
		}
		bins[i], benches[i] = filepath.Join(tmp, fmt.Sprintf("pkg%d.test", i)), bench
		// In the folder: hello and floor are packages of two modules.
		if out, err := exec.Command("go", "-C", dir, "test", "-c", "-o", bins[i], ".").CombinedOutput(); err != nil { // #nosec G204 -- bench exists to run go's benchmarks
			return nil, fmt.Errorf("go -C %s test -c: %v\n%s", dir, err, out)
		}
	}
	var all [3][3][]float64 // figure, server, run
	for round := range count {
		for i := range bins {
			out, err := exec.Command(bins[i], "-test.run", "^$", "-test.bench", benches[i], "-test.benchmem", "-test.count", "1").CombinedOutput() // #nosec G204 -- the test binary go test -c just built
			if err != nil {
				return nil, fmt.Errorf("%s -test.bench %s: %v\n%s", specs[i], benches[i], err, out)
			}
			v, err := parseGoBench(string(out))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", specs[i], err)
			}
			if math.IsNaN(v[0]) && round == 0 {
				fmt.Fprintf(os.Stderr, "  %s: no such benchmark, n/a\n", specs[i])
			}
			for f := range v {
				all[f][i] = append(all[f][i], v[f])
			}
		}
	}
	rows := []row{
		{figure: "go test -bench: ns/op", format: count0},
		{figure: "go test -bench: B/op", format: count0},
		{figure: "go test -bench: allocs/op", format: count0},
	}
	for f := range rows {
		for i := range 3 {
			rows[f].v[i] = median(all[f][i])
		}
	}
	return rows, nil
}

// parseGoBench reads ns/op, B/op and allocs/op from the one benchmark line
// in go test's output; all three are NaN when no benchmark ran.
func parseGoBench(out string) ([3]float64, error) {
	var v [3]float64
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Benchmark") {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return [3]float64{math.NaN(), math.NaN(), math.NaN()}, nil
	}
	if len(lines) != 1 {
		return v, fmt.Errorf("want one benchmark result, got %d in:\n%s", len(lines), out)
	}
	f := strings.Fields(lines[0])
	for i, unit := range []string{"ns/op", "B/op", "allocs/op"} {
		j := slices.Index(f, unit)
		if j < 1 {
			return v, fmt.Errorf("no %s in %q", unit, lines[0])
		}
		var err error
		if v[i], err = strconv.ParseFloat(f[j-1], 64); err != nil {
			return v, err
		}
	}
	return v, nil
}

func printTable(w io.Writer, rows []row, method string) {
	var cpu string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.*)$`).FindSubmatch(b); m != nil {
			cpu = string(m[1])
		}
	}
	fmt.Fprintf(w, "%s, %s %s/%s, %s, %d CPUs\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.Version(), runtime.GOOS, runtime.GOARCH, cpu, runtime.NumCPU())
	fmt.Fprintln(w, "| figure | hello | hello -access-log | floor | hello/floor | hello -access-log/floor | hello -access-log/hello |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s%s | %s | %s%s |\n", r.figure, value(r.format, r.v[0]), value(r.format, r.v[1]), value(r.format, r.v[2]),
			value(ratio, r.ratio[0]), budgetMark(r.budget), value(ratio, r.ratio[1]), value(ratio, r.ratio[2]), budgetMark(r.logBudget))
	}
	fmt.Fprintf(w, "\nMethod: %s.\n", method)
}

// budgetMark is the note a ratio with a budget gets in the table.
func budgetMark(budget float64) string {
	if budget == 0 {
		return ""
	}
	return fmt.Sprintf(" (budget %.2f)", budget)
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// value formats v, or says n/a for a figure that was not measured.
func value(format func(float64) string, v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return format(v)
}

func ratio(v float64) string     { return strconv.FormatFloat(v, 'f', 3, 64) }
func count0(v float64) string    { return strconv.FormatFloat(v, 'f', 0, 64) }
func millis(v float64) string    { return strconv.FormatFloat(v*1000, 'f', 2, 64) + " ms" }
func micros(v float64) string    { return strconv.FormatFloat(v*1e6, 'f', 2, 64) + " µs" }
func mebibytes(v float64) string { return strconv.FormatFloat(v/(1<<20), 'f', 2, 64) + " MiB" }
