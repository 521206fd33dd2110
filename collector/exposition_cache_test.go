package collector

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// snapCollector collects the cached families of a fixed snapshot as
// metrics, the way Collect does.
type snapCollector struct {
	ex   *Exporter
	snap *snapshot
}

func (c snapCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bannedDesc
	ch <- recentDesc
	ch <- bansTotalDesc
}

func (c snapCollector) Collect(ch chan<- prometheus.Metric) { c.ex.collectCached(ch, c.snap, true) }

// expfmtTexts gathers c and encodes every family with expfmt: name → text.
func expfmtTexts(t *testing.T, c prometheus.Collector) map[string]string {
	t.Helper()
	mfs := gather(t, c)
	out := map[string]string{}
	for _, mf := range mfs {
		var b bytes.Buffer
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
		out[mf.GetName()] = b.String()
	}
	return out
}

// TestEncodeFamilyEqualsExpfmt: the cached families' own encoder writes
// byte for byte what the registry's Gather and expfmt write for the same
// counts: HELP and TYPE, label order, series order (by label values as
// strings, whatever the engine's indices), escaping of label values,
// number formatting (1e+06), and no family without series.
func TestEncodeFamilyEqualsExpfmt(t *testing.T) {
	sk := func(j, c uint16) seriesKey { return seriesKey{jail: j, country: c} }
	for _, tc := range []struct {
		name      string
		windows   []string
		jails     []string
		countries []string
		banned    map[seriesKey]int
		recent    []map[seriesKey]int
		total     map[seriesKey]uint64
	}{
		{
			name:    "ordinary",
			windows: []string{"24h", "7d", "30d", "365d"},
			jails:   []string{"sshd", "nginx-http-auth", "postfix"}, countries: []string{"ZZ", "US", "DE", "CN"},
			banned: map[seriesKey]int{sk(0, 1): 3, sk(1, 1): 1, sk(0, 0): 7, sk(2, 3): 12, sk(0, 2): 2},
			recent: []map[seriesKey]int{
				{sk(0, 1): 3},
				{sk(0, 1): 9, sk(2, 2): 1},
				{sk(0, 1): 40, sk(2, 2): 5, sk(1, 0): 2},
				{sk(0, 1): 400, sk(2, 2): 50, sk(1, 0): 20, sk(1, 3): 1},
			},
			total: map[seriesKey]uint64{sk(0, 1): 5, sk(1, 3): 2},
		},
		{
			name:    "large numbers",
			windows: []string{"1h"},
			jails:   []string{"sshd"}, countries: []string{"ZZ", "BR", "FR", "IN"},
			banned: map[seriesKey]int{sk(0, 0): 1_000_000, sk(0, 1): 123_456, sk(0, 2): 1_234_567, sk(0, 3): 99_999_999},
			recent: []map[seriesKey]int{{sk(0, 0): 1 << 40}},
			total:  map[seriesKey]uint64{sk(0, 1): 1 << 53, sk(0, 2): 1<<63 + 12345},
		},
		{
			name:      "label values that need escaping or sort unlike their indices",
			windows:   []string{"1h", "10h", "1d", "1.5h"},
			jails:     []string{`quote"jail`, `back\slash`, "new\nline", "ünïcode", "", "Sshd", "sshd", "a b", "a"},
			countries: []string{"ZZ", "AD", "AA"},
			banned:    map[seriesKey]int{sk(0, 1): 1, sk(1, 1): 2, sk(2, 1): 3, sk(3, 2): 4, sk(4, 0): 5, sk(5, 0): 6, sk(6, 0): 7, sk(7, 1): 8, sk(8, 1): 9},
			recent: []map[seriesKey]int{
				{sk(0, 1): 1, sk(8, 2): 2},
				{sk(0, 1): 1, sk(7, 2): 3},
				{sk(1, 1): 1},
				{sk(2, 0): 4, sk(6, 1): 5},
			},
			total: map[seriesKey]uint64{sk(0, 0): 1, sk(2, 2): 2, sk(3, 1): 3},
		},
		{
			name:    "empty families",
			windows: []string{"1h", "1d"},
			jails:   []string{"sshd"}, countries: []string{"ZZ"},
			banned: map[seriesKey]int{},
			recent: []map[seriesKey]int{{}, {sk(0, 0): 1}},
			total:  map[seriesKey]uint64{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := NewExporter(Options{Windows: windowsOf(t, tc.windows...)}, nil)
			snap := &snapshot{jails: tc.jails, countries: tc.countries, bannedNow: tc.banned, windows: tc.recent, bansTotal: tc.total}
			want := expfmtTexts(t, snapCollector{ex, snap})
			for f := range numCachedFamilies {
				name := cachedFamilyText[f].name
				got := ex.encodeFamily(f, snap)
				if got.Name() != name {
					t.Errorf("family %d is named %q, want %q", f, got.Name(), name)
				}
				if string(got.Text()) != want[name] {
					t.Errorf("%s:\ngot:\n%s\nexpfmt:\n%s", name, got.Text(), want[name])
				}
				if len(got.Text()) == 0 {
					continue
				}
				// The kept DEFLATE stream is the text, and ends at a byte
				// boundary with a sync flush (00 00 ff ff), not a final block.
				z := got.Deflate()
				if !bytes.HasSuffix(z, []byte{0, 0, 0xff, 0xff}) {
					t.Errorf("%s: DEFLATE stream does not end with a sync flush: % x", name, z[max(0, len(z)-8):])
				}
				plain, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{3, 0}))))
				if err != nil || !bytes.Equal(plain, got.Text()) {
					t.Errorf("%s: DEFLATE stream decodes to %q, %v", name, plain, err)
				}
			}
		})
	}
}

// checkCachedEqualsFresh fails unless the Exporter's cached families equal
// the families built afresh, as metrics, from its last refresh, and
// encoded by expfmt.
func checkCachedEqualsFresh(t *testing.T, x *Exporter, step int, op string) {
	t.Helper()
	var got strings.Builder
	for _, f := range x.EncodedFamilies() {
		got.Write(f.Text())
	}
	fresh := expfmtTexts(t, x.CachedCollector())
	var want strings.Builder
	for f := range numCachedFamilies {
		want.WriteString(fresh[cachedFamilyText[f].name])
	}
	if got.String() != want.String() {
		t.Fatalf("step %d (%s): cached exposition differs from a fresh one:\ncached:\n%s\nfresh:\n%s", step, op, got.String(), want.String())
	}
}

// TestGenerationChangesWithCounts drives an Exporter with a fake clock and
// checks, after each step, which cached families got a new generation and
// were encoded again: exactly those whose counts changed. Time passing is
// no change until a ban expires or a ban event leaves a window. The cached
// exposition equals a fresh one after every step.
func TestGenerationChangesWithCounts(t *testing.T) {
	const (
		banned = 1 << familyBanned
		recent = 1 << familyRecent
		total  = 1 << familyTotal
	)
	for _, schema := range []int{4, 2} {
		t.Run(fmt.Sprintf("schema%d", schema), func(t *testing.T) {
			t0 := int64(1_790_000_000)
			d := newF2BDB(t, schema)
			d.addJail("sshd", true)
			clk := newClock(t0)
			countries := newTableCountries()
			// Schema 2 has no bantime: every ban lasts the default 600 s.
			x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "1h", "1d"), Now: clk.Now, DefaultBantime: 600 * time.Second}, countries)
			defer func() { _ = x.Close() }()
			// A ban expiring at t0+500, an expired one leaving the 1h
			// window at t0+600, and an expired one leaving the 1d window
			// at t0+1000.
			d.ban("sshd", "192.0.2.1", t0-100, 600)
			d.ban("sshd", "192.0.2.2", t0-3000, 600)
			d.ban("sshd", "192.0.2.3", t0-86400+1000, 600)
			ctx := context.Background()
			if err := x.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			checkCachedEqualsFresh(t, x, 0, "start")
			prevFams := encodedByFamily(x)
			prevGen := x.snap.gen
			for i, st := range []struct {
				what    string
				do      func()
				changed int
			}{
				{"nothing", func() {}, 0},
				{"100 s pass, nothing crosses an edge", func() { clk.Add(100 * time.Second) }, 0},
				{"a ban expires (t0+500)", func() { clk.Add(410 * time.Second) }, banned},
				{"10 s pass", func() { clk.Add(10 * time.Second) }, 0},
				{"a ban event leaves the 1h window (t0+600)", func() { clk.Add(90 * time.Second) }, recent},
				{"a ban event leaves the 1d window (t0+1000)", func() { clk.Add(400 * time.Second) }, recent},
				// fail2ban_bans_total waits for the new ban's country.
				{"a new ban", func() { d.ban("sshd", "192.0.2.4", clk.Now().Unix(), 600) }, banned | recent},
				{"the database is read again, unchanged", func() { d.addJail("sshd", true) }, 0},
				{"the new ban's IP gets a country", func() { countries.set("192.0.2.4", "DE") }, banned | recent | total},
				{"an IP no window counts gets a country", func() { countries.set("192.0.2.3", "FR") }, 0},
				{"a day passes: the last bans expire and leave every window", func() { clk.Add(48 * time.Hour) }, banned | recent},
				{"another day passes", func() { clk.Add(24 * time.Hour) }, 0},
			} {
				st.do()
				if err := x.Refresh(ctx); err != nil {
					t.Fatal(err)
				}
				checkCachedEqualsFresh(t, x, i+1, st.what)
				fams := encodedByFamily(x)
				for f := range numCachedFamilies {
					want := st.changed&(1<<f) != 0
					if got := x.snap.gen[f] != prevGen[f]; got != want {
						t.Errorf("%s: %s generation changed %v, want %v", st.what, cachedFamilyText[f].name, got, want)
					}
					if reencoded := fams[f] != prevFams[f]; reencoded != want && (fams[f] != nil || prevFams[f] != nil) {
						t.Errorf("%s: %s encoded again %v, want %v", st.what, cachedFamilyText[f].name, reencoded, want)
					}
				}
				prevFams, prevGen = fams, x.snap.gen
			}
		})
	}
}

// encodedByFamily returns the Exporter's current EncodedFamily of each
// cached family (nil for one without series).
func encodedByFamily(x *Exporter) [numCachedFamilies]*EncodedFamily {
	var out [numCachedFamilies]*EncodedFamily
	for _, f := range x.EncodedFamilies() {
		for k := range numCachedFamilies {
			if cachedFamilyText[k].name == f.Name() {
				out[k] = f
			}
		}
	}
	return out
}

var errIntegrityForTest = errors.New("damaged page (test)")

// TestCachedFamiliesFollowUp: while fail2ban's database is unreadable the
// gauges leave the exposition and fail2ban_bans_total stays, as Collect
// does; a scrape after recovery shows the current counts, never a stale
// cached text.
func TestCachedFamiliesFollowUp(t *testing.T) {
	t0 := int64(1_790_000_000)
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	clk := newClock(t0)
	x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "1h"), Now: clk.Now}, nil)
	defer func() { _ = x.Close() }()
	d.ban("sshd", "192.0.2.1", t0-10, 600)
	ctx := context.Background()
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	d.ban("sshd", "192.0.2.2", t0-5, 600) // counts in fail2ban_bans_total
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		var out []string
		for _, f := range x.EncodedFamilies() {
			out = append(out, f.Name())
		}
		return out
	}
	all := "fail2ban_banned_ips fail2ban_bans_total fail2ban_recent_bans"
	if got := strings.Join(names(), " "); got != all {
		t.Fatalf("families %q, want %q", got, all)
	}
	x.mu.Lock()
	x.integrityErr = errIntegrityForTest
	x.mu.Unlock()
	if err := x.Refresh(ctx); err == nil {
		t.Fatal("refresh succeeded with a damaged database")
	}
	checkCachedEqualsFresh(t, x, 1, "unreadable")
	if got := strings.Join(names(), " "); got != "fail2ban_bans_total" {
		t.Fatalf("families while unreadable %q, want fail2ban_bans_total only", got)
	}
	x.mu.Lock()
	x.integrityErr = nil
	x.mu.Unlock()
	d.ban("sshd", "192.0.2.3", t0-1, 600)
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checkCachedEqualsFresh(t, x, 2, "readable again, one more ban")
	var text strings.Builder
	for _, f := range x.EncodedFamilies() {
		text.Write(f.Text())
	}
	if !strings.Contains(text.String(), `fail2ban_banned_ips{country="ZZ",jail="sshd"} 3`+"\n") ||
		!strings.Contains(text.String(), `fail2ban_bans_total{country="ZZ",jail="sshd"} 2`+"\n") {
		t.Fatalf("the scrape after the change does not show it:\n%s", text.String())
	}
}

// TestUncachedAndCachedMakeCollect: the two collectors the /metrics
// handler uses together expose what the Exporter's Collect does.
func TestUncachedAndCachedMakeCollect(t *testing.T) {
	t0 := int64(1_790_000_000)
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	d.addJail("nginx", false)
	d.ban("sshd", "192.0.2.1", t0-10, 600)
	d.ban("nginx", "2001:db8::1", t0-4000, -1)
	d.exec("INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data) VALUES('sshd', 'bad ip', ?, 600, 1, NULL)", t0)
	clk := newClock(t0)
	x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "1h", "1d"), Now: clk.Now}, nil)
	defer func() { _ = x.Close() }()
	volatile := []string{"bangui_exporter_fail2ban_read_duration_seconds", "bangui_exporter_fail2ban_last_read_success_timestamp_seconds"}
	drop := func(m map[string]float64) map[string]float64 {
		for k := range m {
			for _, v := range volatile {
				if strings.HasPrefix(k, v+"{") {
					delete(m, k)
				}
			}
		}
		return m
	}
	whole := drop(scrape(t, x))
	parts := drop(scrape(t, x.Uncached(), x.CachedCollector()))
	if len(whole) != len(parts) {
		t.Errorf("Collect has %d samples, Uncached with CachedCollector %d", len(whole), len(parts))
	}
	for k, v := range whole {
		if pv, ok := parts[k]; !ok || pv != v {
			t.Errorf("%s: Collect %v, Uncached with CachedCollector %v (present %v)", k, v, pv, ok)
		}
	}
}

// countingCountries counts the lookups of a tableCountries.
type countingCountries struct {
	*tableCountries
	mu      sync.Mutex
	lookups int
}

func (c *countingCountries) Country(ip netip.Addr) string {
	c.mu.Lock()
	c.lookups++
	c.mu.Unlock()
	return c.tableCountries.Country(ip)
}

func (c *countingCountries) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lookups
}

// TestCountryRefreshAside: countries geo learns between scrapes are moved
// by the background pass, so the next refresh looks up no IP again, and
// the exposition equals the naive recomputation; the background pass runs
// beside refreshes and new bans without a race.
func TestCountryRefreshAside(t *testing.T) {
	for _, chunk := range []int{countryProbeChunk, 7, 1} {
		t.Run(fmt.Sprintf("chunks of %d IPs", chunk), func(t *testing.T) { testCountryRefreshAside(t, chunk) })
	}
}

func testCountryRefreshAside(t *testing.T, chunk int) {
	t0 := int64(1_790_000_000)
	d, clk, countries, windows, x := newCountingExporter(t, t0, "1h", "1d")
	x.inlineCountries = 0 // the background pass, even for a few IPs
	x.countryChunk = chunk
	ips := make([]string, 40)
	for i := range ips {
		ips[i] = fmt.Sprintf("198.51.100.%d", i+1)
		d.ban("sshd", ips[i], t0-int64(i*100), 3600)
	}
	ctx := context.Background()
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		want := naive(t, d, clk.Now().Unix(), windows, countries.tableCountries.Country, 600)
		got := only(scrape(t, x), "fail2ban_banned_ips", "fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%s: engine differs from naive recomputation (-naive +engine):\n%s", what, diff)
		}
		checkCachedEqualsFresh(t, x, 0, what)
	}
	for i, ip := range ips[:20] {
		countries.set(ip, []string{"DE", "FR", "US"}[i%3])
	}
	x.refreshCountriesAside(context.Background())
	before := countries.count()
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countries.count() - before; n != 0 {
		t.Errorf("the refresh after the background pass looked up %d IPs, want 0", n)
	}
	check("after the background pass")

	// Concurrently: the background job, refreshes, new bans, new countries.
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { x.RunCountryRefresh(runCtx) }) // returns when cancelled
	wg.Go(func() {
		for runCtx.Err() == nil {
			x.refreshCountriesAside(context.Background())
		}
	})
	for i := range 60 {
		countries.set(ips[i%len(ips)], []string{"CN", "BR", "DE", ""}[i%4])
		if i%3 == 0 {
			d.ban("sshd", fmt.Sprintf("203.0.113.%d", i+1), t0, 600)
		}
		if err := x.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	check("after concurrent passes")
}

// TestLightSettleAndVerify: a light settle takes in new bans and a purge of
// the oldest rows at once; a row deleted below the top fingerprint bucket
// is found by the next full settle, which RunVerify runs by itself.
func TestLightSettleAndVerify(t *testing.T) {
	t0 := int64(1_790_000_000)
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	// 9,000 rows: more than one bucket of rowids.
	d.exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 9000)
		INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data) SELECT 'sshd', '10.0.' || (i / 250) || '.' || (i % 250), ?, 600, 1, NULL FROM n`, t0-3000)
	clk := newClock(t0)
	windows := windowsOf(t, "1h")
	x := NewExporter(Options{DBPath: d.path, Windows: windows, Now: clk.Now}, nil)
	defer func() { _ = x.Close() }()
	// As while RunVerify runs, before its first check.
	x.verifying.Store(true)
	ctx := context.Background()
	recent := func() float64 {
		return scrapeLight(t, x)[`fail2ban_recent_bans{country=ZZ,jail=sshd,window=1h}`]
	}
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct {
		what string
		do   func()
		want float64
	}{
		{"a new ban", func() { d.ban("sshd", "192.0.2.1", t0, 600) }, 9001},
		{"a purge of the oldest rows", func() { d.exec("DELETE FROM bans WHERE rowid <= 10") }, 8991},
		{"a row deleted in the middle: the light settle does not see it", func() { d.exec("DELETE FROM bans WHERE rowid = 500") }, 8991},
	} {
		st.do()
		if got := recent(); got != st.want {
			t.Fatalf("%s: %v ban events in the window, want %v", st.what, got, st.want)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); x.RunVerify(runCtx) }()
	testkit.EventuallyFor(t, "RunVerify to find the deleted row", 30*time.Second, func() error {
		if got := recent(); got != 8990 {
			return fmt.Errorf("%v ban events in the window", got)
		}
		return nil
	})
	cancel()
	<-done
	checkCachedEqualsFresh(t, x, 0, "verified")
}

// scrapeLight scrapes x the way the /metrics handler does while RunVerify
// runs: a light refresh, then the metrics.
func scrapeLight(t *testing.T, x *Exporter) map[string]float64 {
	t.Helper()
	if err := x.refresh(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	return scrape(t, x.CachedCollector())
}

// TestScrapeLeavesCountriesAside: while RunCountryRefresh runs, a scrape
// looks no IP up again when geo learned countries; it wakes the background
// pass, and the next scrapes show the countries.
func TestScrapeLeavesCountriesAside(t *testing.T) {
	t0 := int64(1_790_000_000)
	d, clk, countries, windows, x := newCountingExporter(t, t0, "1h")
	x.inlineCountries = 0 // the background pass, even for a few IPs
	for i := range 50 {
		d.ban("sshd", fmt.Sprintf("198.51.100.%d", i+1), t0-int64(i), 3600)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := x.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// As while RunCountryRefresh runs, before its first pass.
	x.countriesAside.Store(true)
	for i := range 50 {
		countries.set(fmt.Sprintf("198.51.100.%d", i+1), "DE")
	}
	before := countries.count()
	x.refreshForScrape()
	if n := countries.count() - before; n != 0 {
		t.Errorf("%d lookups during the scrape, want none", n)
	}
	if len(x.kickCountries) != 1 {
		t.Error("the scrape did not wake RunCountryRefresh")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { x.RunCountryRefresh(ctx) })
	testkit.EventuallyFor(t, "the countries in the exposition", 10*time.Second, func() error {
		x.refreshForScrape()
		want := naive(t, d, clk.Now().Unix(), windows, countries.tableCountries.Country, 600)
		got := map[string]float64{}
		for k, v := range scrape(t, x.CachedCollector()) {
			if strings.HasPrefix(k, "fail2ban_banned_ips{") || strings.HasPrefix(k, "fail2ban_recent_bans{") {
				got[k] = v
			}
		}
		if diff := cmp.Diff(only(want, "fail2ban_banned_ips", "fail2ban_recent_bans"), got); diff != "" {
			return fmt.Errorf("differs from naive: %s", diff)
		}
		return nil
	})
}

// TestScrapeMovesFewCountriesItself: while RunCountryRefresh runs, a
// scrape of a host with at most inlineCountries IPs still moves the
// countries geo learned itself (the exposition is right at once, nothing
// to wake); above that it leaves them to the background pass.
func TestScrapeMovesFewCountriesItself(t *testing.T) {
	for _, tc := range []struct {
		name           string
		ips, inline    int
		wantInline     bool
		wantCountryDEs float64
	}{
		{"fewer IPs than the bound", 30, 31, true, 30},
		{"as many IPs as the bound", 30, 30, true, 30},
		{"more IPs than the bound", 30, 29, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := int64(1_790_000_000)
			d, _, countries, _, x := newCountingExporter(t, t0, "1h")
			x.inlineCountries = tc.inline
			for i := range tc.ips {
				d.ban("sshd", fmt.Sprintf("198.51.100.%d", i+1), t0-int64(i), 3600)
			}
			if err := x.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			x.countriesAside.Store(true)
			for i := range tc.ips {
				countries.set(fmt.Sprintf("198.51.100.%d", i+1), "DE")
			}
			before := countries.count()
			x.refreshForScrape()
			if n, want := countries.count()-before, map[bool]int{true: tc.ips, false: 0}[tc.wantInline]; n != want {
				t.Errorf("%d lookups during the scrape, want %d", n, want)
			}
			if kicked := len(x.kickCountries) == 1; kicked == tc.wantInline {
				t.Errorf("RunCountryRefresh woken: %v, want %v", kicked, !tc.wantInline)
			}
			got := scrape(t, x.CachedCollector())
			if v := got[`fail2ban_banned_ips{country=DE,jail=sshd}`]; v != tc.wantCountryDEs {
				t.Errorf("fail2ban_banned_ips{country=DE} = %v, want %v", v, tc.wantCountryDEs)
			}
		})
	}
}

// TestCountryPassLooksAtUnknownIPs: when geo learned countries for IPs that
// had none, a country pass (the scrape's and the background one) looks up
// only the IPs without a country; when an IP that had one got another,
// every IP. Either way the exposition equals the naive recomputation.
func TestCountryPassLooksAtUnknownIPs(t *testing.T) {
	for _, tc := range []struct {
		name        string
		background  bool
		reassign    bool
		wantLookups int
	}{
		{"scrape, new countries", false, false, 10},
		{"scrape, a country changed", false, true, 50},
		{"background, new countries", true, false, 10},
		{"background, a country changed", true, true, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := int64(1_790_000_000)
			d, clk, countries, windows, x := newCountingExporter(t, t0, "1h")
			ip := func(i int) string { return fmt.Sprintf("198.51.100.%d", i+1) }
			// 40 IPs with a country, 10 without.
			for i := range 50 {
				if i < 40 {
					countries.set(ip(i), "DE")
				}
				d.ban("sshd", ip(i), t0-int64(i), 3600)
			}
			ctx := context.Background()
			if err := x.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			for i := 40; i < 50; i++ {
				countries.set(ip(i), "FR")
			}
			if tc.reassign {
				countries.set(ip(0), "US")
			}
			before := countries.count()
			if tc.background {
				x.refreshCountriesAside(ctx)
			} else if err := x.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			if n := countries.count() - before; n != tc.wantLookups {
				t.Errorf("%d lookups in the pass, want %d", n, tc.wantLookups)
			}
			if err := x.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			want := naive(t, d, clk.Now().Unix(), windows, countries.tableCountries.Country, 600)
			got := only(scrape(t, x), "fail2ban_banned_ips", "fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("engine differs from naive recomputation (-naive +engine):\n%s", diff)
			}
		})
	}
}

// newCountingExporter is the set-up of the country-pass tests: a schema-4
// database with an enabled sshd jail, a clock at t0, countries that count
// their lookups, and an Exporter over them with the given windows (closed
// at the test's end).
func newCountingExporter(t *testing.T, t0 int64, windowLabels ...string) (*f2bDB, *clock, *countingCountries, []Window, *Exporter) {
	t.Helper()
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	clk := newClock(t0)
	countries := &countingCountries{tableCountries: newTableCountries()}
	windows := windowsOf(t, windowLabels...)
	x := NewExporter(Options{DBPath: d.path, Windows: windows, Now: clk.Now}, countries)
	t.Cleanup(func() { _ = x.Close() })
	return d, clk, countries, windows, x
}
