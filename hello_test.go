package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	textPlainUTF8 = "text/plain; charset=utf-8"
	long256       = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" +
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" +
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" +
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

var greetTests = []struct {
	name, method, target string
	code                 int
	body                 string // exact for 200 (HEAD too: the recorder keeps what net/http drops); a prefix for errors
}{
	{"seed walk", "GET", "/TutorialHero", 200, "Hello, TutorialHero!\n"},
	{"root", "GET", "/", 200, "Hello, World!\n"},
	{"head", "HEAD", "/TutorialHero", 200, "Hello, TutorialHero!\n"},
	{"utf-8", "GET", "/J%C3%BCrgen", 200, "Hello, Jürgen!\n"},
	{"raw utf-8", "GET", "/Jürgen", 200, "Hello, Jürgen!\n"},
	{"space", "GET", "/Tutorial%20Hero", 200, "Hello, Tutorial Hero!\n"},
	{"escaped slash", "GET", "/a%2Fb", 200, "Hello, a/b!\n"},
	{"escaped slash and escape", "GET", "/a%2F%C3%BC", 200, "Hello, a/ü!\n"},
	{"query ignored", "GET", "/Query?name=other&x=%00", 200, "Hello, Query!\n"},
	{"markup is text", "GET", "/%3Cscript%3E", 200, "Hello, <script>!\n"},
	{"256 bytes", "GET", "/" + long256, 200, "Hello, " + long256 + "!\n"},
	{"dot segment", "GET", "/..", 200, "Hello, ..!\n"},
	{"257 bytes", "GET", "/" + long256 + "x", 400, "bad name: longer than 256 bytes"},
	{"257 bytes decoded", "GET", "/" + strings.Repeat("%C3%BC", 129), 400, "bad name: longer than 256 bytes"},
	{"NUL", "GET", "/a%00b", 400, "bad name: holds a control character"},
	{"newline", "GET", "/a%0Ab", 400, "bad name: holds a control character"},
	{"carriage return", "GET", "/a%0D%0ASet-Cookie:x", 400, "bad name: holds a control character"},
	{"escape char", "GET", "/%1B%5B31m", 400, "bad name: holds a control character"},
	{"DEL", "GET", "/a%7F", 400, "bad name: holds a control character"},
	{"C1 control", "GET", "/a%C2%85", 400, "bad name: holds a control character"},
	{"last C1 control", "GET", "/%C2%9F", 400, "bad name: holds a control character"},
	{"after C1 is fine", "GET", "/%C2%A0", 200, "Hello, \u00a0!\n"},
	{"bidi override", "GET", "/%E2%80%AEgnp.exe", 400, "bad name: holds a bidirectional control"},
	{"first bidi embedding", "GET", "/a%E2%80%AA", 400, "bad name: holds a bidirectional control"},
	{"bidi isolate", "GET", "/%E2%81%A6x", 400, "bad name: holds a bidirectional control"},
	{"last bidi isolate", "GET", "/%E2%81%A9", 400, "bad name: holds a bidirectional control"},
	{"right-to-left mark", "GET", "/%E2%80%8F", 200, "Hello, \u200f!\n"},
	{"zero-width joiner", "GET", "/%F0%9F%91%A9%E2%80%8D%F0%9F%92%BB", 200, "Hello, \U0001f469\u200d\U0001f4bb!\n"},
	{"invalid UTF-8", "GET", "/%FF", 400, "bad name: not valid UTF-8"},
	{"overlong UTF-8", "GET", "/%C0%AF", 400, "bad name: not valid UTF-8"},
	{"surrogate", "GET", "/%ED%A0%80", 400, "bad name: not valid UTF-8"},
	{"two segments", "GET", "/a/b", 404, "not found"},
	{"trailing slash", "GET", "/a/", 404, "not found"},
	{"empty segments", "GET", "//", 404, "not found"},
	{"two segments, one escaped slash", "GET", "/a%2Fb/c", 404, "not found"},
	{"favicon", "GET", "/favicon.ico", 404, "not found: hello serves greetings, not files"},
	{"robots.txt", "GET", "/robots.txt", 404, "not found: hello serves greetings, not files"},
	{"healthz", "GET", "/healthz", 200, "ok\n"},
	{"readyz", "GET", "/readyz", 200, "ok\n"},
	{"healthz head", "HEAD", "/healthz", 200, "ok\n"},
	{"post", "POST", "/TutorialHero", 405, "method not allowed"},
	{"put", "PUT", "/", 405, "method not allowed"},
	{"delete", "DELETE", "/healthz", 405, "method not allowed"},
	{"options", "OPTIONS", "/x", 405, "method not allowed"},
	{"made-up method", "BREW", "/coffee", 405, "method not allowed"},
}

func TestGreet(t *testing.T) {
	h := &greeter{}
	for _, tc := range greetTests {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.target, nil))
			body := w.Body.String()
			ok := body == tc.body
			if tc.code != 200 {
				ok = strings.HasPrefix(body, tc.body) && strings.Count(body, "\n") == 1 && strings.HasSuffix(body, "\n")
			}
			if w.Code != tc.code || !ok {
				t.Errorf("%s %q = %d %q, want %d %q", tc.method, tc.target, w.Code, body, tc.code, tc.body)
			}
			wantHeaders := map[string]string{
				"Content-Type":           textPlainUTF8,
				"X-Content-Type-Options": "nosniff",
			}
			if tc.code == 405 {
				wantHeaders["Allow"] = "GET, HEAD"
			}
			for k, v := range wantHeaders {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s %q: header %s = %q, want %q", tc.method, tc.target, k, got, v)
				}
			}
		})
	}
}

// TestGreetHostileNamesEchoNothing checks that a rejected name comes back
// nowhere in the answer.
func TestGreetHostileNamesEchoNothing(t *testing.T) {
	h := &greeter{}
	for _, tc := range greetTests {
		if tc.code == 200 {
			continue
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.target, nil))
		seg := strings.TrimPrefix(tc.target, "/")
		if len(seg) > 2 && strings.Contains(w.Body.String(), seg) {
			t.Errorf("%s %q: body %q echoes the name", tc.method, tc.target, w.Body.String())
		}
	}
}

// explicitBidi are the codepoints of CVE-2021-42574 ("Trojan Source"), the
// explicit bidirectional formatting characters (isExplicitBidi).
const explicitBidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"

// FuzzGreet checks invariants for any request target: the answer is 200, 400
// or 404; a 200 greets exactly the decoded segment, which holds no control
// and no bidirectional control; no header carries input. And for the access
// log: one JSON line (none for a probe answered 200) holding nothing a
// terminal acts on, bytes is what was sent, and the target it logs, sent
// again, gets the same answer: two requests answered differently are never
// logged alike.
func FuzzGreet(f *testing.F) {
	for _, tc := range greetTests {
		f.Add(tc.target)
	}
	for _, s := range []string{"/%", "/%zz", "/%2", "*", "http://h/x", "/\xff", "/a\x00", "/%C0%80",
		"/%E2%80%8F", "/%F4%90%80%80", "/%2F", "/%2F%2F", "/a%2F", "/healthz/", "/readyz%2F", "/%68ealthz",
		"/\u202egnp.exe", "/x?q=\u2066\u009b", "/J\u00fcrgen%2Fx", "/\u00fc/%2F", "/a b", "/a#b", "/\u2028", "/x?\xc0"} {
		f.Add(s)
	}
	var out bytes.Buffer
	logBuf := newLogBuffer(&out)
	h := &requestLog{logs: slog.NewJSONHandler(logBuf, nil), g: &greeter{}}
	serve := func(target string, u *url.URL) (*httptest.ResponseRecorder, string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL, r.RequestURI = u, target
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		logBuf.flush()
		defer out.Reset()
		return w, out.String()
	}
	allowed := map[string]string{
		"Content-Type":           textPlainUTF8,
		"X-Content-Type-Options": "nosniff",
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http answers 400 before any handler runs: TestServerRejects
		}
		w, line := serve(target, u)
		body := w.Body.String()
		switch w.Code {
		case 200:
			if u.Path == "/healthz" || u.Path == "/readyz" {
				break
			}
			name, ok := strings.CutSuffix(strings.TrimPrefix(body, "Hello, "), "!\n")
			want, err := url.PathUnescape(strings.TrimPrefix(u.EscapedPath(), "/"))
			if want == "" {
				want = "World"
			}
			if !ok || err != nil || name != want || !utf8.ValidString(name) || len(name) > maxName ||
				strings.ContainsFunc(name, unicode.IsControl) || strings.ContainsAny(name, explicitBidi) {
				t.Errorf("GET %q = 200 %q, want %q", target, body, "Hello, "+want+"!\n")
			}
		case 400, 404:
			if strings.Count(body, "\n") != 1 {
				t.Errorf("GET %q = %d %q, want a one-line body", target, w.Code, body)
			}
		default:
			t.Errorf("GET %q = %d %q, want 200, 400 or 404", target, w.Code, body)
		}
		for k, vs := range w.Header() {
			if len(vs) != 1 || allowed[k] != vs[0] {
				t.Errorf("GET %q: header %s: %q is not one of the fixed values", target, k, vs)
			}
		}

		if w.Code == 200 && (u.Path == "/healthz" || u.Path == "/readyz") {
			if line != "" {
				t.Errorf("GET %q = 200, a probe, logged %q; want no line", target, line)
			}
			return
		}
		var rec struct {
			Target string
			Status int
			Bytes  int
		}
		if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") || json.Unmarshal([]byte(line), &rec) != nil {
			t.Fatalf("GET %q logged %q, want one JSON line", target, line)
		}
		if i := strings.IndexFunc(strings.TrimSuffix(line, "\n"), unsafeForTerminal); i >= 0 || !utf8.ValidString(line) {
			t.Errorf("GET %q logged %q: a character a terminal acts on at byte %d, or not UTF-8", target, line, i)
		}
		if rec.Status != w.Code || rec.Bytes != len(body) {
			t.Errorf("GET %q = %d with %d bytes, logged status %d, bytes %d", target, w.Code, len(body), rec.Status, rec.Bytes)
		}
		if i := strings.IndexFunc(rec.Target, func(r rune) bool { return r < '!' || r > '~' }); i >= 0 {
			t.Errorf("GET %q: logged target %q holds a byte outside printable ASCII at %d", target, rec.Target, i)
		}
		if again, err := url.ParseRequestURI(rec.Target); err == nil {
			if w2, _ := serve(rec.Target, again); w2.Code != w.Code || w2.Body.String() != body {
				t.Errorf("GET %q = %d %q, but its logged target %q = %d %q: logged alike, answered differently",
					target, w.Code, body, rec.Target, w2.Code, w2.Body.String())
			}
		} else {
			t.Errorf("GET %q: logged target %q does not parse (%v): it cannot be sent again", target, rec.Target, err)
		}
	})
}

// TestLogEscapes: a client's bytes reach a log line only as the access
// log's target, escaped to printable ASCII, so whatever a target holds, its
// line holds nothing a terminal acts on and the logged target decodes to
// the one sent. What slog escapes itself (the C0 controls, line breaks,
// invalid UTF-8, U+2028/U+2029) comes out escaped from slog and from
// net/http's log.Logger too, and reads back as the same JSON.
func TestLogEscapes(t *testing.T) {
	var out bytes.Buffer
	logBuf := newLogBuffer(&out)
	logs := slog.New(slog.NewJSONHandler(logBuf, nil))
	errorLog := slog.NewLogLogger(logs.Handler(), slog.LevelWarn) // what run gives net/http
	access := &requestLog{logs: logs.Handler(), g: &greeter{}}
	safe := func(t *testing.T, l string) {
		t.Helper()
		if i := strings.IndexFunc(strings.TrimSuffix(l, "\n"), unsafeForTerminal); i >= 0 || !utf8.ValidString(l) {
			t.Errorf("log line %q: a character a terminal acts on at byte %d, or not UTF-8", l, i)
		}
	}
	for _, tc := range []struct {
		name, s string
		bySlog  bool // slog escapes it wherever it stands
	}{
		{"bidi override", "\u202egnp.exe", false},
		{"every bidi control", explicitBidi + "\u200e\u200f\u061c", false},
		{"escape sequence", "\x1b[31mred\x1b[0m", true},
		{"CSI", "\u009b31m", false},
		{"NEL", "a\u0085b", false},
		{"DEL", "a\x7fb", false},
		{"line breaks", "a\nb\rc\u2028d\u2029e", true},
		{"NUL", "a\x00b", true},
		{"invalid UTF-8", "a\xffb\xc0\xaf", true},
		{"greeted runes", "J\u00fcrgen \u05d0 \U0001f469\u200d\U0001f4bb \u00a0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, target := range []string{"/" + tc.s, "/x?q=" + tc.s} {
				u, err := url.ParseRequestURI(target)
				if err != nil {
					continue // net/http answers 400 before any handler runs: TestRunAccessLogHostile
				}
				r := httptest.NewRequest("GET", "/", nil)
				r.URL, r.RequestURI = u, target
				access.ServeHTTP(httptest.NewRecorder(), r)
				logBuf.flush()
				l := out.String()
				out.Reset()
				safe(t, l)
				var rec struct{ Target string }
				if err := json.Unmarshal([]byte(l), &rec); err != nil {
					t.Fatalf("GET %q logged %q: %v", target, l, err)
				}
				if sent, err := url.PathUnescape(rec.Target); err != nil || sent != target {
					t.Errorf("GET %q logged target %q, which decodes to %q (%v)", target, rec.Target, sent, err)
				}
			}
			if !tc.bySlog {
				return
			}
			logs.Info(tc.s, "value", tc.s)
			errorLog.Print(tc.s)
			logBuf.flush()
			lines := strings.SplitAfter(out.String(), "\n")
			out.Reset()
			if len(lines) != 3 || lines[2] != "" {
				t.Fatalf("two log lines of %q came out as %q, want two lines", tc.s, lines)
			}
			want := strings.ToValidUTF8(tc.s, "\ufffd")
			for _, l := range lines[:2] {
				safe(t, l)
				var rec map[string]any
				if err := json.Unmarshal([]byte(l), &rec); err != nil || !strings.HasPrefix(fmt.Sprint(rec["msg"]), want) {
					t.Errorf("log line %q: msg = %q (%v), want %q", l, rec["msg"], err, want)
				}
			}
		})
	}
}

// TestLogBufferDrops: lines that do not fit the buffer, or that a failed
// write lost, are counted, and the count is written once stdout takes
// lines again; every line is either written or counted.
func TestLogBufferDrops(t *testing.T) {
	w := &failingWriter{}
	logBuf := newLogBuffer(w)
	logs := slog.New(slog.NewJSONHandler(logBuf, nil))
	pad := strings.Repeat("x", 1000)
	const lines = logBufferSize/1000 + 100 // more than the buffer holds
	for i := range lines {
		logs.Info("line", "i", i, "pad", pad)
	}
	w.fail = true
	logBuf.flush() // all lost
	w.fail = false
	logs.Info("after")
	logBuf.flush()
	var written, dropped int
	for _, l := range strings.SplitAfter(strings.TrimSuffix(w.b.String(), "\n"), "\n") {
		var rec struct {
			Msg     string
			Dropped int
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		switch rec.Msg {
		case "log lines dropped":
			dropped += rec.Dropped
		default:
			written++
		}
	}
	if written != 1 || dropped != lines {
		t.Errorf("%d lines, then a failed write, then one more: %d written and %d counted as dropped; want 1 and %d", lines+1, written, dropped, lines)
	}
}

// TestLogBufferPartialWrite: when stdout takes part of a batch and fails,
// the lines it did not take whole are counted as dropped.
func TestLogBufferPartialWrite(t *testing.T) {
	w := &failingWriter{fail: true}
	logBuf := newLogBuffer(w)
	logs := slog.New(slog.NewJSONHandler(logBuf, nil))
	for i := range 3 {
		logs.Info("line", "i", i)
	}
	w.take = bytes.IndexByte(logBuf.lines, '\n') + 5 // the first line and part of the second
	logBuf.flush()
	w.fail = false
	logBuf.flush()
	if got, want := w.b.String(), `"msg":"log lines dropped","dropped":2}`; !strings.Contains(got, want) {
		t.Errorf("3 lines, a write that took 1 and part of another, then one that works: wrote %q, want %q in it", got, want)
	}
}

// failingWriter fails every Write while fail is set, having taken the
// first take bytes.
type failingWriter struct {
	fail bool
	take int
	b    bytes.Buffer
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.fail {
		n, _ := w.b.Write(p[:min(w.take, len(p))])
		return n, errors.New("no space left on device")
	}
	return w.b.Write(p)
}

func BenchmarkGreet(b *testing.B) {
	benchmark(b, &greeter{}, httptest.NewRequest("GET", "/TutorialHero", nil))
}

// BenchmarkGreetAccessLog is BenchmarkGreet with -access-log on: the line
// is formatted, escaped and buffered, and written in batches to io.Discard.
func BenchmarkGreetAccessLog(b *testing.B) {
	logBuf := newLogBuffer(io.Discard)
	done := logBuf.start()
	defer done(context.Background(), time.Second)
	h := &requestLog{logs: slog.NewJSONHandler(logBuf, nil), g: &greeter{}}
	benchmark(b, h, httptest.NewRequest("GET", "/TutorialHero", nil))
}

// benchmark serves r to h, again and again.
func benchmark(b *testing.B, h http.Handler, r *http.Request) {
	w := &discard{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.header)
		h.ServeHTTP(w, r)
	}
}

// discard is a ResponseWriter that keeps nothing, so the benchmark measures the handler.
type discard struct{ header http.Header }

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// server is one run of run on 127.0.0.1:0.
type server struct {
	url  string // http://127.0.0.1:port
	addr string // 127.0.0.1:port
	out  *syncBuffer
	stop context.CancelFunc // what SIGTERM does in main
	done chan error
}

var bannerRE = regexp.MustCompile(`^Welcome, user! Curl me \(locally with Port (\d+)\) with your name as path :-D\n`)

// start runs the server with env and args and returns once the banner shows.
// It is stopped at the end of the test.
func start(t *testing.T, env map[string]string, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{out: &syncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() { s.done <- run(ctx, args, mapenv(env), s.out, io.Discard) }()
	t.Cleanup(func() { _ = s.wait(t) }) // a test that cares checks run's error itself
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := bannerRE.FindStringSubmatch(s.out.String()); m != nil {
			s.addr = "127.0.0.1:" + m[1]
			s.url = "http://" + s.addr
			return s
		}
		select {
		case err := <-s.done:
			t.Fatalf("run(%q) = %v before printing the banner; output %q", args, err, s.out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("run(%q) printed no banner in 10 s; output %q", args, s.out.String())
	return nil
}

// wait stops the server as SIGTERM would and returns run's error; it can be
// called again, as the cleanup does.
func (s *server) wait(t *testing.T) error {
	t.Helper()
	s.stop()
	select {
	case err := <-s.done:
		s.done <- err // for the next wait
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return 15 s after its context was canceled")
		return nil
	}
}

func mapenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

func TestRunServes(t *testing.T) {
	s := start(t, nil, "-addr", "127.0.0.1:0")
	for _, tc := range greetTests {
		switch tc.method {
		case "GET":
			resp, body := get(t, s.url+tc.target)
			if resp.StatusCode != tc.code || (tc.code == 200 && body != tc.body) {
				t.Errorf("GET %q = %d %q, want %d %q", tc.target, resp.StatusCode, body, tc.code, tc.body)
			}
		case "HEAD":
			resp, err := http.Head(s.url + tc.target)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close() // HEAD: no body
			if resp.StatusCode != tc.code || resp.ContentLength != int64(len(tc.body)) {
				t.Errorf("HEAD %q = %d, Content-Length %d; want %d, %d",
					tc.target, resp.StatusCode, resp.ContentLength, tc.code, len(tc.body))
			}
		}
	}
	if err := s.wait(t); err != nil {
		t.Errorf("run after SIGTERM = %v, want nil", err)
	}
	var msgs []string
	for _, rec := range logRecords(t, s.out.String()) {
		msgs = append(msgs, fmt.Sprint(rec["msg"]))
		if rec["msg"] != "listening" {
			continue
		}
		want := map[string]any{"addr": s.addr, "version": "dev", "max_conns": 1024.0,
			"gomemlimit": float64(debug.SetMemoryLimit(-1)), "gomaxprocs": float64(runtime.GOMAXPROCS(0))}
		for k, v := range want {
			if rec[k] != v {
				t.Errorf("listening line: %s = %v, want %v", k, rec[k], v)
			}
		}
	}
	if got, want := strings.Join(msgs, ","), "listening,shutdown begun,stopped"; got != want {
		t.Errorf("log messages = %s, want %s", got, want)
	}
}

// TestServerLimits wants the server run builds to have the limits the
// README's table lists. Each one ends only a client that waits for it (5 s
// and more), so the table is checked here and the behaviour in the soak.
func TestServerLimits(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(readme), "## The server's limits\n")
	table, _, _ = strings.Cut(table, "\n\n## ")
	srv := newServer(nil)
	got := map[string]string{
		"ReadHeaderTimeout": fmt.Sprintf("%.0f s", srv.ReadHeaderTimeout.Seconds()),
		"ReadTimeout":       fmt.Sprintf("%.0f s", srv.ReadTimeout.Seconds()),
		"WriteTimeout":      fmt.Sprintf("%.0f s", srv.WriteTimeout.Seconds()),
		"IdleTimeout":       fmt.Sprintf("%.0f s", srv.IdleTimeout.Seconds()),
		"MaxHeaderBytes":    fmt.Sprintf("%d KiB", srv.MaxHeaderBytes>>10),
	}
	rows := regexp.MustCompile("(?m)^\\| `(\\w+)` \\| ([^|]+) \\|").FindAllStringSubmatch(table, -1)
	if len(rows) != len(got) {
		t.Errorf("the README's limits table has %d rows, want one for each of %d limits:\n%s", len(rows), len(got), table)
	}
	for _, row := range rows {
		if v, ok := got[row[1]]; !ok || v != row[2] {
			t.Errorf("README: %s is %s; the server has %q", row[1], row[2], v)
		}
	}
}

// TestServerRejects covers what net/http answers before the handler runs.
func TestServerRejects(t *testing.T) {
	s := start(t, nil, "-addr", "127.0.0.1:0")
	for _, tc := range []struct {
		name, request string
		code          int
	}{
		{"malformed escape", "GET /% HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"bad escape digits", "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"64 KiB of headers", "GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", 431},
		{"no Host", "GET /x HTTP/1.1\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := roundTrip(t, s.addr, tc.request)
			if resp.StatusCode != tc.code {
				t.Errorf("%q = %d, want %d", tc.request[:20], resp.StatusCode, tc.code)
			}
		})
	}
}

// roundTrip writes a raw request that ends its connection, reads the answer,
// and wants the connection closed gracefully after it.
func roundTrip(t *testing.T, addr, request string) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	// net/http ends each of these connections with a graceful close (FIN).
	// A reset instead can cost a client the answer (curl exits 56): that is
	// what a listener wrapper without CloseWrite does to a 431.
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after the answer to %.30q: %v, want the server's graceful close (EOF)", request, err)
	}
	return resp
}

func TestRunFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		usage bool   // want a usageError (exit 2)
		out   string // wanted in stdout, or in stderr for an error
	}{
		{name: "version", args: []string{"-version"}, out: "hello dev (revision unknown, go1."},
		{name: "help lists every flag", args: []string{"-h"}, out: "-access-log"},
		{name: "version whatever PORT says", args: []string{"-version"}, env: map[string]string{"PORT": "http"}, out: "hello dev"},
		{name: "help whatever addr says", args: []string{"-addr", "8080", "-h"}, out: "-access-log"},
		{name: "unknown flag", args: []string{"-nope"}, usage: true, out: "flag provided but not defined: -nope"},
		{name: "bad duration", args: []string{"-shutdown-delay", "soon"}, usage: true, out: "invalid value"},
		{name: "bad addr", args: []string{"-addr", "8080"}, usage: true},
		{name: "bad port", args: []string{"-addr", ":99999"}, usage: true},
		{name: "bad PORT", env: map[string]string{"PORT": "http"}, usage: true},
		{name: "argument", args: []string{"Hero"}, usage: true},
		{name: "negative max-conns", args: []string{"-max-conns", "-1"}, usage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, mapenv(tc.env), &stdout, &stderr)
			if got := errors.As(err, new(usageError)); got != tc.usage || (!tc.usage && err != nil) {
				t.Fatalf("run(%q) = %v, want usage error %v", tc.args, err, tc.usage)
			}
			all := stdout.String() + stderr.String()
			if !strings.Contains(all, tc.out) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tc.args, all, tc.out)
			}
		})
	}
}

// TestPort: a port, from -addr or from $PORT, is a decimal number 0-65535
// written as such; a bad one is a usage error that names where it came from.
func TestPort(t *testing.T) {
	for _, tc := range []struct {
		port string
		ok   bool
	}{
		{"0", true}, {"8080", true}, {"65535", true},
		{"65536", false}, {"99999", false}, {"+80", false}, {"-1", false}, {"0080", false},
		{"00", false}, {"http", false}, {"0x50", false}, {"8_080", false}, {" 80", false}, {"", false},
	} {
		for _, from := range []struct {
			name string
			args []string
			env  map[string]string
			want string // in a usage error's message
		}{
			{"-addr", []string{"-addr", "127.0.0.1:" + tc.port}, nil, "-addr"},
			{"$PORT", nil, map[string]string{"PORT": tc.port}, "$PORT"},
		} {
			if from.name == "$PORT" && tc.port == "" {
				continue // an empty PORT is no PORT
			}
			// -healthcheck takes the port through the same rules, then
			// probes it: a failed probe is exit 1, not a usage error.
			err := run(context.Background(), append(from.args, "-healthcheck"), mapenv(from.env), io.Discard, io.Discard)
			usage := errors.As(err, new(usageError))
			switch {
			case tc.ok && usage:
				t.Errorf("port %q from %s: usage error %v, want it accepted", tc.port, from.name, err)
			case !tc.ok && (!usage || !strings.Contains(err.Error(), from.want) || !strings.Contains(err.Error(), strconv.Quote(tc.port))):
				t.Errorf("port %q from %s: %v, want a usage error naming %s and %q", tc.port, from.name, err, from.want, tc.port)
			}
		}
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, mapenv(nil), io.Discard, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"-addr", "-shutdown-delay", "-shutdown-timeout", "-access-log", "-healthcheck", "-max-conns", "-version", "PORT"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("hello -h does not mention %s:\n%s", f, stderr.String())
		}
	}
}

func TestRunPort(t *testing.T) {
	// PORT applies when -addr is not given.
	s := start(t, map[string]string{"PORT": "0"})
	if resp, body := get(t, s.url+"/Port"); body != "Hello, Port!\n" {
		t.Errorf("with PORT=0: GET /Port = %d %q", resp.StatusCode, body)
	}

	// -addr wins over PORT: PORT names a port that is taken, -addr a free one.
	taken := listen(t)
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	s = start(t, map[string]string{"PORT": port}, "-addr", "127.0.0.1:0")
	if s.addr == taken.Addr().String() {
		t.Errorf("-addr 127.0.0.1:0 with PORT=%s listened on PORT", port)
	}
}

func TestRunPortInUse(t *testing.T) {
	taken := listen(t)
	err := run(context.Background(), []string{"-addr", taken.Addr().String()}, mapenv(nil), io.Discard, io.Discard)
	if err == nil || errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("run on a port in use = %v, want an address-in-use error (exit 1)", err)
	}
}

// freePort returns a loopback port that nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() }) // may be closed already
	return ln
}

// TestConnLimit: at the cap, the connection idle the longest makes room for a
// new one; when every connection is mid-request, a new one waits until one
// finishes.
func TestConnLimit(t *testing.T) {
	const limit = 8
	t.Run("longest idle closed", func(t *testing.T) {
		s := limitedServer(t, limit)
		var conns []*clientConn
		for i := range limit {
			c := dial(t, s.addr)
			c.get(t, fmt.Sprintf("/%d", i), time.Second)
			<-s.idle // the server has it idle, in this order
			conns = append(conns, c)
		}
		dial(t, s.addr).get(t, "/ninth", time.Second)
		if err := conns[0].closed(); err != nil {
			t.Errorf("longest-idle connection: %v", err)
		}
		for i, c := range conns[1:] {
			c.get(t, fmt.Sprintf("/again%d", i+1), time.Second) // still open
		}
	})
	t.Run("all mid-request", func(t *testing.T) {
		s := limitedServer(t, limit)
		var conns []*clientConn
		for range limit {
			c := dial(t, s.addr)
			c.send(t, "/hold")
			<-s.held
			conns = append(conns, c)
		}
		ninth := dial(t, s.addr)
		ninth.send(t, "/ninth")
		ninth.deadline(t, 300*time.Millisecond)
		if resp, err := http.ReadResponse(ninth.r, nil); err == nil {
			t.Fatalf("a ninth connection while %d are mid-request was answered %d, want it to wait", limit, resp.StatusCode)
		}
		s.release <- struct{}{} // one request finishes
		ninth.deadline(t, 5*time.Second)
		if resp, err := http.ReadResponse(ninth.r, nil); err != nil || resp.StatusCode != 200 {
			t.Errorf("the ninth connection after one request finished: %v, want 200", err)
		}
		close(s.release)
		for _, c := range conns[1:] {
			if resp, err := http.ReadResponse(c.r, nil); err != nil || resp.StatusCode != 200 {
				t.Errorf("a held request after release: %v, want 200", err)
			}
		}
	})
	// A connection its client closes must leave the count: else, after limit
	// of them over the process's life, Accept waits forever.
	for _, batch := range []int{1, 4} {
		t.Run(fmt.Sprintf("100 clients close, %d at a time", batch), func(t *testing.T) {
			s := limitedServer(t, limit)
			const clients = 100
			for i := 0; i < clients; i += batch {
				var conns []*clientConn
				for range batch {
					conns = append(conns, dial(t, s.addr))
				}
				for j, c := range conns {
					c.get(t, fmt.Sprintf("/%d", i+j), time.Second)
					<-s.idle // the server has it idle: at the cap it goes before a newer one
				}
				for _, c := range conns {
					_ = c.Close() // the client's own close: nothing to check
				}
			}
			if !eventually(func() bool { return s.l.count() == 0 }) {
				t.Errorf("held connections after %d clients closed = %d, want 0", clients, s.l.count())
			}
		})
	}
}

// limitServer is an http.Server behind limitConns whose handler holds /hold
// until released, and which reports each connection that goes idle.
type limitServer struct {
	addr          string
	l             *connLimit
	held, release chan struct{}
	idle          chan struct{}
}

func limitedServer(t *testing.T, limit int) *limitServer {
	l := limiter(t, limit)
	s := &limitServer{l: l, held: make(chan struct{}, limit), release: make(chan struct{}), idle: make(chan struct{}, 4*limit)}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				s.held <- struct{}{}
				<-s.release
			}
			_, _ = io.WriteString(w, "ok\n") // the client checks what came
		}),
		ConnState: func(c net.Conn, state http.ConnState) {
			l.track(c, state)
			if state == http.StateIdle {
				select {
				case s.idle <- struct{}{}:
				default:
				}
			}
		},
	}
	go srv.Serve(l)
	t.Cleanup(func() { _ = srv.Close() }) // ends the test's server, nothing to check
	s.addr = l.Addr().String()
	return s
}

// limiter is limitConns on a fresh port, closed at the end of the test.
func limiter(t *testing.T, limit int) *connLimit {
	l := limitConns(listen(t).(*net.TCPListener), limit)
	t.Cleanup(func() { _ = l.Close() }) // also wakes an Accept a failed test left waiting
	return l
}

// count is how many connections l holds.
func (l *connLimit) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// parked is true while Accept waits for room: it sets and clears waiting
// only while it holds the lock, so under the lock true means it is in Wait.
func (l *connLimit) parked() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting.Load()
}

// eventually polls cond, which reads the state itself, until it holds or
// 5 s pass.
func eventually(cond func() bool) bool {
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return false
		}
	}
	return true
}

// clientConn is a keep-alive client connection that sends raw requests.
type clientConn struct {
	net.Conn
	r *bufio.Reader
}

// dial opens a keep-alive connection to addr.
func dial(t *testing.T, addr string) *clientConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() }) // the server may have closed it
	return &clientConn{c, bufio.NewReader(c)}
}

func (c *clientConn) send(t *testing.T, path string) {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// get sends a request and wants a 200 within limit.
func (c *clientConn) get(t *testing.T, path string, limit time.Duration) {
	t.Helper()
	c.send(t, path)
	c.deadline(t, limit)
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("GET %s: %v, want 200 within %v", path, err, limit)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d, want 200", path, resp.StatusCode)
	}
}

func (c *clientConn) deadline(t *testing.T, d time.Duration) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
}

// closed returns nil when the server has closed the connection.
func (c *clientConn) closed() error {
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("read = %v, want EOF: the server kept it open", err)
	}
	return nil
}

// TestLimitAcceptWaits: at the cap, with its one connection mid-request,
// Accept waits for room; whatever makes room, or closes the listener, must
// end the wait at once. Without the wake-up, hello stops taking clients (a
// close), or Shutdown waits for Serve until its timeout (the listener).
func TestLimitAcceptWaits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		then    func(l *connLimit, held net.Conn)
		wantErr error // nil: Accept returns the waiting client's connection
	}{
		{"held connection closes", func(_ *connLimit, held net.Conn) { _ = held.Close() }, nil},
		{"held connection goes idle", func(l *connLimit, held net.Conn) { l.track(held, http.StateIdle) }, nil},
		{"listener closes", func(l *connLimit, _ net.Conn) { _ = l.Close() }, net.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := limiter(t, 1)
			_, first := acceptNext(t, l)
			held := within(t, first, "at an empty limiter").c
			l.track(held, http.StateActive)
			waiting, next := acceptNext(t, l)
			if !eventually(l.parked) {
				t.Fatal("Accept at the cap with its one connection mid-request: not waiting after 5 s, want it to wait")
			}
			tc.then(l, held)
			got := within(t, next, "after "+tc.name)
			if (got.c != nil) != (tc.wantErr == nil) || !errors.Is(got.err, tc.wantErr) {
				t.Errorf("Accept after %s = connection %t, error %v; want connection %t, error %v",
					tc.name, got.c != nil, got.err, tc.wantErr == nil, tc.wantErr)
			}
			if n := l.count(); n != 1 {
				t.Errorf("held connections after %s = %d, want 1", tc.name, n)
			}
			// The connection Accept took but will not serve is closed, not
			// left open until a garbage collection finds it.
			if tc.wantErr == nil {
				return
			}
			if err := waiting.closed(); err != nil {
				t.Errorf("the client Accept took as the listener closed: %v", err)
			}
		})
	}
}

// TestLimitEvictedAsRequestStarts: net/http reads a request before its
// StateActive hook runs, so an eviction can land between the two. The
// evicted connection is forgotten once: its late hook, and net/http's own
// Close after the answer fails, leave the count alone.
func TestLimitEvictedAsRequestStarts(t *testing.T) {
	l := limiter(t, 1)
	client, first := acceptNext(t, l)
	evicted := within(t, first, "at an empty limiter").c
	_, second := acceptNext(t, l)
	within(t, second, "at the cap with one idle connection")
	if err := client.closed(); err != nil {
		t.Errorf("the connection evicted for a second one: %v", err)
	}
	l.track(evicted, http.StateActive)
	_ = evicted.Close() // fails: closed already
	if n := l.count(); n != 1 {
		t.Errorf("held connections after the evicted one's request started and ended = %d, want 1", n)
	}
}

// TestLimitEvictsNoneWhileOneCloses: a connection whose Close has begun
// makes room by itself and then wakes Accept. Evicting another meanwhile
// cuts off a client for nothing, such as a new one whose request is on its
// way: under load, one of the 100 clients above now and then.
func TestLimitEvictsNoneWhileOneCloses(t *testing.T) {
	l := limiter(t, 2)
	_, first := acceptNext(t, l)
	fresh := within(t, first, "at an empty limiter").c
	_, second := acceptNext(t, l)
	leaving := within(t, second, "with room for a second").c
	l.mu.Lock()
	go func() { _ = leaving.Close() }() // claims it, then waits for the lock
	began := eventually(leaving.(*limitedConn).closing.Load)
	if began {
		l.evictLocked() // what Accept does at the cap, while that Close waits
	}
	l.mu.Unlock()
	if !began {
		t.Fatal("Close of a held connection: not begun after 5 s")
	}
	if fresh.(*limitedConn).closing.Load() {
		t.Error("at the cap while one connection closes, a fresh one was evicted; want it kept: the close makes room")
	}
}

// accepted is what one call of Accept returned.
type accepted struct {
	c   net.Conn
	err error
}

// acceptNext dials l and calls l.Accept in the background; what Accept
// returns comes on the channel.
func acceptNext(t *testing.T, l *connLimit) (*clientConn, <-chan accepted) {
	t.Helper()
	client := dial(t, l.Addr().String())
	done := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		done <- accepted{c, err}
	}()
	return client, done
}

// within returns what Accept returned, and fails the test when Accept still
// waits after a second.
func within(t *testing.T, done <-chan accepted, when string) accepted {
	t.Helper()
	select {
	case a := <-done:
		if a.c != nil {
			t.Cleanup(func() { _ = a.c.Close() }) // may be closed already
		}
		return a
	case <-time.After(time.Second):
		t.Fatalf("Accept %s: still waiting after 1 s, want it to return", when)
		return accepted{}
	}
}

// TestRunMaxConns: -max-conns reaches the server: with a cap of 1, a second
// client is served and the first, idle, connection is closed.
func TestRunMaxConns(t *testing.T) {
	s := start(t, nil, "-addr", "127.0.0.1:0", "-max-conns", "1")
	first := dial(t, s.addr)
	first.get(t, "/first", 5*time.Second)
	dial(t, s.addr).get(t, "/second", 5*time.Second)
	if err := first.closed(); err != nil {
		t.Errorf("the idle connection at -max-conns 1: %v", err)
	}
}

// TestRunDrain: during -shutdown-delay the server still greets, says
// Connection: close, and /readyz is 503; then run returns nil.
func TestRunDrain(t *testing.T) {
	s := start(t, nil, "-addr", "127.0.0.1:0", "-shutdown-delay", "2s")
	if resp, _ := get(t, s.url+"/readyz"); resp.StatusCode != 200 {
		t.Fatalf("GET /readyz before shutdown = %d, want 200", resp.StatusCode)
	}
	s.stop()
	deadline := time.Now().Add(time.Second)
	for {
		resp, _ := get(t, s.url+"/readyz")
		if resp.StatusCode == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz after SIGTERM = %d, want 503", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, body := get(t, s.url+"/Drain")
	if resp.StatusCode != 200 || body != "Hello, Drain!\n" || !resp.Close {
		t.Errorf("GET /Drain while draining = %d %q, Connection: close %v; want 200 %q, true",
			resp.StatusCode, body, resp.Close, "Hello, Drain!\n")
	}
	if resp, _ := get(t, s.url+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("GET /healthz while draining = %d, want 200", resp.StatusCode)
	}
	if err := s.wait(t); err != nil {
		t.Errorf("run after the drain = %v, want nil", err)
	}
}

// TestRunShutdownTimeout: a request still open when the timeout ends is cut
// off, and run says so.
func TestRunShutdownTimeout(t *testing.T) {
	s := start(t, nil, "-addr", "127.0.0.1:0", "-shutdown-timeout", "200ms")
	heldRequest(t, s.addr)
	err := s.wait(t)
	if err == nil || !strings.Contains(err.Error(), "cut off") {
		t.Errorf("run with a request open past -shutdown-timeout = %v, want a cut-off error", err)
	}
}

// heldRequest sends a request whose 10-byte body never comes, and returns
// once the server holds it. Shutdown waits for it: net/http reads a short
// unread body to its end before it answers, so the connection stays
// active until ReadTimeout (10 s) ends it. (A half-sent header would not
// do: Shutdown counts a connection that has sent no whole request for 5 s
// as idle, and closes it.) The accept queue is first in, first out, so a
// connection dialed after it has been answered once it is held.
func heldRequest(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // the server may have closed it
	if _, err := io.WriteString(conn, "GET /Held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, addr, "GET /Later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	return conn
}

// TestRunDribbledHeaders: a client that sends its headers slowly is cut off
// at ReadHeaderTimeout (5 s), while others are served.
func TestRunDribbledHeaders(t *testing.T) {
	t.Parallel()
	s := start(t, nil, "-addr", "127.0.0.1:0")
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /Slow HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		for i := 0; i < 20; i++ {
			if _, err := fmt.Fprintf(conn, "X-%d: y\r\n", i); err != nil {
				closed <- err
				return
			}
			time.Sleep(time.Second)
		}
		closed <- nil
	}()
	if _, body := get(t, s.url+"/Other"); body != "Hello, Other!\n" {
		t.Errorf("GET /Other beside a dribbler = %q", body)
	}
	// The server closes the connection at ReadHeaderTimeout (5 s), well before
	// the 10 s of ReadTimeout that would also end it; 3 s of slack for a slow machine.
	if err := conn.SetReadDeadline(time.Now().Add(8 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("a client dribbling headers for 8 s was not cut off")
	}
}

func TestRunAccessLog(t *testing.T) {
	s := start(t, nil, "-addr", "127.0.0.1:0", "-access-log")
	notFound := "not found: the name is a single path segment, like /TutorialHero\n"
	want := []struct {
		method, target string
		status         int
		body           string // what is sent: nothing for a HEAD
		logged         bool   // a probe answered 200 is not
	}{
		{"GET", "/Logged?q=1", 200, "Hello, Logged!\n", true},
		{"HEAD", "/Logged", 200, "", true},
		{"GET", "/a%00b", 400, "bad name: holds a control character\n", true},
		{"GET", "/a/b", 404, notFound, true},
		{"GET", "/a%2Fb", 200, "Hello, a/b!\n", true},
		{"GET", "/favicon.ico", 404, "not found: hello serves greetings, not files\n", true},
		{"GET", "/robots.txt", 404, "not found: hello serves greetings, not files\n", true},
		{"GET", "/healthz", 200, "ok\n", false},
		{"HEAD", "/readyz", 200, "", false},
		{"POST", "/healthz", 405, "method not allowed: use GET or HEAD\n", true},
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, w := range want {
		req, err := http.NewRequest(w.method, s.url+w.target, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %q: %v", w.method, w.target, err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close() // read to its end already
		if err != nil || resp.StatusCode != w.status || string(body) != w.body {
			t.Fatalf("%s %q = %d %q (%v), want %d %q", w.method, w.target, resp.StatusCode, body, err, w.status, w.body)
		}
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil", err)
	}
	var reqs []map[string]any
	for _, rec := range logRecords(t, s.out.String()) {
		if rec["msg"] == "request" {
			reqs = append(reqs, rec)
		}
	}
	var logged []int // indexes into want
	for i, w := range want {
		if w.logged {
			logged = append(logged, i)
		}
	}
	if len(reqs) != len(logged) {
		t.Fatalf("%d access log lines, want %d:\n%s", len(reqs), len(logged), s.out.String())
	}
	for i, j := range logged {
		w := want[j]
		fields := map[string]any{"level": "INFO", "method": w.method, "target": w.target, "status": float64(w.status), "bytes": float64(len(w.body))}
		for k, v := range fields {
			if reqs[i][k] != v {
				t.Errorf("%s %q: access log %s = %v, want %v", w.method, w.target, k, reqs[i][k], v)
			}
		}
		if d, ok := reqs[i]["duration"].(float64); !ok || d <= 0 {
			t.Errorf("%s %q: access log duration = %v, want nanoseconds > 0", w.method, w.target, reqs[i]["duration"])
		}
		if r, _ := reqs[i]["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
			t.Errorf("%s %q: access log remote = %q, want 127.0.0.1:port", w.method, w.target, r)
		}
	}
}

// TestRunAccessLogHostile sends request targets byte for byte, over raw
// connections: whatever the client sent, no log line holds a character
// that reorders, recolours or splits what an operator reads, every line
// after the banner is JSON, and the target is logged as sent, with the
// bytes outside printable ASCII percent-encoded.
func TestRunAccessLogHostile(t *testing.T) {
	s := start(t, nil, "-addr", "127.0.0.1:0", "-access-log")
	for _, tc := range []struct {
		name, target string
		status       int
		logged       string // the target in the access log; "" when net/http answers before any handler
	}{
		{"escaped bidi override", "/%E2%80%AEgnp.exe", 400, "/%E2%80%AEgnp.exe"},
		{"raw bidi override", "/\u202egnp.exe", 400, "/%E2%80%AEgnp.exe"},
		{"raw bidi isolate in the query", "/x?q=\u2066", 200, "/x?q=%E2%81%A6"},
		{"raw right-to-left letter", "/\u05d0", 200, "/%D7%90"},
		{"raw CSI", "/\u009b31m", 400, "/%C2%9B31m"},
		{"raw NEL in the query", "/x?\u0085", 200, "/x?%C2%85"},
		{"raw line separator", "/\u2028", 200, "/%E2%80%A8"},
		{"raw paragraph separator in the query", "/x?\u2029", 200, "/x?%E2%80%A9"},
		{"raw invalid UTF-8", "/\xff", 400, "/%FF"},
		{"raw invalid UTF-8 in the query", "/x?q=\xc0\xaf", 200, "/x?q=%C0%AF"},
		{"escaped escape", "/%1B%5B31m", 400, "/%1B%5B31m"},
		{"escaped escape in the query", "/x?%1B%5B2J", 200, "/x?%1B%5B2J"},
		{"escaped slash", "/a%2Fb", 200, "/a%2Fb"},
		{"two segments", "/a/b", 404, "/a/b"},
		{"raw UTF-8 and an escaped slash", "/J\u00fcrgen%2Fx", 200, "/J%C3%BCrgen%2Fx"},
		{"escaped UTF-8 and an escaped slash", "/J%C3%BCrgen%2Fx", 200, "/J%C3%BCrgen%2Fx"},
		{"raw DEL", "/a\x7fb", 400, ""},
		{"raw escape", "/\x1b[31m", 400, ""},
		{"raw tab", "/a\tb", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := roundTrip(t, s.addr, "GET "+tc.target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Errorf("GET %q = %d, want %d", tc.target, resp.StatusCode, tc.status)
			}
		})
	}
	// The rest of a request reaches no line: a method that is not a token
	// and a header value with a control get 400 before any handler runs, and
	// no line holds a header.
	for _, tc := range []struct {
		name, request string
		status        int
	}{
		{"raw bidi override in the method", "G\u202eET /m HTTP/1.1\r\nHost: x\r\n", 400},
		{"raw escape in a header", "GET /h HTTP/1.1\r\nHost: x\r\nUser-Agent: \x1b[31m\r\n", 400},
		{"raw bidi, CSI, NEL, line separator and invalid UTF-8 in a header", "GET /h HTTP/1.1\r\nHost: x\r\nUser-Agent: \u202e\u009b\u0085\u2028\xff\r\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if resp := roundTrip(t, s.addr, tc.request+"Connection: close\r\n\r\n"); resp.StatusCode != tc.status {
				t.Errorf("%q = %d, want %d", tc.request, resp.StatusCode, tc.status)
			}
		})
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil", err)
	}
	out := s.out.String()
	for _, l := range strings.SplitAfter(out, "\n") {
		if i := strings.IndexFunc(strings.TrimSuffix(l, "\n"), unsafeForTerminal); i >= 0 || !utf8.ValidString(l) {
			t.Errorf("log line %q holds a character that reorders, recolours or splits a terminal's line (at byte %d), or is not UTF-8", l, i)
		}
	}
	var targets []string
	for _, rec := range logRecords(t, out) {
		if rec["msg"] == "request" {
			targets = append(targets, fmt.Sprint(rec["target"]))
		}
	}
	want := []string{"/%E2%80%AEgnp.exe", "/%E2%80%AEgnp.exe", "/x?q=%E2%81%A6", "/%D7%90", "/%C2%9B31m", "/x?%C2%85", "/%E2%80%A8",
		"/x?%E2%80%A9", "/%FF", "/x?q=%C0%AF", "/%1B%5B31m", "/x?%1B%5B2J", "/a%2Fb", "/a/b", "/J%C3%BCrgen%2Fx", "/J%C3%BCrgen%2Fx", "/h"}
	if !slices.Equal(targets, want) {
		t.Errorf("logged targets:\n%q\nwant:\n%q", targets, want)
	}
}

// unsafeForTerminal is true for what must never reach a log line raw: C0
// and C1 controls and DEL (escape sequences, CSI, line breaks), the
// bidirectional controls (Trojan Source reordering), the line and
// paragraph separators, and U+FFFD, which stands for invalid UTF-8.
func unsafeForTerminal(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029' || r == utf8.RuneError
}

// greetMany sends n greetings of path from 8 keep-alive clients and fails
// on the first that is not answered 200 within 5 s.
func greetMany(t *testing.T, base, path string, n int) {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	jobs := make(chan struct{})
	failed := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				resp, err := client.Get(base + path)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close() // read to its end already
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if ue := (*url.Error)(nil); errors.As(err, &ue) {
					err = ue.Err // without the long URL
				}
				if err != nil {
					select {
					case failed <- err:
					default:
					}
				}
			}
		}()
	}
	var err error
	for i := 0; i < n && err == nil; i++ {
		select {
		case jobs <- struct{}{}:
		case err = <-failed:
		}
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-failed:
		default:
		}
	}
	if err != nil {
		t.Fatalf("GET %.40q among %d greetings: %v, want 200 within 5 s", path, n, err)
	}
}

// longTarget greets a 250-byte name with a 1 KB query: a long log line.
var longTarget = "/" + strings.Repeat("n", 250) + "?pad=" + strings.Repeat("x", 1000)

// startStalled runs the server with stdout a real pipe, reads the banner
// from it and then reads nothing, as a stalled log reader (a container
// runtime whose log backend is slow) does, until out.resume.
func startStalled(t *testing.T, args ...string) (*server, *pipeOut) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() }) // after run has returned: the cleanups run last first
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{out: &syncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() {
		err := run(ctx, args, mapenv(nil), w, io.Discard)
		_ = w.Close() // the reader sees the end; a write still blocked in the pipe fails
		s.done <- err
	}()
	t.Cleanup(func() { _ = s.wait(t) }) // a test that cares checks run's error itself
	out := &pipeOut{r: bufio.NewReader(r), s: s, copied: make(chan struct{})}
	banner := make(chan string, 1)
	go func() { l, _ := out.r.ReadString('\n'); banner <- l }()
	select {
	case l := <-banner:
		m := bannerRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("run(%q) printed %q first, want the banner", args, l)
		}
		s.addr = "127.0.0.1:" + m[1]
		s.url = "http://" + s.addr
		_, _ = s.out.Write([]byte(l)) // s.out holds all of stdout
	case err := <-s.done:
		t.Fatalf("run(%q) = %v before printing the banner", args, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("run(%q) printed no banner in 10 s", args)
	}
	return s, out
}

// pipeOut is the reading end of a server's stdout pipe.
type pipeOut struct {
	r      *bufio.Reader
	s      *server
	copied chan struct{} // closed when the pipe has been read to its end
}

// resume reads the rest of stdout into s.out.
func (p *pipeOut) resume() {
	go func() {
		_, _ = io.Copy(p.s.out, p.r) // ends when run has returned and its end is closed
		close(p.copied)
	}()
}

// wait stops the server as SIGTERM would, returns run's error and waits
// until s.out holds all that run wrote.
func (p *pipeOut) wait(t *testing.T) error {
	t.Helper()
	err := p.s.wait(t)
	select {
	case <-p.copied:
	case <-time.After(5 * time.Second):
		t.Fatal("stdout not read to its end 5 s after run returned")
	}
	return err
}

// TestRunLogStalled: with stdout a pipe nobody reads, hello still greets,
// answers its probes and -healthcheck, and once the reader resumes it says
// how many lines it dropped: every greeting is either logged or counted.
func TestRunLogStalled(t *testing.T) {
	t.Parallel()
	s, stdout := startStalled(t, "-addr", "127.0.0.1:0", "-access-log")
	// 6,000 lines of more than 400 bytes: more than the pipe (64 KiB), the
	// batch being written and the log's buffer (1 MiB each) together hold.
	const greetings = 6000
	greetMany(t, s.url, longTarget, greetings)
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, _ := get(t, s.url+path); resp.StatusCode != 200 {
			t.Errorf("GET %s with stdout unread = %d, want 200", path, resp.StatusCode)
		}
	}
	_, port, _ := net.SplitHostPort(s.addr)
	if err := run(context.Background(), []string{"-healthcheck", "-addr", ":" + port}, mapenv(nil), io.Discard, io.Discard); err != nil {
		t.Errorf("-healthcheck with stdout unread = %v, want nil", err)
	}
	stdout.resume()
	if !eventually(func() bool { return strings.Contains(s.out.String(), `"msg":"log lines dropped"`) }) {
		t.Errorf("5 s after the reader resumed, no line says how many lines were dropped")
	}
	if err := stdout.wait(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil", err)
	}
	var requests, dropped int
	for _, rec := range logRecords(t, s.out.String()) {
		switch rec["msg"] {
		case "request":
			requests++
		case "log lines dropped":
			n, ok := rec["dropped"].(float64)
			if !ok || n <= 0 {
				t.Errorf("dropped-lines line: dropped = %v, want a count > 0", rec["dropped"])
			}
			dropped += int(n)
		}
	}
	if requests+dropped != greetings || dropped == 0 {
		t.Errorf("%d greetings: %d logged and %d counted as dropped; want them to add up, with some dropped", greetings, requests, dropped)
	}
}

// TestRunLogStalledStop: a SIGTERM with stdout unread still stops hello:
// the lines it could not write are lost, after a bounded wait.
func TestRunLogStalledStop(t *testing.T) {
	t.Parallel()
	s, _ := startStalled(t, "-addr", "127.0.0.1:0", "-access-log")
	greetMany(t, s.url, longTarget, 200) // more than 90 KB of lines: the pipe (64 KiB) is full
	s.stop()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup's wait
		if err != nil {
			t.Errorf("run after SIGTERM with stdout unread = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return 10 s after SIGTERM with stdout unread")
	}
}

// TestRunCleanStop: lines still buffered when SIGTERM comes are written
// before run returns, every one of them.
func TestRunCleanStop(t *testing.T) {
	t.Parallel()
	s, stdout := startStalled(t, "-addr", "127.0.0.1:0", "-access-log")
	const greetings = 500 // 500 lines of about 200 bytes: more than the pipe holds, less than the log's buffer
	greetMany(t, s.url, "/CleanStop", greetings)
	s.stop()
	stdout.resume()
	if err := stdout.wait(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil", err)
	}
	var requests int
	var msgs []string
	for _, rec := range logRecords(t, s.out.String()) {
		if rec["msg"] == "request" {
			requests++
			continue
		}
		msgs = append(msgs, fmt.Sprint(rec["msg"]))
	}
	if got, want := strings.Join(msgs, ","), "listening,shutdown begun,stopped"; requests != greetings || got != want {
		t.Errorf("after %d greetings and SIGTERM: %d request lines and %s, want %d and %s", greetings, requests, got, greetings, want)
	}
}

// logRecords checks that the first stdout line is the banner and each one
// after it a JSON object with a time, and returns those objects.
func logRecords(t *testing.T, out string) []map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if !bannerRE.MatchString(lines[0] + "\n") {
		t.Errorf("first stdout line = %q, want the banner", lines[0])
	}
	var recs []map[string]any
	for _, l := range lines[1:] {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Errorf("stdout line %q is not a JSON object: %v", l, err)
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["time"])); err != nil {
			t.Errorf("stdout line %q: time: %v", l, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

func TestHealthcheck(t *testing.T) {
	healthcheck := func(env map[string]string, args ...string) error {
		return run(context.Background(), append([]string{"-healthcheck"}, args...), mapenv(env), io.Discard, io.Discard)
	}
	s := start(t, nil, "-addr", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(s.addr)
	if err := healthcheck(nil, "-addr", ":"+port); err != nil {
		t.Errorf("-healthcheck against a live server = %v, want nil", err)
	}
	if err := healthcheck(map[string]string{"PORT": port}); err != nil {
		t.Errorf("-healthcheck with PORT=%s = %v, want nil", port, err)
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil", err)
	}
	if err := healthcheck(nil, "-addr", ":"+port); err == nil {
		t.Errorf("-healthcheck against a stopped server = nil, want an error")
	}

	// A listener that answers something other than 200 is unhealthy too.
	ln := listen(t)
	go func() { _ = (&http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}).Serve(ln) }() // ends when the test closes ln
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	if err := healthcheck(nil, "-addr", ":"+port); err == nil {
		t.Errorf("-healthcheck against a 404 = nil, want an error")
	}

	// One that accepts and never answers is unhealthy within the probe's
	// 2 s: the kernel accepts into the backlog of a listener that never
	// calls Accept.
	silent := listen(t)
	done := make(chan error, 1)
	go func() { done <- healthcheck(nil, "-addr", silent.Addr().String()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("-healthcheck against a listener that never answers = nil, want an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("-healthcheck against a listener that never answers: still waiting after 10 s, want its 2 s bound")
	}
}

// TestHealthcheckDialsAddr: the probe dials the host -addr names, and
// loopback for a wildcard.
func TestHealthcheckDialsAddr(t *testing.T) {
	for _, tc := range []struct{ listen, probe string }{
		{"127.0.0.2:0", "127.0.0.2"}, // nothing of hello's on 127.0.0.1 at that port
		{"[::1]:0", "[::1]"},
		{":0", ""},
		{"0.0.0.0:0", "0.0.0.0"},
		{"[::]:0", "[::]"},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			if strings.Contains(tc.listen, "::") {
				if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
					t.Skipf("no IPv6 loopback here: %v", err)
				} else {
					_ = ln.Close() // only asked whether ::1 exists
				}
			}
			s := start(t, nil, "-addr", tc.listen)
			_, port, _ := net.SplitHostPort(s.addr)
			addr := tc.probe + ":" + port
			if err := run(context.Background(), []string{"-healthcheck", "-addr", addr}, mapenv(nil), io.Discard, io.Discard); err != nil {
				t.Errorf("-healthcheck -addr %s against hello -addr %s = %v, want nil", addr, tc.listen, err)
			}
		})
	}
}

// TestBinary builds hello as make go-build does and checks the process:
// static, reproducible, exit codes, and a clean stop on a real SIGTERM.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary twice, once from an empty build cache")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hello")
	build(t, bin)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	libs, _ := f.ImportedLibraries()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static", bin)
		}
	}
	if len(libs) > 0 || f.Machine != elf.EM_X86_64 {
		t.Errorf("%s links %v for %v, want no libraries, x86-64", bin, libs, f.Machine)
	}

	// go.mod's go line picks the runtime's defaults: from go 1.25 on,
	// GOMAXPROCS follows the container's CPU limit, and follows it as it
	// changes. Before, DefaultGODEBUG turns both off.
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Settings {
		if s.Key != "DefaultGODEBUG" {
			continue
		}
		for _, off := range []string{"containermaxprocs=0", "updatemaxprocs=0"} {
			if slices.Contains(strings.Split(s.Value, ","), off) {
				t.Errorf("%s: DefaultGODEBUG=%s has %s: GOMAXPROCS ignores the CPU limit; want go.mod's go line at 1.25 or later", bin, s.Value, off)
			}
		}
	}

	t.Run("reproducible", func(t *testing.T) {
		again := filepath.Join(dir, "hello-again")
		build(t, again, "GOCACHE="+t.TempDir())
		a, _ := os.ReadFile(bin)   // #nosec G304 -- the test's own build, in t.TempDir
		b, _ := os.ReadFile(again) // #nosec G304 -- likewise
		if !bytes.Equal(a, b) {
			t.Errorf("two builds of one commit differ: %d and %d bytes", len(a), len(b))
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-shutdown-delay", "300ms")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		m := bannerRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("first line %q, want the banner", line)
		}
		if _, body := get(t, "http://127.0.0.1:"+m[1]+"/Process"); body != "Hello, Process!\n" {
			t.Errorf("GET /Process = %q", body)
		}
		go func() { _, _ = io.Copy(io.Discard, stdout) }() // the process's other lines
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("hello after SIGTERM: %v, want exit 0", err)
		}
	})

	// A stdout that nobody reads, as a stalled container runtime leaves
	// it: the process writes the pipe itself, and a full pipe blocks it.
	t.Run("SIGTERM with stdout unread", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-access-log") // #nosec G204 -- the binary this test built
		cmd.Stdout = w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		_ = w.Close() // the process holds its own end
		line, _ := bufio.NewReader(r).ReadString('\n')
		m := bannerRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("first line %q, want the banner", line)
		}
		greetMany(t, "http://127.0.0.1:"+m[1], longTarget, 200) // more than 90 KB of lines: the pipe (64 KiB) is full
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if !exits(cmd, 10*time.Second) {
			t.Fatal("hello still runs 10 s after SIGTERM with its stdout unread")
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("hello after SIGTERM with its stdout unread: exit %d, want 0", code)
		}
	})

	// A second signal ends the delay or the drain at once, with exit status 1.
	for _, tc := range []struct {
		name string
		args []string
		hold bool // keep a request in flight
	}{
		{"second signal during the delay", []string{"-shutdown-delay", "1m"}, false},
		{"second signal during the drain", []string{"-shutdown-timeout", "1m"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, tc.args...)...) // #nosec G204 -- the binary this test built
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := bufio.NewScanner(stdout)
			lines.Scan()
			m := bannerRE.FindStringSubmatch(lines.Text() + "\n")
			if m == nil {
				t.Fatalf("first line %q, want the banner", lines.Text())
			}
			if tc.hold {
				heldRequest(t, "127.0.0.1:"+m[1])
			}
			held := time.Now()
			logged := make(chan string, 100)
			go func() {
				for lines.Scan() {
					logged <- lines.Text()
				}
				close(logged)
			}()
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			for l := range logged {
				if strings.Contains(l, `"msg":"shutdown begun"`) {
					break
				}
			}
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			// Read stdout to its end before Wait, which closes the pipe and
			// can lose the last lines (os/exec: StdoutPipe).
			var last string
			for limit := time.After(20 * time.Second); logged != nil; {
				select {
				case l, ok := <-logged:
					if !ok {
						logged = nil
					}
					last = cmp.Or(l, last)
				case <-limit:
					t.Fatalf("hello %q still runs 20 s after a second Ctrl-C", tc.args)
				}
			}
			if !exits(cmd, 20*time.Second) {
				t.Fatalf("hello %q closed stdout but still runs 20 s later", tc.args)
			}
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(last, `"msg":"second signal: stopping at once"`) {
				t.Errorf("hello %q after a second Ctrl-C: exit %d, last line %q; want 1 and a line saying so", tc.args, code, last)
			}
			// At once: before the held request's ReadTimeout (10 s) could
			// end the drain by itself.
			if took := time.Since(held); tc.hold && took >= 10*time.Second {
				t.Errorf("hello %q exited %v after its request was held: the drain ran until ReadTimeout ended it, want a second Ctrl-C to cut it", tc.args, took.Round(time.Millisecond))
			}
		})
	}

	// As the image's HEALTHCHECK runs it: no flags, while hello serves on
	// an -addr it was given (docker run IMAGE -addr ...). $PORT names a
	// free port: the probe must take the serving hello's -addr over it.
	t.Run("-healthcheck finds the serving hello's -addr", func(t *testing.T) {
		addr, free := "127.0.0.2:"+freePort(t), freePort(t)
		probe := func() error {
			cmd := exec.Command(bin, "-healthcheck") // #nosec G204 -- the binary this test built
			cmd.Env = append(os.Environ(), "PORT="+free)
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}
		server := exec.Command(bin, "-addr", addr) // #nosec G204 -- the binary this test built
		stdout, _ := server.StdoutPipe()
		if err := server.Start(); err != nil {
			t.Fatal(err)
		}
		defer server.Process.Kill()
		if line, _ := bufio.NewReader(stdout).ReadString('\n'); !bannerRE.MatchString(line) {
			t.Fatalf("hello -addr %s: first line %q, want the banner", addr, line)
		}
		go func() { _, _ = io.Copy(io.Discard, stdout) }() // the process's other lines
		if err := probe(); err != nil {
			t.Errorf("hello -healthcheck beside hello -addr %s, PORT=%s: %v, want exit 0", addr, free, err)
		}
		if err := server.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := server.Wait(); err != nil {
			t.Fatalf("hello -addr %s after SIGTERM: %v", addr, err)
		}
		if err := probe(); err == nil {
			t.Errorf("hello -healthcheck with no hello serving and nothing on PORT=%s: exit 0, want 1", free)
		}
	})

	t.Run("exit codes", func(t *testing.T) {
		taken := listen(t)
		for _, tc := range []struct {
			args []string
			code int
		}{
			{[]string{"-version"}, 0},
			{[]string{"-nope"}, 2},
			{[]string{"-addr", taken.Addr().String()}, 1},
			{[]string{"-healthcheck", "-addr", taken.Addr().String()}, 1},
		} {
			cmd := exec.Command(bin, tc.args...) // #nosec G204 -- the binary this test built
			out, _ := cmd.CombinedOutput()
			if got := cmd.ProcessState.ExitCode(); got != tc.code {
				t.Errorf("hello %q exited %d, want %d; output %q", tc.args, got, tc.code, out)
			}
		}
	})
}

// TestMakeGoRun runs the README's first command, on a free port instead of
// 8080, and curls it as the walk does.
func TestMakeGoRun(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles and runs hello through make")
	}
	ln := listen(t)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err := ln.Close(); err != nil { // free the port for make go-run
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-s", "go-run", "PORT="+port) // #nosec G204 -- the README's command, on a port of ours
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}     // go run's child gets the signal too
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if want := "Welcome, user! Curl me (locally with Port " + port + ") with your name as path :-D\n"; line != want {
		t.Fatalf("make go-run printed %q first, want %q", line, want)
	}
	go io.Copy(io.Discard, stdout)
	if resp, body := get(t, "http://127.0.0.1:"+port+"/TutorialHero"); body != "Hello, TutorialHero!\n" {
		t.Errorf("curl localhost:%s/TutorialHero = %d %q, want %q", port, resp.StatusCode, body, "Hello, TutorialHero!\n")
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	if !exits(cmd, 15*time.Second) {
		t.Errorf("make go-run still runs 15 s after Ctrl-C")
	}
}

// exits waits for cmd to end and reports whether it did within limit.
func exits(cmd *exec.Cmd, limit time.Duration) bool {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}

// build runs make go-build with the output in bin.
func build(t *testing.T, bin string, env ...string) {
	t.Helper()
	cmd := exec.Command("make", "-s", "go-build", "BIN="+bin) // #nosec G204 -- make go-build into a folder of the test's
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make go-build: %v\n%s", err, out)
	}
}

// syncBuffer is a bytes.Buffer that run's goroutine can write while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDocsMatchTheBuild wants the docs to say what the Makefile does, where
// the two once disagreed: the version's length in the README's walk, where
// the image's source label comes from, and what the overlay names the image
// by.
func TestDocsMatchTheBuild(t *testing.T) {
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(name) // #nosec G304 -- the repository's own files
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	abbrev := regexp.MustCompile(`git describe .*--abbrev=(\d+)`).FindStringSubmatch(read("Makefile"))
	if abbrev == nil {
		t.Fatal("the Makefile's VERSION: no git describe --abbrev=N")
	}
	versions := regexp.MustCompile(`main\.version=([0-9a-f]+)|"version":"([0-9a-f]+)"`).FindAllStringSubmatch(read("README.md"), -1)
	if len(versions) == 0 {
		t.Error("the README's walk shows no version")
	}
	for _, v := range versions {
		if got := cmp.Or(v[1], v[2]); strconv.Itoa(len(got)) != abbrev[1] {
			t.Errorf("the README's walk shows version %s, %d characters; VERSION has %s (--abbrev=%s)", got, len(got), abbrev[1], abbrev[1])
		}
	}
	for _, stale := range []struct{ file, claim, truth string }{
		{"docs/image.md", "`git remote`", "docker-build passes SOURCE, empty unless set, never the clone's origin"},
		{"docs/image.md", "the last three from git", "SOURCE is a knob, not read from git"},
		{"Dockerfile", "the repository's address from git", "SOURCE is a knob, not read from git"},
		{"k8s/kustomization.yaml", "$(IMAGE):$(TAG)", "the overlay names the image by the digest TAG was verified as"},
	} {
		if strings.Contains(read(stale.file), stale.claim) {
			t.Errorf("%s says %q: %s", stale.file, stale.claim, stale.truth)
		}
	}
}
