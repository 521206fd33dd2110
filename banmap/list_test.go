package banmap

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/collector"
)

// listFixture: 3 jails, 4 countries, many equal times of ban (the cursor
// must order by jail and IP then), one IPv6 address.
func listFixture() []collector.BannedIP {
	var bans []collector.BannedIP
	countries := []string{"DE", "US", "CN", "ZZ"}
	jails := []string{"sshd", "nginx", "recidive"}
	for i := range 60 {
		jail := jails[i%3]
		ip := fmt.Sprintf("198.51.100.%d", i)
		if i == 59 {
			ip = "2001:db8::59"
		}
		bans = append(bans, ban(jail, ip, countries[i%4], 1_790_000_000-int64(i/5), 600, int64(1+i%3)))
	}
	return bans
}

func newListMaps(t *testing.T, bans []collector.BannedIP, opts Options) *Maps {
	t.Helper()
	src := &fakeSource{chunk: 7}
	src.set(bans)
	opts.Source, opts.List = src, true
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(t.Context()); err != nil {
		t.Fatal(err)
	}
	return m
}

func getJSON(t *testing.T, h http.HandlerFunc, target string, v any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, target, nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", target, ct)
	}
	if v != nil && rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s: %v: %s", target, err, rec.Body)
		}
	}
	return rec.Code
}

// TestBansPaging walks every filter page by page, with several limits, and
// checks that the pages together are the filter's entries exactly once, in
// the documented order (newest first, then jail, then IP).
func TestBansPaging(t *testing.T) {
	bans := listFixture()
	m := newListMaps(t, bans, Options{})
	filters := []struct{ jail, country string }{
		{"", ""}, {"sshd", ""}, {"", "DE"}, {"nginx", "US"}, {"recidive", "ZZ"}, {"nope", ""}, {"", "FR"},
	}
	for _, f := range filters {
		var want []string
		for _, b := range bans {
			if (f.jail == "" || b.Jail == f.jail) && (f.country == "" || b.Country == f.country) {
				want = append(want, b.Jail+" "+netip.AddrFrom16(b.IP).Unmap().String())
			}
		}
		for _, limit := range []int{1, 4, 7, 100} {
			t.Run(fmt.Sprintf("jail=%s country=%s limit=%d", f.jail, f.country, limit), func(t *testing.T) {
				var got []string
				var last *Ban
				cursor := ""
				for pages := 0; ; pages++ {
					if pages > 100 {
						t.Fatal("no end of pages")
					}
					var page BansPage
					target := fmt.Sprintf("/api/bans?jail=%s&country=%s&limit=%d&cursor=%s", f.jail, f.country, limit, cursor)
					if code := getJSON(t, m.ServeBans, target, &page); code != http.StatusOK {
						t.Fatalf("%s: %d", target, code)
					}
					if page.Total != len(want) {
						t.Errorf("total %d, want %d", page.Total, len(want))
					}
					if len(page.Bans) > limit {
						t.Fatalf("%d rows for limit %d", len(page.Bans), limit)
					}
					for i := range page.Bans {
						b := page.Bans[i]
						if last != nil && !before(last, &b) {
							t.Errorf("%v before %v: out of order", last, b)
						}
						last = &b
						got = append(got, b.Jail+" "+b.IP)
					}
					if page.NextCursor == "" {
						break
					}
					cursor = page.NextCursor
				}
				if !sameSet(got, want) || len(got) != len(want) {
					t.Errorf("pages hold %d entries %v\nwant %d %v", len(got), got, len(want), want)
				}
			})
		}
	}
}

// before reports whether a comes before b: newer first, then jail, then IP.
func before(a, b *Ban) bool {
	if !a.TimeOfBan.Equal(b.TimeOfBan) {
		return a.TimeOfBan.After(b.TimeOfBan)
	}
	if a.Jail != b.Jail {
		return a.Jail < b.Jail
	}
	ia, ib := netip.MustParseAddr(a.IP), netip.MustParseAddr(b.IP)
	a16, b16 := ia.As16(), ib.As16()
	return slices.Compare(a16[:], b16[:]) < 0
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// TestBanFields checks one row in full: AS and place from the lookups,
// names, ban end, permanent bans.
func TestBanFields(t *testing.T) {
	bans := []collector.BannedIP{
		ban("sshd", "8.8.8.8", "US", 1_790_000_000, 600, 3),
		ban("perm", "192.0.2.7", "ZZ", 1_789_000_000, -1, 0),
	}
	m := newListMaps(t, bans, Options{
		AS:     []ASLookup{tableAS{"8.8.8.8": google}},
		Places: tablePlaces{"8.8.8.8": {Country: "US", City: "Mountain View", Latitude: 37.386, Longitude: -122.0838, HasLocation: true}},
	})
	var page BansPage
	if code := getJSON(t, m.ServeBans, "/api/bans", &page); code != http.StatusOK {
		t.Fatal(code)
	}
	tob := time.Unix(1_790_000_000, 0).UTC()
	want := []Ban{
		{IP: "8.8.8.8", Jail: "sshd", Country: "US", CountryName: "United States", ASN: 15169, ASOrg: "Google LLC", City: "Mountain View",
			Latitude: 37.386, Longitude: -122.0838, TimeOfBan: tob, BanTime: 600, BanEnds: tob.Add(10 * time.Minute), BanCount: 3},
		{IP: "192.0.2.7", Jail: "perm", Country: "ZZ", CountryName: "Unknown", TimeOfBan: time.Unix(1_789_000_000, 0).UTC(), BanTime: -1},
	}
	if !slices.Equal(page.Bans, want) || page.NextCursor != "" || page.Total != 2 {
		t.Errorf("got %+v\nwant %+v", page, want)
	}
}

func TestByCountry(t *testing.T) {
	m := newListMaps(t, listFixture(), Options{})
	var got ByCountry
	if code := getJSON(t, m.ServeByCountry, "/api/bans/by-country", &got); code != http.StatusOK {
		t.Fatal(code)
	}
	want := ByCountry{
		Countries:    map[string]int{"DE": 15, "US": 15, "CN": 15, "ZZ": 15},
		CountryNames: map[string]string{"DE": "Germany", "US": "United States", "CN": "China", "ZZ": "Unknown"},
		Total:        60,
	}
	if !maps.Equal(got.Countries, want.Countries) || !maps.Equal(got.CountryNames, want.CountryNames) || got.Total != want.Total {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestBansBadRequests: parameters that cannot work get 400; the list off
// or not computed gets 503.
func TestBansBadRequests(t *testing.T) {
	m := newListMaps(t, listFixture(), Options{})
	for _, target := range []string{
		"/api/bans?limit=0", "/api/bans?limit=1001", "/api/bans?limit=x",
		"/api/bans?country=DEU", "/api/bans?country=1A",
		"/api/bans?cursor=!!", "/api/bans?cursor=AAAA",
	} {
		if code := getJSON(t, m.ServeBans, target, nil); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", target, code)
		}
	}
	// Lower-case country codes are accepted.
	var page BansPage
	if code := getJSON(t, m.ServeBans, "/api/bans?country=de", &page); code != http.StatusOK || page.Total != 15 {
		t.Errorf("country=de: %d, total %d", code, page.Total)
	}
	off, err := New(Options{Source: &fakeSource{}})
	if err != nil {
		t.Fatal(err)
	}
	if code := getJSON(t, off.ServeBans, "/api/bans", nil); code != http.StatusServiceUnavailable {
		t.Errorf("list off: %d", code)
	}
	notYet, err := New(Options{Source: &fakeSource{}, List: true})
	if err != nil {
		t.Fatal(err)
	}
	if code := getJSON(t, notYet.ServeByCountry, "/api/bans/by-country", nil); code != http.StatusServiceUnavailable {
		t.Errorf("not computed: %d", code)
	}
}
