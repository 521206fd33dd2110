package f2bsandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// CIEnv is the environment variable CI sets to 1: tests that need
// fail2ban-server then fail instead of skipping when it is missing.
const CIEnv = "BANGUI_CI"

// RequireFail2ban skips the test when fail2ban-server or fail2ban-client is
// not installed, or fails it when env BANGUI_CI=1.
func RequireFail2ban(t testing.TB) {
	t.Helper()
	for _, bin := range []string{ServerBinary, ClientBinary} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv(CIEnv) == "1" {
				t.Fatalf("%s not found but %s=1: install Debian's fail2ban package (%v)", bin, CIEnv, err)
			}
			t.Skipf("%s not found (install Debian's fail2ban package; with %s=1 this fails): %v", bin, CIEnv, err)
		}
	}
}

// StartT starts a sandbox for a test: in a fresh temporary directory when
// opts.Dir is empty (a short one under the system temp dir when the test's
// directory would make the socket path too long), stopped by t.Cleanup.
// Without fail2ban installed the test is skipped, or fails when BANGUI_CI=1.
func StartT(t testing.TB, opts Options) *Sandbox {
	t.Helper()
	RequireFail2ban(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Socket == "" && len(filepath.Join(opts.Dir, "f2b.sock")) > maxSocketPath-8 {
		short, err := os.MkdirTemp("", "f2b")
		if err != nil {
			t.Fatalf("f2bsandbox: short socket directory: %v", err)
		}
		t.Cleanup(func() {
			if err := os.RemoveAll(short); err != nil {
				t.Errorf("f2bsandbox: remove %s: %v", short, err)
			}
		})
		opts.Socket = filepath.Join(short, "f2b.sock")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start fail2ban sandbox: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop fail2ban sandbox: %v", err)
		}
	})
	return s
}
