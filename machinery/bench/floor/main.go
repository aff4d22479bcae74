// Floor is the baseline that make bench measures hello against: a bare
// net/http handler that writes the same response bytes as hello's greeting
// for /TutorialHero, with no routing, parsing, flags, logging or shutdown.
// Whatever hello costs beyond this is the price of its logic.
//
// It runs on an http.Server with hello's limits (timeouts, header size):
// they are part of hello's contract, not logic, and their per-request
// deadline timers would otherwise count as hello's cost (floor_test.go keeps
// the two in step).
//
// Usage: floor [ADDR] (default :8080). Stop it with a signal; it does not drain.
package main

import (
	"net/http"
	"os"
	"time"
)

// body is hello's greeting for the name the benchmarks ask for.
var body = []byte("Hello, TutorialHero!\n")

func main() {
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	srv := &http.Server{
		Addr:              addr,
		Handler:           http.HandlerFunc(greet),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
	}
	err := srv.ListenAndServe()
	_, _ = os.Stderr.WriteString(err.Error() + "\n") // exits 1 whether or not this is seen
	os.Exit(1)
}

func greet(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	_, _ = w.Write(body) // a failed write is the client's loss; a handler has no one to tell
}
