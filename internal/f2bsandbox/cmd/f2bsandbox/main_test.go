package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

func TestServeSampleBansAndStop(t *testing.T) {
	f2bsandbox.RequireFail2ban(t)
	dir, err := os.MkdirTemp("", "f2bcmd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, slog.New(slog.DiscardHandler), pw, dir, "", "1d", 20, 200*time.Millisecond)
		_ = pw.Close()
	}()
	values := map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if sc.Text() == "ready" {
			break
		}
		k, v, _ := strings.Cut(sc.Text(), "=")
		values[k] = v
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if values["db"] == "" || values["socket"] == "" {
		t.Fatalf("no db/socket lines before ready: %v (serve: %v)", values, func() error { cancel(); return <-done }())
	}
	status := func(jail string) f2bsandbox.JailStatus {
		t.Helper()
		out, err := exec.Command(f2bsandbox.ClientBinary, "-c", dir+"/etc", "status", jail).CombinedOutput()
		if err != nil {
			t.Fatalf("status %s: %v: %s", jail, err, out)
		}
		st, err := f2bsandbox.ParseJailStatus(string(out))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// The 20 sample bans: 14 in sshd, 2 in perm, 4 in incr. -ban-every
	// (200 ms here) adds to sshd meanwhile, so under load sshd may already
	// hold more.
	if n := status("sshd").CurrentlyBanned; n < 14 {
		t.Errorf("sshd: %d sample bans, want at least 14", n)
	}
	if n := status("perm").CurrentlyBanned; n != 2 {
		t.Errorf("perm: %d permanent bans, want 2", n)
	}
	if n := status("incr").CurrentlyBanned; n != 4 {
		t.Errorf("incr: %d sample bans, want 4", n)
	}
	// -ban-every adds bans while running.
	testkit.EventuallyTrue(t, 10*time.Second, "a periodic ban", func() bool {
		return status("sshd").CurrentlyBanned > 14
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if _, err := os.Stat(values["socket"]); !os.IsNotExist(err) {
		t.Errorf("socket still there after stop: %v", err)
	}
}
