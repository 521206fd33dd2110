package geo

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// mmdbStateMetrics are the mmdb's state metrics.
var mmdbStateMetrics = []string{
	"bangui_exporter_geo_mmdb_loaded",
	"bangui_exporter_geo_mmdb_load_errors_total",
	"bangui_exporter_geo_mmdb_last_load_success_timestamp_seconds",
	"bangui_exporter_geo_mmdb_build_timestamp_seconds",
}

// TestMMDBMissingAtStart: a --geo.mmdb missing at start is not fatal; the
// state is logged once however often the file is checked, exported as
// metrics, and the file is loaded when it appears.
func TestMMDBMissingAtStart(t *testing.T) {
	logs := &testkit.LogBuffer{}
	clock := newAutoClock()
	path := filepath.Join(t.TempDir(), "later.mmdb")
	m, err := NewMMDB(MMDBOptions{Path: path, Logger: logs.Logger(slog.LevelInfo), Clock: clock})
	if err != nil {
		t.Fatalf("a missing file at start must not be an error: %v", err)
	}
	defer closeQuietly(m)
	for range 100 { // 100 checks of the timer
		if changed, err := m.Reload(false); changed || err == nil {
			t.Fatalf("missing file: changed=%v err=%v", changed, err)
		}
	}
	if n := logs.Count("level=WARN"); n != 1 {
		t.Fatalf("%d WARN lines for 101 checks of one missing file, want 1:\n%s", n, logs)
	}
	if _, err := m.Lookup(context.Background(), addrs("8.8.8.8")); err == nil {
		t.Fatal("lookup without a database must fail (so the next provider is asked)")
	}
	st := m.Status()
	if st.Loaded || st.LoadErrors != 1 || !strings.Contains(st.LastError, "later.mmdb") {
		t.Fatalf("status %+v %+v", st, st.MMDBStatus)
	}
	want := `
# HELP bangui_exporter_geo_mmdb_loaded 1 while a MaxMind-format database (--geo.mmdb) is loaded and answers lookups, 0 while none is (file missing or invalid since the start).
# TYPE bangui_exporter_geo_mmdb_loaded gauge
bangui_exporter_geo_mmdb_loaded 0
# HELP bangui_exporter_geo_mmdb_load_errors_total Failed loads of --geo.mmdb, counted once per problem: a missing file once until it appears, each invalid file once.
# TYPE bangui_exporter_geo_mmdb_load_errors_total counter
bangui_exporter_geo_mmdb_load_errors_total 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), mmdbStateMetrics...); err != nil {
		t.Fatal(err)
	}

	// The file appears: the next check loads it, one INFO line.
	logs.Take()
	writeMMDB(t, path, "official", []mmdbNet{{cidr: "8.8.8.0/24", country: "US"}}, 1_700_000_000)
	if changed, err := m.Reload(false); !changed || err != nil {
		t.Fatalf("appeared file: changed=%v err=%v", changed, err)
	}
	if got, err := m.Lookup(context.Background(), addrs("8.8.8.8")); err != nil || got[0].CountryCode != "US" {
		t.Fatalf("after the file appeared: %+v %v", got, err)
	}
	if lines := logs.Take(); len(lines) != 1 || !strings.Contains(lines[0], "mmdb loaded") {
		t.Fatalf("log after the load: %q", lines)
	}
	want = `
# HELP bangui_exporter_geo_mmdb_loaded 1 while a MaxMind-format database (--geo.mmdb) is loaded and answers lookups, 0 while none is (file missing or invalid since the start).
# TYPE bangui_exporter_geo_mmdb_loaded gauge
bangui_exporter_geo_mmdb_loaded 1
# HELP bangui_exporter_geo_mmdb_load_errors_total Failed loads of --geo.mmdb, counted once per problem: a missing file once until it appears, each invalid file once.
# TYPE bangui_exporter_geo_mmdb_load_errors_total counter
bangui_exporter_geo_mmdb_load_errors_total 1
# HELP bangui_exporter_geo_mmdb_last_load_success_timestamp_seconds Time of the last successful load of --geo.mmdb (absent before the first).
# TYPE bangui_exporter_geo_mmdb_last_load_success_timestamp_seconds gauge
bangui_exporter_geo_mmdb_last_load_success_timestamp_seconds 1.79586e+09
# HELP bangui_exporter_geo_mmdb_build_timestamp_seconds Build time of the MaxMind-format database in use (absent while none is loaded).
# TYPE bangui_exporter_geo_mmdb_build_timestamp_seconds gauge
bangui_exporter_geo_mmdb_build_timestamp_seconds 1.7e+09
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), mmdbStateMetrics...); err != nil {
		t.Fatal(err)
	}

	// The file goes away while loaded: one WARN, the database in use stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		_, _ = m.Reload(false)
	}
	if lines := logs.Take(); len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "stays in use") {
		t.Fatalf("log after the file went away: %q", lines)
	}
	if got, err := m.Lookup(context.Background(), addrs("8.8.8.8")); err != nil || got[0].CountryCode != "US" {
		t.Fatalf("the loaded database must stay in use: %+v %v", got, err)
	}
	if st := m.Status(); !st.Loaded || st.LoadErrors != 2 {
		t.Fatalf("status %+v", st.MMDBStatus)
	}
}

// TestResolverLoadsMMDBThatAppears: IPs that failed while the mmdb was
// missing are resolved as soon as the file appears, not after their
// backoff (the resolver's clock does not move here).
func TestResolverLoadsMMDBThatAppears(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.mmdb")
	clock := newAutoClock()
	m, err := NewMMDB(MMDBOptions{Path: path, CheckInterval: 10 * time.Millisecond, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(m)
	r, err := New(context.Background(), Options{DB: openTestDB(t), Providers: []Provider{m}, Clock: clock, NegativeTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("8.8.8.8")
	r.Track(ip)
	r.drain(context.Background())
	if e, _ := r.Lookup(ip); e.Failures != 1 || e.CountryCode != "" {
		t.Fatalf("with no database: %+v", e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	writeMMDB(t, path, "official", []mmdbNet{{cidr: "8.8.8.0/24", country: "US"}}, 1_700_000_000)
	testkit.EventuallyTrue(t, 10*time.Second, "8.8.8.8 resolved once the mmdb appeared", func() bool {
		return r.Country(ip) == "US"
	})
}

// TestFlushLogsFailureAndRecovery: a failing flush logs once when it starts
// failing and once when it works again, not every flush.
func TestFlushLogsFailureAndRecovery(t *testing.T) {
	logs := &testkit.LogBuffer{}
	env := newResolverEnv(t, []string{"mmdb"}, Options{Logger: logs.Logger(slog.LevelInfo)})
	r := env.r
	ctx := context.Background()
	logs.Take()
	if _, err := r.db.Writer.ExecContext(ctx, `CREATE TRIGGER geo_cache_refuse BEFORE INSERT ON geo_cache
		BEGIN SELECT RAISE(ABORT, 'disk says no'); END`); err != nil {
		t.Fatal(err)
	}
	r.Track(netip.MustParseAddr("8.8.8.8"))
	r.drain(ctx)
	failing := false
	for range 5 {
		failing = r.flushCycle(ctx, failing)
	}
	if !failing {
		t.Fatal("flushCycle does not report the failure")
	}
	if lines := logs.Take(); len(lines) != 1 || !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "disk says no") {
		t.Fatalf("log of 5 failed flushes: %q", lines)
	}
	if _, err := r.db.Writer.ExecContext(ctx, `DROP TRIGGER geo_cache_refuse`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		failing = r.flushCycle(ctx, failing)
	}
	if failing {
		t.Fatal("flushCycle still reports a failure")
	}
	if lines := logs.Take(); len(lines) != 1 || !strings.Contains(lines[0], "geo cache flush works again") {
		t.Fatalf("log of the recovery: %q", lines)
	}
	if got := testutil.ToFloat64(r.metrics.flushErrors); got != 5 {
		t.Fatalf("flush_errors_total = %v, want 5", got)
	}
}

func TestOptionsValidation(t *testing.T) {
	db := openTestDB(t)
	m, _ := newTestMMDB(t, "official", testNets)
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"defaults", Options{DB: db}, ""},
		{"no database", Options{}, "geo: no app database"},
		{"negative cache size", Options{DB: db, CacheSize: -1}, "geo: cache size must not be negative, got -1"},
		{"negative queue size", Options{DB: db, QueueSize: -1}, "geo: queue size must not be negative"},
		{"negative negative TTL", Options{DB: db, NegativeTTL: -time.Second}, "geo: negative TTL must not be negative"},
		{"negative flush interval", Options{DB: db, FlushInterval: -5 * time.Second}, "geo: flush interval must not be negative, got -5s"},
		{"nil provider", Options{DB: db, Providers: []Provider{nil}}, "geo: nil provider"},
		{"provider twice", Options{DB: db, Providers: []Provider{m, m}}, `geo: provider "mmdb" given twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(context.Background(), tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr && !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if strings.Count(err.Error(), "geo:") != 1 {
				t.Fatalf("doubled prefix: %v", err)
			}
		})
	}
	for _, tt := range []struct {
		name    string
		opts    MMDBOptions
		wantErr string
	}{
		{"no path", MMDBOptions{}, "mmdb: no database path"},
		{"negative check interval", MMDBOptions{Path: "x.mmdb", CheckInterval: -time.Second}, "mmdb: negative check interval -1s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewMMDB(tt.opts); err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
