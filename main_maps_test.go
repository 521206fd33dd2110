package main

import (
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/banmap"
	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testkit"
	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

// TestMapsEndToEnd runs the built exporter with a City database and an ASN
// database: the ASN and location series sum to the banned IPs, and the
// admin API's list pages through every banned pair with its AS and city
// behind the session; without the admin API /api/bans does not exist.
func TestMapsEndToEnd(t *testing.T) {
	bin := buildExporter(t)
	dir := t.TempDir()
	storage := filepath.Join(dir, "bangui.sqlite3")
	f2bDB := f2bgen.GenerateT(t, f2bgen.DefaultSpec(400, time.Now()))
	ips := bannedIPs(t, f2bDB)
	city, asn := filepath.Join(dir, "city.mmdb"), filepath.Join(dir, "asn.mmdb")
	cityNets := make([]testmmdb.Network, len(ips))
	asnNets := make([]testmmdb.Network, len(ips))
	for i, ip := range ips {
		cityNets[i] = testmmdb.Network{CIDR: ip.String(), Country: "DE", Name: "Germany", City: "Berlin", Lat: 52.5196, Lon: 13.4069}
		asnNets[i] = testmmdb.Network{CIDR: ip.String(), ASNumber: 64496, ASOrg: "Example Net"}
	}
	testmmdb.Write(t, city, testmmdb.Options{Layout: testmmdb.City}, cityNets)
	testmmdb.Write(t, asn, testmmdb.Options{Layout: testmmdb.ASN}, asnNets)
	set := exec.Command(bin, "admin", "set-password", "--storage.path", storage)
	set.Stdin = strings.NewReader(adminE2EPassword + "\n")
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("admin set-password: %v\n%s", err, out)
	}

	common := []string{
		"--storage.path", storage, "--fail2ban.db", f2bDB,
		"--geo.providers=mmdb", "--geo.mmdb", city, "--geo.asn-mmdb", asn, "--geo.top.interval=200ms",
	}
	p := startExporter(t, bin, append(common, "--web.enable-admin-api")...)

	// Once every IP has its country, the lists follow within their
	// interval: one AS per jail plus other, one place plus other.
	var banned float64
	testkit.Eventually(t, 30*time.Second, func() error { // waiting for the top lists to match the banned IPs
		fams := scrapeFamilies(t, p.base)
		banned, _ = sumOf(fams, "fail2ban_banned_ips")
		byASN, okASN := sumOf(fams, "fail2ban_banned_ips_by_asn")
		byLoc, okLoc := sumOf(fams, "fail2ban_banned_ips_by_location")
		if banned == 0 || !okASN || !okLoc || byASN != banned || byLoc != banned {
			return fmt.Errorf("banned %v, by ASN %v (%v), by location %v (%v)", banned, byASN, okASN, byLoc, okLoc)
		}
		for _, s := range *fams["fail2ban_banned_ips_by_asn"] {
			if a := string(s.Metric["asn"]); a != "AS64496" && !(a == "other" && s.Value == 0) {
				return fmt.Errorf("series %v", s)
			}
		}
		for _, s := range *fams["fail2ban_banned_ips_by_location"] {
			if s.Metric["city"] == "Berlin" && (s.Metric["latitude"] != "52.5" || s.Metric["longitude"] != "13.4" || float64(s.Value) != banned) {
				return fmt.Errorf("series %v", s)
			}
		}
		return nil
	})

	c := newAPIClient(t, p.base)
	c.call("GET", "/api/bans", "", 401, nil)
	var login struct {
		Token string `json:"token"`
	}
	c.loginAfterBackoff(adminE2EPassword, &login)
	c.bearer = login.Token
	testkit.Eventually(t, 30*time.Second, func() error { // waiting for every country in the list
		var bc banmap.ByCountry
		c.call("GET", "/api/bans/by-country", "", 200, &bc)
		if len(bc.Countries) != 1 || float64(bc.Countries["DE"]) != banned || bc.CountryNames["DE"] != "Germany" {
			return fmt.Errorf("by country %+v, want DE %v", bc, banned)
		}
		return nil
	})
	seen := map[string]bool{}
	cursor := ""
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatal("no end of pages")
		}
		var bp banmap.BansPage
		c.call("GET", "/api/bans?country=de&limit=7&cursor="+url.QueryEscape(cursor), "", 200, &bp)
		for _, b := range bp.Bans {
			key := b.Jail + " " + b.IP
			if seen[key] || b.ASN != 64496 || b.ASOrg != "Example Net" || b.City != "Berlin" || b.Country != "DE" || b.TimeOfBan.IsZero() {
				t.Fatalf("row %+v (seen before: %v)", b, seen[key])
			}
			seen[key] = true
		}
		if bp.NextCursor == "" {
			break
		}
		cursor = bp.NextCursor
	}
	if float64(len(seen)) != banned {
		t.Errorf("the pages list %d pairs, fail2ban_banned_ips %v", len(seen), banned)
	}
	c.call("POST", "/api/bans", "", 405, nil)
	c.call("GET", "/api/bans?limit=0", "", 400, nil)
	p.stop()

	// Without the admin API: the metrics, no list.
	p = startExporter(t, bin, common...)
	assertNoAdminAPI(t, p.base)
	if code, _ := httpGetBody(t, p.base+banmap.PathBans); code != 404 {
		t.Errorf("GET %s without the admin API: %d", banmap.PathBans, code)
	}
	p.stop()
}
