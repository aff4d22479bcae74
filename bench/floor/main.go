// Floor is the baseline that make bench measures hello against: a bare
// net/http server that writes the same response bytes as hello's greeting
// for /TutorialHero, with no routing, parsing, flags, timeouts or logging.
// Whatever hello costs beyond this is the price of its logic.
//
// Usage: floor [ADDR] (default :8080). Stop it with a signal; it does not drain.
package main

import (
	"net/http"
	"os"
)

// body is hello's greeting for the name the benchmarks ask for.
var body = []byte("Hello, TutorialHero!\n")

func main() {
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	err := http.ListenAndServe(addr, http.HandlerFunc(greet))
	os.Stderr.WriteString(err.Error() + "\n")
	os.Exit(1)
}

func greet(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.Write(body)
}
