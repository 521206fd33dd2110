package geo

import (
	"context"
	"net/netip"
	"testing"
)

// TestResolverCountryFinal: an answer is final once it is a country or an
// address no provider can place; an IP not resolved yet, or that no provider
// found, may still get one.
func TestResolverCountryFinal(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb"}, Options{})
	r := env.r
	want := []struct {
		ip      string
		country string
		final   bool
	}{
		{"8.8.8.8", "US", true},  // in the mmdb
		{"10.1.2.3", "", true},   // private: never a country
		{"24.48.0.1", "", false}, // not in the mmdb: retried later
	}
	for _, w := range want {
		ip := netip.MustParseAddr(w.ip)
		r.Track(ip)
		if c, final := r.CountryFinal(ip); c != "" || final {
			t.Fatalf("CountryFinal(%s) before resolution = %q, %v; want not final", w.ip, c, final)
		}
	}
	r.drain(context.Background())
	for _, w := range want {
		c, final := r.CountryFinal(netip.MustParseAddr(w.ip))
		if c != w.country || final != w.final {
			t.Errorf("CountryFinal(%s) = %q, %v; want %q, %v", w.ip, c, final, w.country, w.final)
		}
		if c != r.Country(netip.MustParseAddr(w.ip)) {
			t.Errorf("CountryFinal(%s) disagrees with Country", w.ip)
		}
	}
}
