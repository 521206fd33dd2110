package banmap

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/collector"
)

// benchBans is n banned pairs over 8 jails and 200 countries, a time of ban
// per second over the last n seconds: a 1M-row host.
func benchBans(n int) []collector.BannedIP {
	jails := []string{"sshd", "nginx-http-auth", "postfix", "dovecot", "recidive", "apache-auth", "named", "sshd-ddos"}
	bans := make([]collector.BannedIP, n)
	for i := range bans {
		var ip [16]byte
		ip[10], ip[11] = 0xff, 0xff
		ip[12], ip[13], ip[14], ip[15] = byte(1+i>>24), byte(i>>16), byte(i>>8), byte(i)
		c := i % 200
		bans[i] = collector.BannedIP{
			Jail: jails[i%len(jails)], IP: ip, Country: string([]byte{byte('A' + c/26%26), byte('A' + c%26)}),
			TimeOfBan: 1_790_000_000 - int64(i), Bantime: 86400, Bancount: 1,
		}
	}
	return bans
}

// BenchmarkServeBans measures GET /api/bans with limit 100 at 1M banned
// pairs (the handler alone: JSON included, authentication and network
// not), for the first page and a deep page of every filter shape, and
// reports the 99th percentile of the request times (p99-ns/op).
//
//	go test ./banmap -run '^$' -bench ServeBans -benchtime 2000x
func BenchmarkServeBans(b *testing.B) {
	const rows = 1_000_000
	src := &fakeSource{chunk: 4096}
	src.set(benchBans(rows))
	m, err := New(Options{Source: src, List: true})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := m.Update(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Logf("list of %d pairs built in %s", rows, time.Since(start))
	// A cursor deep into the list: the position of the 500,000th entry.
	l := m.current().list
	deep := encodeCursor(position{timeOfBan: 1_790_000_000 - rows/2, jail: "sshd", ip: l.entries[0].ip})
	for _, q := range []string{
		"limit=100",
		"limit=100&country=DE",
		"limit=100&jail=sshd",
		"limit=100&jail=postfix&country=DE", // i ≡ 2 (mod 8) and i ≡ 82 (mod 200): 1,250 pairs
		"limit=100&cursor=" + deep,
		"limit=100&country=DE&cursor=" + deep,
	} {
		b.Run(q[:min(len(q), 40)], func(b *testing.B) {
			times := make([]time.Duration, 0, b.N)
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodGet, "/api/bans?"+q, nil)
				t0 := time.Now()
				m.ServeBans(rec, req)
				times = append(times, time.Since(t0))
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", q, rec.Code, rec.Body)
				}
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds()), "p99-ns/op")
		})
	}
	b.Run("by-country", func(b *testing.B) {
		for b.Loop() {
			rec := httptest.NewRecorder()
			m.ServeByCountry(rec, httptest.NewRequest(http.MethodGet, "/api/bans/by-country", nil))
		}
	})
}

// BenchmarkUpdate measures one background recomputation at 1M banned pairs
// with the list kept (no AS or place lookups: their cost is the
// databases', see geo's benchmarks).
func BenchmarkUpdate(b *testing.B) {
	src := &fakeSource{chunk: 4096}
	src.set(benchBans(1_000_000))
	m, err := New(Options{Source: src, List: true})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := m.Update(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateRealDBs measures one recomputation of the top lists
// without the list, at 100,000 banned pairs of random global IPv4
// addresses, with the real GeoLite2-City and ip-location-db ASN databases
// (scripts/fetch-geoip.sh): the per-IP cost of the lookups.
func BenchmarkUpdateRealDBs(b *testing.B) {
	city, asn := realDBB(b, "GeoLite2-City.mmdb"), realDBB(b, "ip-location-db-asn.mmdb")
	bans := benchBans(100_000)
	for i := range bans {
		// Spread over the whole address space (benchBans counts up from
		// 1.0.0.0); multiplying by an odd number is a bijection.
		v := uint32(i)*2654435761 | 1<<24
		bans[i].IP[12], bans[i].IP[13], bans[i].IP[14], bans[i].IP[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
	src := &fakeSource{chunk: 4096}
	src.set(bans)
	m, err := New(Options{Source: src, AS: []ASLookup{asn}, Places: city})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := m.Update(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}
