package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The driver's verdicts rest on reading wrk, ab, callgrind and go test
// correctly; these tests pin that reading to real reports.

const wrkReport = `Running 2s test @ http://127.0.0.1:8080/TutorialHero
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.19ms    1.20ms  31.46ms   93.64%
    Req/Sec    29.71k     2.43k   32.05k    85.00%
  Latency Distribution
     50%    2.02ms
     75%    2.24ms
     90%    2.60ms
     99%  652.00us
  59130 requests in 2.00s, 7.95MB read
  Socket errors: connect 1, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  29546.08
Transfer/sec:      3.97MB
`

func TestParseWrk(t *testing.T) {
	got, err := parseWrk(wrkReport)
	want := wrkResult{requests: 59130, perSecond: 29546.08, p99: 652 * time.Microsecond, socketErrors: 6, non2xx: 7}
	if err != nil || got != want {
		t.Errorf("parseWrk = %+v, %v, want %+v", got, err, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:8080 Connection refused\n"); err == nil {
		t.Error("parseWrk of a report without figures: no error")
	}
}

func TestCheckAB(t *testing.T) {
	report := func(complete, failed, non2xx string) string {
		s := "Complete requests:      " + complete + "\nFailed requests:        " + failed + "\n"
		if non2xx != "" {
			s += "Non-2xx responses:      " + non2xx + "\n"
		}
		return s + "Keep-Alive requests:    1000\n"
	}
	tests := []struct {
		name    string
		report  string
		wantErr bool
	}{
		{"all answered", report("1000", "0", ""), false},
		{"fewer complete", report("999", "0", ""), true},
		{"failed", report("1000", "2", ""), true},
		{"non-2xx", report("1000", "0", "1000"), true},
		{"no report", "apr_socket_recv: Connection refused (111)\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkAB(tc.report, 1000); (err != nil) != tc.wantErr {
				t.Errorf("checkAB = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestCallgrindTotal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "callgrind.out.1")
	dump := "# callgrind format\nversion: 1\ncmd: ./floor 127.0.0.1:1\npart: 1\nevents: Ir\nfn=(1) main\n0 5\nsummary: 51272515\ntotals: 51272515\n"
	if err := os.WriteFile(path, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := callgrindTotal(path); err != nil || got != 51272515 {
		t.Errorf("callgrindTotal = %v, %v, want 51272515", got, err)
	}
}

func TestParseGoBench(t *testing.T) {
	out := "goos: linux\ngoarch: amd64\npkg: hello\nBenchmarkGreet-2   \t  412345\t      2908 ns/op\t    1040 B/op\t      10 allocs/op\nPASS\n"
	if got, err := parseGoBench(out); err != nil || got != [3]float64{2908, 1040, 10} {
		t.Errorf("parseGoBench = %v, %v, want [2908 1040 10]", got, err)
	}
	if got, err := parseGoBench("testing: warning: no tests to run\nPASS\n"); err != nil || !math.IsNaN(got[0]) {
		t.Errorf("parseGoBench without a benchmark line = %v, %v, want NaN (n/a)", got, err)
	}
	if _, err := parseGoBench(out + out); err == nil {
		t.Error("parseGoBench of two benchmark lines: no error")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestMedians: the ratios are medians of per-round ratios, each round's
// figures against the same round's, not ratios of the medians.
func TestMedians(t *testing.T) {
	hello, logged, floor := []float64{10, 20, 30}, []float64{11, 26, 30}, []float64{10, 10, 10}
	v, ratio := medians([3][]float64{hello, logged, floor})
	if v != [3]float64{20, 26, 10} || ratio != [3]float64{2, 2.6, 1.1} {
		t.Errorf("medians = %v, ratios %v; want [20 26 10] and [2 2.6 1.1] (hello/floor, hello -access-log/floor, hello -access-log/hello)", v, ratio)
	}
}

// A server that dies under callgrind is an error that names it and quotes
// valgrind's log, never a figure.
func TestCallgrindNamesTheServerThatDied(t *testing.T) {
	for _, tool := range []string{"valgrind", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found: .ci/run installs it", tool)
			}
			t.Skipf("%s not found (make bench-tools installs it)", tool)
		}
	}
	died := server{"hello -dies", "/bin/false", func(string) []string { return nil }}
	_, err := callgrind(died, 1, "0", "0", t.TempDir())
	if err == nil {
		t.Fatal("callgrind of a server that exits at once: no error")
	}
	for _, want := range []string{"hello -dies under callgrind", "valgrind's log ends:", "Callgrind"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("callgrind's error does not say %q:\n%v", want, err)
		}
	}
}
