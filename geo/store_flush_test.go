package geo

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// TestFlushInChunksFailsAsAWhole resolves more IPs than one flush chunk and
// makes SQLite refuse a row of a later chunk: the whole flush rolls back,
// every entry (written chunks, the refused one, those not reached) stays
// dirty, and the retry writes all of them in one commit.
func TestFlushInChunksFailsAsAWhole(t *testing.T) {
	const n = 2*flushChunk + 900
	env := newResolverEnv(t, []string{"mmdb"}, Options{})
	r := env.r
	ctx := context.Background()
	for _, ip := range globalIPs(n) {
		r.Track(ip)
	}
	r.drain(ctx)
	if s := r.Status(); s.Dirty != n {
		t.Fatalf("%d dirty before the flush, want %d", s.Dirty, n)
	}
	// Refuse the first row of the second chunk, inside the transaction.
	if _, err := r.db.Writer.ExecContext(ctx, `CREATE TRIGGER geo_cache_refuse BEFORE INSERT ON geo_cache
		WHEN (SELECT count(*) FROM geo_cache) >= `+strconv.Itoa(flushChunk)+`
		BEGIN SELECT RAISE(ABORT, 'disk says no'); END`); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err == nil || !strings.Contains(err.Error(), "disk says no") {
		t.Fatalf("flush error = %v", err)
	}
	if s := r.Status(); s.Dirty != n {
		t.Fatalf("%d dirty after the failed flush, want %d", s.Dirty, n)
	}
	if c := countRows(t, r.db, ""); c != 0 {
		t.Fatalf("%d rows after a failed flush (the transaction must roll back)", c)
	}
	if _, err := r.db.Writer.ExecContext(ctx, "DROP TRIGGER geo_cache_refuse"); err != nil {
		t.Fatal(err)
	}
	commits := testkit.CountCommits(t, r.db)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if c := countRows(t, r.db, ""); c != n || commits.Load() != 1 {
		t.Fatalf("%d rows in %d commits, want %d in 1", c, commits.Load(), n)
	}
	if s := r.Status(); s.Dirty != 0 || s.LastFlushedRows != n || s.LastFlushError != "" {
		t.Fatalf("status after the retry: %+v", s)
	}
	// Nothing dirty: nothing written, nothing committed.
	if err := r.Flush(ctx); err != nil || commits.Load() != 1 {
		t.Fatalf("empty flush: err %v, %d commits", err, commits.Load())
	}
}

// TestStatusCountsEntriesBeingFlushed: entries a running flush took count
// as dirty until its commit (a caller waiting for Dirty == 0 then finds the
// flush done and counted), and the flush is counted once.
func TestStatusCountsEntriesBeingFlushed(t *testing.T) {
	const n = 300
	env := newResolverEnv(t, []string{"mmdb"}, Options{})
	r := env.r
	ctx := context.Background()
	for _, ip := range globalIPs(n) {
		r.Track(ip)
	}
	r.drain(ctx)
	// Hold the one writer connection: the flush takes its entries, then
	// waits for the connection.
	conn, err := r.db.Writer.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Flush(ctx) }()
	testkit.EventuallyTrue(t, 10*time.Second, "the flush to take the dirty entries", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.dirty.len() == 0
	})
	if s := r.Status(); s.Dirty != n {
		t.Errorf("%d dirty while the flush waits to write them, want %d", s.Dirty, n)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := r.Status(); s.Dirty != 0 || s.LastFlushedRows != n {
		t.Errorf("after the flush: %d dirty, %d rows in the last flush; want 0, %d", s.Dirty, s.LastFlushedRows, n)
	}
	if got := testutil.ToFloat64(r.metrics.flushes); got != 1 {
		t.Errorf("%v flushes counted, want 1", got)
	}
}

// TestGenerationAndReassigned: Generation moves whenever an IP's country
// changes; Reassigned only when an IP that had a country gets another one
// or loses it (the engine then looks at every IP again, else only at its
// IPs without a country).
func TestGenerationAndReassigned(t *testing.T) {
	found := func(c string) Answer { return Answer{Kind: AnswerFound, CountryCode: c} }
	for _, tc := range []struct {
		name               string
		before             []Answer // applied first, in turn
		then               Answer
		wantGen, wantReass bool
	}{
		{"unknown gets a country", nil, found("DE"), true, false},
		{"the same country again", []Answer{found("DE")}, found("DE"), false, false},
		{"another country", []Answer{found("DE")}, found("FR"), true, true},
		{"a country lost (final answer without one)", []Answer{found("DE")}, Answer{Kind: AnswerNoCountry, Message: "reserved"}, true, true},
		{"no country, then none again", []Answer{{Kind: AnswerNoCountry, Message: "reserved"}}, Answer{Kind: AnswerNoCountry, Message: "reserved"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newResolverEnv(t, []string{"mmdb"}, Options{})
			r := env.r
			k := keyOf(netip.MustParseAddr("203.0.113.9"))
			r.mu.Lock()
			r.entries.set(k, cacheEntry{flags: flagTracked})
			r.mu.Unlock()
			for _, a := range tc.before {
				r.apply(0, []key{k}, []Answer{a})
			}
			gen, reass := r.Generation(), r.Reassigned()
			r.apply(0, []key{k}, []Answer{tc.then})
			if moved := r.Generation() != gen; moved != tc.wantGen {
				t.Errorf("Generation moved: %v, want %v", moved, tc.wantGen)
			}
			if moved := r.Reassigned() != reass; moved != tc.wantReass {
				t.Errorf("Reassigned moved: %v, want %v", moved, tc.wantReass)
			}
		})
	}
}
