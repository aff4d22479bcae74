// Package container proves hello's image on a real Docker engine and a real
// registry: what the image holds, how it is configured, how it runs, stops,
// runs on arm64, and travels through a registry as one tag for two
// architectures. Run it with `make container-test`; it builds the images with
// the Makefile's own targets.
//
// Without a Docker engine the suite is skipped with a loud line, unless CI=true,
// where that is a failure.
package container

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// noEngine says why Docker cannot be used, or is empty when it can.
var noEngine string

func TestMain(m *testing.M) {
	if out, err := tryRun("docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		noEngine = fmt.Sprintf("docker info failed (%v): %s", err, strings.TrimSpace(out))
		fmt.Fprintf(os.Stderr, "\n!!! container tests: NO DOCKER ENGINE, so nothing is proven here.\n"+
			"!!! %s\n!!! Start one with .ci/dockerd; with CI=true this is a failure.\n\n", noEngine)
	}
	os.Exit(m.Run())
}

// needEngine skips the test when there is no Docker engine, or fails it under CI.
func needEngine(t *testing.T) {
	t.Helper()
	if noEngine != "" {
		lacking(t, "no Docker engine: "+noEngine)
	}
}

// lacking skips the test for a missing piece that why names, or fails it
// under CI, where every piece must be there.
func lacking(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s", why)
	}
	t.Skipf("SKIPPED, %s", why)
}
