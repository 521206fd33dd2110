package collector

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
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
		if min := int(entries / integrityChunkRows); steps < min {
			t.Fatalf("schema %d: %d steps for %d entries, want ≥ %d", schema, steps, entries, min)
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
