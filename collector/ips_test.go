package collector

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestParseIP: fail2ban's ip column, as the engine keys it.
func TestParseIP(t *testing.T) {
	cases := []struct {
		in   string
		want string // "" when invalid
	}{
		{"192.0.2.1", "192.0.2.1"},
		{" 192.0.2.1\n", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8::1", "2001:db8::1"},
		{"fe80::1%eth0", "fe80::1"},
		{"", ""},
		{"192.0.2.256", ""},
		{"example.org", ""},
		{"192.0.2.0/24", ""},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			a, ok := parseIP(tc.in)
			got := ""
			if ok {
				got = a.String()
			}
			if got != tc.want {
				t.Fatalf("parseIP(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestNormalizeCountry: only two ASCII letters are a country, upper-cased.
func TestNormalizeCountry(t *testing.T) {
	cases := []struct{ in, want string }{
		{"DE", "DE"},
		{"de", "DE"},
		{"dE", "DE"},
		{"", ""},
		{"D", ""},
		{"DEU", ""},
		{"D1", ""},
		{"ÄB", ""},
		{"--", ""},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			if got := normalizeCountry(tc.in); got != tc.want {
				t.Fatalf("normalizeCountry(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// trackingCountries records Track and Untrack calls.
type trackingCountries struct {
	NoCountries
	tracked map[netip.Addr]int
}

func (c *trackingCountries) Track(ip netip.Addr)   { c.tracked[ip]++ }
func (c *trackingCountries) Untrack(ip netip.Addr) { c.tracked[ip]-- }

// TestInternIP: an IP is interned once with a reference per user, tracked
// by geo while referenced, and its index reused once released.
func TestInternIP(t *testing.T) {
	c := &trackingCountries{tracked: map[netip.Addr]int{}}
	e := newEngine(c, windowsOf(t, "1h"), 4, 0, nil)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	steps := []struct {
		name    string
		do      func() uint32
		index   uint32
		ips     int
		tracked map[netip.Addr]int
	}{
		{"first a", func() uint32 { return e.internIP(a) }, 0, 1, map[netip.Addr]int{a: 1}},
		{"a again", func() uint32 { return e.internIP(a) }, 0, 1, map[netip.Addr]int{a: 1}},
		{"b", func() uint32 { return e.internIP(b) }, 1, 2, map[netip.Addr]int{a: 1, b: 1}},
		{"release a once", func() uint32 { e.releaseIP(0); return 0 }, 0, 2, map[netip.Addr]int{a: 1, b: 1}},
		{"release a again", func() uint32 { e.releaseIP(0); return 0 }, 0, 1, map[netip.Addr]int{a: 0, b: 1}},
		{"a comes back at the freed index", func() uint32 { return e.internIP(a) }, 0, 2, map[netip.Addr]int{a: 1, b: 1}},
	}
	for _, s := range steps {
		if got := s.do(); got != s.index {
			t.Fatalf("%s: index %d, want %d", s.name, got, s.index)
		}
		if e.ipIndex.count() != s.ips {
			t.Fatalf("%s: %d interned IPs, want %d", s.name, e.ipIndex.count(), s.ips)
		}
		for ip, n := range s.tracked {
			if c.tracked[ip] != n {
				t.Fatalf("%s: %v tracked %d times, want %d", s.name, ip, c.tracked[ip], n)
			}
		}
	}
}

// TestRefreshCountriesMovesSeries: when geo learns an IP's country, its bans
// move from ZZ to that country in fail2ban_banned_ips and in every window.
func TestRefreshCountriesMovesSeries(t *testing.T) {
	const now = 1_790_000_000
	countries := newTableCountries()
	e := newEngine(countries, windowsOf(t, "1h", "1d"), 4, 0, nil)
	e.appendBans([]sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, 600), testRow(2, "sshd", "192.0.2.2", now-60, 600)}, now)
	e.appendBips([]sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, 600), testRow(2, "sshd", "192.0.2.2", now-60, 600)}, now)
	countries.set("192.0.2.1", "DE")
	e.refreshCountries()
	byCountry := func(m map[seriesKey]int) map[string]int {
		out := map[string]int{}
		for k, v := range m {
			out[e.countryNames[k.country]] += v
		}
		return out
	}
	want := map[string]int{"DE": 1, UnknownCountry: 1}
	for name, m := range map[string]map[seriesKey]int{"banned": e.bannedNow, "1h": e.windowCount[0], "1d": e.windowCount[1]} {
		got := byCountry(m)
		if len(got) != len(want) || got["DE"] != 1 || got[UnknownCountry] != 1 {
			t.Fatalf("%s by country %v, want %v", name, got, want)
		}
	}
}

// TestMoveCountriesPaths moves sets of IPs of every shape between
// countries — one just-banned IP, one banned long ago, a few mixed, many
// (the dense lookup and the recount), reassignments — and compares the
// engine's series with an engine that knew the final countries from the
// start. It covers each path of moveCountries: pair lookups against the
// walk over every banned pair, the walk over ban events from the moved
// IPs' first event, and the recount.
func TestMoveCountriesPaths(t *testing.T) {
	const now = 1_790_000_000
	const nIPs = 600
	jails := []string{"sshd", "nginx", "postfix"}
	ipAt := func(i int) string { return fmt.Sprintf("10.%d.%d.1", i/250, i%250) }
	// IP i is banned in jail i%3; every IP has an old ban (days ago,
	// expired) unless i%5 == 0; IPs i%4 == 0 are banned again now
	// (banned); the last 40 IPs are new: their only ban is now.
	var bans, bips []sourceRow
	rowid := int64(0)
	for i := range nIPs {
		jail, ip := jails[i%3], ipAt(i)
		newIP := i >= nIPs-40
		if !newIP && i%5 != 0 {
			rowid++
			bans = append(bans, testRow(rowid, jail, ip, now-int64(3+i%20)*86400, 600))
		}
		if newIP || i%4 == 0 {
			rowid++
			r := testRow(rowid, jail, ip, now-int64(i%50), 3600)
			bans = append(bans, r)
			bips = append(bips, r)
		} else if !newIP && i%5 != 0 {
			bips = append(bips, bans[len(bans)-1])
		}
	}
	country := func(i int) string { return []string{"DE", "FR", "US", "CN"}[i%4] }
	cases := []struct {
		name   string
		before map[int]string // countries known before the rows are read
		after  map[int]string // set afterwards, then one pass
	}{
		{name: "one new IP", after: map[int]string{nIPs - 1: "DE"}},
		{name: "one IP banned long ago", after: map[int]string{3: "FR"}},
		{name: "an IP without a ban event in a window", after: map[int]string{5: "FR"}},
		{name: "a few mixed", after: map[int]string{nIPs - 2: "US", 7: "CN", 8: "DE", 12: "FR"}},
		{name: "many (dense lookup)", after: func() map[int]string {
			m := map[int]string{}
			for i := 0; i < nIPs; i += 7 {
				m[i] = country(i)
			}
			return m
		}()},
		{name: "all (recount)", after: func() map[int]string {
			m := map[int]string{}
			for i := range nIPs {
				m[i] = country(i)
			}
			return m
		}()},
		{name: "reassigned and lost", before: map[int]string{3: "DE", 4: "FR", nIPs - 3: "US"}, after: map[int]string{3: "CN", 4: "", nIPs - 3: "DE"}},
	}
	byKey := func(e *engine, m map[seriesKey]int) map[[2]string]int {
		out := map[[2]string]int{}
		for k, v := range m {
			if v != 0 {
				out[[2]string{e.jailNames[k.jail], e.countryNames[k.country]}] += v
			}
		}
		return out
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			countries := newTableCountries()
			final := newTableCountries()
			for i, c := range tc.before {
				countries.set(ipAt(i), c)
				final.set(ipAt(i), c)
			}
			for i, c := range tc.after {
				final.set(ipAt(i), c)
			}
			windows := windowsOf(t, "1h", "1d", "365d")
			e := newEngine(countries, windows, 4, 0, nil)
			want := newEngine(final, windows, 4, 0, nil)
			for _, x := range []*engine{e, want} {
				x.appendBans(bans, now)
				x.appendBips(bips, now)
			}
			if len(e.bannedRefs) < 4*len(jails) {
				t.Fatalf("only %d banned pairs: the pair lookups would not be tried", len(e.bannedRefs))
			}
			for i, c := range tc.after {
				countries.set(ipAt(i), c)
			}
			e.refreshCountries()
			if diff := cmp.Diff(byKey(want, want.bannedNow), byKey(e, e.bannedNow)); diff != "" {
				t.Errorf("banned (-want +got):\n%s", diff)
			}
			for w := range windows {
				if diff := cmp.Diff(byKey(want, want.windowCount[w]), byKey(e, e.windowCount[w])); diff != "" {
					t.Errorf("window %s (-want +got):\n%s", windows[w].Label, diff)
				}
			}
		})
	}
}
