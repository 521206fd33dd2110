package collector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// reconciliations returns bangui_exporter_fail2ban_reconciliations_total
// summed over tables, as a scrape shows it.
func reconciliations(t *testing.T, x *Exporter) float64 {
	t.Helper()
	s := scrape(t, x)
	return s["bangui_exporter_fail2ban_reconciliations_total{table=bans}"] + s["bangui_exporter_fail2ban_reconciliations_total{table=bips}"]
}

// TestBansDuringRefreshAreNotDeletions commits fail2ban-style bans in the
// middle of a refresh, after the exporter read the new rows and before it
// checks the tables' shapes. Only rows were added, so the exporter must take
// them in without a reconciliation, and still equal a naive recomputation.
// A real deletion at the same point must still be found.
func TestBansDuringRefreshAreNotDeletions(t *testing.T) {
	cases := []struct {
		name      string
		chunk     int
		bans      int  // committed inside the refresh
		repeat    bool // the same pairs again (INSERT OR REPLACE replaces bips rows)
		unban     bool // plus a real deletion
		reconcile bool // a reconciliation is expected
	}{
		{name: "one ban", chunk: 100, bans: 1},
		{name: "more than a chunk", chunk: 3, bans: 20},
		{name: "far more than a chunk", chunk: 2, bans: 200},
		{name: "repeat offenders", chunk: 100, bans: 10, repeat: true},
		{name: "unban", chunk: 100, bans: 1, unban: true, reconcile: true},
	}
	for _, schema := range []int{4, 2} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("schema%d/%s", schema, tc.name), func(t *testing.T) {
				d := newF2BDB(t, schema)
				d.addJail("sshd", true)
				d.addJail("nginx", true)
				start := int64(1_790_000_000)
				clk := newClock(start)
				for i := range 30 {
					d.ban([]string{"sshd", "nginx"}[i%2], fmt.Sprintf("198.51.100.%d", i), start-int64(i)*60, 3600)
				}
				windows := windowsOf(t, "1h", "1d")
				x := NewExporter(Options{DBPath: d.path, Windows: windows, ChunkSize: tc.chunk, DefaultBantime: 600 * time.Second, Now: clk.Now}, NoCountries{})
				defer x.Close()
				ctx := context.Background()
				if err := x.Refresh(ctx); err != nil {
					t.Fatal(err)
				}
				for round := range 3 {
					clk.Add(time.Minute)
					now := clk.Now().Unix()
					// A ban before the refresh, so that it reads at all.
					d.ban("nginx", fmt.Sprintf("192.0.2.%d", round), now, 600)
					fired := false
					x.testHookBeforeSettle = func() {
						if fired {
							return
						}
						fired = true
						for i := range tc.bans {
							ip := fmt.Sprintf("203.0.113.%d", (round*tc.bans+i)%250)
							if tc.repeat {
								ip = fmt.Sprintf("198.51.100.%d", i)
							}
							d.ban("sshd", ip, now-int64(i), 600)
						}
						if tc.unban {
							d.unban("nginx", fmt.Sprintf("198.51.100.%d", 2*round+1))
						}
					}
					if err := x.Refresh(ctx); err != nil {
						t.Fatal(err)
					}
					x.testHookBeforeSettle = nil
					if !fired {
						t.Fatal("the refresh never reached settle")
					}
					got := only(scrape(t, x), "fail2ban_banned_ips", "fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
					want := naive(t, d, now, windows, NoCountries{}.Country, 600)
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("round %d: engine differs from naive recomputation (-naive +engine):\n%s", round, diff)
					}
				}
				if rec := reconciliations(t, x); (rec > 0) != tc.reconcile {
					t.Fatalf("reconciliations = %v, want reconciliation %v", rec, tc.reconcile)
				}
			})
		}
	}
}

// TestConcurrentWriterCausesNoReconciliation writes bans the way fail2ban
// does, one transaction each, from another connection while the exporter
// refreshes in a loop: fail2ban only inserts, so the exporter must never
// reconcile, and once the writer stops it must equal a naive recomputation.
func TestConcurrentWriterCausesNoReconciliation(t *testing.T) {
	for _, schema := range []int{4, 2} {
		t.Run(fmt.Sprintf("schema%d", schema), func(t *testing.T) {
			d := newF2BDB(t, schema)
			d.addJail("sshd", true)
			start := int64(1_790_000_000)
			clk := newClock(start)
			windows := windowsOf(t, "1h")
			x := NewExporter(Options{DBPath: d.path, Windows: windows, ChunkSize: 7, Now: clk.Now}, NoCountries{})
			defer x.Close()
			ctx := context.Background()
			if err := x.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			// The writer has its own connection, as fail2ban does.
			w, err := sql.Open("sqlite", d.path+"?_pragma=busy_timeout(5000)")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			w.SetMaxOpenConns(1)
			const bans = 400
			var wg sync.WaitGroup
			var werr error
			done := make(chan struct{})
			wg.Go(func() {
				defer close(done)
				for i := range bans {
					ip := fmt.Sprintf("203.0.%d.%d", i/200, i%200)
					tx, err := w.Begin()
					if err != nil {
						werr = err
						return
					}
					if schema == 2 {
						_, err = tx.Exec("INSERT INTO bans(jail, ip, timeofban, data) VALUES('sshd', ?, ?, '{}')", ip, start-int64(i%60))
					} else {
						_, err = tx.Exec("INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data) VALUES('sshd', ?, ?, 600, 1, '{}')", ip, start-int64(i%60))
						if err == nil {
							_, err = tx.Exec("INSERT OR REPLACE INTO bips(ip, jail, timeofban, bantime, bancount, data) VALUES(?, 'sshd', ?, 600, 1, '{}')", ip, start-int64(i%60))
						}
					}
					if err == nil {
						err = tx.Commit()
					} else {
						_ = tx.Rollback()
					}
					if err != nil {
						werr = err
						return
					}
				}
			})
			refreshes := 0
		loop:
			for {
				select {
				case <-done:
					break loop
				default:
				}
				if err := x.Refresh(ctx); err != nil {
					t.Fatal(err)
				}
				refreshes++
			}
			wg.Wait()
			if werr != nil {
				t.Fatal(werr)
			}
			if err := x.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			if rec := reconciliations(t, x); rec != 0 {
				t.Fatalf("%v reconciliations in %d refreshes while fail2ban only inserted", rec, refreshes)
			}
			got := only(scrape(t, x), "fail2ban_banned_ips", "fail2ban_recent_bans")
			want := only(naive(t, d, clk.Now().Unix(), windows, NoCountries{}.Country, 600), "fail2ban_banned_ips", "fail2ban_recent_bans")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("engine differs from naive recomputation (-naive +engine):\n%s", diff)
			}
			t.Logf("%d refreshes during %d bans", refreshes, bans)
		})
	}
}

// finalTable is a CountryLookup that also says which answers are final.
type finalTable struct {
	*tableCountries
	final map[netip.Addr]bool
}

func (f finalTable) CountryFinal(ip netip.Addr) (string, bool) {
	c := f.Country(ip)
	return c, c != "" || f.final[ip]
}

// TestBansTotalSettlesFinalCountries: a new ban counts in bans_total in the
// scrape that reads it when its country is known or final (no providers, a
// private address), and only after the grace period when geo may still
// answer.
func TestBansTotalSettlesFinalCountries(t *testing.T) {
	lookup := finalTable{tableCountries: newTableCountries(), final: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.1"): true}}
	lookup.set("198.51.100.1", "DE")
	cases := []struct {
		name    string
		lookup  CountryLookup
		ip      string
		country string // "" : not counted before the grace period
	}{
		{name: "no providers", lookup: NoCountries{}, ip: "203.0.113.9", country: UnknownCountry},
		{name: "known country", lookup: lookup, ip: "198.51.100.1", country: "DE"},
		{name: "final without country", lookup: lookup, ip: "10.0.0.1", country: UnknownCountry},
		{name: "not resolved yet", lookup: lookup, ip: "203.0.113.9"},
		{name: "not resolved yet, no final answers", lookup: lookup.tableCountries, ip: "203.0.113.9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newF2BDB(t, 4)
			d.addJail("sshd", true)
			clk := newClock(1_790_000_000)
			x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "1h"), Now: clk.Now}, tc.lookup)
			defer x.Close()
			if err := x.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			clk.Add(time.Second)
			d.ban("sshd", tc.ip, clk.Now().Unix(), 600)
			got := only(scrape(t, x), "fail2ban_bans_total")
			want := map[string]float64{}
			if tc.country != "" {
				want["fail2ban_bans_total{country="+tc.country+",jail=sshd}"] = 1
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("first scrape after the ban (-want +got):\n%s", diff)
			}
			clk.Add(3 * time.Minute)
			got = only(scrape(t, x), "fail2ban_bans_total")
			if len(got) != 1 || got["fail2ban_bans_total{country=ZZ,jail=sshd}"]+got["fail2ban_bans_total{country=DE,jail=sshd}"] != 1 {
				t.Fatalf("after the grace period: %v, want the ban counted once", got)
			}
		})
	}
}

// TestConcurrentRefreshesShareOne: a caller arriving while a refresh runs
// joins it instead of queueing for the exporter's lock, so a caller whose
// context ends gives up at once; the refresh itself goes on and ends well.
func TestConcurrentRefreshesShareOne(t *testing.T) {
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	clk := newClock(1_790_000_000)
	d.ban("sshd", "198.51.100.1", clk.Now().Unix(), 3600)
	x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "1h"), Now: clk.Now}, NoCountries{})
	defer x.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	defer releaseOnce() // before Close, which waits for the refresh
	var once sync.Once
	x.testHookBeforeSettle = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	leader := make(chan error, 1)
	go func() { leader <- x.Refresh(context.Background()) }()
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("the first refresh never reached settle")
	}
	ctx, cancel := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() { waiter <- x.Refresh(ctx) }()
	cancel()
	select {
	case err := <-waiter:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("a waiter whose context ended returned %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a waiter whose context ended still waits for the running refresh")
	}
	releaseOnce()
	if err := <-leader; err != nil {
		t.Fatalf("the shared refresh: %v", err)
	}
	if got := scrape(t, x)["fail2ban_banned_ips{country=ZZ,jail=sshd}"]; got != 1 {
		t.Fatalf("fail2ban_banned_ips after the shared refresh = %v, want 1", got)
	}
}
