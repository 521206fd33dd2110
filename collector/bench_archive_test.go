package collector

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bangui/bangui_exporter/collector/archive"
	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// archiveBenchSpec is fail2ban's database of the archive benchmarks: what
// the default dbpurgeage (1 day) leaves on a server with ~1M bans a month.
func archiveBenchSpec() f2bgen.Spec {
	spec := f2bgen.DefaultSpec(33_000, benchNow)
	spec.History = 24 * time.Hour
	return spec
}

// archiveBenchEvents is the size of the archive: 1M events (100k with -short).
func archiveBenchEvents() int {
	if testing.Short() {
		return 100_000
	}
	return 1_000_000
}

// buildBenchArchive writes n archived ban events over 365 days ending at
// benchNow into a fresh app database, in cycles of 50,000 events as Run
// writes them: ~235,000 distinct IPs per million events (a third of the
// events on 1 % of them, 1 in 20 IPv6), f2bgen's six jails.
func buildBenchArchive(b *testing.B, n int) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bangui.sqlite3")
	ctx := context.Background()
	db, err := appdb.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	store, err := archive.Open(ctx, db, archive.Options{Now: func() time.Time { return benchNow }, MaxQueue: 50_000, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	nIPs := max(1, n*235/1000)
	ips := make([]netip.Addr, nIPs)
	for i := range ips {
		if i%20 == 7 {
			var a [16]byte
			a[0], a[1] = 0x20, 0x01
			for j := 2; j < 16; j++ {
				a[j] = byte(rng.Uint32())
			}
			ips[i] = netip.AddrFrom16(a)
			continue
		}
		u := rng.Uint32()
		ips[i] = netip.AddrFrom4([4]byte{byte(u>>24) | 1, byte(u >> 16), byte(u >> 8), byte(u)})
	}
	var jails []string
	for _, j := range f2bgen.DefaultJails() {
		jails = append(jails, j.Name)
	}
	span := int64(365 * 24 * 3600)
	start := benchNow.Unix() - span
	batch := make([]archive.Event, 0, 50_000)
	for i := range n {
		ip := ips[rng.IntN(nIPs)]
		if rng.IntN(3) == 0 {
			ip = ips[rng.IntN(max(1, nIPs/100))]
		}
		batch = append(batch, archive.Event{Jail: jails[rng.IntN(len(jails))], IP: ip,
			TimeOfBan: start + int64(i)*span/int64(n), Bantime: 600, Bancount: 1})
		if len(batch) == cap(batch) || i == n-1 {
			if got := store.Add(batch...); got != len(batch) {
				b.Fatalf("queue took %d of %d", got, len(batch))
			}
			if err := store.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.Logf("archive: %d events written (%d distinct)", n, store.Count())
	return path
}

// archiveBench is one exporter with the archive on or off, as main wires it.
type archiveBench struct {
	x     *Exporter
	store *archive.Store
	reg   *prometheus.Registry
	close func()
}

func openArchiveBench(b *testing.B, f2bPath, appPath string, on bool, clk *benchClock, run bool) *archiveBench {
	b.Helper()
	ctx := context.Background()
	ab := &archiveBench{reg: prometheus.NewRegistry()}
	var closers []func()
	opts := Options{DBPath: f2bPath, Windows: windowsOf(b, benchWindowLabels...), Now: clk.Now}
	if on {
		db, err := appdb.Open(ctx, appPath)
		if err != nil {
			b.Fatal(err)
		}
		ab.store, err = archive.Open(ctx, db, archive.Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ab.reg.MustRegister(ab.store.Collector())
		opts.Archive = ab.store
		stopRun := func() {}
		if run {
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); _ = ab.store.Run(runCtx) }()
			stopRun = func() { cancel(); <-done }
		}
		closers = append(closers, func() { _ = db.Close() }, stopRun)
	}
	ab.x = NewExporter(opts, NoCountries{})
	ab.reg.MustRegister(ab.x)
	closers = append(closers, func() { _ = ab.x.Close() })
	ab.close = func() {
		for _, closer := range slices.Backward(closers) {
			closer()
		}
	}
	return ab
}

// settle waits until the startup read's events are in the archive's queue
// and collects the garbage of the startup, so that a scrape benchmark
// measures the steady state.
func (ab *archiveBench) settle() {
	ab.x.offerWG.Wait()
	runtime.GC()
}

func (ab *archiveBench) scrape(b *testing.B) {
	if _, err := ab.reg.Gather(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkArchive measures the exporter with the ban archive on (1M
// archived events over 365 days; 100k with -short) beside the archive off,
// in the same run, on the same fail2ban database (33,000 bans rows over one
// day: what dbpurgeage leaves of ~1M bans a month). The default windows.
//
//	startup                 open the archive (on), NewExporter and the first
//	                        read (archive load, fail2ban's database): the
//	                        time until /-/ready
//	scrape-unchanged        a full scrape (registry Gather) with fail2ban's
//	                        database unchanged
//	scrape-after-1000-bans  a full scrape right after 1,000 fail2ban-style
//	                        ban transactions (with the archive: Add of their
//	                        events; the archive's Run ingests in the background)
func BenchmarkArchive(b *testing.B) {
	spec := archiveBenchSpec()
	f2bPath := f2bgen.CachedPathT(b, spec)
	appPath := buildBenchArchive(b, archiveBenchEvents())
	for _, on := range []bool{false, true} {
		name := "archive=off"
		if on {
			name = "archive=on"
		}
		b.Run("startup/"+name, func(b *testing.B) {
			var heap float64
			for range b.N {
				clk := &benchClock{t: benchNow}
				ab := openArchiveBench(b, f2bPath, appPath, on, clk, false)
				if err := ab.x.Refresh(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if !ab.x.Ready() {
					b.Fatal("not ready after the first refresh")
				}
				heap = heapInUseMB()
				ab.close()
				b.StartTimer()
			}
			b.ReportMetric(heap, "heap-MB")
		})
	}
	for _, on := range []bool{false, true} {
		name := "archive=off"
		if on {
			name = "archive=on"
		}
		b.Run("scrape-unchanged/"+name, func(b *testing.B) {
			clk := &benchClock{t: benchNow}
			ab := openArchiveBench(b, f2bPath, appPath, on, clk, true)
			defer ab.close()
			ab.scrape(b)
			ab.settle()
			b.ResetTimer()
			for range b.N {
				ab.scrape(b)
			}
		})
	}
	for _, on := range []bool{false, true} {
		name := "archive=off"
		if on {
			name = "archive=on"
		}
		b.Run("scrape-after-1000-bans/"+name, func(b *testing.B) {
			ctx := context.Background()
			path := f2bgen.GenerateT(b, spec)
			clk := &benchClock{t: benchNow}
			ab := openArchiveBench(b, path, appPath, on, clk, true)
			defer ab.close()
			ab.scrape(b)
			ab.settle()
			w, err := f2bgen.OpenWriter(ctx, path, f2bgen.WriterOptions{Seed: 2})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = w.Close() }()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				clk.t = clk.t.Add(time.Second)
				if _, err := w.AddBans(ctx, 1000, clk.t); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				ab.scrape(b)
			}
		})
	}
}

// BenchmarkArchiveFirstRun is the exporter's first start with the archive on
// (empty archive) on a large fail2ban database — 1M bans rows over 30 days
// (100k with -short), e.g. a server with a raised dbpurgeage — beside the
// archive off: time until ready, the live heap right then (the startup
// read's events wait to be queued), and with the archive the time until the
// archive's Run has written every event (archived-s).
func BenchmarkArchiveFirstRun(b *testing.B) {
	rows := 1_000_000
	if testing.Short() {
		rows = 100_000
	}
	f2bPath := f2bgen.CachedPathT(b, f2bgen.DefaultSpec(rows, benchNow))
	for _, on := range []bool{false, true} {
		name := "archive=off"
		if on {
			name = "archive=on"
		}
		b.Run(name, func(b *testing.B) {
			var heap, archived float64
			for range b.N {
				b.StopTimer()
				appPath := filepath.Join(b.TempDir(), "bangui.sqlite3")
				clk := &benchClock{t: benchNow}
				b.StartTimer()
				start := time.Now()
				ab := openArchiveBench(b, f2bPath, appPath, on, clk, true)
				if err := ab.x.Refresh(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				heap = heapInUseMB()
				if on {
					ab.x.offerWG.Wait()
					if err := testkit.Poll(10*time.Minute, func() error {
						if n := ab.store.Queued(); n > 0 {
							return fmt.Errorf("%d events still queued for the archive", n)
						}
						return nil
					}); err != nil {
						b.Fatal(err)
					}
					archived = time.Since(start).Seconds()
				}
				ab.close()
				b.StartTimer()
			}
			b.ReportMetric(heap, "heap-MB")
			if on {
				b.ReportMetric(archived, "archived-s")
			}
		})
	}
}
