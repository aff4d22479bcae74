package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// floodConns is the flood's size unless a flag sets it (soak's -flood,
	// flood's -conns): this many connections send a GET, then this many
	// send nothing.
	floodConns = 6000
	// floodDialers bounds the dials in flight, so the flood never overruns
	// the listen backlog (somaxconn, 4096 here) of a server that accepts.
	floodDialers = 32
	// floodHold is how long the whole flood stays open, probed, at the end.
	floodHold = 2 * time.Second
	// freshLimit is the promise: a fresh client is answered within it.
	freshLimit = time.Second
	// floodGiveUp stops the flood after this many socket errors: the
	// promise is broken already, and the server may be gone.
	floodGiveUp = 100
)

// floodReport is what a flood saw.
type floodReport struct {
	conns      int           // per phase: conns that sent a GET, then conns that sent nothing
	peakRSS    int64         // of the server, sampled; 0 when not sampled
	probes     int           // fresh greetings asked for during and after the flood
	slowest    time.Duration // the slowest fresh greeting that was answered
	closed     int64         // flood connections the server closed (after their answer, or silent)
	errors     int64         // connect errors, failed or wrong answers, fresh clients not answered in time
	firstError string
}

func (r floodReport) String() string {
	s := fmt.Sprintf("%d connections with one GET, then %d silent: ", r.conns, r.conns)
	if r.peakRSS > 0 {
		s += fmt.Sprintf("peak RSS %.1f MiB, ", mib(r.peakRSS))
	}
	s += fmt.Sprintf("slowest of %d fresh greetings %v, %d closed by the server, %d socket errors",
		r.probes, r.slowest.Round(time.Millisecond), r.closed, r.errors)
	if r.firstError != "" {
		s += " (first: " + r.firstError + ")"
	}
	return s
}

// flood opens n connections to addr that each send one GET, read the answer
// and stay open, then n more that send nothing, holds them all for floodHold
// and closes them. Throughout, a fresh client greets every 100 ms and must be
// answered within freshLimit; rss, if not nil, is sampled for the peak. A
// connection the server closes after its answer, or while silent, is the
// server's choice and counted, not an error; the flood closes its side then,
// so that a proxy in between (docker-proxy) does not keep it open.
// The returned error is for a flood that could not run.
func flood(addr string, n int, rss func() (int64, error)) (floodReport, error) {
	if err := roomForFiles(2*n + 2*floodDialers + 64); err != nil {
		return floodReport{}, err
	}
	f := &flooder{addr: addr, report: floodReport{conns: n}}
	stop := make(chan struct{})
	var background sync.WaitGroup
	if rss != nil {
		background.Add(1)
		go func() { defer background.Done(); f.sample(rss, stop) }()
	}
	background.Add(1)
	go func() { defer background.Done(); f.probe(stop) }()

	f.open(n, true)
	f.open(n, false)
	time.Sleep(floodHold) // the flood is held, and probed, this long
	close(stop)
	background.Wait()

	f.ending.Store(true)
	f.mu.Lock()
	for _, c := range f.conns {
		_ = c.Close() // the watcher's Read returns; the connection is done with
	}
	f.mu.Unlock()
	f.watchers.Wait()
	r := f.report
	r.closed, r.errors = f.closed.Load(), f.errors.Load()
	return r, nil
}

// flooder is one flood in progress.
type flooder struct {
	addr     string
	closed   atomic.Int64
	errors   atomic.Int64
	ending   atomic.Bool // set before the flood closes its own connections
	watchers sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn
	report floodReport // firstError, peakRSS, probes and slowest, under mu
}

func (f *flooder) fail(format string, args ...any) {
	f.errors.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.report.firstError == "" {
		f.report.firstError = fmt.Sprintf(format, args...)
	}
}

// open opens n connections, floodDialers at a time, each sending a GET and
// reading its answer when get is set. It stops early once floodGiveUp
// errors are counted.
func (f *flooder) open(n int, get bool) {
	jobs := make(chan struct{})
	var dialers sync.WaitGroup
	for range floodDialers {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			for range jobs {
				f.openOne(get)
			}
		}()
	}
	for i := 0; i < n && f.errors.Load() < floodGiveUp; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	dialers.Wait()
}

func (f *flooder) openOne(get bool) {
	conn, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		f.fail("connect: %v", err)
		return
	}
	f.mu.Lock()
	f.conns = append(f.conns, conn)
	f.mu.Unlock()
	var r io.Reader = conn
	if get {
		br := bufio.NewReaderSize(conn, 1024)
		if err := greetOn(conn, br); err != nil {
			f.fail("flood GET: %v", err)
			return
		}
		r = br
	}
	f.watchers.Add(1)
	go func() { defer f.watchers.Done(); f.watch(conn, r) }()
}

// greetOn sends a GET on conn and wants a 200 answer, read through br, within 10 s.
func greetOn(conn net.Conn, br *bufio.Reader) error {
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, "GET /"+name+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if err := resp.Body.Close(); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d, want 200", resp.StatusCode)
	}
	return conn.SetDeadline(time.Time{})
}

// watch waits until the server closes conn (counted) or the flood ends. The
// server must send nothing more.
func (f *flooder) watch(conn net.Conn, r io.Reader) {
	var b [1]byte
	n, err := r.Read(b[:])
	switch {
	case f.ending.Load():
	case n > 0:
		f.fail("the server sent %q on a flood connection after its answer", b[:n])
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		f.closed.Add(1)
	default:
		f.fail("flood connection: %v", err)
	}
	_ = conn.Close() // the server closed it, or the flood did
}

// probe greets as a fresh client every 100 ms until stop closes.
func (f *flooder) probe(stop <-chan struct{}) {
	every(100*time.Millisecond, stop, func() {
		d, err := timedGet("http://" + f.addr + "/" + name)
		f.mu.Lock()
		f.report.probes++
		if err == nil {
			f.report.slowest = max(f.report.slowest, d)
		}
		f.mu.Unlock()
		switch {
		case err != nil:
			f.fail("fresh client: %v", err)
		case d > freshLimit:
			f.fail("fresh client answered after %v, want within %v", d.Round(time.Millisecond), freshLimit)
		}
	})
}

// sample keeps the peak of rss, every 50 ms, until stop closes.
func (f *flooder) sample(rss func() (int64, error), stop <-chan struct{}) {
	every(50*time.Millisecond, stop, func() {
		if v, err := rss(); err == nil {
			f.mu.Lock()
			f.report.peakRSS = max(f.report.peakRSS, v)
			f.mu.Unlock()
		}
	})
}

// roomForFiles makes sure this process may open need files: it raises the
// soft RLIMIT_NOFILE to need when it is lower (Go's os package has already
// raised it to the hard limit at start), and fails when the hard limit is
// lower than need.
func roomForFiles(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	want := uint64(max(need, 0))
	if lim.Cur >= want {
		return nil
	}
	if lim.Max < want {
		return fmt.Errorf("the flood needs %d open files, and the hard limit is %d: raise it (ulimit -Hn %d as root) or flood fewer connections", want, lim.Max, want)
	}
	lim.Cur = want
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// runFlood is `bench flood`: one flood against a server that
// already runs, such as a container (machinery/container runs it).
func runFlood(args []string) error {
	fs := flag.NewFlagSet("flood", flag.ExitOnError)
	addr := fs.String("addr", "", "the server's `host:port`, on 127.0.0.1")
	conns := fs.Int("conns", floodConns, "connections per phase: this many send a GET, then this many send nothing")
	pid := fs.Int("pid", 0, "the server's process `id`, to sample its RSS (0: not sampled)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(*addr); err != nil || host != "127.0.0.1" {
		return fmt.Errorf("-addr %q: want 127.0.0.1:PORT; the flood stays on loopback", *addr)
	}
	var rss func() (int64, error)
	if *pid > 0 {
		rss = func() (int64, error) { return vmRSS(*pid) }
	}
	r, err := flood(*addr, *conns, rss)
	if err != nil {
		return err
	}
	fmt.Println("connection flood:", r)
	if r.errors > 0 {
		return errors.New("socket errors in the flood")
	}
	return nil
}
