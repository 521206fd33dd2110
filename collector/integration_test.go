package collector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// TestWithRealFail2ban runs Debian's fail2ban-server in a sandbox (noop
// actions) and checks that fail2ban_banned_ips, summed over countries per
// jail, equals what "fail2ban-client status JAIL" reports as currently
// banned: after bans through log lines and "set JAIL banip", after
// unbanip, for bantime.increment re-bans, after a fail2ban restart, and
// while fail2ban keeps writing. fail2ban writes a ban to its database a few
// ms to ~1 s after it happens, so each check polls until both agree, within
// a bound.
func TestWithRealFail2ban(t *testing.T) {
	s := f2bsandbox.StartT(t, f2bsandbox.Options{
		ExtraJails: []f2bsandbox.Jail{{Name: "incfast", Bantime: "4", Increment: true}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	x := NewExporter(Options{DBPath: s.DBPath(), Windows: windowsOf(t, "24h")}, nil)
	t.Cleanup(func() { _ = x.Close() })
	jails := s.Jails()
	ips := f2bsandbox.SampleIPs(400)
	next := 0
	take := func(n int) []string { next += n; return ips[next-n : next] }

	// exporterCounts sums fail2ban_banned_ips over countries per jail.
	exporterCounts := func() (map[string]int, float64) {
		samples := scrape(t, x)
		out := map[string]int{}
		for _, j := range jails {
			out[j] = 0
		}
		for k, v := range only(samples, "fail2ban_banned_ips") {
			var jail string
			for _, j := range jails {
				if containsLabel(k, "jail", j) {
					jail = j
				}
			}
			out[jail] += int(v)
		}
		return out, samples["fail2ban_up{}"]
	}
	fail2banCounts := func() map[string]int {
		out := map[string]int{}
		for _, j := range jails {
			n, err := s.CurrentlyBanned(ctx, j)
			if err != nil {
				t.Fatal(err)
			}
			out[j] = n
		}
		return out
	}
	// agree polls until the exporter and fail2ban agree on every jail and
	// returns the counts.
	agree := func(what string, bound time.Duration) map[string]int {
		t.Helper()
		var agreed map[string]int
		testkit.Eventually(t, bound, func() error {
			f2b := fail2banCounts()
			exp, up := exporterCounts()
			if up != 1 || !maps.Equal(f2b, exp) {
				return fmt.Errorf("%s: fail2ban says %v, the exporter %v (up %v)", what, f2b, exp, up)
			}
			agreed = f2b
			return nil
		})
		t.Logf("%s: exporter and fail2ban agree: %v", what, agreed)
		return agreed
	}

	// Bans through log lines and banip, in every kind of jail.
	for _, b := range []struct {
		jail string
		ban  func(context.Context, string, ...string) error
		n    int
	}{
		{"sshd", s.Fail, 5}, {"perm", s.Fail, 3}, {"incr", s.Fail, 2},
		{"sshd", s.BanIP, 40}, {"perm", s.BanIP, 10}, {"incr", s.BanIP, 3},
	} {
		if err := b.ban(ctx, b.jail, take(b.n)...); err != nil {
			t.Fatal(err)
		}
	}
	got := agree("after bans", 20*time.Second)
	if want := map[string]int{"sshd": 45, "perm": 13, "incr": 5, "incfast": 0}; !maps.Equal(got, want) {
		t.Fatalf("fail2ban banned %v, want %v", got, want)
	}

	// unbanip, of normal and permanent bans.
	if err := s.UnbanIP(ctx, "sshd", ips[0], ips[1], ips[10]); err != nil {
		t.Fatal(err)
	}
	if err := s.UnbanIP(ctx, "perm", ips[5], ips[50]); err != nil {
		t.Fatal(err)
	}
	got = agree("after unbanip", 20*time.Second)
	if got["sshd"] != 42 || got["perm"] != 11 {
		t.Fatalf("after unbanip fail2ban says %v", got)
	}

	// bantime.increment: the same IP banned again after its ban ended gets
	// a longer bantime, updated in place in bips.
	again := take(1)[0]
	if err := s.Fail(ctx, "incfast", again); err != nil {
		t.Fatal(err)
	}
	agree("incfast: first ban", 10*time.Second)
	testkit.EventuallyTrue(t, 30*time.Second, "incfast's first ban to end", func() bool {
		n, err := s.CurrentlyBanned(ctx, "incfast")
		return err == nil && n == 0
	})
	agree("incfast: first ban ended", 10*time.Second)
	if err := s.Fail(ctx, "incfast", again); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, 10*time.Second, "incfast's second ban in bips", func() bool {
		count, bantime := readBipsRow(t, s.DBPath(), "incfast", again)
		return count >= 2 && bantime > 4
	})
	if got := agree("incfast: second, longer ban", 10*time.Second); got["incfast"] != 1 {
		t.Fatalf("incfast: %d banned, want 1 (the longer ban outlives the first's bantime)", got["incfast"])
	}

	// fail2ban restarts: it restores the bans from its database.
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	got = agree("after a restart", 20*time.Second)
	if got["sshd"] != 42 || got["perm"] != 11 {
		t.Fatalf("after the restart fail2ban says %v", got)
	}

	// fail2ban keeps writing while the exporter scrapes: every scrape is up
	// (a reader never holds fail2ban's writes off long enough to fail), and
	// once the writes stop both agree.
	var wg sync.WaitGroup
	writeErr := make(chan error, 1)
	stop := make(chan struct{})
	batches := [][]string{}
	for range 8 {
		batches = append(batches, take(30))
	}
	logIPs := take(16)
	wg.Go(func() {
		for i, b := range batches {
			if err := s.BanIP(ctx, []string{"sshd", "perm", "incr"}[i%3], b...); err != nil {
				writeErr <- err
				return
			}
			if i%2 == 0 {
				if err := s.Fail(ctx, "sshd", logIPs[i*2:i*2+4]...); err != nil {
					writeErr <- err
					return
				}
			}
			if i == 4 {
				if err := s.UnbanIP(ctx, "sshd", ips[2], ips[3]); err != nil {
					writeErr <- err
					return
				}
			}
		}
		close(stop)
	})
	scrapes := 0
	for running := true; running; {
		select {
		case <-stop:
			running = false
		case err := <-writeErr:
			t.Fatal(err)
		case <-time.After(100 * time.Millisecond):
		}
		if _, up := exporterCounts(); up != 1 {
			t.Fatalf("scrape %d while fail2ban writes: fail2ban_up %v", scrapes, up)
		}
		scrapes++
	}
	wg.Wait()
	got = agree("after fail2ban kept writing", 20*time.Second)
	want := map[string]int{"sshd": 42 + 30*3 + 16 - 2, "perm": 11 + 30*3, "incr": 5 + 30*2}
	for j, n := range want {
		if got[j] != n {
			t.Fatalf("after the writes fail2ban says %v, want %v", got, want)
		}
	}
	if s := scrape(t, x); s["bangui_exporter_fail2ban_read_errors_total{kind=locked}"] != 0 {
		t.Fatalf("%v locked reads while fail2ban wrote", s["bangui_exporter_fail2ban_read_errors_total{kind=locked}"])
	}
	t.Logf("%d scrapes while fail2ban wrote", scrapes)
}

// containsLabel reports whether the sample key (as scrape renders it) has
// label name=value.
func containsLabel(key, name, value string) bool {
	for _, sep := range []string{"{", ","} {
		for _, end := range []string{",", "}"} {
			if strings.Contains(key, sep+name+"="+value+end) {
				return true
			}
		}
	}
	return false
}

// readBipsRow reads the bancount and bantime of one bips row, read-only.
func readBipsRow(t *testing.T, path, jail, ip string) (count, bantime int64) {
	t.Helper()
	u := url.URL{Scheme: "file", Path: path, OmitHost: true, RawQuery: "mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.QueryRow("SELECT bancount, bantime FROM bips WHERE jail = ? AND ip = ?", jail, ip).Scan(&count, &bantime)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(fmt.Errorf("read bips: %w", err))
	}
	return count, bantime
}

// TestArchiveWithRealFail2banPurge runs a real fail2ban-server whose own
// purge deletes bans rows older than 6 s, every 0.5 s (f2bsandbox's
// PurgeInterval), with the exporter's archive on and its Run ingesting in
// the background. Bans through log lines and banip, an unbanip, the purge
// of everything, and an exporter restart: the 24h window per jail keeps
// every ban event the exporter saw, once.
func TestArchiveWithRealFail2banPurge(t *testing.T) {
	s := f2bsandbox.StartT(t, f2bsandbox.Options{DBPurgeAge: "6", PurgeInterval: 500 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	appDB := openAppDB(t)
	windows := windowsOf(t, "24h", "7d")
	type proc struct {
		x     *Exporter
		store *archive.Store
		stop  func()
	}
	start := func() *proc {
		store, err := archive.Open(ctx, appDB, archive.Options{Interval: 200 * time.Millisecond, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stopRun := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = store.Run(runCtx) }()
		x := NewExporter(Options{DBPath: s.DBPath(), Windows: windows, Archive: store}, nil)
		// main's order: the engine, then the archive's final flush.
		return &proc{x: x, store: store, stop: func() { _ = x.Close(); stopRun(); <-done }}
	}
	p := start()
	defer func() { p.stop() }()

	db := openReadOnly(t, s.DBPath())
	history := map[naiveBanEvent]bool{}
	// seen polls until history (every event seen in fail2ban's bans at a
	// poll) holds n events and the exporter's 24h window all of them.
	seen := func(what string, n int) {
		t.Helper()
		testkit.Eventually(t, 20*time.Second, func() error {
			maps.Copy(history, readBansEvents(t, db))
			got := recentByJail(scrape(t, p.x), "24h")
			want := map[string]int{}
			for ev := range history {
				want[ev.jail]++
			}
			if len(history) != n || !maps.Equal(got, want) {
				return fmt.Errorf("%s: the exporter's 24h window says %v, the %d events seen in bans %v", what, got, len(history), want)
			}
			return nil
		})
	}
	ips := f2bsandbox.SampleIPs(30)
	if err := s.Fail(ctx, "sshd", ips[:6]...); err != nil {
		t.Fatal(err)
	}
	if err := s.BanIP(ctx, "perm", ips[6:10]...); err != nil {
		t.Fatal(err)
	}
	if err := s.BanIP(ctx, "sshd", ips[10:20]...); err != nil {
		t.Fatal(err)
	}
	seen("after bans", 20)
	if err := s.UnbanIP(ctx, "sshd", ips[0], ips[10]); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, 20*time.Second, "fail2ban's purge of every bans row", func() bool { return len(readBansEvents(t, db)) == 0 })
	want := map[string]int{"sshd": 16, "perm": 4}
	for _, w := range []string{"24h", "7d"} {
		if got := recentByJail(scrape(t, p.x), w); !maps.Equal(got, want) {
			t.Fatalf("after fail2ban's purge: %s window %v, want %v", w, got, want)
		}
	}

	// New bans after the purge, then an exporter restart.
	if err := s.BanIP(ctx, "sshd", ips[20:25]...); err != nil {
		t.Fatal(err)
	}
	seen("after new bans", 25)
	p.stop()
	p = start()
	if got := p.store.Count(); got != 25 {
		t.Fatalf("the archive holds %d events after the restart, want 25", got)
	}
	want = map[string]int{"sshd": 21, "perm": 4}
	if err := p.x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	samples := scrape(t, p.x)
	if got := recentByJail(samples, "24h"); !maps.Equal(got, want) {
		t.Fatalf("after the restart: 24h window %v, want %v", got, want)
	}
	oldest := int64(math.MaxInt64)
	for ev := range history {
		oldest = min(oldest, ev.tob)
	}
	if got := samples["fail2ban_oldest_ban_timestamp_seconds{}"]; got != float64(oldest) {
		t.Fatalf("fail2ban_oldest_ban_timestamp_seconds = %v, want %d (the oldest event, purged from bans)", got, oldest)
	}
}

// recentByJail sums fail2ban_recent_bans of one window per jail.
func recentByJail(samples map[string]float64, window string) map[string]int {
	out := map[string]int{}
	for k, v := range only(samples, "fail2ban_recent_bans") {
		if !containsLabel(k, "window", window) {
			continue
		}
		_, rest, _ := strings.Cut(k, "jail=")
		jail, _, _ := strings.Cut(rest, ",")
		jail = strings.TrimSuffix(jail, "}")
		out[jail] += int(v)
	}
	return out
}

// openReadOnly opens fail2ban's database read-only for a test's checks.
func openReadOnly(t *testing.T, path string) *sql.DB {
	t.Helper()
	u := url.URL{Scheme: "file", Path: path, OmitHost: true, RawQuery: "mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// readBansEvents is bansEvents on a read-only connection.
func readBansEvents(t *testing.T, db *sql.DB) map[naiveBanEvent]bool {
	t.Helper()
	return bansEvents(t, &f2bDB{t: t, db: db, schema: 4})
}
