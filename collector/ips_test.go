package collector

import (
	"net/netip"
	"testing"
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
