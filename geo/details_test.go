package geo

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

func TestParseAS(t *testing.T) {
	tests := []struct {
		in   string
		want AS
		ok   bool
		str  string
	}{
		{"AS15169 Google LLC", AS{15169, "Google LLC"}, true, "AS15169 Google LLC"},
		{"AS5769 Videotron Telecom Ltee", AS{5769, "Videotron Telecom Ltee"}, true, "AS5769 Videotron Telecom Ltee"},
		{"as13335", AS{13335, ""}, true, "AS13335"},
		{"  AS64496   Example  ", AS{64496, "Example"}, true, "AS64496 Example"},
		{"", AS{}, false, ""},
		{"AS", AS{}, false, ""},
		{"AS0 Nobody", AS{}, false, ""},
		{"ASX Broken", AS{}, false, ""},
		{"15169 Google LLC", AS{}, false, ""},
		{"AS99999999999 Too big", AS{}, false, ""},
	}
	for _, tc := range tests {
		got, ok := ParseAS(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseAS(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		if got.String() != tc.str {
			t.Errorf("ParseAS(%q).String() = %q, want %q", tc.in, got.String(), tc.str)
		}
	}
}

// TestPlaceAndAS checks Place and AS on databases of each layout written
// with mmdbwriter: City records with and without city and coordinates, the
// registered_country fallback, a Country database (no coordinates), ASN
// records, and a reload that replaces every answer.
func TestPlaceAndAS(t *testing.T) {
	dir := t.TempDir()
	city := filepath.Join(dir, "city.mmdb")
	testmmdb.Write(t, city, testmmdb.Options{Layout: testmmdb.City}, []testmmdb.Network{
		{CIDR: "192.0.2.0/24", Country: "DE", Name: "Germany", City: "Berlin", Lat: 52.5196, Lon: 13.4069},
		{CIDR: "198.51.100.0/24", Country: "US", Name: "United States", Lat: 37.751, Lon: -97.822},
		{CIDR: "203.0.113.0/24", Registered: "FR"},
		{CIDR: "2001:db8::/32", Country: "JP", City: "Tokyo", Lat: 35.6893, Lon: 139.6899},
	})
	country := filepath.Join(dir, "country.mmdb")
	testmmdb.Write(t, country, testmmdb.Options{}, []testmmdb.Network{{CIDR: "192.0.2.0/24", Country: "DE", Name: "Germany"}})
	asn := filepath.Join(dir, "asn.mmdb")
	testmmdb.Write(t, asn, testmmdb.Options{Layout: testmmdb.ASN}, []testmmdb.Network{
		{CIDR: "192.0.2.0/25", ASNumber: 64496, ASOrg: "Example One"},
		{CIDR: "192.0.2.128/25", ASNumber: 64497},
		{CIDR: "2001:db8::/32", ASNumber: 64498, ASOrg: "Example Six"},
	})
	open := func(path string) *MMDB {
		m, err := OpenMMDB(path, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { closeQuietly(m) })
		return m
	}
	cityDB, countryDB, asnDB := open(city), open(country), open(asn)
	if !cityDB.HasPlaces() || countryDB.HasPlaces() || asnDB.HasPlaces() {
		t.Errorf("HasPlaces: city %v, country %v, asn %v", cityDB.HasPlaces(), countryDB.HasPlaces(), asnDB.HasPlaces())
	}
	places := []struct {
		db   *MMDB
		ip   string
		want Place
		ok   bool
	}{
		{cityDB, "192.0.2.7", Place{Country: "DE", City: "Berlin", Latitude: 52.5196, Longitude: 13.4069, HasLocation: true}, true},
		{cityDB, "::ffff:192.0.2.7", Place{Country: "DE", City: "Berlin", Latitude: 52.5196, Longitude: 13.4069, HasLocation: true}, true},
		{cityDB, "198.51.100.1", Place{Country: "US", Latitude: 37.751, Longitude: -97.822, HasLocation: true}, true},
		{cityDB, "203.0.113.9", Place{Country: "FR"}, true},
		{cityDB, "2001:db8::1", Place{Country: "JP", City: "Tokyo", Latitude: 35.6893, Longitude: 139.6899, HasLocation: true}, true},
		{cityDB, "8.8.8.8", Place{}, false},
		{countryDB, "192.0.2.7", Place{Country: "DE"}, true},
	}
	for _, p := range places {
		for range 2 { // the second answer comes from the record cache
			got, ok := p.db.Place(netip.MustParseAddr(p.ip))
			if got != p.want || ok != p.ok {
				t.Errorf("Place(%s) = %+v, %v; want %+v, %v", p.ip, got, ok, p.want, p.ok)
			}
		}
	}
	ases := []struct {
		ip   string
		want AS
		ok   bool
	}{
		{"192.0.2.1", AS{64496, "Example One"}, true},
		{"192.0.2.200", AS{64497, ""}, true},
		{"2001:db8::5", AS{64498, "Example Six"}, true},
		{"198.51.100.1", AS{}, false},
	}
	for _, a := range ases {
		for range 2 {
			got, ok := asnDB.AS(netip.MustParseAddr(a.ip))
			if got != a.want || ok != a.ok {
				t.Errorf("AS(%s) = %+v, %v; want %+v, %v", a.ip, got, ok, a.want, a.ok)
			}
		}
	}
	// A country database has no AS numbers.
	if a, ok := countryDB.AS(netip.MustParseAddr("192.0.2.1")); ok {
		t.Errorf("country database gave AS %+v", a)
	}

	// A new file by rename: the cached records of the old one are gone.
	next := filepath.Join(dir, "asn.next")
	testmmdb.Write(t, next, testmmdb.Options{Layout: testmmdb.ASN}, []testmmdb.Network{{CIDR: "192.0.2.0/24", ASNumber: 65000, ASOrg: "Renumbered"}})
	if err := os.Rename(next, asn); err != nil {
		t.Fatal(err)
	}
	if loaded, err := asnDB.Reload(false); err != nil || !loaded {
		t.Fatalf("reload: %v %v", loaded, err)
	}
	if got, _ := asnDB.AS(netip.MustParseAddr("192.0.2.1")); got != (AS{65000, "Renumbered"}) {
		t.Errorf("after reload: %+v", got)
	}
	if err := asnDB.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := asnDB.AS(netip.MustParseAddr("192.0.2.1")); ok {
		t.Error("answer from a closed database")
	}
	if _, ok := asnDB.Place(netip.MustParseAddr("192.0.2.1")); ok || asnDB.DatabaseType() != "" {
		t.Error("place from a closed database")
	}
}

// TestCachedAS checks that ip-api's "as" answer, kept in the memory tier,
// is what CachedAS returns, without queueing anything; and that an IP the
// tier does not hold, or holds without an AS, has none.
func TestCachedAS(t *testing.T) {
	env := newResolverEnv(t, []string{"ipapi"}, Options{})
	ip := netip.MustParseAddr("8.8.8.8")
	if a, ok := env.r.CachedAS(ip); ok {
		t.Fatalf("before any lookup: %+v", a)
	}
	if st := env.r.Status(); st.Pending != 0 || st.Resolved+st.Unresolved != 0 {
		t.Fatalf("CachedAS queued or stored something: %+v", st)
	}
	env.r.Track(ip)
	env.r.drain(t.Context())
	if a, ok := env.r.CachedAS(ip); !ok || a != (AS{15169, "Google LLC"}) {
		t.Errorf("after ip-api answered: %+v, %v", a, ok)
	}
	if name := env.r.CachedCountryName(ip); name != "United States" {
		t.Errorf("country name %q", name)
	}
	if got := env.r.Providers(); len(got) != 1 || got[0].Name() != "ipapi" {
		t.Errorf("providers %v", got)
	}
}
