package collector

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
	"github.com/bangui/bangui_exporter/internal/appdb"
)

// archiveRun is an Exporter with the ban archive on, driven by a test: sync
// does what the exporter's Run does every cycle (write the queue), restart
// what a restart of the process does (the engine stops, the archive writes
// what is queued, a new process opens the same app database).
type archiveRun struct {
	t       *testing.T
	opts    Options
	appDB   *appdb.DB
	clk     *clock
	store   *archive.Store
	x       *Exporter
	country CountryLookup
}

func newArchiveRun(t *testing.T, opts Options, clk *clock, countries CountryLookup) *archiveRun {
	t.Helper()
	r := &archiveRun{t: t, opts: opts, appDB: openAppDB(t), clk: clk, country: countries}
	r.start()
	t.Cleanup(func() { _ = r.x.Close() })
	return r
}

func (r *archiveRun) start() {
	r.store = openArchive(r.t, r.appDB, r.clk)
	opts := r.opts
	opts.Archive, opts.Now = r.store, r.clk.Now
	r.x = NewExporter(opts, r.country)
}

// refresh is a scrape's refresh followed by the archive's ingest cycle.
func (r *archiveRun) refresh() {
	r.t.Helper()
	if err := r.x.Refresh(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.sync()
}

func (r *archiveRun) sync() {
	r.t.Helper()
	r.x.offerWG.Wait()
	if err := r.store.Flush(context.Background()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *archiveRun) restart() {
	r.t.Helper()
	if err := r.x.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.sync()
	r.start()
}

// historySamples renders fail2ban_recent_bans and the horizon of history as
// exposition sample lines.
func historySamples(history map[naiveBanEvent]bool, now int64, windows []Window, countryOf func(netip.Addr) string) string {
	want := withHistory(nil, history, now, windows, countryOf)
	lines := make([]string, 0, len(want))
	for k, v := range want {
		name, labels, _ := strings.Cut(k, "{")
		labels = strings.TrimSuffix(labels, "}")
		var quoted []string
		if labels != "" {
			for l := range strings.SplitSeq(labels, ",") {
				n, val, _ := strings.Cut(l, "=")
				quoted = append(quoted, fmt.Sprintf("%s=%q", n, val))
			}
		}
		sel := ""
		if len(quoted) > 0 {
			sel = "{" + strings.Join(quoted, ",") + "}"
		}
		lines = append(lines, fmt.Sprintf("%s%s %v", name, sel, v))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestArchiveKeepsWindowsThroughPurge simulates 30 days of a busy server:
// bans every hour (some as fail2ban's duplicate rows, some unbanned again),
// and fail2ban's hourly purge of every row older than one day (dbpurgeage's
// default), with an exporter restart on day 20. The 24h, 7d and 30d windows
// per jail and country and the horizon must equal the full history
// (exposition compared with testutil), while an exporter without the archive
// on the same database only sees the last day.
func TestArchiveKeepsWindowsThroughPurge(t *testing.T) {
	d := newF2BDB(t, 4)
	jails := []string{"sshd", "nginx", "postfix"}
	for _, j := range jails {
		d.addJail(j, true)
	}
	clk := newClock(1_790_000_000)
	countries := newTableCountries()
	ips := make([]string, 150)
	for i := range ips {
		if i%10 == 9 {
			ips[i] = fmt.Sprintf("2001:db8::%x", i+1)
		} else {
			ips[i] = fmt.Sprintf("203.0.%d.%d", i/50, i%50+1)
		}
		if i%5 != 4 { // a fifth stays without a country (ZZ)
			countries.set(ips[i], []string{"DE", "US", "CN", "BR"}[i%4])
		}
	}
	windows := windowsOf(t, "24h", "7d", "30d")
	opts := Options{DBPath: d.path, Windows: windows, ChunkSize: 64}
	run := newArchiveRun(t, opts, clk, countries)
	off := NewExporter(Options{DBPath: d.path, Windows: windows, ChunkSize: 64, Now: clk.Now}, countries)
	t.Cleanup(func() { _ = off.Close() })

	rng := rand.New(rand.NewPCG(6, 30))
	history := map[naiveBanEvent]bool{}
	const days = 30
	for hour := range days * 24 {
		now := clk.Now().Unix()
		var unbans [][2]string
		for range rng.IntN(5) {
			jail, ip := jails[rng.IntN(len(jails))], ips[rng.IntN(len(ips))]
			tob := now - rng.Int64N(3600)
			d.ban(jail, ip, tob, 600)
			history[naiveBanEvent{jail: jail, ip: netip.MustParseAddr(ip), tob: tob}] = true
			switch rng.IntN(20) {
			case 0: // fail2ban writes some bans twice: the same event twice
				d.exec("INSERT INTO bans SELECT * FROM bans WHERE rowid = (SELECT max(rowid) FROM bans)")
			case 1:
				unbans = append(unbans, [2]string{jail, ip})
			}
		}
		if err := off.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		run.refresh()
		for _, u := range unbans { // an admin's unbanip deletes the IP's rows: the bans happened
			d.unban(u[0], u[1])
		}
		if hour == 20*24 {
			run.restart()
		}
		clk.Add(time.Hour)
		d.purge(clk.Now().Unix(), 86400) // fail2ban's hourly purge, dbpurgeage 1d
	}
	run.refresh()
	if err := off.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := clk.Now().Unix()
	countryOf := func(a netip.Addr) string { return countries.Country(a) }

	// The premise: fail2ban's database alone holds about one day.
	var inDB, offMonth float64
	for range bansEvents(t, d) {
		inDB++
	}
	for k, v := range scrape(t, off) {
		if strings.HasPrefix(k, "fail2ban_recent_bans{") && strings.Contains(k, "window=30d") {
			offMonth += v
		}
	}
	if inDB == 0 || offMonth != inDB || offMonth*10 > float64(len(history)) {
		t.Fatalf("premise: %v events in bans, %v in the 30d window without the archive, %d in the history", inDB, offMonth, len(history))
	}

	expectExposition(t, run.x, historySamples(history, now, windows, countryOf),
		"fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
	if got := run.store.Count(); got != int64(len(history)) {
		t.Errorf("the archive holds %d events, the history %d", got, len(history))
	}
	t.Logf("%d ban events over %d days; fail2ban's bans holds %v; windows complete through the purge and a restart", len(history), days, inDB)

	// Another restart, a week later: the 30d window still complete, the
	// events that left it no longer counted, nothing counted twice.
	run.restart()
	clk.Add(7 * 24 * time.Hour)
	d.purge(clk.Now().Unix(), 86400)
	run.refresh()
	expectExposition(t, run.x, historySamples(history, clk.Now().Unix(), windows, countryOf),
		"fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
}

// TestArchiveQueueFullOffersAgain: when the archive's queue is full, a
// refresh keeps what Add did not take and offers it again first at the next
// refresh, even one that reads nothing new; nothing is lost or duplicated.
func TestArchiveQueueFullOffersAgain(t *testing.T) {
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	clk := newClock(1_790_000_000)
	appDB := openAppDB(t)
	store, err := archive.Open(context.Background(), appDB, archive.Options{Now: clk.Now, MaxQueue: 4, FlushAt: 4, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "1d"), Now: clk.Now, Archive: store}, nil)
	t.Cleanup(func() { _ = x.Close() })
	ctx := context.Background()
	if err := x.Refresh(ctx); err != nil { // the startup read: nothing yet
		t.Fatal(err)
	}
	now := clk.Now().Unix()
	for i := range 10 {
		d.ban("sshd", fmt.Sprintf("192.0.2.%d", i+1), now-int64(i), 600)
	}
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	x.archMu.Lock()
	pending := len(x.archPending)
	x.archMu.Unlock()
	if store.Queued() != 4 || pending != 6 {
		t.Fatalf("queue %d, pending %d: want 4 queued and 6 kept for the next refresh", store.Queued(), pending)
	}
	for range 2 {
		if err := store.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := x.Refresh(ctx); err != nil { // the database did not change
			t.Fatal(err)
		}
	}
	if err := store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := store.Count(); got != 10 {
		t.Fatalf("archived %d events, want 10", got)
	}
}

// TestArchiveSurvivesReplacedFile: when fail2ban's database file is
// replaced (fail2ban reinstalled), the exporter reads the new file from
// scratch; with the archive on the windows keep the history, including
// events the archive has not written yet.
func TestArchiveSurvivesReplacedFile(t *testing.T) {
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	clk := newClock(1_790_000_000)
	run := newArchiveRun(t, Options{DBPath: d.path, Windows: windowsOf(t, "1d", "7d")}, clk, nil)
	now := clk.Now().Unix()
	history := map[naiveBanEvent]bool{}
	for i := range 6 {
		ip := fmt.Sprintf("192.0.2.%d", i+1)
		d.ban("sshd", ip, now-int64(i)*86400, 600)
		history[naiveBanEvent{jail: "sshd", ip: netip.MustParseAddr(ip), tob: now - int64(i)*86400}] = true
	}
	if err := run.x.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	run.x.offerWG.Wait() // queued, not written
	if run.store.Count() != 0 {
		t.Fatal("the archive wrote without a cycle")
	}
	// A new, empty database in place of the old one.
	fresh := newF2BDB(t, 4)
	fresh.addJail("sshd", true)
	fresh.ban("sshd", "198.51.100.7", now, 600)
	history[naiveBanEvent{jail: "sshd", ip: netip.MustParseAddr("198.51.100.7"), tob: now}] = true
	if err := fresh.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fresh.path, d.path); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	run.refresh()
	expectExposition(t, run.x, historySamples(history, clk.Now().Unix(), run.opts.Windows, func(netip.Addr) string { return "" }),
		"fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
	if got := run.store.Count(); got != int64(len(history)) {
		t.Fatalf("archived %d events, want %d", got, len(history))
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestArchiveRestartOffersOnlyNewEvents: after a restart the startup read
// offers the archive only the rows whose events it does not hold yet (new
// bans while the exporter was down), not every row of bans again: at a
// million rows that would be 64 MB of events to write for nothing. Rows come
// in rowid order, whose relation to timeofban differs per case.
func TestArchiveRestartOffersOnlyNewEvents(t *testing.T) {
	for _, order := range []string{"ascending", "descending", "shuffled"} {
		t.Run(order, func(t *testing.T) {
			d := newF2BDB(t, 4)
			d.addJail("sshd", true)
			d.addJail("nginx", true)
			clk := newClock(1_790_000_000)
			run := newArchiveRun(t, Options{DBPath: d.path, Windows: windowsOf(t, "1d", "7d")}, clk, nil)
			now := clk.Now().Unix()
			rng := rand.New(rand.NewPCG(7, uint64(len(order))))
			tobs := make([]int64, 400)
			for i := range tobs {
				tobs[i] = now - int64(i)*1200 // 400 events over 5.5 days
			}
			switch order {
			case "ascending":
				slices.Reverse(tobs)
			case "shuffled":
				rng.Shuffle(len(tobs), func(i, j int) { tobs[i], tobs[j] = tobs[j], tobs[i] })
			}
			history := map[naiveBanEvent]bool{}
			ban := func(jail, ip string, tob int64) {
				d.ban(jail, ip, tob, 600)
				history[naiveBanEvent{jail: jail, ip: netip.MustParseAddr(ip), tob: tob}] = true
			}
			for i, tob := range tobs {
				jail := []string{"sshd", "nginx"}[i%2]
				ip := fmt.Sprintf("198.51.100.%d", i%60+1)
				ban(jail, ip, tob)
				if i%25 == 0 {
					ban(jail, ip, tob) // fail2ban's duplicate row
				}
			}
			run.refresh()
			if got := run.store.Count(); got != int64(len(history)) {
				t.Fatalf("first start archived %d events, want %d", got, len(history))
			}
			if err := run.x.Close(); err != nil {
				t.Fatal(err)
			}
			run.sync()
			// Bans while the exporter is down: one new IP, one known IP at a
			// new time, one in the past of the stored events.
			clk.Add(time.Hour)
			now = clk.Now().Unix()
			ban("sshd", "203.0.113.9", now)
			ban("nginx", "198.51.100.1", now-30)
			ban("sshd", "198.51.100.2", tobs[len(tobs)/2]+1)
			run.start()
			if err := run.x.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			run.x.offerWG.Wait()
			if got := run.store.Queued(); got != 3 {
				t.Errorf("the startup read after a restart offered %d events, want the 3 new ones", got)
			}
			run.sync()
			if got := run.store.Count(); got != int64(len(history)) {
				t.Errorf("archived %d events, want %d", got, len(history))
			}
			expectExposition(t, run.x, historySamples(history, now, run.opts.Windows, func(netip.Addr) string { return "" }),
				"fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
		})
	}
}

// TestSearchTob compares searchBanEvent from every kind of hint with a plain
// binary search, for present and absent keys.
func TestSearchTob(t *testing.T) {
	e := &engine{}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		e.banEvents = append(e.banEvents, banEvent{timeOfBan: uint32(rng.IntN(300)), jail: uint16(rng.IntN(3)), ip: uint32(rng.IntN(20))})
	}
	slices.SortFunc(e.banEvents, func(a, b banEvent) int { return compareBanEvents(&a, &b) })
	e.banEvents = slices.CompactFunc(e.banEvents, func(a, b banEvent) bool { return compareBanEvents(&a, &b) == 0 })
	cases := []struct {
		name string
		hint func() int
	}{
		{"start", func() int { return 0 }},
		{"end", func() int { return len(e.banEvents) }},
		{"past the end", func() int { return len(e.banEvents) + 10 }},
		{"random", func() int { return rng.IntN(len(e.banEvents)) }},
		{"previous", func() int { return e.searchHint }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for range 2000 {
				key := banEvent{timeOfBan: uint32(rng.IntN(310)), jail: uint16(rng.IntN(3)), ip: uint32(rng.IntN(21))}
				wantI, wantFound := slices.BinarySearchFunc(e.banEvents, &key, func(a banEvent, b *banEvent) int { return compareBanEvents(&a, b) })
				hint := c.hint()
				e.searchHint = hint
				i, found := e.searchBanEvent(&key)
				if i != wantI || found != wantFound {
					t.Fatalf("searchBanEvent(%+v) from hint %d = %d, %v; want %d, %v", key, hint, i, found, wantI, wantFound)
				}
			}
		})
	}
}

// TestOfferBatch: the compact offers convert back to exactly the archive
// events they were made from (IPv4, IPv6, IPv4-mapped input, unknown and
// permanent bantime), across chunk boundaries, for the startup read's full
// chunks and a live refresh's growing ones; a taken chunk is released.
func TestOfferBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		live bool
		n    int
	}{
		{"startup, one chunk", false, 3},
		{"startup, chunk boundary", false, 2*offerChunkLen + 1},
		{"refresh, chunk boundary", true, offerChunkLen + 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &engine{live: tc.live, jailNames: []string{"sshd", "nginx-http-auth", "recidive"}}
			var want []archive.Event
			for i := range tc.n {
				var addr netip.Addr
				switch i % 3 {
				case 0:
					addr = netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
				case 1:
					addr = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i))
				default:
					addr = netip.MustParseAddr(fmt.Sprintf("::ffff:198.51.%d.%d", byte(i>>8), byte(i))).Unmap()
				}
				ev := archive.Event{Jail: e.jailNames[i%3], IP: addr, TimeOfBan: 1_790_000_000 + int64(i), Bantime: []int64{600, -1, -2}[i%3], Bancount: int64(i % 7)}
				want = append(want, ev)
				e.addOffer(pendingOffer{ip: keyOf(addr), bantime: ev.Bantime, bancount: ev.Bancount, timeOfBan: uint32(ev.TimeOfBan), jail: uint16(i % 3)})
			}
			b := e.takeOffer()
			if e.offer != nil {
				t.Fatal("takeOffer left the offers in the engine")
			}
			if b.len() != tc.n || len(b.chunks) != (tc.n+offerChunkLen-1)/offerChunkLen {
				t.Fatalf("%d offers in %d chunks, want %d", b.len(), len(b.chunks), tc.n)
			}
			got := b.all()
			if !slices.Equal(got, want) {
				t.Fatalf("converted offers differ from the events (first: %+v vs %+v)", got[0], want[0])
			}
			for i, c := range b.chunks {
				if c != nil {
					t.Fatalf("chunk %d not released after conversion", i)
				}
			}
		})
	}
}
