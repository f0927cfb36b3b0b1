// The pod sandbox's process: it holds the pod's namespaces and waits to be told to stop, like
// Kubernetes' own pause image (which cannot be pulled here). Static, so its image needs nothing
// else.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
