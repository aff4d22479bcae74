// Command hello is a minimal HTTP greeter: a static binary that ships in a
// FROM scratch image.
//
// It answers GET and HEAD on every path, as text/plain:
//
//	/          Hello, World!
//	/{name}    Hello, {name}!  (the percent-decoded path segment: /a%2Fb greets a/b)
//	/healthz      ok, while the process runs (liveness)
//	/readyz       ok while serving; 503 from the moment shutdown begins (readiness)
//	/favicon.ico  404, as is /robots.txt: a browser's or a crawler's, not a name
//
// The query string is ignored. A name that is not valid UTF-8, holds a control
// character or an explicit bidirectional formatting character (U+202A-U+202E,
// U+2066-U+2069) or is longer than 256 bytes is answered 400; more than one
// path segment is 404; any other method is 405. The names healthz, readyz,
// favicon.ico and robots.txt are reserved: nobody called that can be greeted.
//
// `hello -h` lists the flags and $PORT; a port is a decimal number 0-65535.
// On SIGTERM or SIGINT it answers /readyz with 503 for -shutdown-delay, then
// drains for -shutdown-timeout; a second signal stops it at once. Logs are
// JSON lines on stdout, after a banner. Writing them never makes a request
// wait: lines stdout does not take in time are dropped, then counted. A
// clean stop first writes what is buffered, waiting up to 2 s for stdout.
// `hello -healthcheck` serves nothing: it asks the hello on the same address
// (without -addr, the one this binary runs as beside it) for /healthz within
// 2 s, exit 0 on 200.
//
// Exit codes: 0 after a clean shutdown, 1 when serving fails, the shutdown
// timeout cut requests off or a second signal came, 2 for bad flags.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// version and revision are set by the Makefile: -ldflags '-X main.version=...'.
var version, revision = "dev", "unknown"

const maxName = 256 // the longest name greeted, in bytes after decoding

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a bad flag or environment value: exit code 2, like the flag package.
type usageError struct{ error }

// run is the whole program; main only wires it to the process. SIGTERM, SIGINT
// or the end of ctx begins the shutdown, a second signal ends it at once.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "listen `address`; when not given and $PORT is set, :$PORT")
	delay := fs.Duration("shutdown-delay", 0, "on SIGTERM or SIGINT, keep serving this long with /readyz at 503 and Connection: close")
	timeout := fs.Duration("shutdown-timeout", 10*time.Second, "then let in-flight requests finish this long before cutting them off")
	accessLog := fs.Bool("access-log", false, "log one JSON line per request")
	maxConns := fs.Int("max-conns", 1024, "hold at most `n` connections, closing the longest-idle one to make room (0: no limit)")
	healthcheck := fs.Bool("healthcheck", false, "probe /healthz of the hello on -addr (loopback for no host), or of the one this binary serves as; exit 0 on 200, 1 otherwise")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *maxConns < 0 {
		return usageError{fmt.Errorf("-max-conns %d: want 0 (no limit) or more", *maxConns)}
	}
	if *showVersion {
		fmt.Fprintf(stdout, "hello %s (revision %s, %s)\n", version, revision, runtime.Version())
		return nil
	}
	if *healthcheck && !isSet(fs, "addr") {
		// The image's HEALTHCHECK has the container's environment, not the
		// arguments `docker run IMAGE -addr :9090` gave the hello beside it.
		if served := servingArgs(); served != nil {
			if err := fs.Parse(served); err != nil {
				return fmt.Errorf("healthcheck: the serving hello's arguments %q: %w", served, err)
			}
		}
	}
	if port := getenv("PORT"); !isSet(fs, "addr") && port != "" {
		if !isPort(port) {
			return usageError{fmt.Errorf("bad $PORT %q: want a decimal port, 0-65535", port)}
		}
		*addr = ":" + port
	}
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		return usageError{fmt.Errorf("bad -addr %q: want host:port, e.g. :8080", *addr)}
	}
	if !isPort(port) {
		return usageError{fmt.Errorf("bad port %q in -addr %q: want a decimal port, 0-65535", port, *addr)}
	}
	if *healthcheck {
		return probe(host, port)
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	h := &greeter{}
	logBuf := newLogBuffer(stdout)
	logs := slog.New(slog.NewJSONHandler(logBuf, nil))
	srv := newServer(h)
	if *accessLog {
		srv.Handler = &requestLog{logs: logs.Handler(), g: h}
	}
	srv.ErrorLog = slog.NewLogLogger(logs.Handler(), slog.LevelWarn) // net/http's own complaints
	if *maxConns > 0 {
		limited := limitConns(ln.(*net.TCPListener), *maxConns)
		ln, srv.ConnState = limited, limited.track
	}

	// The banner is written before any log line and is the first stdout line.
	_, realPort, _ := net.SplitHostPort(ln.Addr().String())
	fmt.Fprintf(stdout, "Welcome, user! Curl me (locally with Port %s) with your name as path :-D\n", realPort)
	logs.Info("listening", "addr", ln.Addr().String(), "version", version, "max_conns", *maxConns,
		"gomemlimit", debug.SetMemoryLimit(-1), // from $GOMEMLIMIT; math.MaxInt64 when unset
		"gomaxprocs", runtime.GOMAXPROCS(0))
	logDone := logBuf.start()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		logDone(context.Background(), logStopWait)
		return err
	case <-ctx.Done():
	case <-signals:
	}
	logs.Info("shutdown begun", "delay", delay.String(), "timeout", timeout.String())
	h.draining.Store(true)

	// Docker and Kubernetes send one SIGTERM, then SIGKILL; a person at a terminal
	// presses Ctrl-C twice, and means it: atOnce ends the delay, drain and log wait.
	atOnce, stopAtOnce := context.WithCancel(context.Background())
	defer stopAtOnce()
	go func() {
		select {
		case <-signals:
			logs.Warn("second signal: stopping at once")
			stopAtOnce()
		case <-atOnce.Done():
		}
	}()
	select {
	case <-time.After(*delay):
	case <-atOnce.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(atOnce, *timeout)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if atOnce.Err() != nil || err != nil {
		_ = srv.Close() // cuts off what is left; its error would only repeat ours
		if atOnce.Err() != nil {
			logDone(context.Background(), logAtOnceWait)
			return errors.New("stopped at once by a second signal")
		}
		logDone(atOnce, logStopWait)
		return fmt.Errorf("shutdown timeout %s cut off in-flight requests: %w", timeout, err)
	}
	logs.Info("stopped")
	logDone(atOnce, logStopWait) // a second signal ends the wait
	return nil
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// isPort is true for a port written as a decimal number 0-65535, with no
// sign, leading zero or name: net.Listen would take "+80", "0080" and "http".
func isPort(s string) bool {
	n, err := strconv.ParseUint(s, 10, 16)
	return err == nil && strconv.FormatUint(n, 10) == s
}

// greeter answers every route. One switch, no mux: ServeMux's patterns cost
// more per greeting than all of hello's own logic (docs/benchmarks.md).
type greeter struct {
	draining atomic.Bool // set when shutdown begins
}

// Header values shared by every response; net/http only reads them.
var (
	textPlain = []string{"text/plain; charset=utf-8"}
	nosniff   = []string{"nosniff"}
)

func (g *greeter) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.answer(w, r) }

// answer answers r and returns the status and body length, for the access log.
func (g *greeter) answer(w http.ResponseWriter, r *http.Request) (status, size int) {
	if g.draining.Load() {
		w.Header().Set("Connection", "close") // clients reconnect, to a replica that is not stopping
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return refuse(w, http.StatusMethodNotAllowed, "method not allowed: use GET or HEAD")
	}
	switch r.URL.Path {
	case "/healthz":
		return text(w, http.StatusOK, "ok\n")
	case "/readyz":
		if g.draining.Load() {
			return text(w, http.StatusServiceUnavailable, "shutting down\n")
		}
		return text(w, http.StatusOK, "ok\n")
	case "/favicon.ico", "/robots.txt": // every browser visit asks for the one, crawlers for the other
		return refuse(w, http.StatusNotFound, "not found: hello serves greetings, not files")
	}
	name, ok := nameOf(r.URL)
	if !ok {
		return refuse(w, http.StatusNotFound, "not found: the name is a single path segment, like /TutorialHero")
	}
	if why := whyRefused(name); why != "" {
		return refuse(w, http.StatusBadRequest, "bad name: "+why)
	}
	if name == "" {
		name = "World"
	}
	return text(w, http.StatusOK, "Hello, "+name+"!\n")
}

// nameOf returns the decoded single path segment, and false when the path
// has more than one. u.RawPath, when set, is the path as sent: it tells an
// escaped slash (/a%2Fb) from a separator, where u.EscapedPath() re-escapes.
func nameOf(u *url.URL) (string, bool) {
	if u.RawPath == "" {
		name, ok := strings.CutPrefix(u.Path, "/")
		return name, ok && !strings.Contains(name, "/")
	}
	seg, ok := strings.CutPrefix(u.RawPath, "/")
	if !ok || strings.Contains(seg, "/") {
		return "", false
	}
	name, err := url.PathUnescape(seg)
	return name, err == nil
}

// whyRefused says, never quoting it, why a name must not be echoed; "" if it may.
func whyRefused(name string) string {
	switch {
	case len(name) > maxName:
		return "longer than " + strconv.Itoa(maxName) + " bytes"
	case !utf8.ValidString(name):
		return "not valid UTF-8"
	case strings.ContainsFunc(name, unicode.IsControl): // U+0000-U+001F, U+007F-U+009F
		return "holds a control character"
	case strings.ContainsFunc(name, isExplicitBidi):
		return "holds a bidirectional control"
	}
	return ""
}

// isExplicitBidi is true for UAX #9's embeddings, overrides, isolates and their
// ends ("Trojan Source": /%E2%80%AEgnp.exe shows as "Hello, !exe.png"); not for
// LRM, RLM and ALM, which unicode.Bidi_Control holds and names in mixed scripts need.
func isExplicitBidi(r rune) bool {
	return '\u202a' <= r && r <= '\u202e' || '\u2066' <= r && r <= '\u2069'
}

// text writes a plain-text answer and returns its status and body length.
func text(w http.ResponseWriter, code int, body string) (status, size int) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = nosniff
	w.WriteHeader(code)
	// A failed write means the client went away; there is no one to tell.
	_, _ = io.WriteString(w, body) // #nosec G705 -- text/plain with nosniff, and a greeted name is validated (whyRefused)
	return code, len(body)
}

// refuse answers with http.Error, which adds a newline; see text.
func refuse(w http.ResponseWriter, code int, msg string) (status, size int) {
	http.Error(w, msg, code)
	return code, len(msg) + 1
}

// newServer is hello's server, with the limits the README's table lists.
func newServer(handler http.Handler) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,  // cuts off clients that dribble their headers
		ReadTimeout:       10 * time.Second, // bounds a whole request, body included
		WriteTimeout:      10 * time.Second, // bounds a client that does not read its answer
		IdleTimeout:       60 * time.Second, // frees idle keep-alive connections
		MaxHeaderBytes:    8 << 10,          // larger headers get 431
	}
}

// connLimit holds at most limit connections, so a client with a few thousand
// sockets cannot get a pod OOM-killed. At the cap it closes the one idle the
// longest (between requests, or before a whole request), as nginx does; when
// all are mid-request, the newest waits in Accept, the rest in the kernel.
type connLimit struct {
	*net.TCPListener
	limit   int
	order   atomic.Uint64 // stamps connections as they go idle
	waiting atomic.Bool   // Accept waits for a connection to go idle or close

	mu     sync.Mutex
	wake   *sync.Cond // with mu: a connection went idle or closed, or the listener closed
	conns  map[*limitedConn]struct{}
	closed bool
}

func limitConns(ln *net.TCPListener, limit int) *connLimit {
	l := &connLimit{TCPListener: ln, limit: limit, conns: make(map[*limitedConn]struct{}, limit)}
	l.wake = sync.NewCond(&l.mu)
	return l
}

// limitedConn embeds *net.TCPConn so net/http still finds CloseWrite (its
// graceful close after an error answer) and ReadFrom on it.
type limitedConn struct {
	*net.TCPConn
	l       *connLimit
	idle    atomic.Uint64 // when it went idle, in l.order; 0 while a request runs
	closing atomic.Bool   // claimed for closing, by its Close or an eviction, before the close
}

func (l *connLimit) Accept() (net.Conn, error) {
	tc, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	c := &limitedConn{TCPConn: tc, l: l}
	c.idle.Store(l.order.Add(1)) // it has sent nothing yet
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.conns) >= l.limit && !l.closed {
		l.waiting.Store(true) // before looking: see track
		if !l.evictLocked() {
			l.wake.Wait()
		}
	}
	l.waiting.Store(false)
	if l.closed {
		_ = tc.Close() // never served: nothing to report
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	return c, nil
}

// evictLocked closes the connection idle the longest, if none is closing.
func (l *connLimit) evictLocked() bool {
	var oldest *limitedConn
	var since uint64 // oldest's stamp, as read here: a stamp can change meanwhile
	for c := range l.conns {
		if c.closing.Load() {
			return false // its Close waits for mu to make room, then wakes Accept
		}
		if t := c.idle.Load(); t != 0 && (oldest == nil || t < since) {
			oldest, since = c, t
		}
	}
	if oldest == nil || !oldest.closing.CompareAndSwap(false, true) {
		return false
	}
	delete(l.conns, oldest)
	_ = oldest.TCPConn.Close() // its server goroutine sees the close and ends
	return true
}

func (l *connLimit) Close() error {
	l.mu.Lock()
	l.closed = true
	l.wake.Broadcast()
	l.mu.Unlock()
	return l.TCPListener.Close()
}

// track is the server's ConnState hook.
func (l *connLimit) track(nc net.Conn, state http.ConnState) {
	c := nc.(*limitedConn)
	switch state {
	case http.StateActive:
		c.idle.Store(0)
	case http.StateIdle:
		c.idle.Store(l.order.Add(1))
		if l.waiting.Load() { // after the store, so Accept either sees it or is woken
			l.mu.Lock()
			l.wake.Broadcast()
			l.mu.Unlock()
		}
	}
}

func (c *limitedConn) Close() error {
	if c.closing.CompareAndSwap(false, true) {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.wake.Broadcast()
		c.l.mu.Unlock()
	}
	return c.TCPConn.Close()
}

// requestLog is -access-log's handler: one JSON line per request, none for a
// probe answered 200. No client byte reaches a line raw: the target is
// escapeTarget's, the method a token net/http checked (docs/log.md).
type requestLog struct {
	logs slog.Handler
	g    *greeter
}

func (l *requestLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status, sent := l.g.answer(w, r)
	took := time.Since(start) // the line's time is start+took: one wall-clock read
	if status == http.StatusOK && (r.URL.Path == "/healthz" || r.URL.Path == "/readyz") {
		return
	}
	if r.Method == http.MethodHead {
		sent = 0 // net/http takes a HEAD's body from the handler and sends none of it
	}
	line := slog.NewRecord(start.Add(took), slog.LevelInfo, "request", 0)
	line.AddAttrs(slog.String("remote", r.RemoteAddr), slog.String("method", r.Method),
		slog.String("target", escapeTarget(r.RequestURI)), slog.Int("status", status),
		slog.Int("bytes", sent), slog.Duration("duration", took))
	_ = l.logs.Handle(r.Context(), line) // its only error would be logBuffer's, which has none
}

// escapeTarget returns the target as sent, every byte outside printable ASCII
// percent-encoded, as nginx logs it: /a%2Fb (greeted) and /a/b (404) stay
// apart, invalid UTF-8 keeps its value, and the target pastes into curl.
func escapeTarget(target string) string {
	i := 0
	for i < len(target) && '!' <= target[i] && target[i] <= '~' {
		i++
	}
	if i == len(target) {
		return target // the common case: nothing to escape, nothing allocated
	}
	const upperHex = "0123456789ABCDEF"
	b := []byte(target[:i])
	for _, c := range []byte(target[i:]) {
		if '!' <= c && c <= '~' {
			b = append(b, c)
		} else {
			b = append(b, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	return string(b)
}

// The log is written in batches: a write per line costs far more (docs/benchmarks.md).
const (
	logBufferSize = 1 << 20                // lines waiting besides the batch being written
	logFlushEvery = 50 * time.Millisecond  // how long a line waits for others to share its write
	logStopWait   = 2 * time.Second        // a clean stop's last write: the Deployment's 5 s delay + 10 s drain + 2 s fit its 20 s grace
	logAtOnceWait = 200 * time.Millisecond // what a second signal leaves the log: enough for a terminal to show why
)

// logBuffer is the writer under every log line: a bounded buffer, so a stdout
// nobody reads never makes a request wait (Docker's non-blocking log mode,
// Envoy's access log); a line that does not fit is dropped and counted.
type logBuffer struct {
	out  io.Writer
	wake chan struct{} // a line came into an empty buffer, or the buffer passed half full

	mu      sync.Mutex
	lines   []byte // waiting for out
	dropped int    // lines dropped since the last report

	spare []byte // drain's: the last batch written, whose memory the next one reuses
}

func newLogBuffer(out io.Writer) *logBuffer {
	return &logBuffer{out: out, wake: make(chan struct{}, 1)}
}

// Write takes one line and never blocks; the loggers above have no one to tell of an error.
func (b *logBuffer) Write(line []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before := len(b.lines)
	if before+len(line) > logBufferSize {
		b.dropped++
		return len(line), nil
	}
	b.lines = append(b.lines, line...)
	if before == 0 || before < logBufferSize/2 && len(b.lines) >= logBufferSize/2 {
		select {
		case b.wake <- struct{}{}:
		default: // drain has been woken already
		}
	}
	return len(line), nil
}

// start runs drain; the function it returns stops it and waits, at most until
// ctx ends or wait passes, for it to write what is left.
func (b *logBuffer) start() func(ctx context.Context, wait time.Duration) {
	stop, drained := make(chan struct{}), make(chan struct{})
	go func() { b.drain(stop); close(drained) }()
	return func(ctx context.Context, wait time.Duration) {
		close(stop)
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		select {
		case <-drained:
		case <-ctx.Done():
		}
	}
}

// drain writes the buffer logFlushEvery after a batch's first line, at once when half full, and when stopped.
func (b *logBuffer) drain(stop <-chan struct{}) {
	batch := time.NewTimer(logFlushEvery)
	for {
		select {
		case <-b.wake:
		case <-stop:
			b.flush()
			return
		}
		batch.Reset(logFlushEvery)
		select {
		case <-batch.C:
		case <-b.wake: // half full
		case <-stop:
		}
		b.flush()
	}
}

// flush writes the buffered lines to out in one Write, then a line that
// counts the dropped ones, if any; a failed Write's lines count as dropped.
func (b *logBuffer) flush() {
	b.mu.Lock()
	batch, dropped := b.lines, b.dropped
	b.lines, b.dropped = b.spare[:0], 0
	b.mu.Unlock()
	b.spare = batch
	if len(batch) > 0 {
		if n, err := b.out.Write(batch); err != nil {
			dropped += bytes.Count(batch[n:], []byte{'\n'}) // the lines not wholly written
		} else if dropped == 0 {
			return
		}
	}
	if dropped > 0 {
		var report bytes.Buffer
		slog.New(slog.NewJSONHandler(&report, nil)).Warn("log lines dropped", "dropped", dropped)
		if _, err := b.out.Write(report.Bytes()); err != nil {
			b.mu.Lock()
			b.dropped += dropped
			b.mu.Unlock()
		}
	}
}

// servingArgs returns the arguments of the lowest PID running this same file (PID 1
// in a container, tini's child under `docker run --init`); nil if /proc does not tell.
func servingArgs() []string {
	self, err := os.Stat("/proc/self/exe")
	if err != nil {
		return nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	serving := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() || serving != 0 && pid > serving {
			continue
		}
		if exe, err := os.Stat("/proc/" + p.Name() + "/exe"); err == nil && os.SameFile(exe, self) {
			serving = pid
		}
	}
	if serving == 0 {
		return nil
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(serving) + "/cmdline") // #nosec G304 -- /proc/<pid>/cmdline of a process running this binary
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")[1:]
}

// probe asks the hello on host and port for /healthz, within 2 s in all, in
// HTTP/1.0 over a plain connection: the binary carries no HTTP client.
func probe(host, port string) error {
	// Go listens on both families for a wildcard host: 127.0.0.1 reaches it.
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, port)
	deadline := time.Now().Add(2 * time.Second) // one bound for the dial and the exchange
	conn, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer conn.Close()
	// Neither fails but on a broken connection, which the read then reports.
	_ = conn.SetDeadline(deadline)
	_, _ = io.WriteString(conn, "GET /healthz HTTP/1.0\r\nHost: "+addr+"\r\n\r\n")
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	if f := strings.Fields(status); len(f) < 2 || f[1] != "200" {
		return fmt.Errorf("healthcheck: %s answered %q", addr, strings.TrimSpace(status))
	}
	return nil
}
