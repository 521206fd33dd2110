package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHarnessAgainstRealExporter builds the exporter from this checkout and
// runs the whole harness on a small database as `make bench` does at full
// size — countries on with the real GeoLite2 Country database, both naive
// baselines, the socket comparison against a real sandboxed fail2ban — every
// phase must work, every number must be measured and the exporter must agree
// with SQL and with both baselines, country by country.
func TestHarnessAgainstRealExporter(t *testing.T) {
	for _, tool := range []string{"go", "sqlite3", "fail2ban-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("BANGUI_CI") == "1" {
				t.Fatalf("%s is required in CI: %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	repo, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	mmdb := geoliteCountryPath(t, repo)
	cfg, err := parseFlags([]string{"-sizes", "3000,6000", "-scrapes", "20", "-warmup", "2", "-rounds", "2",
		"-concurrent-rounds", "1", "-bans", "200", "-naive-runs", "2", "-repo", repo, "-data", t.TempDir(),
		"-ready-timeout", "60s", "-mmdb", mmdb, "-socket-bans", "300", "-socket-scrapes", "3", "-gomemlimit", "200MiB"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := benchmark(ctx, slog.New(slog.DiscardHandler), cfg)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results", len(rep.Results))
	}
	if !slices.Contains(rep.Config.ExporterArgs, "--geo.providers=mmdb") || !slices.Contains(rep.Config.ExporterArgs, "--geo.mmdb="+mmdb) {
		t.Errorf("exporter not run with the mmdb alone: %v", rep.Config.ExporterArgs)
	}
	for _, r := range rep.Results {
		for what, d := range map[string]time.Duration{
			"ready": r.Ready, "first metrics": r.FirstMetrics, "countries resolved": r.CountriesResolved,
			"scrape p50": r.Unchanged.P50, "scrape p99": r.Unchanged.P99, "gzip p50": r.Unchanged.GzipP50,
			"after bans p50": r.AfterBansP50, "restart ready": r.RestartFirstMetrics, "naive p50": r.NaiveP50,
			"naive geo p50": r.NaiveGeoP50, "write tx p50": r.WriterBanTxP50,
		} {
			if d <= 0 {
				t.Errorf("%d rows: %s not measured: %v", r.Rows, what, d)
			}
		}
		if r.FirstMetrics < r.Ready || r.CountriesResolved < r.FirstMetrics || r.Unchanged.P99 < r.Unchanged.P95 || r.Unchanged.P95 < r.Unchanged.P50 {
			t.Errorf("%d rows: inconsistent timings: %+v", r.Rows, r)
		}
		if r.PeakRSSBytes < 1<<20 || r.RestartPeakRSSBytes < 1<<20 || r.NaiveGeoPeakRSSBytes < 1<<20 || r.AppDBBytes == 0 || r.RestartAppDBBytes == 0 ||
			r.BipsRows == 0 || r.DistinctIPs == 0 || r.NaiveRowsOut == 0 || r.Unchanged.Series == 0 {
			t.Errorf("%d rows: missing measurements: %+v", r.Rows, r)
		}
		// gzip is smaller, and the uncompressed exposition is what the
		// series say.
		if r.Unchanged.GzBytes <= 0 || r.Unchanged.GzBytes >= r.Unchanged.PlainBytes {
			t.Errorf("%d rows: exposition %d bytes, gzip %d", r.Rows, r.Unchanged.PlainBytes, r.Unchanged.GzBytes)
		}
		if r.BansTotalAfterRoundsWant != 600 {
			t.Errorf("%d rows: wrote %d bans, want 600", r.Rows, r.BansTotalAfterRoundsWant)
		}
		// f2bgen's addresses resolve to many countries in the real database,
		// and the exporter puts every IP in the country the per-IP baseline
		// finds. (The baseline's timed runs come after the rounds of new
		// bans: more IPs than the generated database's.)
		if r.Countries < 20 || r.NaiveGeoCountries < 20 || r.NaiveGeoLookups < r.DistinctIPs {
			t.Errorf("%d rows: %d countries exposed, %d by the per-IP baseline, %d lookups for %d IPs", r.Rows, r.Countries, r.NaiveGeoCountries, r.NaiveGeoLookups, r.DistinctIPs)
		}
		if r.CountrySeries < r.Countries || r.CountrySeriesDiffer != 0 {
			t.Errorf("%d rows: %d of %d series by country differ from the per-IP geo baseline", r.Rows, r.CountrySeriesDiffer, r.CountrySeries)
		}
		// Currently banned is exact (no window edge involved), and the
		// longest window holds the whole history: the exporter, SQL and both
		// naive baselines count exactly the same.
		if len(r.Checks) == 0 || !r.Checks[0].agree() || r.Checks[0].NaiveGeo < 0 {
			t.Errorf("%d rows: fail2ban_banned_ips differs from SQL or a baseline: %+v", r.Rows, r.Checks)
		}
		if last := r.Checks[len(r.Checks)-1]; !strings.Contains(last.What, `"365d"`) || !last.agree() {
			t.Errorf("%d rows: 365d window: exporter, SQL and baselines disagree: %+v", r.Rows, last)
		}
	}
	s := rep.Socket
	if s == nil {
		t.Fatal("no socket comparison")
	}
	if s.BannedIPs != 300 || s.IPsPerScrape != 300 || s.BannedIPsMetric != 300 || s.BaselineP50 <= 0 || s.Scrape.P50 <= 0 || s.Scrape.GzipP50 <= 0 || s.PeakRSSBytes < 1<<20 {
		t.Errorf("socket comparison: %+v", s)
	}
	md := rep.markdown()
	for _, want := range []string{"| 3k | ", "| 6k | ", "built by the harness", "countries on (the mmdb alone", "`GOMEMLIMIT=200MiB`", "Socket exporters, same run"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
