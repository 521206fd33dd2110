package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ogorek "github.com/kisielk/og-rek"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // reversed: percentile must sort
	}
	for _, tc := range []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(3, 1, 2), 50, 2 * time.Millisecond},
		{"median of even is the lower", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p99 of 100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p99 of 10 is max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.samples, tc.p); got != tc.want {
				t.Fatalf("percentile(%v, %v) = %v, want %v", tc.samples, tc.p, got, tc.want)
			}
		})
	}
}

func TestVmHWM(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         int64
		wantErr      bool
	}{
		{"linux status", "Name:\tx\nVmPeak:\t  200 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 4000 kB\n", 51234 * 1024, false},
		{"missing", "Name:\tx\n", 0, true},
		{"bad unit", "VmHWM:\t 5 MB\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vmHWM(strings.NewReader(tc.status))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("vmHWM = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	// The harness's own process has a status file.
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc")
	}
	defer func() { _ = f.Close() }()
	if n, err := vmHWM(f); err != nil || n < 1<<20 {
		t.Fatalf("own VmHWM = %d, %v", n, err)
	}
}

func TestSumMetrics(t *testing.T) {
	exposition := `# HELP fail2ban_up 1 when the last read succeeded.
# TYPE fail2ban_up gauge
fail2ban_up 1
# TYPE fail2ban_banned_ips gauge
fail2ban_banned_ips{country="DE",jail="sshd"} 3
fail2ban_banned_ips{country="ZZ",jail="sshd"} 4
# TYPE fail2ban_recent_bans gauge
fail2ban_recent_bans{country="DE",jail="sshd",window="24h"} 5
fail2ban_recent_bans{country="ZZ",jail="dovecot",window="24h"} 6
fail2ban_recent_bans{country="ZZ",jail="dovecot",window="7d"} 20
# TYPE fail2ban_bans_total counter
fail2ban_bans_total{country="ZZ",jail="sshd"} 1000
`
	got, err := sumMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if got.Up != 1 || got.BannedIPs != 7 || got.RecentBans["24h"] != 11 || got.RecentBans["7d"] != 20 ||
		got.BansTotal != 1000 || !got.BansTotalPresent || got.SeriesCount != 7 {
		t.Fatalf("sums %+v", got)
	}
	if got, _ := sumMetrics(strings.NewReader("fail2ban_up 0\n")); got.BansTotalPresent || got.Up != 0 {
		t.Fatalf("sums %+v", got)
	}
	if _, err := sumMetrics(strings.NewReader("not an exposition {")); err == nil {
		t.Fatal("garbage parsed")
	}
}

// TestSQLCountsAndNaiveBaseline runs the harness's SQL through the real
// sqlite3 CLI on a generated database and checks it against the generator's
// own statistics.
func TestSQLCountsAndNaiveBaseline(t *testing.T) {
	sqlite3, err := exec.LookPath("sqlite3")
	if err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("sqlite3 is required in CI: %v", err)
		}
		t.Skip("sqlite3 not installed")
	}
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	spec := f2bgen.Spec{Rows: 4000, Seed: 5, Now: now}
	path := f2bgen.GenerateT(t, spec)
	st, err := f2bgen.Generate(context.Background(), t.TempDir()+"/same.sqlite3", spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	windows := []time.Duration{24 * time.Hour, 7 * 24 * time.Hour, 30 * 24 * time.Hour, 365 * 24 * time.Hour}
	counts, err := sqlCounts(ctx, sqlite3, path, now, windows)
	if err != nil {
		t.Fatal(err)
	}
	if counts.banned != int64(st.CurrentlyBanned) {
		t.Errorf("banned %d, generator says %d", counts.banned, st.CurrentlyBanned)
	}
	// The generator writes exact duplicate rows; one ban event each, as the
	// exporter counts them.
	if st.DuplicateRows == 0 {
		t.Fatal("the generator wrote no duplicate rows: the test cannot tell count(*) from ban events")
	}
	if counts.windows[3] != int64(st.BanRows-st.DuplicateRows) || counts.windows[0] <= 0 || counts.windows[0] >= counts.windows[1] || counts.windows[1] >= counts.windows[2] {
		t.Errorf("window counts %v for %d rows with %d duplicates", counts.windows, st.BanRows, st.DuplicateRows)
	}
	c, err := countDB(ctx, sqlite3, path)
	if err != nil || c.bips != st.BipsRows || c.distinctIPs != st.DistinctIPs || c.duplicates != st.DuplicateRows {
		t.Errorf("countDB %+v %v; want %d bips, %d IPs, %d duplicates", c, err, st.BipsRows, st.DistinctIPs, st.DuplicateRows)
	}
	nr, err := runNaive(ctx, sqlite3, path, now, windows, 4)
	if err != nil {
		t.Fatal(err)
	}
	if nr.elapsed <= 0 || nr.rows < st.CurrentlyBanned {
		t.Errorf("naive run: %v, %d rows", nr.elapsed, nr.rows)
	}
	// The naive re-aggregation's output sums to the same counts.
	if nr.banned != counts.banned || !slices.Equal(nr.windows, counts.windows) {
		t.Errorf("naive sums: banned %d, windows %v; SQL counts: banned %d, windows %v", nr.banned, nr.windows, counts.banned, counts.windows)
	}
	if _, err := runNaive(ctx, sqlite3, t.TempDir()+"/missing.sqlite3", now, windows, 4); err == nil {
		t.Error("naive run on a missing database succeeded")
	}
}

// TestSummingWriter feeds the naive output in pieces that split lines.
func TestSummingWriter(t *testing.T) {
	out := "#window 0\nsshd|1.2.3.4|2\nsshd|::1|3\n#window 1\nnginx|5.6.7.8|4\n#banned\nsshd|1.2.3.4\n"
	for _, size := range []int{1, 3, 7, len(out)} {
		w := &summingWriter{windows: make([]int64, 2), section: -2}
		for i := 0; i < len(out); i += size {
			_, _ = w.Write([]byte(out[i:min(i+size, len(out))]))
		}
		if w.err != nil || w.rows != 4 || w.banned != 1 || !slices.Equal(w.windows, []int64{5, 4}) {
			t.Errorf("chunks of %d: rows %d banned %d windows %v err %v", size, w.rows, w.banned, w.windows, w.err)
		}
	}
	w := &summingWriter{windows: make([]int64, 1), section: -2}
	_, _ = w.Write([]byte("sshd|1.2.3.4|2\n"))
	if w.err == nil {
		t.Error("a row before any marker was accepted")
	}
}

func TestNaiveSQL(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	got := naiveSQL(now, []time.Duration{time.Hour}, 4)
	want := "SELECT '#window 0';\n" +
		"SELECT jail, ip, count(DISTINCT timeofban) FROM bans WHERE timeofban >= 996400 GROUP BY jail, ip;\n" +
		"SELECT '#banned';\n" +
		"SELECT jail, ip FROM bips WHERE bantime <= -1 OR timeofban + bantime > 1000000;\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if strings.Contains(naiveSQL(now, []time.Duration{time.Hour}, 2), "bips") {
		t.Fatal("schema 2 has no bips")
	}
}

func TestMarkdownReport(t *testing.T) {
	r := &report{Machine: "nproc 2", CPUModel: "AMD EPYC", CPUs: 2}
	r.Config.Windows, r.Config.Countries, r.Config.MMDB, r.Config.BansPerRound = []string{"24h"}, true, "/x/GeoLite2-Country.mmdb", 1000
	r.Config.ExporterEnv = []string{"GOMEMLIMIT=100MiB"}
	r.Results = []sizeResult{{
		Rows: 100_000, PeakRSSBytes: 50 << 20, RestartPeakRSSBytes: 40 << 20,
	}, {
		Rows: 1_000_000, DBBytes: 470 << 20, Ready: 2 * time.Second, FirstMetrics: 2100 * time.Millisecond, RestartFirstMetrics: 2900 * time.Millisecond,
		Unchanged:    scrapeStats{P50: 2 * time.Millisecond, P95: 4 * time.Millisecond, P99: 5 * time.Millisecond, GzipP50: 4 * time.Millisecond, Series: 4727, PlainBytes: 322 << 10, GzBytes: 30 << 10},
		AfterBansP50: 30 * time.Millisecond, BansTotalPresent: true, BansTotalAfterRounds: 12306, BansTotalAfterRoundsWant: 13000,
		PeakRSSBytes: 140 << 20, RestartPeakRSSBytes: 120 << 20, NaiveP50: 4 * time.Second, NaiveGeoP50: 6 * time.Second,
		RestartAppDBBytes: 23 << 20, Countries: 180, BannedZZ: 1234, CountrySeries: 4000, NaiveGeoLookups: 235000, NaiveGeoUnresolved: 11000,
		Checks: []check{{What: "fail2ban_banned_ips (sum)", Exporter: 10, SQL: 12, Naive: 12, NaiveGeo: 12},
			{What: "fail2ban_recent_bans{window=\"24h\"} (sum)", Exporter: 7, SQL: 7, Naive: 7, NaiveGeo: -1},
			{What: "geo disagrees", Exporter: 7, SQL: 7, Naive: 7, NaiveGeo: 8}},
	}, {
		Rows: 10_000_000, FirstMetrics: 20 * time.Second, RestartFirstMetrics: 40 * time.Second,
		Unchanged:    scrapeStats{P50: 4 * time.Millisecond},
		PeakRSSBytes: 140<<20 + 9_000_000*90, RestartPeakRSSBytes: 120<<20 + 9_000_000*110,
	}}
	md := r.markdown()
	for _, want := range []string{
		"countries on (the mmdb alone: GeoLite2-Country.mmdb), archive on, `GOMEMLIMIT=100MiB`",
		"| 1M | 470 MiB | 2100 ms / 2900 ms | – | 2.00 ms / 4.00 ms / 5.00 ms | 4.00 ms / – / – | 30 ms / – | 140 MiB / 120 MiB | 23 MiB | 4727 | 322 KiB / 30 KiB |",
		"| 1M | 2.00 ms / 30 ms | 4000 ms | 2000× / 133× | 6000 ms | 3000× / 200× |",
		"| 1M | 140 MiB | 105 | 120 MiB | 93 | 23 MiB | 24 |", // (140-50) MiB / 900k rows, (120-40) MiB / 900k
		"| 10M | ", "| 90 | ", "| 110 | ",
		"| 1M | 0 | 180 | 1234 | 11000 of 235000 | 4000 | 0 |",
		"1M rows: `fail2ban_bans_total` is 12306 of the 13000 bans written: the exporter holds a new ban back",
		"| 10 | 12 | 12 | 12 | **no** (exporter -2 vs SQL, naive +0 vs SQL, per-IP geo +0 vs SQL) |", "| 7 | 7 | 7 | – | yes |",
		"| 7 | 7 | 7 | 8 | **no** (exporter +0 vs SQL, naive +0 vs SQL, per-IP geo +1 vs SQL) |", "| 10M | 4.00 ms / – | – | – / – |",
		"scrape p50 unchanged ≤ 3 ms: met (2.00 ms)", "gzip p50 ≤ 1.5× plain: **missed** (4.00 ms vs 2.00 ms)",
		"after 1,000 bans p50 ≤ 20 ms: **missed** (30 ms)", "peak RSS ≤ 150 MiB: first start met (140 MiB), restart met (120 MiB)",
		"ready ≤ 3 s: first start met (2100 ms), restart met (2900 ms)",
		"Targets at 10M rows: ready ≤ 30 s: first start met (20.0 s), restart **missed** (40.0 s); scrape p50 unchanged ≤ 5 ms: met (4.00 ms); " +
			"RSS growth per additional row ≤ 100 bytes (from 1M rows): first start met (90), restart **missed** (110).",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "Socket exporters") {
		t.Error("socket section without a socket comparison")
	}
	r.Results[1].PeakRSSBytes = 300 << 20
	if !strings.Contains(r.markdown(), "peak RSS ≤ 150 MiB: first start **missed** (300 MiB), restart met") {
		t.Error("a missed target is not flagged")
	}
	r.Config.Countries, r.Config.ExporterArgs, r.Config.ExporterEnv = false, []string{"--no-storage.archive"}, nil
	r.Socket = &socketResult{BannedIPs: 50000, PerJail: map[string]int{"sshd": 25000, "perm": 25000}, Scrapes: 20,
		BaselineP50: 300 * time.Millisecond, IPsPerScrape: 50000, Scrape: scrapeStats{P50: 3 * time.Millisecond, Series: 40}, PeakRSSBytes: 60 << 20, BannedIPsMetric: 50000}
	md = r.markdown()
	for _, want := range []string{"countries off (`--geo.providers=none`, every country ZZ), archive off", "with 50000 banned IPs (perm 25000, sshd 25000;",
		"| 50000 | 300 ms / – / – | 50000 | 3.00 ms / – / – | – / – / – | 100× | –, 60 MiB, 40, 50000 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestMain lets the test binary stand in for benchproc when the harness
// starts itself as the naive per-IP geo baseline (benchproc naivegeo …).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == naiveGeoSubcommand {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// geoliteCountryPath is the real GeoLite2-Country.mmdb that
// scripts/fetch-geoip.sh puts into testdata/geoip (or $BANGUI_GEOIP_MMDB).
func geoliteCountryPath(t *testing.T, repo string) string {
	t.Helper()
	path := os.Getenv("BANGUI_GEOIP_MMDB")
	if path == "" {
		path = filepath.Join(repo, "testdata", "geoip", "GeoLite2-Country.mmdb")
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("GeoLite2-Country.mmdb is required in CI (run scripts/fetch-geoip.sh): %v", err)
		}
		t.Skipf("GeoLite2-Country.mmdb missing (run scripts/fetch-geoip.sh): %v", err)
	}
	return path
}

// fakeExporter serves expositions in turn (the last one repeats), gzipped
// when asked for, and counts the requests.
type fakeExporter struct {
	mu       sync.Mutex
	bodies   []string
	requests int
	gzipped  int
}

func (f *fakeExporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	body := f.bodies[min(f.requests, len(f.bodies)-1)]
	f.requests++
	gz := r.Header.Get("Accept-Encoding") == "gzip"
	if gz {
		f.gzipped++
	}
	f.mu.Unlock()
	if !gz {
		_, _ = io.WriteString(w, body)
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	zw := gzip.NewWriter(w)
	_, _ = io.WriteString(zw, body)
	_ = zw.Close()
}

func fakeProc(t *testing.T, h http.Handler) *exporterProc {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &exporterProc{baseURL: srv.URL, started: time.Now(),
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 10 * time.Second}}
}

const resolvedExposition = `# TYPE bangui_exporter_geo_pending_ips gauge
bangui_exporter_geo_pending_ips 0
# TYPE fail2ban_banned_ips gauge
fail2ban_banned_ips{country="DE",jail="sshd"} 3
fail2ban_banned_ips{country="US",jail="sshd"} 4
# TYPE fail2ban_recent_bans gauge
fail2ban_recent_bans{country="DE",jail="sshd",window="24h"} 5
`

func TestTimeScrapes(t *testing.T) {
	f := &fakeExporter{bodies: []string{resolvedExposition}}
	p := fakeProc(t, f)
	st, err := timeScrapes(context.Background(), p, 3, 10)
	if err != nil {
		t.Fatal(err)
	}
	if f.requests != 23 || f.gzipped != 11 {
		t.Errorf("%d requests, %d gzipped; want 23, 11 (1 of 3 warm-up)", f.requests, f.gzipped)
	}
	if st.N != 10 || st.GzipN != 10 || st.Series != 4 || st.PlainBytes != len(resolvedExposition) || st.GzBytes <= 0 ||
		st.P50 <= 0 || st.P95 < st.P50 || st.P99 < st.P95 || st.Max < st.P99 || st.GzipP50 <= 0 || st.GzipP99 < st.GzipP50 {
		t.Errorf("stats %+v", st)
	}
	// The gzipped body is what was sent on the wire: it decompresses to the
	// exposition.
	body, _, err := p.scrape(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if plain, _ := io.ReadAll(zr); string(plain) != resolvedExposition {
		t.Errorf("gzip body decompresses to %q", plain)
	}
}

func TestScrapeWithoutGzip(t *testing.T) {
	// An exporter that ignores Accept-Encoding cannot be timed as gzip.
	p := fakeProc(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, resolvedExposition) }))
	if _, _, err := p.scrape(context.Background(), true); err == nil || !strings.Contains(err.Error(), "Content-Encoding") {
		t.Errorf("plain answer to a gzip scrape: %v", err)
	}
	if _, err := timeScrapes(context.Background(), p, 0, 2); err == nil {
		t.Error("timeScrapes accepted plain answers to gzip scrapes")
	}
}

func TestWaitCountries(t *testing.T) {
	pending := strings.Replace(resolvedExposition, "pending_ips 0", "pending_ips 5", 1)
	unresolved := strings.ReplaceAll(resolvedExposition, `country="US"`, `country="ZZ"`)
	expired := strings.Replace(resolvedExposition, `{country="DE",jail="sshd"} 3`, `{country="DE",jail="sshd"} 2`, 1)
	unresolvedExpired := strings.Replace(unresolved, `{country="DE",jail="sshd"} 3`, `{country="DE",jail="sshd"} 4`, 1)
	for _, tc := range []struct {
		name         string
		bodies       []string
		wantRequests int
		wantErr      bool
	}{
		{"resolved at once: two equal scrapes", []string{resolvedExposition}, 2, false},
		{"pending, then resolving, then stable", []string{pending, pending, unresolved, resolvedExposition}, 5, false},
		{"nothing pending but series still changing", []string{unresolved, resolvedExposition}, 3, false},
		{"bans_total still catching up", []string{resolvedExposition, resolvedExposition + "# TYPE fail2ban_bans_total counter\nfail2ban_bans_total{country=\"DE\",jail=\"sshd\"} 3\n"}, 3, false},
		{"stable while bans expire: counts only fall", []string{resolvedExposition, expired}, 2, false},
		{"a country rises while another count falls", []string{unresolvedExpired, resolvedExposition}, 3, false},
		{"never resolved", []string{pending}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeExporter{bodies: tc.bodies}
			p := fakeProc(t, f)
			d, err := p.waitCountries(context.Background(), time.Second)
			if (err != nil) != tc.wantErr {
				t.Fatalf("waitCountries: %v, %v", d, err)
			}
			if !tc.wantErr && (f.requests != tc.wantRequests || d <= 0) {
				t.Errorf("resolved after %d scrapes (%v), want %d", f.requests, d, tc.wantRequests)
			}
		})
	}
}

func TestCompareSeriesAndCountries(t *testing.T) {
	geo := naiveGeoRun{
		Banned: map[string]int64{"sshd|DE": 3, "sshd|US": 4},
		Recent: map[string]int64{"sshd|DE|24h": 5, "sshd|ZZ|24h": 1},
	}
	exporter := map[string]float64{"sshd|DE": 3, "sshd|US": 4, "sshd|DE|24h": 5, "sshd|ZZ|24h": 1, "dovecot|FR": 0}
	if c, d := compareSeries(exporter, geo); c != 4 || d != 0 {
		t.Errorf("equal: compared %d, differ %d", c, d)
	}
	exporter["sshd|US"], exporter["sshd|FR"] = 3, 1
	delete(exporter, "sshd|ZZ|24h")
	if c, d := compareSeries(exporter, geo); c != 5 || d != 3 {
		t.Errorf("one other value, one extra, one missing: compared %d, differ %d", c, d)
	}
	if n := countriesIn(exporter); n != 3 {
		t.Errorf("countriesIn = %d, want 3 (DE, US, FR; not ZZ, not zero series)", n)
	}
	if n := geo.countries(); n != 2 {
		t.Errorf("baseline countries = %d, want 2", n)
	}
	banned, windows := geo.sums([]string{"24h", "7d"})
	if banned != 7 || !slices.Equal(windows, []int64{6, 0}) {
		t.Errorf("sums %d %v", banned, windows)
	}
}

// TestNaiveGeo runs the per-IP geo baseline on a generated database with a
// small test mmdb and checks it against an independent count: SQL for the
// rows, the prefixes for the countries.
func TestNaiveGeo(t *testing.T) {
	sqlite3, err := exec.LookPath("sqlite3")
	if err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("sqlite3 is required in CI: %v", err)
		}
		t.Skip("sqlite3 not installed")
	}
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	db := f2bgen.GenerateT(t, f2bgen.Spec{Rows: 3000, Seed: 7, Now: now})
	mmdbPath := filepath.Join(t.TempDir(), "test.mmdb")
	// IPv4 below 128.0.0.0 is "DE", above "US" except one /8 known only by
	// its registered country ("JP"); IPv6 has no country.
	testmmdb.Write(t, mmdbPath, testmmdb.Options{}, []testmmdb.Network{
		{CIDR: "0.0.0.0/1", Country: "DE"}, {CIDR: "128.0.0.0/1", Country: "US"}, {CIDR: "200.0.0.0/8", Registered: "JP"},
	})
	expect := func(ip string) string {
		a := netip.MustParseAddr(ip)
		switch {
		case a.Is6():
			return "ZZ"
		case a.As4()[0] == 200:
			return "JP"
		case a.As4()[0] < 128:
			return "DE"
		}
		return "US"
	}
	ctx := context.Background()
	windows, names := []time.Duration{24 * time.Hour, 365 * 24 * time.Hour}, []string{"24h", "365d"}
	g, err := openNaiveGeo(db, mmdbPath, windows, names)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Close() }()
	s, err := g.scrape(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	wantBanned := map[string]int64{}
	lines, err := sqliteQuery(ctx, sqlite3, db, fmt.Sprintf("SELECT jail || ' ' || ip FROM bips WHERE bantime <= -1 OR timeofban + bantime > %d", now.Unix()))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		jail, ip, _ := strings.Cut(l, " ")
		wantBanned[jail+"|"+expect(ip)]++
	}
	if !maps.Equal(s.Banned, wantBanned) {
		t.Errorf("banned by country %v, want %v", s.Banned, wantBanned)
	}
	wantRecent := map[string]int64{}
	lines, err = sqliteQuery(ctx, sqlite3, db, fmt.Sprintf("SELECT DISTINCT jail || ' ' || ip || ' ' || timeofban FROM bans WHERE timeofban >= %d", now.Unix()-365*86400))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		tob, _ := strconv.ParseInt(f[2], 10, 64)
		c := expect(f[1])
		wantRecent[f[0]+"|"+c+"|365d"]++
		if tob >= now.Unix()-86400 {
			wantRecent[f[0]+"|"+c+"|24h"]++
		}
	}
	if !maps.Equal(s.Recent, wantRecent) {
		t.Errorf("recent by country %v, want %v", s.Recent, wantRecent)
	}
	for _, c := range []string{"DE", "US", "JP", "ZZ"} {
		if !strings.Contains(string(s.Exposition), `country="`+c+`"`) {
			t.Errorf("no %s series in the exposition:\n%s", c, s.Exposition)
		}
	}
	if parsed, err := sumMetrics(bytes.NewReader(s.Exposition)); err != nil || parsed.SeriesCount != len(s.Banned)+len(s.Recent) {
		t.Errorf("exposition: %d series, %v", parsed.SeriesCount, err)
	}
	// The same through the subcommand, in its own process (this test
	// binary, see TestMain), time fixed.
	run, err := runNaiveGeo(ctx, db, mmdbPath, now, names, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Durations) != 2 || !maps.Equal(run.Banned, wantBanned) || !maps.Equal(run.Recent, wantRecent) || run.PeakRSSBytes < 1<<20 ||
		run.Lookups == 0 || run.Unresolved == 0 || run.Series != len(s.Banned)+len(s.Recent) || run.Bytes != len(s.Exposition) {
		t.Errorf("subcommand run: %+v", run)
	}
	if _, err := runNaiveGeo(ctx, db, filepath.Join(t.TempDir(), "missing.mmdb"), now, names, 1); err == nil {
		t.Error("a missing mmdb was accepted")
	}
}

func TestFindPair(t *testing.T) {
	// The shape of fail2ban's "status JAIL" answer as og-rek decodes it.
	reply := []any{
		ogorek.Tuple{"Filter", []any{ogorek.Tuple{"Currently failed", int64(0)}}},
		ogorek.Tuple{"Actions", []any{ogorek.Tuple{"Currently banned", int64(2)}, ogorek.Tuple{"Banned IP list", []any{"192.0.2.1", "192.0.2.2"}}}},
	}
	v, ok := findPair(reply, "Banned IP list")
	if l, isList := v.([]any); !ok || !isList || len(l) != 2 {
		t.Errorf("Banned IP list: %v %v", v, ok)
	}
	if v, ok := findPair(reply, "Currently banned"); !ok || v != int64(2) {
		t.Errorf("Currently banned: %v %v", v, ok)
	}
	if _, ok := findPair(reply, "Total banned"); ok {
		t.Error("found a pair that is not there")
	}
}

// TestIsolationArgs runs isolationArgs against fake binaries whose --help
// shows the flags of newer and older exporter builds.
func TestIsolationArgs(t *testing.T) {
	dir := t.TempDir()
	fake := func(name, help string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\ncat <<'EOF'\n"+help+"\nEOF\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	current := fake("current", "--geo.providers=\"mmdb,ipapi\"\n--geo.mmdb=\"\"\n--geo.ipapi.url=URL\n--fail2ban.socket=PATH")
	older := fake("older", "--geo.mmdb=\"\"\n--geo.ipapi.url=URL")
	oldest := fake("oldest", "--fail2ban.db=PATH")
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		binary    string
		given     []string
		countries bool
		want      []string
		wantErr   bool
	}{
		{"countries on", current, nil, true, []string{"--geo.providers=mmdb", "--geo.mmdb=/m.mmdb", "--fail2ban.socket="}, false},
		{"countries off", current, nil, false, []string{"--geo.providers=none", "--fail2ban.socket="}, false},
		{"geo flags given", current, []string{"--geo.providers=ipapi"}, true, []string{"--fail2ban.socket="}, false},
		{"socket given", current, []string{"--fail2ban.socket=/s"}, false, []string{"--geo.providers=none"}, false},
		{"older build: no providers flag", older, nil, true, []string{"--geo.mmdb=/m.mmdb", "--geo.ipapi.url="}, false},
		{"older build, countries off", older, nil, false, []string{"--geo.ipapi.url="}, false},
		{"no mmdb support, countries on", oldest, nil, true, nil, true},
		{"no mmdb support, countries off", oldest, nil, false, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := isolationArgs(ctx, tc.binary, tc.given, tc.countries, "/m.mmdb")
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Errorf("isolationArgs = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-gomemlimit", "100MiB", "-exporter-env", "GOGC=50", "-now", "2026-12-07T06:00:00Z", "-repo", "/r", "-naive-runs", "0"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.exporterEnv, []string{"GOGC=50", "GOMEMLIMIT=100MiB"}) || !cfg.now.Equal(time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)) ||
		cfg.mmdb != "/r/testdata/geoip/GeoLite2-Country.mmdb" || !cfg.countries || cfg.socketBans != 50000 || cfg.naiveRuns != 0 {
		t.Errorf("config %+v", cfg)
	}
	for _, bad := range [][]string{{"-exporter-env", "NOEQUALS"}, {"-now", "yesterday"}, {"-socket-bans", "-1"}, {"-sizes", "0"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
