// Command netcheck is the e2e suite's stand-in for a pod in the NetworkPolicy
// check: it runs as a pod's process (built FROM scratch, like every image
// the suite runs) and tells what that pod can reach.
//
//	netcheck serve PORT...     accept TCP connections on each port (and close them) until SIGTERM
//	netcheck reach TARGET...   try each target at once; print one line per target:
//	                           "TARGET reached" or "TARGET unreachable: <error>"
//
// A TARGET is host:port, a TCP connection to open, or dns:NAME, a look-up of
// NAME through the pod's resolver (the cluster's DNS, which a pod with the
// default DNS policy asks). reach exits 0 whatever it found: the lines are
// the answer.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// timeout bounds each attempt: a policy that drops instead of rejecting
// must not stall the suite.
const timeout = 2 * time.Second

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: netcheck serve PORT... | netcheck reach TARGET...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "reach":
		results := make([]chan string, len(os.Args)-2)
		for i, target := range os.Args[2:] {
			results[i] = make(chan string, 1)
			go func() { results[i] <- target + " " + reach(target) }()
		}
		for _, r := range results {
			fmt.Println(<-r)
		}
	default:
		fmt.Fprintf(os.Stderr, "netcheck: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func serve(ports []string) {
	for _, port := range ports {
		l, err := net.Listen("tcp", ":"+port) // #nosec G102 -- in a pod: its one interface is the point
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				_ = conn.Close() // the connection was the point
			}
		}()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}

// reach tries one target and says how it went.
func reach(target string) string {
	var err error
	if name, ok := strings.CutPrefix(target, "dns:"); ok {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err = net.DefaultResolver.LookupHost(ctx, name)
	} else {
		var conn net.Conn
		// #nosec G704 -- dialling what it is told is the point: the suite's targets, all in the cluster
		if conn, err = net.DialTimeout("tcp", target, timeout); err == nil {
			_ = conn.Close() // it opened: that is the answer
		}
	}
	if err != nil {
		return "unreachable: " + err.Error()
	}
	return "reached"
}
