package f2bgen

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestGenerateTCachesAndCopies(t *testing.T) {
	t.Setenv("BANGUI_F2BGEN_CACHE", t.TempDir())
	spec := Spec{Rows: 500, Seed: 3, Now: testNow}
	a := GenerateT(t, spec)
	b := GenerateT(t, spec)
	if a == b {
		t.Fatal("GenerateT returned one path twice; each call must get a private copy")
	}
	if fileHash(t, a) != fileHash(t, b) {
		t.Fatal("copies of one spec differ")
	}
	cached := CachedPathT(t, spec)
	if fileHash(t, cached) != fileHash(t, a) {
		t.Fatal("copy differs from the cached file")
	}
	entries, err := os.ReadDir(CacheDir())
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache holds %v (%v), want one file", entries, err)
	}
	// Changing a copy leaves the cache alone.
	w := openWriter(t, a)
	if _, err := w.AddBans(context.Background(), 5, testNow); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, cached) != fileHash(t, b) {
		t.Fatal("writing a copy changed the cache")
	}
	other := CachedPathT(t, Spec{Rows: 500, Seed: 4, Now: testNow})
	if other == cached {
		t.Fatal("two specs share a cache file")
	}
}

func TestCacheKey(t *testing.T) {
	base := Spec{Rows: 1000, Seed: 1, Now: testNow}
	k := func(s Spec) string {
		key, err := CacheKey(s)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	explicit := base
	explicit.Schema, explicit.History, explicit.Jails = 4, 30*24*3600e9, DefaultJails()
	if k(base) != k(explicit) {
		t.Error("defaults spelled out change the key")
	}
	for _, changed := range []Spec{
		{Rows: 1001, Seed: 1, Now: testNow},
		{Rows: 1000, Seed: 2, Now: testNow},
		{Rows: 1000, Seed: 1, Now: testNow.Add(1e9)},
		{Rows: 1000, Seed: 1, Now: testNow, Schema: 2},
		{Rows: 1000, Seed: 1, Now: testNow, MatchesPerBan: 3},
	} {
		if k(changed) == k(base) {
			t.Errorf("spec %+v has the key of %+v", changed, base)
		}
	}
}

// TestOutOfProcessEqualsInProcess: the race-detector path (the f2bgen
// command) writes the same file as Generate.
func TestOutOfProcessEqualsInProcess(t *testing.T) {
	requireTool(t, "go")
	spec := Spec{Rows: 3000, Seed: 21, Now: testNow, Schema: 4, MatchesPerBan: 2,
		Jails: append(DefaultJails()[:5], Jail{Name: "custom", Weight: 0.1, BanTime: 3e9 * 60, Increment: true})}
	inProcess, _ := generate(t, spec)
	outOfProcess := filepath.Join(t.TempDir(), "out.sqlite3")
	if err := generateOutOfProcess(context.Background(), outOfProcess, spec); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, inProcess) != fileHash(t, outOfProcess) {
		t.Fatal("the f2bgen command wrote another database than Generate for one spec")
	}
}
