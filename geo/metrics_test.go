package geo

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsExposition(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb", "ipapi"}, Options{})
	r := env.r
	for _, ip := range addrs("8.8.8.8", "24.48.0.1", "10.0.0.1", "9.9.9.9") {
		r.Track(ip)
	}
	r.drain(context.Background())
	r.Track(netip.MustParseAddr("81.2.69.142")) // pending
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP bangui_exporter_geo_cache_entries IPs in the geo memory cache, by state: resolved (country known) or unresolved.
# TYPE bangui_exporter_geo_cache_entries gauge
bangui_exporter_geo_cache_entries{state="resolved"} 3
bangui_exporter_geo_cache_entries{state="unresolved"} 2
# HELP bangui_exporter_geo_pending_ips IPs queued for background resolution.
# TYPE bangui_exporter_geo_pending_ips gauge
bangui_exporter_geo_pending_ips 1
# HELP bangui_exporter_geo_lookups_total IP lookups by provider (local = non-global address classified without a provider) and result (found, not_found, no_country, error).
# TYPE bangui_exporter_geo_lookups_total counter
bangui_exporter_geo_lookups_total{provider="ipapi",result="error"} 0
bangui_exporter_geo_lookups_total{provider="ipapi",result="found"} 2
bangui_exporter_geo_lookups_total{provider="ipapi",result="no_country"} 0
bangui_exporter_geo_lookups_total{provider="ipapi",result="not_found"} 0
bangui_exporter_geo_lookups_total{provider="local",result="no_country"} 1
bangui_exporter_geo_lookups_total{provider="mmdb",result="error"} 0
bangui_exporter_geo_lookups_total{provider="mmdb",result="found"} 1
bangui_exporter_geo_lookups_total{provider="mmdb",result="no_country"} 0
bangui_exporter_geo_lookups_total{provider="mmdb",result="not_found"} 2
# HELP bangui_exporter_geo_ipapi_requests_total Batch requests sent to ip-api by HTTP status code ("error" when no response arrived).
# TYPE bangui_exporter_geo_ipapi_requests_total counter
bangui_exporter_geo_ipapi_requests_total{code="200"} 1
# HELP bangui_exporter_geo_ipapi_rate_limit_remaining Requests left in ip-api's current rate-limit window (X-Rl header of the last response); absent before the first response and on the pro endpoint.
# TYPE bangui_exporter_geo_ipapi_rate_limit_remaining gauge
bangui_exporter_geo_ipapi_rate_limit_remaining 14
# HELP bangui_exporter_geo_flushes_total Flushes of the geo cache that committed dirty entries to the app database (one transaction each).
# TYPE bangui_exporter_geo_flushes_total counter
bangui_exporter_geo_flushes_total 1
# HELP bangui_exporter_geo_flush_errors_total Flushes of the geo cache that failed; their entries stay dirty and are written by the next flush.
# TYPE bangui_exporter_geo_flush_errors_total counter
bangui_exporter_geo_flush_errors_total 0
# HELP bangui_exporter_geo_flushed_entries_total Geo cache entries written to the app database.
# TYPE bangui_exporter_geo_flushed_entries_total counter
bangui_exporter_geo_flushed_entries_total 4
# HELP bangui_exporter_geo_mmdb_build_timestamp_seconds Build time of the MaxMind-format database in use (absent while none is loaded).
# TYPE bangui_exporter_geo_mmdb_build_timestamp_seconds gauge
bangui_exporter_geo_mmdb_build_timestamp_seconds 1.7e+09
# HELP bangui_exporter_geo_queue_full_total IPs that did not fit in a full resolver queue; they wait in the backlog and are queued when there is room.
# TYPE bangui_exporter_geo_queue_full_total counter
bangui_exporter_geo_queue_full_total 0
`
	names := []string{"cache_entries", "pending_ips", "lookups_total", "ipapi_requests_total", "ipapi_rate_limit_remaining",
		"flushes_total", "flush_errors_total", "flushed_entries_total", "mmdb_build_timestamp_seconds", "queue_full_total"}
	for i := range names {
		names[i] = "bangui_exporter_geo_" + names[i]
	}
	if err := testutil.CollectAndCompare(r.Collector(), strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// The flush timestamp comes from the resolver's clock.
	if got := testutil.ToFloat64(r.metrics.lastFlush); got != float64(env.clock.Now().Unix()) {
		t.Errorf("last_flush_timestamp_seconds = %v, want %v", got, env.clock.Now().Unix())
	}
	problems, err := testutil.CollectAndLint(r.Collector())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
