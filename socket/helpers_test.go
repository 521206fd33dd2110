package socket

import (
	"os"
	"testing"
)

// shortTempDir is a temporary directory short enough for a unix socket path.
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}
