package collector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bangui/bangui_exporter/collector/archive"
	"github.com/bangui/bangui_exporter/internal/appdb"
)

// TestEngineEqualsNaiveRecomputation drives a real fail2ban-schema database
// through random sequences of what happens to it in production — bans,
// duplicate rows, unbans, purges (down to an empty table, so rowids are
// reused), permanent and increasing bans, garbage rows, exporter restarts,
// clock advances and countries arriving — and checks after every step that
// the exporter's metrics equal a naive full recomputation.
func TestEngineEqualsNaiveRecomputation(t *testing.T) {
	seeds, steps := propertyScale(t)
	for _, schema := range []int{4, 2} {
		for seed := uint64(1); seed <= seeds; seed++ {
			t.Run(fmt.Sprintf("schema%d/seed%d", schema, seed), func(t *testing.T) {
				t.Parallel()
				runRandomHistory(t, schema, seed, steps, false)
			})
		}
	}
}

// TestArchiveEqualsNaiveRecomputation is the same random history with the
// ban archive on: after every step the windows and the horizon must equal a
// naive recomputation over the full history — every ban event that was in
// fail2ban's bans at some scrape, whether fail2ban purged or unbanned it
// since — while fail2ban_banned_ips still follows bips. Restarts close the
// exporter, let the archive write what is queued (as main's shutdown does)
// and reopen the archive on the same app database.
func TestArchiveEqualsNaiveRecomputation(t *testing.T) {
	seeds, steps := propertyScale(t)
	for _, schema := range []int{4, 2} {
		for seed := uint64(1); seed <= seeds; seed++ {
			t.Run(fmt.Sprintf("schema%d/seed%d", schema, seed), func(t *testing.T) {
				t.Parallel()
				runRandomHistory(t, schema, seed, steps, true)
			})
		}
	}
}

// propertyScale is how many seeds and steps the property tests run: 6 and
// 250 by default, more with BANGUI_PROPERTY_SEEDS and BANGUI_PROPERTY_STEPS
// for a longer search (a failing subtest names its seed; the same seed
// replays the same history).
func propertyScale(t *testing.T) (seeds uint64, steps int) {
	seeds, steps = 6, 250
	if v := os.Getenv("BANGUI_PROPERTY_SEEDS"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			t.Fatalf("BANGUI_PROPERTY_SEEDS=%q: want a positive number", v)
		}
		seeds = n
	}
	if v := os.Getenv("BANGUI_PROPERTY_STEPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("BANGUI_PROPERTY_STEPS=%q: want a positive number", v)
		}
		steps = n
	}
	return seeds, steps
}

func runRandomHistory(t *testing.T, schema int, seed uint64, steps int, withArchive bool) {
	rng := rand.New(rand.NewPCG(seed, seed*7919))
	d := newF2BDB(t, schema)
	jails := []string{"sshd", "nginx", "postfix"}
	for _, j := range jails {
		d.addJail(j, true)
	}
	start := int64(1_790_000_000)
	clk := newClock(start)
	countries := newTableCountries()
	windows := windowsOf(t, "1h", "1d", "7d")
	const defaultBantime = 600
	ctx := context.Background()
	var (
		appDB   *appdb.DB
		store   *archive.Store
		history = map[naiveBanEvent]bool{} // every event seen in bans at a scrape
	)
	if withArchive {
		appDB = openAppDB(t)
		store = openArchive(t, appDB, clk)
	}
	newExporter := func() *Exporter {
		x := NewExporter(Options{
			DBPath: d.path, Windows: windows, ChunkSize: 1 + rng.IntN(50),
			DefaultBantime: defaultBantime * time.Second, Now: clk.Now, Archive: store,
		}, countries)
		// Light refreshes settle as scrapes do while RunVerify runs.
		x.verifying.Store(true)
		if withArchive && rng.IntN(2) == 0 {
			// Half the starts archive their startup read by backfill.
			x.backfillAbove, x.backfillChunk = int64(rng.IntN(4)), 1+rng.IntN(16)
		}
		return x
	}
	x := newExporter()
	defer func() { x.Close() }()
	ips := make([]string, 60)
	for i := range ips {
		if i%10 == 9 {
			ips[i] = fmt.Sprintf("2001:db8::%x", i)
		} else {
			ips[i] = fmt.Sprintf("198.51.%d.%d", i/7, i)
		}
	}
	for step := range steps {
		now := clk.Now().Unix()
		var op string
		switch r := rng.IntN(100); {
		case r < 40:
			op = "ban"
			bantime := []int64{60, 600, 3600, 86400, -1}[rng.IntN(5)]
			tob := now - rng.Int64N(7200)
			if rng.IntN(10) == 0 {
				tob = now - rng.Int64N(10*86400) // an old ban (time of the last failure)
			}
			d.ban(jails[rng.IntN(len(jails))], ips[rng.IntN(len(ips))], tob, bantime)
		case r < 45:
			op = "duplicate"
			// A row picked by the seeded generator, so a failing seed
			// replays exactly.
			d.exec("INSERT INTO bans SELECT * FROM bans WHERE rowid = (SELECT rowid FROM bans ORDER BY rowid LIMIT 1 OFFSET ? % max(1, (SELECT count(*) FROM bans)))", rng.Int64N(1<<30))
		case r < 53:
			op = "unban"
			d.unban(jails[rng.IntN(len(jails))], ips[rng.IntN(len(ips))])
		case r < 56:
			op = "unban-latest-and-ban" // frees the top rowid and reuses it
			d.exec("DELETE FROM bans WHERE rowid = (SELECT max(rowid) FROM bans)")
			if schema == 4 {
				d.exec("DELETE FROM bips WHERE rowid = (SELECT max(rowid) FROM bips)")
			}
			d.ban(jails[rng.IntN(len(jails))], ips[rng.IntN(len(ips))], now-rng.Int64N(600), 600)
		case r < 60:
			op = "purge"
			d.purge(now, []int64{3600, 86400, 0}[rng.IntN(3)])
		case r < 62:
			op = "purge-all"
			d.exec("DELETE FROM bans")
			if schema == 4 {
				d.exec("DELETE FROM bips")
			}
		case r < 66:
			op = "garbage"
			cols, vals := "jail, ip, timeofban, data", "?, ?, ?, ?"
			if schema == 4 {
				cols, vals = cols+", bantime", vals+", 600"
			}
			ins := "INSERT INTO bans(" + cols + ") VALUES(" + vals + ")"
			switch rng.IntN(4) {
			case 0:
				d.exec(ins, "sshd", nil, now, nil)
			case 1:
				d.exec(ins, "sshd", "not-an-ip", now, []byte{0, 0xff})
			case 2:
				d.exec(ins, "nginx", ips[0], "yesterday", "{}")
			case 3:
				if schema == 4 {
					d.exec("INSERT OR REPLACE INTO bips(ip, jail, timeofban, bantime, data) VALUES('999.1.1.1', 'sshd', ?, 60, NULL)", now)
					d.exec("INSERT OR REPLACE INTO bips(ip, jail, timeofban, bantime, data) VALUES(?, 'sshd', ?, 'forever', NULL)", ips[1], now)
				}
			}
		case r < 72:
			op = "advance"
			clk.Add(time.Duration(rng.Int64N(7200)) * time.Second)
		case r < 74:
			op = "advance-far"
			clk.Add(time.Duration(rng.Int64N(8*86400)) * time.Second)
		case r < 80:
			op = "country"
			countries.set(ips[rng.IntN(len(ips))], []string{"DE", "us", "FR", "CN", "BR"}[rng.IntN(5)])
			if rng.IntN(2) == 0 {
				// The background pass (RunCountryRefresh) gets there
				// before the next scrape.
				x.refreshCountriesAside(context.Background())
			}
		case r < 83:
			op = "restart"
			x.Close()
			if withArchive {
				// main's order: the engine stops, then the archive's
				// final flush, then a new process opens both again.
				if err := store.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				store = openArchive(t, appDB, clk)
			}
			x = newExporter()
		case r < 85:
			op = "jail-toggle"
			d.addJail(jails[rng.IntN(len(jails))], rng.IntN(2) == 0)
		default:
			op = "increment" // bantime.increment: the same pair again, longer
			ip, jail := ips[rng.IntN(len(ips))], jails[rng.IntN(len(jails))]
			d.ban(jail, ip, now, 600*int64(1+rng.IntN(8)))
		}
		if rng.IntN(3) == 0 && step != steps-1 {
			continue // several changes between two scrapes
		}
		// Half the scrapes settle lightly, as scrapes do while RunVerify
		// runs: with every rowid in one fingerprint bucket, a light
		// settle finds every change.
		if err := x.refresh(ctx, rng.IntN(2) == 0); err != nil {
			t.Fatalf("step %d (%s): refresh: %v", step, op, err)
		}
		// The cached families the /metrics handler writes equal the
		// families built afresh from the same refresh, across every
		// window edge and expiry the random clock crosses.
		checkCachedEqualsFresh(t, x, step, op)
		countryOf := func(a netip.Addr) string { return countries.Country(a) }
		want := naive(t, d, clk.Now().Unix(), windows, countryOf, defaultBantime)
		if withArchive {
			// What the exporter's Run does every cycle.
			x.offerWG.Wait()
			if err := store.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			for ev := range bansEvents(t, d) {
				history[ev] = true
			}
			want = withHistory(want, history, clk.Now().Unix(), windows, countryOf)
		}
		got := only(scrape(t, x), "fail2ban_banned_ips", "fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("step %d (%s): engine differs from naive recomputation (-naive +engine):\n%s", step, op, diff)
		}
		if withArchive {
			// Archived events hold their IP only while a window counts
			// them: the engine holds the IPs of bans and bips rows and of
			// the history inside the longest window, no more.
			ips := heldIPs(t, d)
			for ev := range history {
				if ev.tob >= clk.Now().Unix()-int64(Longest(windows)/time.Second) {
					ips[ev.ip] = true
				}
			}
			if held := scrape(t, x)["bangui_exporter_fail2ban_ips{}"]; held != float64(len(ips)) {
				t.Fatalf("step %d (%s): the engine holds %v IPs, want %d", step, op, held, len(ips))
			}
		}
	}
}
