package banmap

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/geo"
)

const asnHeader = "# HELP fail2ban_banned_ips_by_asn " + asnHelp + "\n# TYPE fail2ban_banned_ips_by_asn gauge\n"
const locationHeader = "# HELP fail2ban_banned_ips_by_location " + locationHelp + "\n# TYPE fail2ban_banned_ips_by_location gauge\n"

var (
	google     = geo.AS{Number: 15169, Org: "Google LLC"}
	cloudflare = geo.AS{Number: 13335, Org: "Cloudflare, Inc."}
	hetzner    = geo.AS{Number: 24940, Org: "Hetzner Online GmbH"}
)

// TestASNTopN checks the ASN series: the top N per jail, unknown, other,
// sums per jail, the order of sources, and the tie-break by AS number.
func TestASNTopN(t *testing.T) {
	bans := []collector.BannedIP{
		ban("sshd", "192.0.2.1", "US", 1, 600, 1),
		ban("sshd", "192.0.2.2", "US", 2, 600, 1),
		ban("sshd", "192.0.2.3", "AU", 3, 600, 1),
		ban("sshd", "192.0.2.4", "DE", 4, 600, 1),
		ban("sshd", "192.0.2.5", "ZZ", 5, 600, 1),
		ban("nginx", "192.0.2.1", "US", 6, -1, 2),
		ban("nginx", "192.0.2.4", "DE", 7, -1, 2),
	}
	asDB := tableAS{"192.0.2.1": google, "192.0.2.2": google, "192.0.2.3": cloudflare, "192.0.2.4": hetzner}
	cache := tableAS{"192.0.2.4": {Number: 64496, Org: "ip-api's other answer"}, "192.0.2.5": {Number: 64497, Org: "Example"}}
	tests := []struct {
		name    string
		top     int
		sources []ASLookup
		want    string
	}{
		{"top 1: ties broken by AS number", 1, []ASLookup{asDB}, `
fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="nginx"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="nginx"} 1
fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="sshd"} 2
fail2ban_banned_ips_by_asn{as_org="",asn="unknown",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 2
`},
		{"top 20: everything listed, other 0", 20, []ASLookup{asDB}, `
fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="nginx"} 1
fail2ban_banned_ips_by_asn{as_org="Hetzner Online GmbH",asn="AS24940",jail="nginx"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="nginx"} 0
fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="sshd"} 2
fail2ban_banned_ips_by_asn{as_org="Cloudflare, Inc.",asn="AS13335",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="Hetzner Online GmbH",asn="AS24940",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="unknown",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 0
`},
		{"the database first, then the cache", 20, []ASLookup{asDB, cache}, `
fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="nginx"} 1
fail2ban_banned_ips_by_asn{as_org="Hetzner Online GmbH",asn="AS24940",jail="nginx"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="nginx"} 0
fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="sshd"} 2
fail2ban_banned_ips_by_asn{as_org="Cloudflare, Inc.",asn="AS13335",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="Hetzner Online GmbH",asn="AS24940",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="Example",asn="AS64497",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 0
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			src.set(bans)
			m, err := New(Options{Source: src, AS: tc.sources, ASNTop: tc.top})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Update(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := testutil.CollectAndCompare(m, strings.NewReader(asnHeader+tc.want), "fail2ban_banned_ips_by_asn"); err != nil {
				t.Error(err)
			}
			// Whatever N, a jail's series sum to its banned pairs.
			sums := map[string]float64{}
			for line := range strings.SplitSeq(strings.TrimSpace(tc.want), "\n") {
				var v float64
				_, _ = fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				jail := line[strings.Index(line, `jail="`)+6:]
				sums[jail[:strings.IndexByte(jail, '"')]] += v
			}
			if sums["sshd"] != 5 || sums["nginx"] != 2 {
				t.Errorf("sums per jail %v, want sshd 5, nginx 2", sums)
			}
		})
	}
}

// TestTopNStableOnTies checks that equal counts at the edge of the top N do
// not swap series between updates: an AS (or place) in the list stays
// while a newcomer only ties it, and leaves once it is overtaken.
func TestTopNStableOnTies(t *testing.T) {
	src := &fakeSource{}
	asDB := tableAS{"192.0.2.1": hetzner, "192.0.2.2": google, "192.0.2.3": hetzner, "192.0.2.4": google}
	places := tablePlaces{
		"192.0.2.1": {Country: "DE", City: "Nuremberg", Latitude: 49.46, Longitude: 11.07, HasLocation: true},
		"192.0.2.2": {Country: "US", City: "Ashburn", Latitude: 39.04, Longitude: -77.48, HasLocation: true},
		"192.0.2.3": {Country: "DE", City: "Nuremberg", Latitude: 49.46, Longitude: 11.07, HasLocation: true},
		"192.0.2.4": {Country: "US", City: "Ashburn", Latitude: 39.04, Longitude: -77.48, HasLocation: true},
	}
	m, err := New(Options{Source: src, AS: []ASLookup{asDB}, Places: places, ASNTop: 1, CityTop: 1})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name       string
		bans       []collector.BannedIP
		asn, place string
	}{
		// Hetzner alone: it is the top.
		{"first", []collector.BannedIP{ban("sshd", "192.0.2.1", "DE", 1, 600, 1)},
			`fail2ban_banned_ips_by_asn{as_org="Hetzner Online GmbH",asn="AS24940",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 0`,
			`fail2ban_banned_ips_by_location{city="Nuremberg",country="DE",latitude="49.5",longitude="11.1"} 1
fail2ban_banned_ips_by_location{city="other",country="",latitude="",longitude=""} 0`},
		// Google ties and has the smaller number and key: Hetzner stays.
		{"tie", []collector.BannedIP{ban("sshd", "192.0.2.1", "DE", 1, 600, 1), ban("sshd", "192.0.2.2", "US", 2, 600, 1)},
			`fail2ban_banned_ips_by_asn{as_org="Hetzner Online GmbH",asn="AS24940",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 1`,
			`fail2ban_banned_ips_by_location{city="Nuremberg",country="DE",latitude="49.5",longitude="11.1"} 1
fail2ban_banned_ips_by_location{city="other",country="",latitude="",longitude=""} 1`},
		// The same again: still no swap.
		{"tie again", []collector.BannedIP{ban("sshd", "192.0.2.2", "US", 2, 600, 1), ban("sshd", "192.0.2.1", "DE", 1, 600, 1)},
			`fail2ban_banned_ips_by_asn{as_org="Hetzner Online GmbH",asn="AS24940",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 1`,
			`fail2ban_banned_ips_by_location{city="Nuremberg",country="DE",latitude="49.5",longitude="11.1"} 1
fail2ban_banned_ips_by_location{city="other",country="",latitude="",longitude=""} 1`},
		// Google overtakes: it takes the place.
		{"overtaken", []collector.BannedIP{ban("sshd", "192.0.2.1", "DE", 1, 600, 1), ban("sshd", "192.0.2.2", "US", 2, 600, 1), ban("sshd", "192.0.2.4", "US", 3, 600, 1)},
			`fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="sshd"} 2
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 1`,
			`fail2ban_banned_ips_by_location{city="Ashburn",country="US",latitude="39.0",longitude="-77.5"} 2
fail2ban_banned_ips_by_location{city="other",country="",latitude="",longitude=""} 1`},
	}
	for _, st := range steps {
		src.set(st.bans)
		if err := m.Update(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := testutil.CollectAndCompare(m, strings.NewReader(asnHeader+st.asn+"\n"), "fail2ban_banned_ips_by_asn"); err != nil {
			t.Errorf("%s: %v", st.name, err)
		}
		if err := testutil.CollectAndCompare(m, strings.NewReader(locationHeader+st.place+"\n"), "fail2ban_banned_ips_by_location"); err != nil {
			t.Errorf("%s: %v", st.name, err)
		}
	}
	// A fresh Maps (no previous top) breaks the tie by key: the same
	// answer on every run, whatever the walk's order.
	for range 5 {
		fresh, err := New(Options{Source: src, AS: []ASLookup{asDB}, ASNTop: 1})
		if err != nil {
			t.Fatal(err)
		}
		src.set([]collector.BannedIP{ban("sshd", "192.0.2.1", "DE", 1, 600, 1), ban("sshd", "192.0.2.2", "US", 2, 600, 1)})
		if err := fresh.Update(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := `fail2ban_banned_ips_by_asn{as_org="Google LLC",asn="AS15169",jail="sshd"} 1
fail2ban_banned_ips_by_asn{as_org="",asn="other",jail="sshd"} 1
`
		if err := testutil.CollectAndCompare(fresh, strings.NewReader(asnHeader+want), "fail2ban_banned_ips_by_asn"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLocationTopN checks the places: rounding to 0.1 degree merges nearby
// coordinates, IPs without coordinates go to other, and the series sum to
// the banned pairs.
func TestLocationTopN(t *testing.T) {
	bans := []collector.BannedIP{
		ban("sshd", "192.0.2.1", "DE", 1, 600, 1),
		ban("nginx", "192.0.2.1", "DE", 1, 600, 1),
		ban("sshd", "192.0.2.2", "DE", 1, 600, 1),
		ban("sshd", "192.0.2.3", "US", 1, 600, 1),
		ban("sshd", "192.0.2.4", "FR", 1, 600, 1),
		ban("sshd", "192.0.2.5", "ZZ", 1, 600, 1),
	}
	places := tablePlaces{
		"192.0.2.1": {Country: "DE", City: "Berlin", Latitude: 52.5196, Longitude: 13.4069, HasLocation: true},
		"192.0.2.2": {Country: "DE", City: "Berlin", Latitude: 52.5004, Longitude: 13.3951, HasLocation: true},
		"192.0.2.3": {Country: "US", Latitude: 37.751, Longitude: -97.822, HasLocation: true},
		"192.0.2.4": {Country: "FR"}, // no coordinates
	}
	tests := []struct {
		name string
		top  int
		want string
	}{
		{"top 1", 1, `
fail2ban_banned_ips_by_location{city="Berlin",country="DE",latitude="52.5",longitude="13.4"} 3
fail2ban_banned_ips_by_location{city="other",country="",latitude="",longitude=""} 3
`},
		{"top 50", 50, `
fail2ban_banned_ips_by_location{city="Berlin",country="DE",latitude="52.5",longitude="13.4"} 3
fail2ban_banned_ips_by_location{city="",country="US",latitude="37.8",longitude="-97.8"} 1
fail2ban_banned_ips_by_location{city="other",country="",latitude="",longitude=""} 2
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			src.set(bans)
			m, err := New(Options{Source: src, Places: places, CityTop: tc.top})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Update(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := testutil.CollectAndCompare(m, strings.NewReader(locationHeader+tc.want)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestAbsentWithoutSources: no AS source, no City database: no series.
func TestAbsentWithoutSources(t *testing.T) {
	src := &fakeSource{}
	src.set([]collector.BannedIP{ban("sshd", "192.0.2.1", "DE", 1, 600, 1)})
	m, err := New(Options{Source: src, Places: countryOnly{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("%d series without sources", n)
	}
}

type countryOnly struct{}

func (countryOnly) HasPlaces() bool                    { return false }
func (countryOnly) Place(netip.Addr) (geo.Place, bool) { return geo.Place{}, false }

// TestUpdateKeepsSnapshotOnError: a failed walk keeps the last series.
func TestUpdateKeepsSnapshotOnError(t *testing.T) {
	src := &fakeSource{}
	src.set([]collector.BannedIP{ban("sshd", "192.0.2.1", "DE", 1, 600, 1)})
	m, err := New(Options{Source: src, AS: []ASLookup{tableAS{"192.0.2.1": google}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(t.Context()); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	src.err = errors.New("engine gone")
	src.mu.Unlock()
	if err := m.Update(t.Context()); err == nil {
		t.Fatal("no error")
	}
	if n := testutil.CollectAndCount(m); n != 2 {
		t.Errorf("%d series after a failed walk, want the 2 of before", n)
	}
}

func TestNewRejects(t *testing.T) {
	src := &fakeSource{}
	for _, opts := range []Options{
		{},
		{Source: src, ASNTop: -1},
		{Source: src, CityTop: -1},
		{Source: src, Interval: -1},
		{Source: src, AS: []ASLookup{nil}},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("New(%+v) accepted", opts)
		}
	}
}

// TestSeriesBounded: with the defaults the series do not grow with the
// number of banned IPs, ASes or places: per jail 20 ASes, unknown and
// other; 50 places and other.
func TestSeriesBounded(t *testing.T) {
	var bans []collector.BannedIP
	asns := tableAS{}
	places := tablePlaces{}
	for i := range 20_000 {
		ip := netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)})
		bans = append(bans, collector.BannedIP{Jail: fmt.Sprintf("jail%d", i%10), IP: ip.As16(), Country: "DE", TimeOfBan: int64(i), Bantime: 600})
		if i%7 != 0 {
			asns[ip.String()] = geo.AS{Number: uint32(64000 + i%997), Org: "org"}
		}
		places[ip.String()] = geo.Place{Country: "DE", Latitude: float64(i%1000) / 10, Longitude: 10, HasLocation: true}
	}
	src := &fakeSource{chunk: 4096}
	src.set(bans)
	m, err := New(Options{Source: src, AS: []ASLookup{asns}, Places: places})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := testutil.CollectAndCount(m, "fail2ban_banned_ips_by_asn"), 10*(DefaultASNTop+2); got != want {
		t.Errorf("%d ASN series, want %d", got, want)
	}
	if got, want := testutil.CollectAndCount(m, "fail2ban_banned_ips_by_location"), DefaultCityTop+1; got != want {
		t.Errorf("%d location series, want %d", got, want)
	}
}
