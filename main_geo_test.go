package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/promslog"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/dashboards"
	"github.com/bangui/bangui_exporter/geo"
	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/testkit"
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
		// A file missing at start is loaded when it appears: no error, and
		// ip-api (the next provider) answers meanwhile.
		{"missing mmdb", []string{"--geo.mmdb=" + filepath.Join(dir, "missing.mmdb"), "--geo.ipapi.url="}, "", false},
		{"negative check interval", []string{"--geo.mmdb=" + mmdbPath, "--geo.mmdb.check-interval=-1s"}, "--geo.mmdb.check-interval", false},
		{"negative flush interval", []string{"--geo.mmdb=" + mmdbPath, "--geo.flush-interval=-5s"}, "geo: flush interval must not be negative", false},
		{"negative cache size", []string{"--geo.mmdb=" + mmdbPath, "--geo.cache-size=-1"}, "geo: cache size must not be negative", false},
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
			if tt.name == "missing mmdb" {
				// Started with the provider reporting its state.
				st := e.geo.resolver.Status()
				if len(st.Providers) != 1 || st.Providers[0].MMDBStatus == nil || st.Providers[0].Loaded || st.Providers[0].LastError == "" {
					t.Fatalf("status %+v", st)
				}
				e.shutdown(promslog.NewNopLogger())
				return
			}
			if !tt.wantEnabled {
				if e.geo.resolver != nil || !e.empty() {
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
			// Every geo family is in the metric contract, with its type
			// and labels: the one place dashboards, alerts and README read.
			for _, mf := range mfs {
				m, ok := dashboards.LookupMetric(mf.GetName())
				if !ok {
					t.Errorf("%s is not in the metric contract (dashboards/contract.go)", mf.GetName())
					continue
				}
				if typ := strings.ToLower(mf.GetType().String()); typ != string(m.Type) {
					t.Errorf("%s is a %s, the contract says %s", mf.GetName(), typ, m.Type)
				}
				if mf.GetHelp() != m.Help {
					t.Errorf("%s: HELP %q, the contract says %q", mf.GetName(), mf.GetHelp(), m.Help)
				}
				for _, metric := range mf.GetMetric() {
					var labels []string
					for _, lp := range metric.GetLabel() {
						labels = append(labels, lp.GetName())
					}
					if !slices.Equal(labels, m.Labels) {
						t.Errorf("%s has labels %v, the contract says %v", mf.GetName(), labels, m.Labels)
					}
				}
			}
			// Resolve in the background, stop, run the shutdown steps: the
			// answer is in the database.
			e.start(ctx)
			ip := netip.MustParseAddr("8.8.8.8")
			e.countries.Track(ip)
			testkit.EventuallyTrue(t, 10*time.Second, "8.8.8.8 resolved by the background work", func() bool {
				return e.countries.Country(ip) != ""
			})
			e.atShutdown(phaseStorage, func(ctx context.Context) error {
				// Before the app database would close: what the flush wrote.
				entries, err := geo.ReadCache(ctx, db.Reader)
				if err != nil || len(entries) != 1 || entries[0].IP != ip || entries[0].CountryCode != "US" {
					t.Errorf("after the geo flush: %+v %v", entries, err)
				}
				return nil
			})
			e.shutdown(promslog.NewNopLogger())
		})
	}
}

// empty reports whether nothing was registered.
func (l *lifecycle) empty() bool {
	for p := range numPhases {
		if len(l.background[p]) != 0 || len(l.steps[p]) != 0 {
			return false
		}
	}
	return true
}
