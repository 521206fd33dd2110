package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHarnessAgainstRealExporter builds the exporter from this checkout and
// runs the whole harness on a small database, as `make bench` does at full
// size: every phase must work and every number must be measured.
func TestHarnessAgainstRealExporter(t *testing.T) {
	for _, tool := range []string{"go", "sqlite3"} {
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
	cfg, err := parseFlags([]string{"-sizes", "3000", "-scrapes", "20", "-warmup", "2", "-rounds", "2",
		"-concurrent-rounds", "1", "-bans", "200", "-naive-runs", "2", "-repo", repo, "-data", t.TempDir(),
		"-ready-timeout", "60s"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := benchmark(ctx, slog.New(slog.DiscardHandler), cfg)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	if len(rep.Results) != 1 {
		t.Fatalf("%d results", len(rep.Results))
	}
	r := rep.Results[0]
	for what, d := range map[string]time.Duration{
		"ready": r.Ready, "first metrics": r.FirstMetrics, "scrape p50": r.ScrapeP50, "scrape p99": r.ScrapeP99,
		"after bans p50": r.AfterBansP50, "restart ready": r.RestartReady, "naive p50": r.NaiveP50,
		"write tx p50": r.WriterBanTxP50,
	} {
		if d <= 0 {
			t.Errorf("%s not measured: %v", what, d)
		}
	}
	if r.FirstMetrics < r.Ready || r.ScrapeP99 < r.ScrapeP50 {
		t.Errorf("inconsistent timings: %+v", r)
	}
	if r.PeakRSSBytes < 1<<20 || r.RestartPeakRSSBytes < 1<<20 || r.BipsRows == 0 || r.DistinctIPs == 0 || r.NaiveRowsOut == 0 || r.Series == 0 {
		t.Errorf("missing measurements: %+v", r)
	}
	if r.BansTotalAfterRoundsWant != 600 {
		t.Errorf("wrote %d bans, want 600", r.BansTotalAfterRoundsWant)
	}
	// The exporter reads the same database the SQL counts: currently banned
	// is exact (no window edge involved).
	if len(r.Checks) == 0 || !r.Checks[0].agree() {
		t.Errorf("fail2ban_banned_ips differs from fail2ban's rule in SQL or from the naive re-aggregation: %+v", r.Checks)
	}
	// The longest window holds the whole history: no window edge, so the
	// exporter, SQL and the naive GROUP BY count exactly the same events.
	if last := r.Checks[len(r.Checks)-1]; !strings.Contains(last.What, `"365d"`) || !last.agree() {
		t.Errorf("365d window: exporter, SQL and naive disagree: %+v", last)
	}
	md := rep.markdown()
	if !strings.Contains(md, "| 3k | ") || !strings.Contains(md, "built by the harness") {
		t.Errorf("report:\n%s", md)
	}
}
