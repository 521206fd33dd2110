package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/promslog"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

func TestParseGeoProviders(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"mmdb,ipapi", "mmdb,ipapi", ""},
		{"ipapi, mmdb", "ipapi,mmdb", ""},
		{"mmdb", "mmdb", ""},
		{"none", "", ""},
		{"", "", ""},
		{"mmdb,none", "", "cannot be combined"},
		{"mmdb,mmdb", "", "given twice"},
		{"maxmind", "", "unknown provider"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseGeoProviders(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || strings.Join(got, ",") != tt.want {
				t.Fatalf("got %v %v, want %q", got, err, tt.want)
			}
		})
	}
}

// writeGeoTestMMDB writes a one-network country database.
func writeGeoTestMMDB(t *testing.T, path string) {
	t.Helper()
	testmmdb.Write(t, path, testmmdb.Options{}, []testmmdb.Network{{CIDR: "8.8.8.0/24", Country: "US"}})
}

func TestSetupGeo(t *testing.T) {
	dir := t.TempDir()
	mmdbPath := filepath.Join(dir, "c.mmdb")
	writeGeoTestMMDB(t, mmdbPath)
	tests := []struct {
		name        string
		args        []string
		wantErr     string
		wantEnabled bool
	}{
		{"disabled", []string{"--geo.providers=none"}, "", false},
		{"mmdb only", []string{"--geo.providers=mmdb", "--geo.mmdb=" + mmdbPath}, "", true},
		{"default order, ip-api off", []string{"--geo.mmdb=" + mmdbPath, "--geo.ipapi.url="}, "", true},
		{"nothing configured", []string{"--geo.providers=mmdb"}, "none of them is configured", false},
		{"missing mmdb", []string{"--geo.mmdb=" + filepath.Join(dir, "missing.mmdb")}, "--geo.mmdb", false},
		{"bad provider", []string{"--geo.providers=geoip"}, "unknown provider", false},
		{"free endpoint over https", []string{"--geo.ipapi.url=https://ip-api.com/batch"}, "plain HTTP only", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := kingpin.New("test", "")
			f := addGeoFlags(app)
			if _, err := app.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			db, err := appdb.Open(ctx, filepath.Join(t.TempDir(), "app.sqlite3"))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = db.Close() }()
			e := &exporter{
				logger:    promslog.NewNopLogger(),
				registry:  prometheus.NewRegistry(),
				appDB:     db,
				countries: collector.NoCountries{},
			}
			err = e.setupGeo(ctx, f)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.wantEnabled {
				if e.geo.resolver != nil || len(e.background) != 0 || len(e.onShutdown) != 0 {
					t.Fatalf("geo wired although disabled: %+v", e)
				}
				if _, ok := e.countries.(collector.NoCountries); !ok {
					t.Fatalf("countries = %T", e.countries)
				}
				return
			}
			if e.geo.resolver == nil || e.countries != collector.CountryLookup(e.geo.resolver) {
				t.Fatalf("resolver not wired: %+v", e)
			}
			mfs, err := e.registry.Gather()
			if err != nil || len(mfs) == 0 || !strings.HasPrefix(mfs[0].GetName(), "bangui_exporter_geo_") {
				t.Fatalf("geo metrics not registered: %v %v", mfs, err)
			}
			// Resolve in the background, stop, run the shutdown steps: the
			// answer is in the database.
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { runAll(runCtx, e.background); close(done) }()
			ip := netip.MustParseAddr("8.8.8.8")
			e.countries.Track(ip)
			deadline := time.Now().Add(10 * time.Second)
			for e.countries.Country(ip) == "" {
				if time.Now().After(deadline) {
					t.Fatal("not resolved by the background work")
				}
				time.Sleep(time.Millisecond)
			}
			stop()
			<-done
			e.shutdown(promslog.NewNopLogger())
			var code string
			if err := db.Reader.QueryRow("SELECT country_code FROM geo_cache WHERE ip = '8.8.8.8'").Scan(&code); err != nil || code != "US" {
				t.Fatalf("after shutdown: %q %v", code, err)
			}
		})
	}
}
