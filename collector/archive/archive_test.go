package archive

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

func TestMain(m *testing.M) {
	if crashChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

// TestIdempotent: the same events written twice, fail2ban's duplicate rows,
// and a restart of the store never create a duplicate.
func TestIdempotent(t *testing.T) {
	clock := newTestClock()
	base := clock.Now().Add(-48 * time.Hour).Unix()
	all := genEvents(base, 0, 3000)
	// An IPv4-mapped IPv6 spelling is the same event as its IPv4 form.
	mapped := all[0]
	mapped.IP = netip.AddrFrom16(all[0].IP.As16())
	tests := []struct {
		name    string
		batches [][][]Event // per store lifetime (restarts), per flush, the events added
	}{
		{"one flush", [][][]Event{{all}}},
		{"same events in one flush", [][][]Event{{append(append([]Event{}, all...), all...)}}},
		{"same events in two flushes", [][][]Event{{all, all}}},
		{"fail2ban duplicates", [][][]Event{{append(append([]Event{}, all[:10]...), append(all[:10:10], all...)...)}}},
		{"ipv4-mapped spelling", [][][]Event{{all, {mapped}}}},
		{"restart rereads everything", [][][]Event{{all[:2000]}, {all}, {all[1000:]}}},
		{"overlapping rereads", [][][]Event{{all[:1500], all[1000:2500]}, {all[2000:], all}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.sqlite3")
			var ingested float64
			for _, life := range tc.batches {
				db := openTestDB(t, path)
				s := openTestStore(t, db, Options{Now: clock.Now})
				for _, batch := range life {
					if n := s.Add(batch...); n != len(batch) {
						t.Fatalf("Add took %d of %d", n, len(batch))
					}
					if err := s.Flush(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				ingested += testutil.ToFloat64(s.m.ingested)
				closeQuietly(db)
			}
			db := openTestDB(t, path)
			s := openTestStore(t, db, Options{Now: clock.Now})
			want := distinct(all)
			if diff := cmp.Diff(want, dump(t, db), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("archive differs (-want +got):\n%s", diff)
			}
			if s.Count() != int64(len(want)) || rowCount(t, db) != int64(len(want)) || ingested != float64(len(want)) {
				t.Fatalf("Count %d, rows %d, ingested %v; want %d", s.Count(), rowCount(t, db), ingested, len(want))
			}
			if got := s.Oldest().Unix(); got != base {
				t.Fatalf("Oldest = %d, want %d", got, base)
			}
		})
	}
}

// TestOneCommitPerCycle: a cycle of any size is one commit (new jails
// included); a cycle with nothing queued touches nothing; Run's cycles are
// one commit each.
func TestOneCommitPerCycle(t *testing.T) {
	clock := newTestClock()
	base := clock.Now().Add(-time.Hour).Unix()
	for _, n := range []int{1, 7, 50_001} {
		t.Run("flush of "+itoa(n), func(t *testing.T) {
			db := openTestDB(t, "")
			s := openTestStore(t, db, Options{Now: clock.Now, MaxQueue: 100_000})
			commits := testkit.CountCommits(t, db)
			dv := testkit.PinDataVersion(t, db)
			v0 := dv.Get(t)
			s.Add(genEvents(base, 0, n)...)
			if c := commits.Load(); c != 0 {
				t.Fatalf("%d commits before the flush", c)
			}
			if err := s.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if c := commits.Load(); c != 1 {
				t.Fatalf("flush of %d events made %d commits, want 1", n, c)
			}
			if rowCount(t, db) != int64(n) {
				t.Fatalf("%d rows, want %d", rowCount(t, db), n)
			}
			v1 := dv.Get(t)
			if v1 == v0 {
				t.Fatal("data_version did not see the commit")
			}
			if err := s.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if c, v2 := commits.Load(), dv.Get(t); c != 1 || v2 != v1 {
				t.Fatalf("an empty flush wrote: %d commits, data_version %d→%d", c, v1, v2)
			}
		})
	}
	t.Run("Run cycles", func(t *testing.T) {
		db := openTestDB(t, "")
		s := openTestStore(t, db, Options{Now: clock.Now, Interval: 20 * time.Millisecond, PruneInterval: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		commits := testkit.CountCommits(t, db)
		go func() { done <- s.Run(ctx) }() // its start-up prune finds nothing and commits nothing
		for i := range 5 {
			s.Add(genEvents(base, i*1000, (i+1)*1000)...)
			want := float64(i + 1)
			testkit.EventuallyTrue(t, time.Minute, "the store's cycles", func() bool { return testutil.ToFloat64(s.m.cycles) >= want })
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if c, cycles := commits.Load(), testutil.ToFloat64(s.m.cycles); float64(c) != cycles || c != 5 {
			t.Fatalf("%d commits for %v cycles, want 5 and 5", c, cycles)
		}
		if rowCount(t, db) != 5000 {
			t.Fatalf("%d rows", rowCount(t, db))
		}
	})
}

// TestAddNeverTouchesTheDatabase: Add works at full speed while another
// connection holds an EXCLUSIVE lock on the app database (a write would wait
// for the busy timeout), and commits nothing (commit hook, data_version).
func TestAddNeverTouchesTheDatabase(t *testing.T) {
	clock := newTestClock()
	db := openTestDB(t, "")
	s := openTestStore(t, db, Options{Now: clock.Now, MaxQueue: 100_000, FlushAt: 100_000})
	commits := testkit.CountCommits(t, db)
	dv := testkit.PinDataVersion(t, db)
	v0 := dv.Get(t)

	locker, err := sql.Open("sqlite", "file:"+db.Path()+"?_pragma=busy_timeout(100)")
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(locker)
	ctx := context.Background()
	lconn, err := locker.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(lconn)
	if _, err := lconn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	events := genEvents(clock.Now().Add(-time.Hour).Unix(), 0, 50_000)
	start := time.Now()
	for i := 0; i < len(events); i += 100 {
		if n := s.Add(events[i : i+100]...); n != 100 {
			t.Fatalf("Add took %d", n)
		}
	}
	// An Add that waited on the lock would cost the busy timeout (100 ms):
	// 500 of them at least 50 s. The bound leaves room for a loaded machine.
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("50,000 Adds under an exclusive lock took %v", d)
	}
	if c, v := commits.Load(), dv.Get(t); c != 0 || v != v0 {
		t.Fatalf("Add wrote: %d commits, data_version %d→%d", c, v0, v)
	}
	// A write does wait on the lock: the test can fail.
	fctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if err := s.Flush(fctx); err == nil {
		t.Fatal("a flush succeeded under another connection's exclusive lock")
	}
	cancel()
	if _, err := lconn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if q := s.Queued(); q != len(events) {
		t.Fatalf("queued %d, want %d", q, len(events))
	}
	commits = testkit.CountCommits(t, db) // the interrupted flush may have cost the writer its connection
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if rowCount(t, db) != int64(len(events)) || commits.Load() != 1 {
		t.Fatalf("%d rows in %d commits", rowCount(t, db), commits.Load())
	}
}

// TestFailedFlushKeepsEvents: an ingest that fails (at its first row, in the
// middle, or at commit time) writes nothing, keeps every event queued ahead
// of those added since, and the next cycle writes them all in one commit.
func TestFailedFlushKeepsEvents(t *testing.T) {
	clock := newTestClock()
	base := clock.Now().Add(-time.Hour).Unix()
	events := genEvents(base, 0, 1000)
	tests := []struct {
		name    string
		trigger string // a temporary trigger on the writer connection that makes the ingest fail
	}{
		{"first row", `CREATE TEMP TRIGGER fail BEFORE INSERT ON archive_events BEGIN SELECT RAISE(ABORT, 'injected'); END`},
		{"middle row", `CREATE TEMP TRIGGER fail BEFORE INSERT ON archive_events WHEN NEW.timeofban = ` + itoa(int(events[600].TimeOfBan)) +
			` BEGIN SELECT RAISE(ABORT, 'injected'); END`},
		{"new jail", `CREATE TEMP TRIGGER fail AFTER INSERT ON archive_jails WHEN NEW.name = 'late' BEGIN SELECT RAISE(ABORT, 'injected'); END`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t, "")
			s := openTestStore(t, db, Options{Now: clock.Now})
			ctx := context.Background()
			if _, err := db.Writer.ExecContext(ctx, tc.trigger); err != nil {
				t.Fatal(err)
			}
			late := Event{Jail: "late", IP: netip.MustParseAddr("192.0.2.1"), TimeOfBan: base + 5000, Bantime: -1, Bancount: 1}
			s.Add(events...)
			s.Add(late)
			commits := testkit.CountCommits(t, db)
			err := s.Flush(ctx)
			if err == nil || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("Flush = %v, want the injected error", err)
			}
			if rowCount(t, db) != 0 || s.Count() != 0 || commits.Load() != 0 {
				t.Fatalf("a failed flush left %d rows, Count %d, %d commits", rowCount(t, db), s.Count(), commits.Load())
			}
			if testutil.ToFloat64(s.m.ingestErrors) != 1 || testutil.ToFloat64(s.m.cycles) != 0 {
				t.Fatal("metrics did not count the failure")
			}
			if q := s.Queued(); q != len(events)+1 {
				t.Fatalf("queued %d after the failure, want %d", q, len(events)+1)
			}
			after := genEvents(base, 1000, 1100)
			s.Add(after...)
			if _, err := db.Writer.ExecContext(ctx, "DROP TRIGGER temp.fail"); err != nil {
				t.Fatal(err)
			}
			commits = testkit.CountCommits(t, db)
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			want := distinct(append(append(append([]Event{}, events...), late), after...))
			if got := dump(t, db); len(got) != len(want) || s.Count() != int64(len(want)) || commits.Load() != 1 {
				t.Fatalf("after the retry: %d rows, Count %d, %d commits; want %d rows in 1 commit", len(got), s.Count(), commits.Load(), len(want))
			}
			if s.Queued() != 0 {
				t.Fatalf("%d still queued", s.Queued())
			}
		})
	}
}

// TestPrune: expired events go in batches of at most PruneBatch, one commit
// each; Count and Oldest follow; events older than the retention are never
// written.
func TestPrune(t *testing.T) {
	const n = 12_345
	tests := []struct {
		batch       int
		wantCommits int64
	}{
		{1000, 7}, // 6,172 expired: 6 full batches and one of 172
		{6172, 1}, // exactly one full batch, then a read that deletes nothing
		{50_000, 1},
		{97, 64},
	}
	for _, tc := range tests {
		t.Run("batch "+itoa(tc.batch), func(t *testing.T) {
			clock := newTestClock()
			db := openTestDB(t, "")
			s := openTestStore(t, db, Options{Now: clock.Now, Retention: 24 * time.Hour, PruneBatch: tc.batch})
			ctx := context.Background()
			// n events, four per second, ending now: the first half becomes expired
			// after advancing the clock by half their span.
			span := int64(n / 4)
			base := clock.Now().Unix() - span
			events := genEvents(base, 0, n)
			s.Add(events...)
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			clock.Advance(24*time.Hour - time.Duration(span/2)*time.Second)
			cutoff := clock.Now().Add(-24 * time.Hour).Unix()
			var keep []Event
			for _, e := range events {
				if e.TimeOfBan >= cutoff {
					keep = append(keep, e)
				}
			}
			expired := int64(n - len(keep))
			if expired != 6172 {
				t.Fatalf("test setup: %d expired", expired)
			}
			commits := testkit.CountCommits(t, db)
			got, err := s.Prune(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got != expired || commits.Load() != tc.wantCommits {
				t.Fatalf("pruned %d in %d commits, want %d in %d", got, commits.Load(), expired, tc.wantCommits)
			}
			keep = distinct(keep)
			if rows := dump(t, db); len(rows) != len(keep) || rows[0].TimeOfBan != keep[0].TimeOfBan {
				t.Fatalf("%d rows left, want %d", len(rows), len(keep))
			}
			if s.Count() != int64(len(keep)) || s.Oldest().Unix() != cutoff {
				t.Fatalf("Count %d Oldest %d, want %d %d", s.Count(), s.Oldest().Unix(), len(keep), cutoff)
			}
			if testutil.ToFloat64(s.m.pruned) != float64(expired) {
				t.Fatal("pruned_events_total wrong")
			}
			// Nothing left to prune: no commit.
			if got, err := s.Prune(ctx); err != nil || got != 0 || commits.Load() != tc.wantCommits {
				t.Fatalf("second prune: %d, %v, %d commits", got, err, commits.Load())
			}
			// Re-adding expired events writes none of them.
			s.Add(events...)
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if s.Count() != int64(len(keep)) || rowCount(t, db) != int64(len(keep)) {
				t.Fatalf("expired events were written again: %d", rowCount(t, db))
			}
			if v := testutil.ToFloat64(s.m.dropped.WithLabelValues(reasonExpired)); v != float64(expired) {
				t.Fatalf("dropped{expired} = %v, want %d", v, expired)
			}
		})
	}
}

// TestRunPrunesAndFlushesOnShutdown: Run prunes at start, and on ctx's end
// writes what is queued although no interval has passed.
func TestRunPrunesAndFlushesOnShutdown(t *testing.T) {
	clock := newTestClock()
	path := filepath.Join(t.TempDir(), "app.sqlite3")
	db := openTestDB(t, path)
	s := openTestStore(t, db, Options{Now: clock.Now, Retention: time.Hour})
	ctx := context.Background()
	old := Event{Jail: "sshd", IP: netip.MustParseAddr("198.51.100.7"), TimeOfBan: clock.Now().Add(-30 * time.Minute).Unix(), Bantime: 600}
	s.Add(old)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	events := genEvents(clock.Now().Add(-time.Minute).Unix(), 0, 777)

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	testkit.EventuallyTrue(t, time.Minute, "the start-up prune", func() bool { return s.Count() == 0 }) // the start-up prune
	s.Add(events...)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	closeQuietly(db)
	db = openTestDB(t, path)
	if got := dump(t, db); len(got) != len(distinct(events)) {
		t.Fatalf("after shutdown %d rows, want %d", len(got), len(events))
	}
}

// TestLoad: every event since the given time, in key order, across chunk
// boundaries inside one second; an error of fn stops it.
func TestLoad(t *testing.T) {
	clock := newTestClock()
	base := clock.Now().Add(-10 * 24 * time.Hour).Unix()
	db := openTestDB(t, "")
	all := distinct(genEvents(base, 0, 2003))
	tests := []struct {
		since time.Time
		chunk int
	}{
		{time.Time{}, 1}, {time.Time{}, 7}, {time.Unix(base+100, 0), 3},
		{time.Unix(base+100, 0), 1000}, {time.Unix(base+500, 0), 5000}, {time.Unix(base+10_000, 0), 10},
	}
	s0 := openTestStore(t, db, Options{Now: clock.Now})
	s0.Add(all...)
	if err := s0.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.since.String()+"/"+itoa(tc.chunk), func(t *testing.T) {
			s := openTestStore(t, db, Options{Now: clock.Now, LoadChunk: tc.chunk})
			var want, got []Event
			for _, e := range all {
				if e.TimeOfBan >= tc.since.Unix() {
					want = append(want, e)
				}
			}
			err := s.Load(context.Background(), tc.since, func(e Event) error { got = append(got, e); return nil })
			if err != nil {
				t.Fatal(err)
			}
			// Load's own order: (timeofban, jail id, ip bytes) — check it is by time.
			for i := 1; i < len(got); i++ {
				if got[i].TimeOfBan < got[i-1].TimeOfBan {
					t.Fatalf("out of order at %d", i)
				}
			}
			sortEvents(got)
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("Load differs (-want +got):\n%s", diff)
			}
			// LoadKeys: the same events in the same order, without bantime
			// and bancount.
			var keys []Event
			if err := s.LoadKeys(context.Background(), tc.since, func(e Event) error { keys = append(keys, e); return nil }); err != nil {
				t.Fatal(err)
			}
			sortEvents(keys)
			for i := range want {
				want[i].Bantime, want[i].Bancount = 0, 0
			}
			if diff := cmp.Diff(want, keys, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("LoadKeys differs (-want +got):\n%s", diff)
			}
		})
	}
	stop := errors.New("stop")
	var calls int
	s := openTestStore(t, db, Options{Now: clock.Now, LoadChunk: 10})
	err := s.Load(context.Background(), time.Time{}, func(Event) error {
		calls++
		if calls == 25 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 25 {
		t.Fatalf("Load = %v after %d calls", err, calls)
	}
}

// TestQueueBound: Add takes at most MaxQueue events (counting a flush in
// progress), says how many, and counts the rest; AddWait waits for room.
func TestQueueBound(t *testing.T) {
	clock := newTestClock()
	base := clock.Now().Add(-time.Hour).Unix()
	db := openTestDB(t, "")
	s := openTestStore(t, db, Options{Now: clock.Now, MaxQueue: 10, Interval: time.Hour})
	events := genEvents(base, 0, 15)
	invalid := Event{Jail: "sshd"} // no IP
	// The invalid event is consumed (counted, never queued) and takes no place.
	if n := s.Add(append([]Event{invalid}, events...)...); n != 11 {
		t.Fatalf("Add took %d, want 11", n)
	}
	if n := s.Add(events[9:]...); n != 0 {
		t.Fatalf("Add to a full queue took %d", n)
	}
	if s.Queued() != 10 {
		t.Fatalf("queued %d, want 10", s.Queued())
	}
	if v := testutil.ToFloat64(s.m.dropped.WithLabelValues(reasonQueueFull)); v != 5+6 {
		t.Fatalf("dropped{queue_full} = %v, want 11", v)
	}
	if v := testutil.ToFloat64(s.m.dropped.WithLabelValues(reasonInvalid)); v != 1 {
		t.Fatalf("dropped{invalid} = %v", v)
	}
	// AddWait with Run running: 1,000 events through a queue of 10.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	many := genEvents(base, 0, 1000)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	if err := s.AddWait(wctx, many...); err != nil {
		t.Fatal(err)
	}
	wcancel()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rowCount(t, db) != 1000 {
		t.Fatalf("%d rows after AddWait, want 1000", rowCount(t, db))
	}
	// AddWait queued the events that did not fit later: none was dropped
	// (before, every partial take counted the rest as dropped).
	if v := testutil.ToFloat64(s.m.dropped.WithLabelValues(reasonQueueFull)); v != 11 {
		t.Fatalf("dropped{queue_full} = %v after AddWait, want still 11", v)
	}
	// AddWait without Run gives up with its context.
	s.Add(genEvents(base, 2000, 2010)...)
	wctx, wcancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	if err := s.AddWait(wctx, events[0]); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AddWait on a full queue without Run = %v", err)
	}
}

// TestMetrics compares the exposition and lints it.
func TestMetrics(t *testing.T) {
	clock := newTestClock()
	db := openTestDB(t, "")
	s := openTestStore(t, db, Options{Now: clock.Now, Retention: 24 * time.Hour, MaxQueue: 5})
	base := clock.Now().Add(-time.Hour).Unix()
	s.Add(genEvents(base, 0, 4)...)
	s.Add(genEvents(base, 0, 4)...) // 4 duplicates, 1 takes the last place, 3 dropped
	old := genEvent(clock.Now().Add(-48*time.Hour).Unix(), 9)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Add(old, genEvent(base, 4))
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Add(genEvent(base, 5))
	want := `
# HELP bangui_exporter_archive_dropped_events_total Ban events offered to the archive and not written, by reason: queue_full (the queue was at its bound; the engine offers them again), invalid (no jail or IP), expired (older than the retention).
# TYPE bangui_exporter_archive_dropped_events_total counter
bangui_exporter_archive_dropped_events_total{reason="expired"} 1
bangui_exporter_archive_dropped_events_total{reason="invalid"} 0
bangui_exporter_archive_dropped_events_total{reason="queue_full"} 3
# HELP bangui_exporter_archive_events Ban events in the archive.
# TYPE bangui_exporter_archive_events gauge
bangui_exporter_archive_events 5
# HELP bangui_exporter_archive_ingest_cycles_total Ingest cycles that committed queued events to the archive (one transaction each).
# TYPE bangui_exporter_archive_ingest_cycles_total counter
bangui_exporter_archive_ingest_cycles_total 2
# HELP bangui_exporter_archive_ingest_errors_total Ingest cycles that failed; their events stay queued and are written by the next cycle.
# TYPE bangui_exporter_archive_ingest_errors_total counter
bangui_exporter_archive_ingest_errors_total 0
# HELP bangui_exporter_archive_ingested_events_total Ban events newly written to the archive (events already archived are ignored and not counted).
# TYPE bangui_exporter_archive_ingested_events_total counter
bangui_exporter_archive_ingested_events_total 5
# HELP bangui_exporter_archive_oldest_event_timestamp_seconds timeofban of the oldest archived ban event: the archive's horizon (0 while the archive is empty).
# TYPE bangui_exporter_archive_oldest_event_timestamp_seconds gauge
bangui_exporter_archive_oldest_event_timestamp_seconds ` + itoa(int(base)) + `
# HELP bangui_exporter_archive_pruned_events_total Archived ban events deleted because they became older than the retention.
# TYPE bangui_exporter_archive_pruned_events_total counter
bangui_exporter_archive_pruned_events_total 0
# HELP bangui_exporter_archive_queue_events Ban events queued for the next ingest cycle (including a cycle in progress).
# TYPE bangui_exporter_archive_queue_events gauge
bangui_exporter_archive_queue_events 1
`
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(s.Collector()); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	// Empty archive: horizon 0.
	e := openTestStore(t, openTestDB(t, ""), Options{Now: clock.Now})
	if err := testutil.CollectAndCompare(e.Collector(), strings.NewReader(`
# HELP bangui_exporter_archive_oldest_event_timestamp_seconds timeofban of the oldest archived ban event: the archive's horizon (0 while the archive is empty).
# TYPE bangui_exporter_archive_oldest_event_timestamp_seconds gauge
bangui_exporter_archive_oldest_event_timestamp_seconds 0
`), "bangui_exporter_archive_oldest_event_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestRunRetriesAndConcurrentAdds: under Run, cycles that fail keep their
// events and a later cycle writes them; Adds from many goroutines during
// cycles all arrive exactly once.
func TestRunRetriesAndConcurrentAdds(t *testing.T) {
	clock := newTestClock()
	base := clock.Now().Add(-time.Hour).Unix()
	db := openTestDB(t, "")
	var logs testkit.LogBuffer
	s := openTestStore(t, db, Options{Now: clock.Now, Interval: 5 * time.Millisecond, MaxQueue: 100_000,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	if _, err := db.Writer.ExecContext(ctx,
		`CREATE TEMP TRIGGER fail BEFORE INSERT ON archive_events BEGIN SELECT RAISE(ABORT, 'injected'); END`); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	const workers, per = 8, 5000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w * per; i < (w+1)*per; i += 50 {
				if n := s.Add(genEvents(base, i, i+50)...); n != 50 {
					t.Errorf("Add took %d", n)
				}
			}
		})
	}
	wg.Wait()
	testkit.EventuallyTrue(t, 2*time.Minute, "three failed ingests", func() bool { return testutil.ToFloat64(s.m.ingestErrors) >= 3 })
	if s.Count() != 0 || s.Queued() != workers*per {
		t.Fatalf("while failing: Count %d, queued %d", s.Count(), s.Queued())
	}
	if _, err := db.Writer.ExecContext(ctx, "DROP TRIGGER temp.fail"); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, 2*time.Minute, "every event archived", func() bool { return s.Count() == workers*per })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := dump(t, db); len(got) != workers*per || s.Queued() != 0 {
		t.Fatalf("%d rows, %d queued; want %d, 0", len(got), s.Queued(), workers*per)
	}
	// One line when ingest started failing, one when it recovered: no flood.
	out := logs.String()
	if strings.Count(out, "ingest failed") != 1 || strings.Count(out, "ingest works again") != 1 {
		t.Fatalf("log lines:\n%s", out)
	}
}
