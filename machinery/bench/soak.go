package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// soakConfig holds the soak's flags; each check reads what it needs.
type soakConfig struct {
	hello         string
	duration      time.Duration
	conns         int
	dribblers     int
	headerTimeout time.Duration
	shutdownDelay time.Duration
	flood         int
}

func runSoak(args []string) error {
	var c soakConfig
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	fs.StringVar(&c.hello, "hello", "./hello", "hello `binary`")
	fs.DurationVar(&c.duration, "duration", 60*time.Second, "length of the load check")
	fs.IntVar(&c.conns, "conns", 256, "wrk connections in the load and SIGTERM checks")
	fs.IntVar(&c.dribblers, "dribblers", 300, "slowloris connections")
	fs.DurationVar(&c.headerTimeout, "header-timeout", 5*time.Second, "hello's ReadHeaderTimeout")
	fs.DurationVar(&c.shutdownDelay, "shutdown-delay", 5*time.Second, "-shutdown-delay for the SIGTERM check")
	fs.IntVar(&c.flood, "flood", floodConns, "connection flood: this many connections send a GET, then this many send nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}

	// Each check gets a fresh hello, started with the check's flags.
	checks := []struct {
		name  string
		flags []string
		run   func(soakConfig, *proc) (string, error)
	}{
		{"load", nil, soakLoad},
		{"slowloris", nil, slowloris},
		{"SIGTERM under load", []string{"-shutdown-delay", c.shutdownDelay.String()}, sigtermUnderLoad},
		{"oversized headers", nil, oversizedHeaders},
		{"large GET body", nil, largeBody},
		{"connection flood", nil, connectionFlood},
	}
	var failed []string
	for _, check := range checks {
		t0 := time.Now()
		figures, err := runCheck(c, check.flags, check.run)
		status := "ok"
		if err != nil {
			status, failed = "FAIL: "+err.Error(), append(failed, check.name)
		}
		fmt.Printf("%-20s %s (%.1fs): %s\n", check.name, figures, time.Since(t0).Seconds(), status)
	}
	if len(failed) > 0 {
		return fmt.Errorf("broken promises: %s", strings.Join(failed, ", "))
	}
	return nil
}

// runCheck starts hello with flags, waits until it greets, runs check
// against it and kills it after.
func runCheck(c soakConfig, flags []string, check func(soakConfig, *proc) (string, error)) (string, error) {
	p, err := start(helloServer(c.hello, flags...), nil)
	if err != nil {
		return "", err
	}
	defer p.kill()
	if _, err := p.ready(10 * time.Second); err != nil {
		return "", err
	}
	return check(c, p)
}

// soakLoad: wrk at saturation sees no socket error and no non-2xx, and the
// resident set is flat: the last window's peak is within 10% (+1 MiB) of the
// first window's.
func soakLoad(c soakConfig, p *proc) (string, error) {
	var samples []int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		every(250*time.Millisecond, stop, func() {
			if v, err := p.rss(); err == nil {
				samples = append(samples, v)
			}
		})
	}()
	r, err := wrk(p.url(), 2, c.conns, c.duration, "")
	close(stop)
	<-sampled
	if err != nil {
		return "", err
	}
	window := min(40, len(samples)/3) // 10 s of 250 ms samples, or a third of a short run
	if window == 0 {
		return "", fmt.Errorf("only %d RSS samples", len(samples))
	}
	first, last := slices.Max(samples[:window]), slices.Max(samples[len(samples)-window:])
	figures := fmt.Sprintf("%v, %d connections: %d requests, %.0f req/s, p99 %v, %d socket errors, %d non-2xx, peak RSS first %.1f MiB, last %.1f MiB",
		c.duration, c.conns, r.requests, r.perSecond, r.p99, r.socketErrors, r.non2xx, mib(first), mib(last))
	switch {
	case r.socketErrors != 0 || r.non2xx != 0:
		return figures, errors.New("socket errors or non-2xx responses under load")
	case float64(last) > float64(first)*1.10+1<<20:
		return figures, errors.New("RSS grew by more than 10% (+1 MiB) under steady load")
	}
	return figures, nil
}

// slowloris: while c.dribblers connections send their headers one byte at a
// time, a normal client's greetings are each answered within 100 ms, and the
// server closes every dribbler at its header timeout (within -0.1 s/+2 s).
func slowloris(c soakConfig, p *proc) (string, error) {
	cut := make([]time.Duration, c.dribblers)
	var wg sync.WaitGroup
	limit := c.headerTimeout + 5*time.Second
	for i := range cut {
		conn, err := net.Dial("tcp", p.addr)
		if err != nil {
			return "", fmt.Errorf("dribbler %d: %w", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cut[i] = dribble(conn, limit)
		}()
	}
	var slowest time.Duration
	var greeted int
	for deadline := time.Now().Add(c.headerTimeout - 500*time.Millisecond); time.Now().Before(deadline); greeted++ {
		d, err := timedGet(p.url())
		if err != nil {
			return "", fmt.Errorf("normal client among dribblers: %w", err)
		}
		slowest = max(slowest, d)
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	figures := fmt.Sprintf("%d dribblers: cut off after %v to %v (header timeout %v); %d greetings meanwhile, slowest %v",
		c.dribblers, slices.Min(cut).Round(time.Millisecond), slices.Max(cut).Round(time.Millisecond), c.headerTimeout, greeted, slowest.Round(time.Microsecond))
	switch {
	case slowest > 100*time.Millisecond:
		return figures, errors.New("a normal client waited more than 100 ms")
	case slices.Min(cut) < c.headerTimeout-100*time.Millisecond || slices.Max(cut) > c.headerTimeout+2*time.Second:
		return figures, errors.New("dribblers were not cut off at the header timeout")
	}
	return figures, nil
}

// dribble sends a request's headers one byte every 200 ms, never ending
// them, and returns how long the server kept the connection open (limit if
// it never closed it).
func dribble(conn net.Conn, limit time.Duration) time.Duration {
	defer conn.Close()
	t0 := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		// Either call fails only once the connection is closed: when it ends is what counts.
		_ = conn.SetReadDeadline(t0.Add(limit))
		_, _ = io.Copy(io.Discard, conn) // returns when the server closes the connection
		closed <- time.Since(t0)
	}()
	header := "GET /" + name + " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	for i := 0; ; i++ {
		if i >= len(header) {
			header += "X-Dribble: 1\r\n"
		}
		select {
		case d := <-closed:
			return d
		case <-time.After(200 * time.Millisecond):
			_, _ = conn.Write([]byte{header[i]}) // an error here means the server closed; the reader returns
		}
	}
}

// sigtermUnderLoad: SIGTERM arrives 1 s into a load that ends before the
// shutdown delay does; the load sees no socket error and no non-2xx, and
// hello exits 0 once the delay and the drain are over.
func sigtermUnderLoad(c soakConfig, p *proc) (string, error) {
	type result struct {
		r   wrkResult
		err error
	}
	load := make(chan result, 1)
	go func() {
		r, err := wrk(p.url(), 2, c.conns, c.shutdownDelay, "")
		load <- result{r, err}
	}()
	time.Sleep(time.Second)
	signalled := time.Now()
	if err := p.signal(syscall.SIGTERM); err != nil {
		return "", err
	}
	res := <-load
	if res.err != nil {
		return "", res.err
	}
	var exit error
	select {
	case exit = <-p.exited:
	case <-time.After(c.shutdownDelay + 15*time.Second):
		return "", errors.New("hello did not exit within the shutdown delay + 15 s")
	}
	figures := fmt.Sprintf("-shutdown-delay %v, %d connections: %d requests, %d socket errors, %d non-2xx; exit %v after %v",
		c.shutdownDelay, c.conns, res.r.requests, res.r.socketErrors, res.r.non2xx, exitStatus(exit), time.Since(signalled).Round(time.Millisecond))
	switch {
	case res.r.socketErrors != 0 || res.r.non2xx != 0:
		return figures, errors.New("load through the shutdown delay saw socket errors or non-2xx responses")
	case exit != nil:
		return figures, errors.New("hello did not exit 0 after SIGTERM")
	}
	return figures, nil
}

func exitStatus(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

// oversizedHeaders: a request with 64 KiB of headers gets 431.
func oversizedHeaders(_ soakConfig, p *proc) (string, error) {
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return "", err
	}
	req := "GET /" + name + " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"
	go conn.Write([]byte(req)) // the server may answer before it has read it all
	status, err := bufio.NewReader(conn).ReadString('\n')
	figures := fmt.Sprintf("64 KiB of headers: %q", strings.TrimSpace(status))
	if err != nil {
		return figures, fmt.Errorf("no status line: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 431 ") {
		return figures, errors.New("want 431")
	}
	return figures, nil
}

// largeBody: a GET that declares a 1 GiB body and streams it is greeted at
// once, and the server closes the connection after reading a bounded part.
func largeBody(_ soakConfig, p *proc) (string, error) {
	const declared, bound = 1 << 30, 64 << 20
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	t0 := time.Now()
	if err := conn.SetDeadline(t0.Add(10 * time.Second)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(conn, "GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n", name, declared); err != nil {
		return "", err
	}
	sent := make(chan int64, 1)
	go func() {
		var n int64
		chunk := make([]byte, 64<<10)
		for n < declared {
			m, err := conn.Write(chunk)
			n += int64(m)
			if err != nil {
				break
			}
		}
		sent <- n
	}()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", fmt.Errorf("no response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	answered := time.Since(t0)
	if err != nil {
		return "", fmt.Errorf("reading the greeting: %w", err)
	}
	// Returns when the server closes the connection; if it never does, the
	// deadline ends it and n below shows how much the server read.
	_, _ = io.Copy(io.Discard, br)
	n := <-sent
	figures := fmt.Sprintf("GET with a 1 GiB body: %d %q after %v, connection closed after %.1f MiB sent",
		resp.StatusCode, body, answered.Round(time.Millisecond), mib(n))
	switch {
	case resp.StatusCode != http.StatusOK || string(body) != "Hello, "+name+"!\n":
		return figures, errors.New("want 200 and the greeting")
	case n >= bound:
		return figures, fmt.Errorf("the server read %d MiB or more of the body", bound>>20)
	}
	return figures, nil
}

// maxFloodRSS bounds hello's resident set under a connection flood: under
// the Deployment's 64 MiB limit with room for the runtime and the kernel.
const maxFloodRSS = 48 << 20

// connectionFlood: c.flood connections that each send a GET and stay open,
// then c.flood more that send nothing (see flood). hello's RSS stays under
// maxFloodRSS, a fresh client is answered within 1 s at every point, no
// socket error but the closes hello chose, and SIGTERM afterwards exits 0.
func connectionFlood(c soakConfig, p *proc) (string, error) {
	r, err := flood(p.addr, c.flood, p.rss)
	if err != nil {
		return "", err
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return "", err
	}
	var exit error
	select {
	case exit = <-p.exited:
	case <-time.After(15 * time.Second):
		return r.String(), errors.New("hello did not exit within 15 s of SIGTERM")
	}
	figures := fmt.Sprintf("%v; exit %v after SIGTERM", r, exitStatus(exit))
	switch {
	case r.errors > 0:
		return figures, errors.New("socket errors in the flood")
	case r.peakRSS >= maxFloodRSS:
		return figures, fmt.Errorf("hello's RSS reached %.1f MiB, want under %d MiB", mib(r.peakRSS), maxFloodRSS>>20)
	case exit != nil:
		return figures, errors.New("hello did not exit 0 after SIGTERM")
	}
	return figures, nil
}
