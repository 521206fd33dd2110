package collector

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// runIntegrityPass steps c until a pass ends, and returns its error.
func runIntegrityPass(t *testing.T, c *integrityCheck) (entries int64, steps int, err error) {
	t.Helper()
	for steps = 1; steps < 1_000_000; steps++ {
		done, err := c.step(context.Background())
		if err != nil {
			return c.entries, steps, err
		}
		if done {
			return c.passEntries, steps, nil
		}
	}
	t.Fatal("integrity pass did not end")
	return 0, 0, nil
}

// btreeEntries counts, with plain SQL, the entries of every table and index
// of the database at path.
func btreeEntries(t *testing.T, path string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", readOnlyURI(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	trees, err := listBtrees(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, tr := range trees {
		var n int64
		q := "SELECT count(*) FROM " + quoteIdent(tr.table)
		if len(tr.keys) > 0 {
			q += " INDEXED BY " + quoteIdent(tr.name)
		}
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// corruptPages overwrites count pages from page first (1-based) of the file
// with random bytes, as a failing disk or a stray write would.
func corruptPages(t *testing.T, path string, first, count int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(uint64(first), uint64(count)))
	buf := make([]byte, 4096*count)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(buf, (first-1)*4096); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrityCheckSoundDatabase(t *testing.T) {
	for _, schema := range []int{4, 2} {
		spec := f2bgen.DefaultSpec(20_000, benchNow)
		spec.Schema = schema
		path := f2bgen.GenerateT(t, spec)
		c := newIntegrityCheck(path)
		entries, steps, err := runIntegrityPass(t, c)
		if err != nil {
			t.Fatalf("schema %d: a sound database failed: %v", schema, err)
		}
		if want := btreeEntries(t, path); entries != want {
			t.Fatalf("schema %d: the pass read %d entries, the tables and indexes hold %d", schema, entries, want)
		}
		// Every b-tree is read in chunks: more than one step per 4096 entries.
		if least := int(entries / integrityChunkRows); steps < least {
			t.Fatalf("schema %d: %d steps for %d entries, want ≥ %d", schema, steps, entries, least)
		}
		// A second pass starts from the beginning.
		if again, _, err := runIntegrityPass(t, c); err != nil || again != entries {
			t.Fatalf("schema %d: second pass read %d entries (err %v), want %d", schema, again, err, entries)
		}
	}
}

// TestIntegrityCheckFindsCorruptPages: random bytes over pages that the
// incremental reader never reads again — the first tables, the middle of the
// file, its last pages — fail the pass with a kindCorrupt error.
func TestIntegrityCheckFindsCorruptPages(t *testing.T) {
	spec := f2bgen.DefaultSpec(20_000, benchNow)
	clean := f2bgen.CachedPathT(t, spec)
	st, err := os.Stat(clean)
	if err != nil {
		t.Fatal(err)
	}
	pages := st.Size() / 4096
	tests := []struct {
		name         string
		first, count int64
	}{
		{"pages 2-22 (the issue's dd)", 2, 21},
		{"one page in the middle", pages / 2, 1},
		{"the last page", pages, 1},
		{"a quarter in", pages / 4, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := f2bgen.GenerateT(t, spec)
			corruptPages(t, path, tc.first, tc.count)
			_, _, err := runIntegrityPass(t, newIntegrityCheck(path))
			if err == nil {
				t.Fatalf("pages %d+%d overwritten: the pass found nothing", tc.first, tc.count)
			}
			if k := classifyError(err); k != kindCorrupt {
				t.Fatalf("kind %q, want corrupt: %v", k, err)
			}
		})
	}
}

// TestIntegrityCheckNeverBlocksWriter: a fail2ban-style writer (its own
// journal mode and busy timeout, one transaction per ban, hundreds of bans a
// second — far more than a real server) loses no write while integrity
// passes run back to back; the check itself reports fail2ban's lock as
// kindLocked, never as corruption.
func TestIntegrityCheckNeverBlocksWriter(t *testing.T) {
	path := f2bgen.GenerateT(t, f2bgen.DefaultSpec(20_000, benchNow))
	w, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(MEMORY)&_pragma=synchronous(OFF)")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var passes, locked atomic.Int64
	wg.Go(func() {
		c := newIntegrityCheck(path)
		defer c.close()
		for ctx.Err() == nil {
			done, err := c.step(ctx)
			switch {
			case err != nil && ctx.Err() != nil:
			case err != nil && classifyError(err) == kindLocked:
				locked.Add(1)
			case err != nil:
				t.Errorf("integrity step: %v", err)
				return
			case done:
				passes.Add(1)
			}
		}
	})
	var writes, failed int
	var slowest time.Duration
	start := time.Now()
	for passes.Load() < 2 && time.Since(start) < 3*time.Minute {
		t0 := time.Now()
		_, err := w.Exec("INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data) VALUES ('sshd', '192.0.2.1', 1, 600, 1, '{}')")
		slowest = max(slowest, time.Since(t0))
		writes++
		if err != nil {
			failed++
			t.Logf("write: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if failed > 0 || passes.Load() < 2 {
		t.Fatalf("%d of %d writes failed during %d integrity passes", failed, writes, passes.Load())
	}
	t.Logf("%d writes, 0 failed, slowest %v, during %d passes (%d steps found fail2ban's lock)", writes, slowest, passes.Load(), locked.Load())
}

// bannedTotal sums fail2ban_banned_ips of a scrape.
func bannedTotal(s map[string]float64) float64 {
	var n float64
	for k, v := range s {
		if strings.HasPrefix(k, "fail2ban_banned_ips{") {
			n += v
		}
	}
	return n
}

// TestIntegrityCheckTurnsUpOff: random bytes over pages 2-22 of the file
// the exporter reads (page 1 intact, so SQLite sees no change and the
// incremental reader goes on serving old counts) are noticed by the
// background check: fail2ban_up 0, read_errors_total{kind="corrupt"}, one
// ERROR line; the good bytes written back in place bring the exporter back
// by itself with the right counts and one recovery line.
func TestIntegrityCheckTurnsUpOff(t *testing.T) {
	spec := f2bgen.DefaultSpec(20_000, benchNow)
	path := f2bgen.GenerateT(t, spec)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	x := newFixtureExporter(t, path, newClock(benchNow.Unix()), NoCountries{},
		Options{Logger: logs.Logger(slog.LevelInfo), IntegrityCheckInterval: 20 * time.Millisecond})
	before := scrape(t, x)
	want := bannedTotal(before)
	if before["fail2ban_up{}"] != 1 || want == 0 {
		t.Fatalf("before: up %v, banned %v", before["fail2ban_up{}"], want)
	}
	// Passes back to back, not paced, so the test's bound does not depend
	// on the machine's load (the pacing is production's choice).
	x.integrityPace = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.RunIntegrityCheck(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// A sound database passes: nothing changes, nothing is logged.
	testkit.EventuallyTrue(t, time.Minute, "a first clean pass", func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		return x.integrityErr == nil
	})
	logs.Take()

	corruptPages(t, path, 2, 21)
	started := time.Now()
	testkit.EventuallyFor(t, "fail2ban_up 0 after the damage", 2*time.Minute, func() error {
		s := scrape(t, x)
		if s["fail2ban_up{}"] != 0 || s[`bangui_exporter_fail2ban_read_errors_total{kind=corrupt}`] < 1 {
			return fmt.Errorf("up %v, corrupt errors %v", s["fail2ban_up{}"], s[`bangui_exporter_fail2ban_read_errors_total{kind=corrupt}`])
		}
		if bannedTotal(s) != 0 {
			return fmt.Errorf("still serving %v banned IPs from a damaged file", bannedTotal(s))
		}
		return nil
	})
	t.Logf("damage noticed after %v", time.Since(started).Round(time.Millisecond))
	for range 3 {
		scrape(t, x)
	}
	var errLines []string
	for _, l := range logs.Take() {
		if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], "kind=corrupt") {
		t.Fatalf("the damage logged %d ERROR/WARN lines, want one of kind corrupt:\n%s", len(errLines), strings.Join(errLines, "\n"))
	}

	if err := os.WriteFile(path, good, 0o600); err != nil { // same inode
		t.Fatal(err)
	}
	testkit.EventuallyFor(t, "recovery after the repair", 2*time.Minute, func() error {
		s := scrape(t, x)
		if s["fail2ban_up{}"] != 1 || bannedTotal(s) != want {
			return fmt.Errorf("up %v, banned %v (want %v)", s["fail2ban_up{}"], bannedTotal(s), want)
		}
		return nil
	})
	if n := logs.Count("readable again"); n != 1 {
		t.Fatalf("%d recovery lines, want 1:\n%s", n, logs.String())
	}
}
