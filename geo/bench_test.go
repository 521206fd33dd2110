package geo

// Benchmarks of geo. Each has a baseline measured in the same run:
// what a naive implementation, or BanGUI, does for the same work. Results
// and the command to reproduce them are in BENCHMARKS.md.

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// randomGlobalIPs returns n distinct random global IPv4 addresses.
func randomGlobalIPs(n int, seed uint64) []netip.Addr {
	rng := rand.New(rand.NewPCG(seed, 42))
	seen := make(map[netip.Addr]bool, n)
	out := make([]netip.Addr, 0, n)
	for len(out) < n {
		ip := netip.AddrFrom4([4]byte{byte(1 + rng.IntN(222)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
		if _, special := classifyLocal(ip); special || seen[ip] {
			continue
		}
		seen[ip] = true
		out = append(out, ip)
	}
	return out
}

var benchCountries = []string{"US", "CN", "RU", "DE", "FR", "GB", "BR", "IN", "NL", "VN", "KR", "ID", "JP", "UA", "PL", "IT", "ES", "CA", "AU", "SG"}

// syntheticWorldMMDB writes an official-schema database covering every /8
// to /16 network with a country, like GeoLite2 in shape (many networks).
func syntheticWorldMMDB(b *testing.B) string {
	path := filepath.Join(b.TempDir(), "world.mmdb")
	var nets []mmdbNet
	for a := 1; a < 224; a++ {
		for c := 0; c < 256; c += 4 {
			nets = append(nets, mmdbNet{cidr: fmt.Sprintf("%d.%d.0.0/14", a, c), country: benchCountries[(a*7+c)%len(benchCountries)], name: "Country"})
		}
	}
	writeMMDB(b, path, "official", nets, 1_700_000_000)
	return path
}

// BenchmarkMMDBLookup100k resolves 100,000 random IPs through the mmdb
// provider. Baseline: the same lookups decoded generically into
// map[string]any, as code that does not know the schema does.
func BenchmarkMMDBLookup100k(b *testing.B) {
	dbs := map[string]string{"synthetic": syntheticWorldMMDB(b)}
	if p := geolitePathForBench(); p != "" {
		dbs["GeoLite2-Country"] = p
	}
	ips := randomGlobalIPs(100_000, 1)
	for name, path := range dbs {
		m, err := OpenMMDB(path, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/geo", func(b *testing.B) {
			found := 0
			for b.Loop() {
				found = 0
				for i := 0; i < len(ips); i += m.MaxBatch() {
					answers, err := m.Lookup(context.Background(), ips[i:min(i+m.MaxBatch(), len(ips))])
					if err != nil {
						b.Fatal(err)
					}
					for _, a := range answers {
						if a.Kind == AnswerFound {
							found++
						}
					}
				}
			}
			b.ReportMetric(float64(len(ips))*float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
			b.ReportMetric(float64(found), "found")
		})
		b.Run(name+"/geo-cold", func(b *testing.B) {
			// The decoded-record cache emptied before every run.
			for b.Loop() {
				b.StopTimer()
				if _, err := m.Reload(true); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for i := 0; i < len(ips); i += m.MaxBatch() {
					if _, err := m.Lookup(context.Background(), ips[i:min(i+m.MaxBatch(), len(ips))]); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(len(ips))*float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		})
		b.Run(name+"/baseline-generic-decode", func(b *testing.B) {
			reader, err := maxminddb.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer closeQuietly(reader)
			for b.Loop() {
				for _, ip := range ips {
					var rec map[string]any
					if err := reader.Lookup(ip).Decode(&rec); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(len(ips))*float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
		})
		closeQuietly(m)
	}
}

func geolitePathForBench() string {
	for _, p := range []string{envOr("BANGUI_GEOIP_MMDB", ""), filepath.Join("..", "testdata", "geoip", "GeoLite2-Country.mmdb")} {
		if p != "" {
			if _, err := maxminddb.Open(p); err == nil {
				return p
			}
		}
	}
	return ""
}

// fillCache writes n resolved rows to geo_cache (one transaction).
func fillCache(b *testing.B, db *appdb.DB, ips []netip.Addr) {
	ctx := context.Background()
	tx, err := db.Writer.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	stmt, err := tx.PrepareContext(ctx, upsertSQL)
	if err != nil {
		b.Fatal(err)
	}
	for i, ip := range ips {
		c := benchCountries[i%len(benchCountries)]
		if _, err := stmt.ExecContext(ctx, ip.String(), c, "Country "+c, fmt.Sprintf("AS%d Example Networks", 64512+i%5000),
			"mmdb", 1_790_000_000, nil, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoad200k loads 200,000 cache rows at startup. Baseline: what a
// cache that is not loaded does instead, one SELECT per IP (BanGUI).
func BenchmarkLoad200k(b *testing.B) {
	db := openTestDB(b)
	if err := migrate(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	ips := randomGlobalIPs(200_000, 2)
	fillCache(b, db, ips)
	b.Run("geo-load", func(b *testing.B) {
		for b.Loop() {
			r, err := New(context.Background(), Options{DB: db})
			if err != nil {
				b.Fatal(err)
			}
			if s := r.Status(); s.Resolved != len(ips) {
				b.Fatalf("loaded %d", s.Resolved)
			}
		}
		b.ReportMetric(float64(len(ips))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("baseline-select-per-ip", func(b *testing.B) {
		stmt, err := db.Reader.Prepare("SELECT country_code FROM geo_cache WHERE ip = ?")
		if err != nil {
			b.Fatal(err)
		}
		defer closeQuietly(stmt)
		for b.Loop() {
			for _, ip := range ips {
				var c sql.NullString
				if err := stmt.QueryRow(ip.String()).Scan(&c); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(len(ips))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

// resolvedResolver returns a resolver holding n resolved, dirty entries.
func resolvedResolver(b *testing.B, db *appdb.DB, ips []netip.Addr) *Resolver {
	r, err := New(context.Background(), Options{DB: db})
	if err != nil {
		b.Fatal(err)
	}
	r.stages = []*stage{{provider: benchAnswerer{}, wake: make(chan struct{}, 1)}}
	keys := make([]key, len(ips))
	answers := make([]Answer, len(ips))
	r.mu.Lock()
	for i, ip := range ips {
		keys[i] = keyOf(ip)
		r.entries.set(keys[i], cacheEntry{flags: flagTracked})
		c := benchCountries[i%len(benchCountries)]
		answers[i] = Answer{Kind: AnswerFound, CountryCode: c, CountryName: "Country " + c, ASN: fmt.Sprintf("AS%d Example Networks", 64512+i%5000)}
	}
	r.mu.Unlock()
	r.apply(0, keys, answers)
	return r
}

// benchAnswerer names the provider of benchmark answers; it is never asked.
type benchAnswerer struct{}

func (benchAnswerer) Name() string  { return "mmdb" }
func (benchAnswerer) MaxBatch() int { return 1000 }
func (benchAnswerer) Lookup(context.Context, []netip.Addr) ([]Answer, error) {
	return nil, fmt.Errorf("benchmark provider is not asked")
}
func (benchAnswerer) Status() ProviderStatus { return ProviderStatus{Name: "mmdb"} }

// markAllDirty makes every entry dirty again, for the next flush.
func (r *Resolver) markAllDirty() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, ce := range r.entries.all() {
		r.markDirtyLocked(k, &ce)
		r.entries.set(k, ce)
	}
}

// BenchmarkFlush50k writes 50,000 dirty entries. Baseline: BanGUI's way,
// one autocommitted INSERT per IP.
func BenchmarkFlush50k(b *testing.B) {
	ips := randomGlobalIPs(50_000, 3)
	b.Run("geo-flush", func(b *testing.B) {
		db := openTestDB(b)
		r := resolvedResolver(b, db, ips)
		commits := testkit.CountCommits(b, db)
		for b.Loop() {
			b.StopTimer()
			r.markAllDirty()
			before := commits.Load()
			b.StartTimer()
			if err := r.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if c := commits.Load() - before; c != 1 {
				b.Fatalf("%d commits", c)
			}
			b.StartTimer()
		}
		b.ReportMetric(1, "commits/flush")
		b.ReportMetric(float64(len(ips))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("baseline-commit-per-row", func(b *testing.B) {
		db := openTestDB(b)
		if err := migrate(context.Background(), db); err != nil {
			b.Fatal(err)
		}
		commits := testkit.CountCommits(b, db)
		for b.Loop() {
			before := commits.Load()
			for i, ip := range ips {
				c := benchCountries[i%len(benchCountries)]
				if _, err := db.Writer.Exec(upsertSQL, ip.String(), c, "Country "+c, "AS64512 Example", "ipapi", 1_790_000_000, nil, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(commits.Load()-before), "commits/flush")
		}
		b.ReportMetric(float64(len(ips))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

// BenchmarkHeap1M measures the heap held by 1,000,000 cached IPs (with
// country, name, ASN and timestamps). Baseline: the obvious
// map[netip.Addr]Entry.
func BenchmarkHeap1M(b *testing.B) {
	const n = 1_000_000
	ips := randomGlobalIPs(n, 4)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	b.Run("geo-memory-tier", func(b *testing.B) {
		db := openTestDB(b)
		for b.Loop() {
			before := heap()
			r := resolvedResolver(b, db, ips)
			r.mu.Lock()
			r.dirty = keyList{} // what a flush leaves
			r.mu.Unlock()
			after := heap()
			b.ReportMetric(float64(after-before)/1e6, "heap-MB")
			b.ReportMetric(float64(after-before)/n, "bytes/IP")
			runtime.KeepAlive(r)
		}
	})
	b.Run("baseline-map-of-Entry", func(b *testing.B) {
		for b.Loop() {
			before := heap()
			m := make(map[netip.Addr]Entry)
			now := time.Now()
			for i, ip := range ips {
				c := benchCountries[i%len(benchCountries)]
				m[ip] = Entry{IP: ip, CountryCode: c, CountryName: "Country " + c, ASN: fmt.Sprintf("AS%d Example Networks", 64512+i%5000),
					Provider: "mmdb", ResolvedAt: now}
			}
			after := heap()
			b.ReportMetric(float64(after-before)/1e6, "heap-MB")
			b.ReportMetric(float64(after-before)/n, "bytes/IP")
			runtime.KeepAlive(m)
		}
	})
}

// BenchmarkSeedCase5200 is the seed's case: 5,200 uncached IPs appear at
// once. geo: they are tracked, resolved in the background (mmdb), ten
// scrapes read them (0 writes) and one flush persists them (1 commit).
// Baseline: BanGUI resolved them during the request and committed every IP
// separately, twice (10,400 commits).
func BenchmarkSeedCase5200(b *testing.B) {
	ips := randomGlobalIPs(5200, 5)
	path := syntheticWorldMMDB(b)
	b.Run("geo", func(b *testing.B) {
		m, err := OpenMMDB(path, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer closeQuietly(m)
		for b.Loop() {
			b.StopTimer()
			db := openTestDB(b)
			r, err := New(context.Background(), Options{DB: db, Providers: []Provider{m}})
			if err != nil {
				b.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(r.Collector())
			commits := testkit.CountCommits(b, db)
			dv := testkit.PinDataVersion(b, db)
			v0 := dv.Get(b)
			b.StartTimer()
			for _, ip := range ips {
				r.Track(ip)
			}
			r.drain(context.Background())
			for range 10 {
				scrape(b, r, reg, ips)
			}
			b.StopTimer()
			scrapeCommits, scrapeVersion := commits.Load(), dv.Get(b)
			b.StartTimer()
			if err := r.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if scrapeCommits != 0 || scrapeVersion != v0 {
				b.Fatalf("scrapes wrote: %d commits, data_version %d→%d", scrapeCommits, v0, scrapeVersion)
			}
			b.ReportMetric(float64(scrapeCommits), "commits-on-scrapes")
			b.ReportMetric(float64(commits.Load()-scrapeCommits), "commits/flush")
			if s := r.Status(); s.Resolved != len(ips) {
				b.Fatalf("resolved %d", s.Resolved)
			}
			b.StartTimer()
		}
	})
	b.Run("baseline-bangui-2-commits-per-ip", func(b *testing.B) {
		m, err := OpenMMDB(path, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer closeQuietly(m)
		for b.Loop() {
			b.StopTimer()
			db := openTestDB(b)
			if err := migrate(context.Background(), db); err != nil {
				b.Fatal(err)
			}
			commits := testkit.CountCommits(b, db)
			b.StartTimer()
			// The page load: for every IP, look it up, then write the
			// cache row and its timestamp, each committed on its own.
			for _, ip := range ips {
				answers, err := m.Lookup(context.Background(), []netip.Addr{ip})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := db.Writer.Exec(`INSERT INTO geo_cache (ip, country_code, provider) VALUES (?, ?, 'mmdb')
					ON CONFLICT (ip) DO UPDATE SET country_code = excluded.country_code`, ip.String(), answers[0].CountryCode); err != nil {
					b.Fatal(err)
				}
				if _, err := db.Writer.Exec(`UPDATE geo_cache SET resolved_at = ? WHERE ip = ?`, time.Now().Unix(), ip.String()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(commits.Load()), "commits/page-load")
			b.StartTimer()
		}
	})
}

func envOr(name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// BenchmarkTrackAndCountry measures the engine's calls: Track of 235,000
// new IPs (the 1M-row startup) and Country of each. Baseline: the same
// calls on a map[netip.Addr]string behind a mutex, the least a cache needs.
func BenchmarkTrackAndCountry(b *testing.B) {
	ips := randomGlobalIPs(235_000, 6)
	b.Run("geo", func(b *testing.B) {
		db := openTestDB(b)
		m, err := OpenMMDB(syntheticWorldMMDB(b), nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer closeQuietly(m)
		for b.Loop() {
			b.StopTimer()
			r, err := New(context.Background(), Options{DB: db, Providers: []Provider{m}})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			for _, ip := range ips {
				r.Track(ip)
			}
			for _, ip := range ips {
				_ = r.Country(ip)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*len(ips)), "ns/call")
	})
	b.Run("baseline-mutex-map", func(b *testing.B) {
		for b.Loop() {
			var mu sync.Mutex
			m := map[netip.Addr]string{}
			for _, ip := range ips {
				mu.Lock()
				if _, ok := m[ip]; !ok {
					m[ip] = ""
				}
				mu.Unlock()
			}
			for _, ip := range ips {
				mu.Lock()
				_ = m[ip]
				mu.Unlock()
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*len(ips)), "ns/call")
	})
}
