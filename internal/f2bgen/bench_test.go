package f2bgen

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkGenerate measures building a database of each size (rows/s).
func BenchmarkGenerate(b *testing.B) {
	for _, rows := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			spec := DefaultSpec(rows, testNow)
			for i := 0; b.Loop(); i++ {
				path := filepath.Join(b.TempDir(), fmt.Sprintf("f2b-%d.sqlite3", i))
				if _, err := Generate(context.Background(), path, spec); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkAddBan measures one fail2ban-style ban transaction on a 100k-row
// database.
func BenchmarkAddBan(b *testing.B) {
	path := GenerateT(b, DefaultSpec(100_000, testNow))
	w, err := OpenWriter(context.Background(), path, WriterOptions{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	for b.Loop() {
		if _, err := w.AddBans(context.Background(), 1, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
