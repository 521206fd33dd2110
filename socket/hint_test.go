package socket

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHintNamesTheCause dials real paths and checks the log hint names
// what is wrong: nothing at the path, or not a fail2ban socket.
func TestHintNamesTheCause(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		want string
	}{
		{"missing socket", filepath.Join(dir, "absent.sock"), "no socket at this path"},
		{"directory missing too", filepath.Join(dir, "nope", "fail2ban.sock"), "no socket at this path"},
		{"not fail2ban", garbagePeer(t, filepath.Join(dir, "garbage.sock")), "does not lead to fail2ban"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Options{Path: tt.path, Timeout: time.Second})
			defer func() { _ = c.Close() }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := c.Jails(ctx)
			if err == nil {
				t.Fatal("no error for a missing socket")
			}
			if got := hint(classify(err)); !strings.Contains(got, tt.want) {
				t.Errorf("hint(%v) = %q, want it to contain %q", err, got, tt.want)
			}
		})
	}
}

// garbagePeer listens on path and answers every request with bytes that
// are no pickle, then hangs up. It reads the request first: hanging up
// before the client has written it would make the client's write fail
// (broken pipe) instead of its read, depending on timing.
func garbagePeer(t *testing.T, path string) string {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if readRequest(conn) == nil {
				_, _ = conn.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n<F2B_END_COMMAND>"))
			}
			_ = conn.Close()
		}
	}()
	return path
}
