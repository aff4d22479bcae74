// Command pause is the sandbox ("pause") image of the e2e cluster: the first
// process of every pod, holding the pod's namespaces until the pod stops. No
// image can be pulled here, so the suite builds this one FROM scratch.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
