package geo

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

func countRows(t testing.TB, db *appdb.DB, where string) int {
	t.Helper()
	var n int
	if err := db.Reader.QueryRowContext(context.Background(), "SELECT count(*) FROM geo_cache "+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFlushIsOneCommit resolves 50,000 IPs and flushes them: exactly one
// commit (counted by SQLite's commit hook), every row written, and a flush
// with nothing dirty does not touch the database.
func TestFlushIsOneCommit(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb"}, Options{})
	r := env.r
	commits := testkit.CountCommits(t, r.db)
	for _, ip := range globalIPs(50_000) {
		r.Track(ip)
	}
	r.Track(netip.MustParseAddr("192.168.1.1"))
	r.drain(context.Background())
	if c := commits.Load(); c != 0 {
		t.Fatalf("%d commits before the flush", c)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := commits.Load(); c != 1 {
		t.Fatalf("flush of 50,001 entries made %d commits, want 1", c)
	}
	if n := countRows(t, r.db, ""); n != 50_001 {
		t.Fatalf("%d rows, want 50001", n)
	}
	if n := countRows(t, r.db, "WHERE country_code IS NULL AND message = 'private range' AND provider = 'local'"); n != 1 {
		t.Fatalf("private row missing: %d", n)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := commits.Load(); c != 1 {
		t.Fatalf("an empty flush committed (%d commits)", c)
	}
	if got := testutil.ToFloat64(r.metrics.flushedEntries); got != 50_001 {
		t.Errorf("flushed_entries_total = %v", got)
	}
	if got := testutil.ToFloat64(r.metrics.flushes); got != 1 {
		t.Errorf("flushes_total = %v", got)
	}
}

// TestRestartWarmsFromDB: a second resolver on the same database knows every
// answer at once, queues nothing already resolved, and keeps the negative
// tier's backoff.
func TestRestartWarmsFromDB(t *testing.T) {
	db := openTestDB(t)
	env := newResolverEnv(t, []string{"mmdb"}, Options{DB: db})
	ips := addrs("8.8.8.8", "2001:4860:4860::8888", "10.1.2.3", "9.9.9.9", "2.16.0.1")
	for _, ip := range ips {
		env.r.Track(ip)
	}
	env.r.drain(context.Background())
	if err := env.r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := map[netip.Addr]Entry{}
	for _, ip := range ips {
		before[ip], _ = env.r.Lookup(ip)
	}

	r2, err := New(context.Background(), Options{DB: db, Providers: []Provider{env.mmdb}, Clock: env.clock})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		r2.Track(ip)
	}
	if s := r2.Status(); s.Pending != 0 || s.Resolved != 3 || s.Unresolved != 2 {
		t.Fatalf("after restart: %+v (nothing should be queued)", s)
	}
	for _, ip := range ips {
		got, ok := r2.Lookup(ip)
		want := before[ip]
		want.Pending, want.Tracked = false, true
		if !ok || got != want {
			t.Errorf("%v after restart:\n got %+v\nwant %+v", ip, got, want)
		}
	}
}

// TestFailedFlushKeepsDirty makes SQLite refuse the write (a trigger), then
// lets it succeed: nothing is lost, and the retry is again one commit.
func TestFailedFlushKeepsDirty(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb"}, Options{})
	r := env.r
	ctx := context.Background()
	if _, err := r.db.Writer.ExecContext(ctx, `CREATE TRIGGER geo_cache_refuse BEFORE INSERT ON geo_cache
		BEGIN SELECT RAISE(ABORT, 'disk says no'); END`); err != nil {
		t.Fatal(err)
	}
	for _, ip := range addrs("8.8.8.8", "1.1.1.1", "81.2.69.142") {
		r.Track(ip)
	}
	r.drain(ctx)
	err := r.Flush(ctx)
	if err == nil || !strings.Contains(err.Error(), "disk says no") {
		t.Fatalf("flush error = %v", err)
	}
	if s := r.Status(); s.Dirty != 3 || !strings.Contains(s.LastFlushError, "disk says no") {
		t.Fatalf("status after a failed flush: %+v", s)
	}
	if got := testutil.ToFloat64(r.metrics.flushErrors); got != 1 {
		t.Fatalf("flush_errors_total = %v", got)
	}
	if n := countRows(t, r.db, ""); n != 0 {
		t.Fatalf("%d rows after a failed flush (the transaction must roll back)", n)
	}
	// An entry changing between the failed flush and the retry is written once.
	r.Track(netip.MustParseAddr("5.255.255.5"))
	r.drain(ctx)
	if _, err := r.db.Writer.ExecContext(ctx, "DROP TRIGGER geo_cache_refuse"); err != nil {
		t.Fatal(err)
	}
	commits := testkit.CountCommits(t, r.db)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, r.db, "WHERE country_code IS NOT NULL"); n != 4 || commits.Load() != 1 {
		t.Fatalf("%d rows in %d commits, want 4 in 1", n, commits.Load())
	}
	if s := r.Status(); s.Dirty != 0 || s.LastFlushError != "" || s.LastFlushedRows != 4 {
		t.Fatalf("status %+v", s)
	}
}

// scrape does what the engine and Prometheus do on a scrape: a country for
// every counted IP, Generation, and a Gather of geo's metrics.
func scrape(t testing.TB, r *Resolver, reg *prometheus.Registry, ips []netip.Addr) int {
	t.Helper()
	known := 0
	_ = r.Generation()
	for _, ip := range ips {
		if r.Country(ip) != "" {
			known++
		}
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	return known
}

// TestScrapesNeverWrite: after startup and a flush, scrapes (and the admin
// API's reads) change nothing in the app database: PRAGMA data_version on a
// pinned connection, total_changes() of the writer and the commit hook all
// stay put.
func TestScrapesNeverWrite(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb", "ipapi"}, Options{})
	r := env.r
	ctx := context.Background()
	ips := append(globalIPs(2000), addrs("8.8.8.8", "10.0.0.1", "2001:4860:4860::8888")...)
	for _, ip := range ips {
		r.Track(ip)
	}
	r.drain(ctx)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.Collector())
	commits := testkit.CountCommits(t, r.db)
	dv := testkit.PinDataVersion(t, r.db)
	totalChanges := func() int64 {
		var n int64
		if err := r.db.Writer.QueryRowContext(ctx, "SELECT total_changes()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	v0, tc0 := dv.Get(t), totalChanges()
	for range 50 {
		if known := scrape(t, r, reg, ips); known != len(ips)-1 {
			t.Fatalf("%d countries known, want %d", known, len(ips)-1)
		}
		_ = r.Status()
		r.Lookup(ips[0])
	}
	if v1, tc1, c := dv.Get(t), totalChanges(), commits.Load(); v1 != v0 || tc1 != tc0 || c != 0 {
		t.Fatalf("scrapes wrote: data_version %d→%d, total_changes %d→%d, %d commits", v0, v1, tc0, tc1, c)
	}
	// The check can fail: one flush of something dirty moves all three
	// (two changes: the entry and geo_state's tracked count).
	r.Track(netip.MustParseAddr("81.2.69.142"))
	r.drain(ctx)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v1, tc1, c := dv.Get(t), totalChanges(), commits.Load(); v1 == v0 || tc1 != tc0+2 || c != 1 {
		t.Fatalf("a real flush was not seen: data_version %d→%d, total_changes %d→%d, %d commits", v0, v1, tc0, tc1, c)
	}
}

// TestConcurrentScrapesDuringFlush: scrapes running while 50,000 entries
// are flushed and new ones resolved see every known country, every time.
func TestConcurrentScrapesDuringFlush(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb"}, Options{})
	r := env.r
	ctx := context.Background()
	ips := globalIPs(50_000)
	for _, ip := range ips {
		r.Track(ip)
	}
	r.drain(ctx)
	want := map[netip.Addr]string{}
	for _, ip := range ips {
		want[ip] = r.Country(ip)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.Collector())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, ip := range ips[:1000] {
					if got := r.Country(ip); got != want[ip] {
						errs <- fmt.Errorf("Country(%v) = %q during flush, want %q", ip, got, want[ip])
						return
					}
				}
				if _, err := reg.Gather(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	more := globalIPs(51_000)[50_000:]
	wg.Go(func() {
		for _, ip := range more {
			r.Track(ip)
		}
	})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.drain(ctx)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := countRows(t, r.db, ""); n != 51_000 {
		t.Fatalf("%d rows, want 51000", n)
	}
}

// TestCrashBetweenFlushesLosesOnlyDirty kills (SIGKILL) a process that
// flushed 100 entries and holds 50 more unflushed: the database is intact
// and a restart knows exactly the 100.
func TestCrashBetweenFlushesLosesOnlyDirty(t *testing.T) {
	if os.Getenv("GEO_CRASH_HELPER_DB") != "" {
		crashHelper()
		return
	}
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.sqlite3")
	mmdbPath := filepath.Join(dir, "world.mmdb")
	writeMMDB(t, mmdbPath, "flat", []mmdbNet{{cidr: "11.0.0.0/8", country: "US"}}, 1_700_000_000)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashBetweenFlushesLosesOnlyDirty$", "-test.v")
	cmd.Env = append(os.Environ(), "GEO_CRASH_HELPER_DB="+dbPath, "GEO_CRASH_HELPER_MMDB="+mmdbPath)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "CRASH-HELPER-READY") {
			ready = true
			break
		}
	}
	if !ready {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("helper did not get ready")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait() // killed: the exit status is the signal

	db, err := appdb.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(db)
	var integrity string
	if err := db.Reader.QueryRow("PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check = %q, %v", integrity, err)
	}
	r, err := New(context.Background(), Options{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if s := r.Status(); s.Resolved != 100 {
		t.Fatalf("after the crash the cache has %d resolved entries, want the 100 flushed", s.Resolved)
	}
}

// crashHelper runs in the child process of TestCrashBetweenFlushesLosesOnlyDirty.
func crashHelper() {
	ctx := context.Background()
	fail := func(err error) { fmt.Println("CRASH-HELPER-ERROR", err); os.Exit(3) }
	db, err := appdb.Open(ctx, os.Getenv("GEO_CRASH_HELPER_DB"))
	if err != nil {
		fail(err)
	}
	m, err := OpenMMDB(os.Getenv("GEO_CRASH_HELPER_MMDB"), nil, nil)
	if err != nil {
		fail(err)
	}
	r, err := New(ctx, Options{DB: db, Providers: []Provider{m}})
	if err != nil {
		fail(err)
	}
	ips := globalIPs(150)
	for _, ip := range ips[:100] {
		r.Track(ip)
	}
	r.drain(ctx)
	if err := r.Flush(ctx); err != nil {
		fail(err)
	}
	for _, ip := range ips[100:] {
		r.Track(ip)
	}
	r.drain(ctx)
	fmt.Println("CRASH-HELPER-READY")
	time.Sleep(time.Minute) // killed long before
	os.Exit(4)
}

// TestRestartLoadsTrackedBeyondCacheSize: a flush records how many IPs
// were tracked; the next start loads at least that many entries even with
// a smaller cache size, so the IPs the engine tracks again are answered
// from memory, none looked up (and written) again. Without the record (an
// app database of an older version) the cache size alone bounds the load.
func TestRestartLoadsTrackedBeyondCacheSize(t *testing.T) {
	cases := []struct {
		name        string
		forget      bool // delete the record, as an older version left the database
		wantPending bool
	}{
		{name: "recorded"},
		{name: "not recorded", forget: true, wantPending: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := openTestDB(t)
			env := newResolverEnv(t, []string{"mmdb"}, Options{DB: db, CacheSize: 3})
			ips := addrs("8.8.8.8", "9.9.9.9", "2.16.0.1", "1.1.1.1", "8.8.4.4", "2001:4860:4860::8888", "10.1.2.3", "192.168.1.1")
			for _, ip := range ips {
				env.r.Track(ip)
			}
			env.r.drain(ctx)
			if err := env.r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.forget {
				if _, err := db.Writer.ExecContext(ctx, `DELETE FROM geo_state`); err != nil {
					t.Fatal(err)
				}
			}
			r2, err := New(ctx, Options{DB: db, Providers: []Provider{env.mmdb}, Clock: env.clock, CacheSize: 3})
			if err != nil {
				t.Fatal(err)
			}
			for _, ip := range ips {
				r2.Track(ip)
			}
			if s := r2.Status(); (s.Pending > 0) != tc.wantPending {
				t.Fatalf("after restart with cache size 3 and %d IPs tracked again: %+v, want pending %v", len(ips), s, tc.wantPending)
			}
		})
	}
}
