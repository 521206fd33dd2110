package collector

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestZZProfLoad(t *testing.T) {
	p := os.Getenv("PROF_DB")
	if p == "" {
		t.Skip()
	}
	w, _ := ParseWindows([]string{"24h", "7d", "30d", "365d"})
	x := NewExporter(Options{DBPath: p, Windows: w}, NoCountries{})
	start := time.Now()
	if err := x.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("load %v", time.Since(start))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("heap inuse %d MB", ms.HeapInuse>>20)
	start = time.Now()
	x.Refresh(context.Background())
	t.Logf("refresh2 %v", time.Since(start))
}
