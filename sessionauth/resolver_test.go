package sessionauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/geo"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// switchProvider is a geo.Provider that knows no IP until know is set, then
// places every IP in NL.
type switchProvider struct {
	know  atomic.Bool
	calls atomic.Int32
}

func (p *switchProvider) Name() string  { return "switch" }
func (p *switchProvider) MaxBatch() int { return 100 }
func (p *switchProvider) Status() geo.ProviderStatus {
	return geo.ProviderStatus{Name: "switch"}
}

func (p *switchProvider) Lookup(_ context.Context, ips []netip.Addr) ([]geo.Answer, error) {
	p.calls.Add(1)
	out := make([]geo.Answer, len(ips))
	for i := range ips {
		if p.know.Load() {
			out[i] = geo.Answer{Kind: geo.AnswerFound, CountryCode: "NL", CountryName: "Netherlands"}
		} else {
			out[i] = geo.Answer{Kind: geo.AnswerNotFound}
		}
	}
	return out, nil
}

// TestWithGeoResolver drives the geo endpoints against the real
// geo.Resolver: lookup of an unknown IP queues it, re-resolve retries the
// negative cache, the result is flushed to geo_cache, and lookups never
// write to the database.
func TestWithGeoResolver(t *testing.T) {
	f := newFixture(t, true)
	provider := &switchProvider{}
	resolver, err := geo.New(context.Background(), geo.Options{
		DB:            f.db.DB,
		Providers:     []geo.Provider{provider},
		NegativeTTL:   time.Hour,
		FlushInterval: time.Hour, // flushed by the test
	})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.geo = resolver
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); resolver.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	tok := f.login("")
	lookup := func() map[string]any {
		t.Helper()
		writes := f.db.writes.get()
		rec := f.do(req{method: "GET", path: PathLookupBase + "8.8.4.4", bearer: tok})
		wantJSON(t, rec, 200, "")
		if f.db.writes.get() != writes {
			t.Fatal("lookup wrote to the database")
		}
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	waitFor := func(what string, ok func(map[string]any) bool) map[string]any {
		t.Helper()
		var m map[string]any
		testkit.Eventually(t, 10*time.Second, func() error {
			if m = lookup(); ok(m) {
				return nil
			}
			return fmt.Errorf("waiting for %s: %v", what, m)
		})
		return m
	}
	first := lookup()
	if first["known"] != false || first["pending"] != true {
		t.Fatalf("first lookup %v", first)
	}
	waitFor("the failed lookup", func(m map[string]any) bool { return m["pending"] == false && m["failures"] != nil })

	provider.know.Store(true)
	rec := f.do(req{method: "POST", path: PathReResolve, bearer: tok})
	wantJSON(t, rec, 202, "")
	if q := mustDecode[map[string]int](t, rec)["queued"]; q != 1 {
		t.Fatalf("queued %d, want 1", q)
	}
	waitFor("the country", func(m map[string]any) bool { return m["country_code"] == "NL" })

	rec = f.do(req{method: "GET", path: PathGeoStatus, bearer: tok})
	wantJSON(t, rec, 200, "")
	st := mustDecode[geo.Status](t, rec)
	if st.Resolved != 1 || st.Dirty != 1 || len(st.Providers) != 1 || st.Providers[0].Name != "switch" {
		t.Fatalf("status before flush %+v", st)
	}
	if err := resolver.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	cached, err := geo.ReadCache(context.Background(), f.db.Reader)
	if err != nil || len(cached) != 1 || cached[0].IP.String() != "8.8.4.4" || cached[0].CountryCode != "NL" {
		t.Fatalf("geo_cache: %+v (%v)", cached, err)
	}
	st = mustDecode[geo.Status](t, f.do(req{method: "GET", path: PathGeoStatus, bearer: tok}))
	if st.Dirty != 0 || st.LastFlushedRows != 1 || st.LastFlush.IsZero() {
		t.Fatalf("status after flush %+v", st)
	}
}
