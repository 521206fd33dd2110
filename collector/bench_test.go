package collector

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
)

// benchNow is the end of the synthetic history of the benchmark databases:
// fixed, so f2bgen's cache is hit across runs.
var benchNow = time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)

// benchWindows are the exporter's default windows (main.go --bans.window).
var benchWindowLabels = []string{"24h", "7d", "30d", "365d"}

func benchSizes(b *testing.B) []int {
	sizes := []int{100_000}
	if !testing.Short() {
		sizes = append(sizes, 1_000_000)
	}
	return sizes
}

func sizeLabel(n int) string {
	if n >= 1_000_000 && n%1_000_000 == 0 {
		return fmt.Sprintf("%dM", n/1_000_000)
	}
	return fmt.Sprintf("%dk", n/1000)
}

// benchClock is the exporter's clock in the benchmarks: it starts at the end
// of the history and moves one second per round of bans.
type benchClock struct{ t time.Time }

func (c *benchClock) Now() time.Time { return c.t }

func newBenchExporter(b *testing.B, path string, clk *benchClock) *Exporter {
	return NewExporter(Options{DBPath: path, Windows: windowsOf(b, benchWindowLabels...), Now: clk.Now}, NoCountries{})
}

// heapInUseMB is the live heap after a full GC.
func heapInUseMB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}

// BenchmarkCore measures the engine at 100k and (without -short) 1M bans
// rows of a realistic fail2ban database (f2bgen), each beside the naive
// baseline measured in the same run: a full SQL re-aggregation through
// database/sql on the same file.
//
//	startup          open the database and read it whole (the first scrape)
//	unchanged        a refresh with the database unchanged
//	after-1000-bans  a refresh right after 1,000 fail2ban-style ban transactions
//	naive            for each window GROUP BY jail, ip over bans, plus
//	                 fail2ban's currently-banned rule on bips, every row read
func BenchmarkCore(b *testing.B) {
	for _, rows := range benchSizes(b) {
		spec := f2bgen.DefaultSpec(rows, benchNow)
		b.Run("rows="+sizeLabel(rows), func(b *testing.B) {
			shared := f2bgen.CachedPathT(b, spec)
			b.Run("startup", func(b *testing.B) { benchStartup(b, shared) })
			b.Run("unchanged", func(b *testing.B) { benchUnchanged(b, shared) })
			b.Run("after-1000-bans", func(b *testing.B) { benchAfterBans(b, spec, 1000) })
			b.Run("naive", func(b *testing.B) { benchNaive(b, shared) })
		})
	}
}

func benchStartup(b *testing.B, path string) {
	ctx := context.Background()
	var heap float64
	for i := 0; i < b.N; i++ {
		clk := &benchClock{t: benchNow}
		x := newBenchExporter(b, path, clk)
		if err := x.Refresh(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		heap = heapInUseMB()
		x.Close()
		b.StartTimer()
	}
	b.ReportMetric(heap, "heap-MB")
}

func benchUnchanged(b *testing.B, path string) {
	ctx := context.Background()
	clk := &benchClock{t: benchNow}
	x := newBenchExporter(b, path, clk)
	defer x.Close()
	if err := x.Refresh(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := x.Refresh(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func benchAfterBans(b *testing.B, spec f2bgen.Spec, bans int) {
	ctx := context.Background()
	path := f2bgen.GenerateT(b, spec)
	clk := &benchClock{t: benchNow}
	x := newBenchExporter(b, path, clk)
	defer x.Close()
	if err := x.Refresh(ctx); err != nil {
		b.Fatal(err)
	}
	w, err := f2bgen.OpenWriter(ctx, path, f2bgen.WriterOptions{Seed: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		clk.t = clk.t.Add(time.Second)
		if _, err := w.AddBans(ctx, bans, clk.t); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := x.Refresh(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	x.mu.Lock()
	rec := x.reconciles["bans"] + x.reconciles["bips"]
	got := len(x.eng.bansRows)
	x.mu.Unlock()
	if want := spec.Rows + b.N*bans; got != want {
		b.Fatalf("engine holds %d bans rows, want %d", got, want)
	}
	b.ReportMetric(rec, "reconciliations")
	b.ReportMetric(float64(bans), "new-rows/op")
}

// benchNaive re-aggregates everything with SQL, reading every result row as
// a naive exporter must (to map IPs to countries).
func benchNaive(b *testing.B, path string) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", readOnlyURI(path))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	windows := windowsOf(b, benchWindowLabels...)
	now := benchNow.Unix()
	var out int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out = 0
		for _, w := range windows {
			n, err := naiveQuery(ctx, db, "SELECT jail, ip, count(*) FROM bans WHERE timeofban >= ? GROUP BY jail, ip", now-int64(w.Length/time.Second))
			if err != nil {
				b.Fatal(err)
			}
			out += n
		}
		n, err := naiveQuery(ctx, db, "SELECT jail, ip, 1 FROM bips WHERE bantime <= -1 OR timeofban + bantime > ?", now)
		if err != nil {
			b.Fatal(err)
		}
		out += n
	}
	b.ReportMetric(float64(out), "result-rows")
}

func naiveQuery(ctx context.Context, db *sql.DB, q string, arg int64) (int, error) {
	rs, err := db.QueryContext(ctx, q, arg)
	if err != nil {
		return 0, err
	}
	defer rs.Close()
	n := 0
	for rs.Next() {
		var jail, ip string
		var c int64
		if err := rs.Scan(&jail, &ip, &c); err != nil {
			return 0, err
		}
		n++
	}
	return n, rs.Err()
}
