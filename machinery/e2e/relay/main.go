// Command relay carries TCP connections from one address to another, both
// ways, until either side closes:
//
//	relay LISTEN TARGET
//
// The e2e suite's registry listens on 127.0.0.1 of the node, and the images
// are named for it there. The kubelet pulls on the node, but a pod that
// fetches from the registry itself (policy-controller's webhook, for the
// signatures) reaches the node only at the node IP, and its own 127.0.0.1 is
// the pod. So one relay on the node (node IP to 127.0.0.1) and one in that
// pod (its 127.0.0.1 to the node IP) make the registry answer there under
// the name the images carry. Built FROM scratch, like every image the suite
// runs.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: relay LISTEN TARGET")
		os.Exit(2)
	}
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	fmt.Printf("relay: %s to %s\n", l.Addr(), os.Args[2])
	for {
		conn, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		go carry(conn, os.Args[2])
	}
}

// carry copies conn to a new connection to target and back, and closes both
// once both directions are done.
func carry(conn net.Conn, target string) {
	defer conn.Close()
	// #nosec G704 -- the one target it was started with: the suite's registry
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, conn)           // until the client is done sending
		_ = up.(*net.TCPConn).CloseWrite() // then tell the target so
		close(done)
	}()
	_, _ = io.Copy(conn, up)
	_ = conn.(*net.TCPConn).CloseWrite()
	<-done
}
