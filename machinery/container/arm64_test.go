package container

import (
	"bytes"
	"debug/elf"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestArm64 builds the image for arm64 on this amd64 host and runs the binary
// from its layer under Debian's qemu-aarch64-static.
func TestArm64(t *testing.T) {
	needEngine(t)
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatal("qemu-aarch64-static is missing: apt-get install qemu-user-static")
	}
	img := newImage(t)
	img.make(t, "docker-build", "GOARCH=arm64")

	if p := docker(t, "image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", img.ref()); p != "linux/arm64" {
		t.Errorf("platform %s, want linux/arm64", p)
	}
	binary := onlyBinary(t, img)
	bin, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		t.Fatal(err)
	}
	if bin.Machine != elf.EM_AARCH64 {
		t.Fatalf("/hello is built for %v, want %v", bin.Machine, elf.EM_AARCH64)
	}

	// img.bin is the binary onlyBinary found equal to the image's.
	out, err := exec.Command(qemu, img.bin, "-version").CombinedOutput() // #nosec G204 -- the binary the test built
	if err != nil || !strings.Contains(string(out), img.version) {
		t.Fatalf("qemu-aarch64-static hello -version = %q, %v; want it to name %s", out, err, img.version)
	}

	addr := "127.0.0.1:" + freePort(t)
	server := start(t, exec.Command(qemu, img.bin, "-addr", addr)) // #nosec G204 -- the binary the test built
	greet(t, addr, "Pi")
	if err := server.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("hello under qemu after SIGTERM: %v, want exit 0", err)
	}
}
