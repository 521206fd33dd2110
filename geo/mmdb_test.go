package geo

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

func TestMMDBBothSchemas(t *testing.T) {
	official, _ := newTestMMDB(t, "official", testNets)
	flatNets := []mmdbNet{{cidr: "8.8.8.0/24", country: "US"}, {cidr: "1.1.1.0/24", country: "AU"}, {cidr: "2001:4860::/32", country: "US"}}
	flat, _ := newTestMMDB(t, "flat", flatNets)
	tests := []struct {
		name string
		db   *MMDB
		ip   string
		want Answer
	}{
		{"official country", official, "8.8.8.8", Answer{Kind: AnswerFound, CountryCode: "US", CountryName: "United States"}},
		{"official ipv6", official, "2001:4860:4860::8888", Answer{Kind: AnswerFound, CountryCode: "US", CountryName: "United States"}},
		{"official ipv4-mapped", official, "::ffff:1.1.1.1", Answer{Kind: AnswerFound, CountryCode: "AU", CountryName: "Australia"}},
		{"official registered_country fallback", official, "2.16.0.1", Answer{Kind: AnswerFound, CountryCode: "EU"}},
		{"official not found", official, "9.9.9.9", Answer{Kind: AnswerNotFound}},
		{"flat country_code", flat, "1.1.1.1", Answer{Kind: AnswerFound, CountryCode: "AU"}},
		{"flat ipv6", flat, "2001:4860:4860::8844", Answer{Kind: AnswerFound, CountryCode: "US"}},
		{"flat not found", flat, "81.2.69.142", Answer{Kind: AnswerNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.db.Lookup(context.Background(), addrs(tt.ip))
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != tt.want {
				t.Errorf("got %+v, want %+v", got[0], tt.want)
			}
		})
	}
	st := official.Status()
	if st.DatabaseType != "GeoLite2-Country" || !st.BuildTime.Equal(time.Unix(1_700_000_000, 0)) {
		t.Errorf("status %+v", st)
	}
}

func TestMMDBIPv4OnlyDatabase(t *testing.T) {
	// An IPv4-only database answers IPv6 addresses with "not found", not an error.
	path := filepath.Join(t.TempDir(), "v4.mmdb")
	writeMMDBv4(t, path)
	m, err := OpenMMDB(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(m)
	got, err := m.Lookup(context.Background(), addrs("8.8.8.8", "2001:4860:4860::8888"))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].CountryCode != "US" || got[1].Kind != AnswerNotFound {
		t.Errorf("got %+v", got)
	}
}

func TestOpenMMDBErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.mmdb")
	if err := os.WriteFile(garbage, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing.mmdb"), garbage} {
		if _, err := OpenMMDB(path, nil, nil); err == nil {
			t.Errorf("OpenMMDB(%s) succeeded", path)
		}
	}
}

// TestMMDBHotReload replaces the file by rename while lookups run on other
// goroutines: the timer check picks it up, no lookup ever hits a closed
// reader (the race detector and the answers tell), and a broken replacement
// keeps the previous database in use.
func TestMMDBHotReload(t *testing.T) {
	m, path := newTestMMDB(t, "official", []mmdbNet{{cidr: "8.8.8.0/24", country: "US", name: "United States"}})
	if changed, err := m.Reload(false); changed || err != nil {
		t.Fatalf("unchanged file reloaded: %v %v", changed, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				got, err := m.Lookup(ctx, addrs("8.8.8.8"))
				if err != nil {
					errs <- err.Error()
					return
				}
				if c := got[0].CountryCode; c != "US" && c != "DE" {
					errs <- "answer " + c
					return
				}
			}
		})
	}
	for i := range 20 {
		country := []string{"DE", "US"}[i%2]
		writeMMDB(t, path, "official", []mmdbNet{{cidr: "8.8.8.0/24", country: country}}, int64(1_700_000_000+i))
		changed, err := m.Reload(false)
		if err != nil || !changed {
			t.Fatalf("replacement %d not picked up: %v %v", i, changed, err)
		}
		got, _ := m.Lookup(ctx, addrs("8.8.8.8"))
		if got[0].CountryCode != country {
			t.Fatalf("after replacement %d: %s, want %s", i, got[0].CountryCode, country)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// A broken file put in place: the old database stays in use, the error
	// shows in the status, and the same broken file is not retried.
	tmp := path + ".broken"
	if err := os.WriteFile(tmp, []byte("truncated download"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if changed, err := m.Reload(false); changed || err == nil {
		t.Fatalf("broken file: changed=%v err=%v", changed, err)
	}
	if changed, err := m.Reload(false); changed || err != nil {
		t.Fatalf("broken file retried: changed=%v err=%v", changed, err)
	}
	got, err := m.Lookup(context.Background(), addrs("8.8.8.8"))
	if err != nil || got[0].CountryCode != "US" {
		t.Fatalf("after a broken replacement: %+v %v", got, err)
	}
	if m.Status().LastError == "" {
		t.Error("status shows no error")
	}
	// A good file again (SIGHUP path: forced reload).
	writeMMDB(t, path, "flat", []mmdbNet{{cidr: "8.8.8.0/24", country: "FR"}}, 1_800_000_000)
	if changed, err := m.Reload(true); !changed || err != nil {
		t.Fatalf("forced reload: %v %v", changed, err)
	}
	if got, _ := m.Lookup(context.Background(), addrs("8.8.8.8")); got[0].CountryCode != "FR" || m.Status().LastError != "" {
		t.Fatalf("after recovery: %+v %q", got, m.Status().LastError)
	}
	if bt, ok := m.buildTime(); !ok || bt.Unix() != 1_800_000_000 {
		t.Errorf("build time %v", bt)
	}
}

func TestResolverReloadsOnTimer(t *testing.T) {
	m, path := newTestMMDB(t, "official", []mmdbNet{{cidr: "8.8.8.0/24", country: "US"}})
	m.checkInterval = 10 * time.Millisecond
	r, err := New(context.Background(), Options{DB: openTestDB(t), Providers: []Provider{m}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	writeMMDB(t, path, "official", []mmdbNet{{cidr: "8.8.8.0/24", country: "DE"}}, 1_800_000_000)
	testkit.EventuallyTrue(t, 10*time.Second, "the new database picked up by the timer", func() bool {
		got, _ := m.Lookup(ctx, []netip.Addr{netip.MustParseAddr("8.8.8.8")})
		return got[0].CountryCode == "DE"
	})
}
