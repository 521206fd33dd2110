package collector

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// archivedEvents reads every event of the archive.
func archivedEvents(t *testing.T, store *archive.Store) map[naiveBanEvent]archive.Event {
	t.Helper()
	out := map[naiveBanEvent]archive.Event{}
	err := store.Load(context.Background(), time.Time{}, func(ev archive.Event) error {
		out[naiveBanEvent{jail: ev.Jail, ip: ev.IP, tob: ev.TimeOfBan}] = ev
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestArchiveBackfill: a startup read with more rows for the archive than
// the threshold offers none and the exporter reads them again in the
// background, chunk by chunk. Whatever happens meanwhile — fail2ban deletes
// rows the backfill has not read yet (with or without a scrape in between),
// fail2ban's file is replaced, the exporter is closed — every event the
// engine counted ends up in the archive exactly once: with the row's
// bantime and bancount when the backfill read the row, with bantime -2
// (unknown) when only the engine still knew the event.
func TestArchiveBackfill(t *testing.T) {
	type env = backfillEnv
	cases := []struct {
		name string
		// during runs at the second backfill step (one chunk is done);
		// it returns the events whose rows it deleted before the
		// backfill could read them (archived with bantime -2).
		during func(t *testing.T, e *env) map[naiveBanEvent]bool
	}{
		{"undisturbed", nil},
		{"purge and unban, then a scrape", func(t *testing.T, e *env) map[naiveBanEvent]bool {
			gone := e.rowsWhere(t, func(ev naiveBanEvent) bool {
				return ev.tob < e.now-5*86400 || ev.ip == netip.MustParseAddr("198.51.100.7")
			})
			e.d.purge(e.now, 5*86400)
			e.d.unban("sshd", "198.51.100.7")
			e.d.unban("nginx", "198.51.100.7")
			if err := e.run.x.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			return gone
		}},
		{"purge without a scrape", func(t *testing.T, e *env) map[naiveBanEvent]bool {
			gone := e.rowsWhere(t, func(ev naiveBanEvent) bool { return ev.tob < e.now-5*86400 })
			e.d.purge(e.now, 5*86400)
			return gone
		}},
		{"new bans meanwhile", func(t *testing.T, e *env) map[naiveBanEvent]bool {
			e.ban("sshd", "203.0.113.50", e.now, 600)
			e.ban("nginx", "203.0.113.51", e.now, -1)
			if err := e.run.x.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
		{"file replaced, then a scrape", func(t *testing.T, e *env) map[naiveBanEvent]bool {
			gone := e.rowsWhere(t, func(naiveBanEvent) bool { return true })
			fresh := newF2BDB(t, 4)
			fresh.addJail("sshd", true)
			fresh.ban("sshd", "203.0.113.60", e.now, 600)
			if err := fresh.db.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(fresh.path, e.d.path); err != nil {
				t.Fatal(err)
			}
			e.history[naiveBanEvent{jail: "sshd", ip: netip.MustParseAddr("203.0.113.60"), tob: e.now}] = true
			if err := e.run.x.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			return gone
		}},
		{"exporter closed", func(t *testing.T, e *env) map[naiveBanEvent]bool {
			done := make(chan error, 1)
			go func() { done <- e.run.x.Close() }()
			// Close waits for the backfill, which runs this hook: the
			// backfill goes on once Close has marked the exporter closed.
			testkit.EventuallyTrue(t, 30*time.Second, "Close to start", func() bool {
				e.run.x.mu.Lock()
				defer e.run.x.mu.Unlock()
				return e.run.x.closed
			})
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newF2BDB(t, 4)
			d.addJail("sshd", true)
			d.addJail("nginx", true)
			clk := newClock(1_790_000_000)
			e := &env{d: d, now: clk.Now().Unix(), history: map[naiveBanEvent]bool{}}
			e.run = newArchiveRun(t, Options{DBPath: d.path, Windows: windowsOf(t, "1d", "7d", "30d")}, clk, nil)
			e.run.x.backfillAbove, e.run.x.backfillChunk = 50, 40
			for i := range 300 {
				jail := []string{"sshd", "nginx"}[i%2]
				e.ban(jail, fmt.Sprintf("198.51.100.%d", i%40+1), e.now-int64(i)*2000, []int64{600, 3600, -1}[i%3])
			}
			var gone map[naiveBanEvent]bool
			var once sync.Once
			steps := 0
			e.run.x.testHookBackfillStep = func() {
				if steps++; steps == 2 && tc.during != nil {
					once.Do(func() { gone = tc.during(t, e) })
				}
			}
			if err := e.run.x.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			e.run.sync()
			if steps < 2 {
				t.Fatalf("the backfill took %d steps, want several chunks of 40 (300 rows above a threshold of 50)", steps)
			}
			got := archivedEvents(t, e.run.store)
			if len(got) != len(e.history) {
				t.Errorf("archived %d events, want %d", len(got), len(e.history))
			}
			rows := map[naiveBanEvent]int64{} // bantime of every ban written
			for i := range 300 {
				rows[naiveBanEvent{jail: []string{"sshd", "nginx"}[i%2], ip: netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i%40+1)), tob: e.now - int64(i)*2000}] = []int64{600, 3600, -1}[i%3]
			}
			unknown := 0
			for ev := range e.history {
				a, ok := got[ev]
				if !ok {
					t.Errorf("event %+v not archived", ev)
					continue
				}
				switch want, fromRow := rows[ev]; {
				case a.Bantime == -2 && gone[ev]:
					unknown++ // the backfill never saw the row: from the engine
				case !fromRow:
					// a ban written during the backfill: offered live
				case a.Bantime != want || a.Bancount != 1:
					t.Errorf("event %+v archived with bantime %d, bancount %d; want %d, 1", ev, a.Bantime, a.Bancount, want)
				}
			}
			if tc.during != nil && len(gone) > 0 && unknown == 0 {
				t.Errorf("%d rows deleted before the backfill read them, none archived from the engine", len(gone))
			}
			t.Logf("%d events archived, %d from the engine (rows deleted before the backfill read them)", len(got), unknown)
		})
	}
}

// backfillEnv is the state a TestArchiveBackfill case works on.
type backfillEnv struct {
	d       *f2bDB
	run     *archiveRun
	now     int64
	history map[naiveBanEvent]bool // every event the engine counted
}

// ban writes a ban and records it in history.
func (e *backfillEnv) ban(jail, ip string, tob, bantime int64) {
	e.d.ban(jail, ip, tob, bantime)
	e.history[naiveBanEvent{jail: jail, ip: netip.MustParseAddr(ip), tob: tob}] = true
}

// rowsWhere returns the events of the rows of bans matching keep.
func (e *backfillEnv) rowsWhere(t *testing.T, keep func(naiveBanEvent) bool) map[naiveBanEvent]bool {
	out := map[naiveBanEvent]bool{}
	for ev := range bansEvents(t, e.d) {
		if keep(ev) {
			out[ev] = true
		}
	}
	return out
}

// TestBackfillSkipsArchivedRows: a restart after a long downtime has many new
// rows (a backfill) beside rows whose events the archive already holds; the
// backfill queues only the new ones instead of writing every row again.
func TestBackfillSkipsArchivedRows(t *testing.T) {
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	clk := newClock(1_790_000_000)
	var logs testkit.LogBuffer
	run := newArchiveRun(t, Options{DBPath: d.path, Windows: windowsOf(t, "1d", "30d"), Logger: logs.Logger(slog.LevelInfo)}, clk, nil)
	now := clk.Now().Unix()
	for i := range 200 {
		d.ban("sshd", fmt.Sprintf("198.51.100.%d", i%50+1), now-int64(i)*600, 600)
	}
	run.refresh() // below the default threshold: offered, not backfilled
	if got := run.store.Count(); got != 200 {
		t.Fatalf("first start archived %d events, want 200", got)
	}
	if err := run.x.Close(); err != nil {
		t.Fatal(err)
	}
	run.sync()
	clk.Add(time.Hour)
	now = clk.Now().Unix()
	for i := range 120 { // downtime: more new rows than the lowered threshold
		d.ban("sshd", fmt.Sprintf("203.0.113.%d", i%60+1), now-int64(i)*20, 600)
	}
	run.start()
	run.x.backfillAbove, run.x.backfillChunk = 100, 32
	logs.Take()
	run.refresh()
	if got := run.store.Count(); got != 320 {
		t.Fatalf("archived %d events after the restart, want 320", got)
	}
	var done string
	for _, l := range logs.Take() {
		if strings.Contains(l, "backfill of the startup read done") {
			done = l
		}
	}
	if !strings.Contains(done, "events=120 ") {
		t.Fatalf("the restart's backfill queued %q, want exactly the 120 new events", done)
	}
}
