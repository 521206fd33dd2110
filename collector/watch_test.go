package collector

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestRunWatch: with a watch interval, a ban fail2ban commits is in the
// snapshot the next scrape writes before any scrape refreshed; with 0 it
// waits for the scrape; while the database is unreadable the watcher
// leaves the retries (and the error counter) to scrapes. RunWatch returns
// when its context ends.
func TestRunWatch(t *testing.T) {
	cases := []struct {
		name     string
		interval time.Duration
		breakDB  bool
		wantSeen bool
	}{
		{name: "watching", interval: 5 * time.Millisecond, wantSeen: true},
		{name: "off", interval: 0},
		{name: "unreadable database", interval: 5 * time.Millisecond, breakDB: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newF2BDB(t, 4)
			d.addJail("sshd", true)
			now := time.Now().Unix()
			d.ban("sshd", "192.0.2.1", now, 3600)
			x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "1h"), ChunkSize: 100, WatchInterval: tc.interval}, NoCountries{})
			defer x.Close()
			if err := x.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			errorsBefore := 0.0
			if tc.breakDB {
				if err := os.WriteFile(d.path, []byte("not a database, and long enough to be read as a header of one"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := x.Refresh(context.Background()); err == nil {
					t.Fatal("a refresh of a garbage file succeeded")
				}
				errorsBefore = x.readErrorsTotal()
			} else {
				d.ban("sshd", "192.0.2.2", now, 3600)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { x.RunWatch(ctx); close(done) }()
			deadline := time.Now().Add(500 * time.Millisecond)
			for x.bannedInSnapshot() < 2 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("RunWatch did not return after its context ended")
			}
			if seen := x.bannedInSnapshot() == 2; seen != tc.wantSeen {
				t.Fatalf("second ban in the snapshot without a scrape: %v, want %v", seen, tc.wantSeen)
			}
			if got := x.readErrorsTotal(); got != errorsBefore {
				t.Fatalf("read errors went from %v to %v while the watcher ran", errorsBefore, got)
			}
		})
	}
}

// bannedInSnapshot sums fail2ban_banned_ips in the snapshot a scrape would
// write now, without refreshing.
func (ex *Exporter) bannedInSnapshot() int {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	n := 0
	if ex.snap != nil {
		for _, v := range ex.snap.bannedNow {
			n += v
		}
	}
	return n
}

// readErrorsTotal sums bangui_exporter_fail2ban_read_errors_total.
func (ex *Exporter) readErrorsTotal() float64 {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	n := 0.0
	for _, v := range ex.readErrors {
		n += v
	}
	return n
}
