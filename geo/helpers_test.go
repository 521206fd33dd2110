package geo

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

// autoClock is a test clock that moves only when the code under test waits:
// Sleep advances it at once. Pacing is tested against it without sleeping.
type autoClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func newAutoClock() *autoClock {
	return &autoClock{now: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
}

func (c *autoClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *autoClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.Advance(d)
	return nil
}

func (c *autoClock) Advance(d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept += d
}

// openTestDB opens a fresh app database in a temporary directory.
func openTestDB(t testing.TB) *appdb.DB {
	t.Helper()
	db, err := appdb.Open(context.Background(), filepath.Join(t.TempDir(), "app.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeQuietly(db) })
	return db
}

// mmdbNet is one network of a test database.
type mmdbNet struct {
	cidr       string
	country    string // country.iso_code (official) or country_code (flat)
	name       string // country.names.en (official)
	registered string // registered_country.iso_code only (official)
}

// writeMMDB writes a MaxMind-format database (put in place by rename).
// schema is "official" (GeoLite2-Country layout) or "flat" (country_code
// only).
func writeMMDB(t testing.TB, path, schema string, nets []mmdbNet, buildEpoch int64) {
	t.Helper()
	opts := testmmdb.Options{Layout: testmmdb.Official, BuildEpoch: buildEpoch}
	if schema == "flat" {
		opts.Layout = testmmdb.Flat
	}
	networks := make([]testmmdb.Network, len(nets))
	for i, n := range nets {
		networks[i] = testmmdb.Network{CIDR: n.cidr, Country: n.country, Name: n.name, Registered: n.registered}
	}
	testmmdb.Write(t, path, opts, networks)
}

// testNets is a small world used by most tests.
var testNets = []mmdbNet{
	{cidr: "8.8.8.0/24", country: "US", name: "United States"},
	{cidr: "11.0.0.0/8", country: "US", name: "United States"}, // globalIPs
	{cidr: "1.1.1.0/24", country: "AU", name: "Australia"},
	{cidr: "81.2.69.0/24", country: "GB", name: "United Kingdom"},
	{cidr: "2001:4860::/32", country: "US", name: "United States"},
	{cidr: "5.255.255.0/24", country: "RU", name: "Russia"},
	{cidr: "2.16.0.0/16", registered: "EU"}, // no country: registered_country fallback
	// A documentation block the database claims to know: local
	// classification must win.
	{cidr: "203.0.113.0/24", country: "AU", name: "Australia"},
}

// drain resolves everything queued, stage by stage, synchronously: tests
// use it instead of Run to be deterministic.
func (r *Resolver) drain(ctx context.Context) {
	for {
		worked := false
		for i := range r.stages {
			for {
				batch := r.take(i)
				if len(batch) == 0 {
					break
				}
				worked = true
				r.resolveBatch(ctx, i, batch)
			}
		}
		if !worked && (!r.takeBacklog() || r.RetryDue() == 0) {
			return
		}
	}
}

func newTestMMDB(t testing.TB, schema string, nets []mmdbNet) (*MMDB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.mmdb")
	writeMMDB(t, path, schema, nets, 1_700_000_000)
	m, err := OpenMMDB(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeQuietly(m) })
	return m, path
}

// writeMMDBv4 writes an IPv4-only database.
func writeMMDBv4(t testing.TB, path string) {
	t.Helper()
	testmmdb.Write(t, path, testmmdb.Options{Layout: testmmdb.Flat, IPv4Only: true},
		[]testmmdb.Network{{CIDR: "8.8.8.0/24", Country: "US"}})
}

func getenv(name string) string { return os.Getenv(name) }

// closeQuietly closes c where a close error cannot change the test's outcome.
func closeQuietly(c io.Closer) { _ = c.Close() }
