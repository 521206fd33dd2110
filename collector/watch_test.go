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
// leaves the retries (and the error counter) to scrapes; while fail2ban
// writes nothing it does not refresh at all (the last read's time and
// duration stay those of the last real read). RunWatch returns when its
// context ends.
func TestRunWatch(t *testing.T) {
	cases := []struct {
		name     string
		interval time.Duration
		breakDB  bool
		idle     bool // fail2ban writes nothing
		wantSeen bool
	}{
		{name: "watching", interval: 5 * time.Millisecond, wantSeen: true},
		{name: "off", interval: 0},
		{name: "unreadable database", interval: 5 * time.Millisecond, breakDB: true},
		{name: "nothing written", interval: 5 * time.Millisecond, idle: true},
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
			} else if !tc.idle {
				d.ban("sshd", "192.0.2.2", now, 3600)
			}
			lastRead := x.lastReadTime()
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
			if tc.idle {
				if got := x.lastReadTime(); !got.Equal(lastRead) {
					t.Fatalf("the watcher refreshed with nothing written: last read %v, was %v", got, lastRead)
				}
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

// lastReadTime is the time of the last successful refresh.
func (ex *Exporter) lastReadTime() time.Time {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.lastSuccess
}

// TestCanceledRefreshIsNoError: a refresh whose caller stopped (a shutdown
// ends the background refreshes' context) was abandoned, not failed: it
// counts no read error and leaves fail2ban_up as it was, and the next
// refresh takes in what it left.
func TestCanceledRefreshIsNoError(t *testing.T) {
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	now := time.Now().Unix()
	d.ban("sshd", "192.0.2.1", now, 3600)
	x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "1h"), ChunkSize: 100}, NoCountries{})
	defer x.Close()
	if err := x.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.ban("sshd", "192.0.2.2", now, 3600)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := x.Refresh(ctx); err == nil {
		t.Fatal("a refresh with an ended context succeeded")
	}
	// The first may share the abandoned refresh (and its error) if that
	// still runs; the second reads.
	_ = x.Refresh(context.Background())
	if err := x.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := x.readErrorsTotal(); got != 0 {
		t.Fatalf("an abandoned refresh counted %v read errors", got)
	}
	s := scrape(t, x)
	if s["fail2ban_up{}"] != 1 {
		t.Fatalf("fail2ban_up = %v after an abandoned refresh and a good one", s["fail2ban_up{}"])
	}
	if x.bannedInSnapshot() != 2 {
		t.Fatalf("banned = %d, want 2", x.bannedInSnapshot())
	}
}
