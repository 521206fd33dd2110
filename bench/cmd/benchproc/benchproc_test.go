package main

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
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
	r.Config.Windows = []string{"24h"}
	r.Results = []sizeResult{{
		Rows: 1_000_000, DBBytes: 470 << 20, Ready: 2 * time.Second, FirstMetrics: 2100 * time.Millisecond,
		ScrapeP50: 2 * time.Millisecond, ScrapeP99: 5 * time.Millisecond, AfterBansP50: 30 * time.Millisecond,
		PeakRSSBytes: 150 << 20, RestartPeakRSSBytes: 120 << 20, NaiveP50: 4 * time.Second,
		Checks: []check{{What: "fail2ban_banned_ips (sum)", Exporter: 10, SQL: 12, Naive: 12},
			{What: "fail2ban_recent_bans{window=\"24h\"} (sum)", Exporter: 7, SQL: 7, Naive: 7}},
	}}
	md := r.markdown()
	for _, want := range []string{"| 1M | 470 MB | 2000 ms | 2100 ms | 2.00 ms / 5.00 ms | 30 ms", "2000×", "133×", "| 10 | 12 | 12 | **no** (exporter -2 vs SQL, naive +0 vs SQL) |", "| 7 | 7 | 7 | yes |",
		"scrape p50 unchanged ≤ 20 ms: met", "peak RSS ≤ 200 MB: first start met (150 MB), restart met (120 MB)", "| 150 MB / 120 MB |", "| absent (0) |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	r.Results[0].PeakRSSBytes = 300 << 20
	if !strings.Contains(r.markdown(), "peak RSS ≤ 200 MB: first start **missed** (300 MB), restart met") {
		t.Error("a missed target is not flagged")
	}
	r.Results[0].PeakRSSBytes, r.Results[0].RestartPeakRSSBytes = 150<<20, 250<<20
	if !strings.Contains(r.markdown(), "first start met (150 MB), restart **missed** (250 MB)") {
		t.Error("a missed restart target is not flagged")
	}
}
