package sessionauth

import (
	"net/http"
	"testing"
	"time"
)

// benchmarkSession measures GET /api/auth/session with a valid Bearer
// token: with the session cache (no query) against the same service
// without it (one read per request), the baseline, in the same run.
func benchmarkSession(b *testing.B, cacheTTL time.Duration) {
	f := newFixture(b, true, func(o *Options) { o.SessionCacheTTL = cacheTTL })
	tok := f.login("")
	r := req{method: "GET", path: PathSession, bearer: tok}
	before := f.db.total()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if rec := f.do(r); rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
	b.ReportMetric(float64(f.db.total()-before)/float64(b.N), "queries/op")
}

func BenchmarkSessionCached(b *testing.B)   { benchmarkSession(b, time.Hour) }
func BenchmarkSessionUncached(b *testing.B) { benchmarkSession(b, 0) }

// BenchmarkSessionCachedParallel shows the cache under concurrent requests.
func BenchmarkSessionCachedParallel(b *testing.B) {
	f := newFixture(b, true, func(o *Options) { o.SessionCacheTTL = time.Hour })
	tok := f.login("")
	r := req{method: "GET", path: PathSession, bearer: tok}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if rec := f.do(r); rec.Code != http.StatusOK {
				b.Errorf("status %d", rec.Code)
				return
			}
		}
	})
}
