package collector

import "net/netip"

// UnknownCountry is the country label of an IP whose country is not known
// (yet): "ZZ", CLDR's code for "Unknown Region".
const UnknownCountry = "ZZ"

// CountryLookup is what the engine needs from the geo package. Every method
// must answer from memory: it is called while the engine refreshes on the
// scrape path, so it must never wait on the network, on disk or on a lock
// held across I/O.
type CountryLookup interface {
	// Track tells geo that the engine now counts ip. Geo keeps tracked IPs
	// in its cache (never evicts them) and resolves unknown ones in the
	// background.
	Track(ip netip.Addr)
	// Untrack tells geo that the engine no longer counts ip.
	Untrack(ip netip.Addr)
	// Country returns ip's ISO 3166-1 alpha-2 code in upper case, or ""
	// when it is not known yet.
	Country(ip netip.Addr) string
	// Generation changes whenever an IP's country changed (most often: it
	// became known for an IP that had none), so the engine knows when to
	// look at its IPs again.
	Generation() uint64
}

// ReassignCountryLookup is a CountryLookup that also tells when an IP that
// had a country got another one or lost it. With it, when Generation moved
// and Reassigned did not, the engine looks again only at its IPs without a
// country (a few thousand) instead of at every IP it holds (hundreds of
// thousands at a million rows).
type ReassignCountryLookup interface {
	CountryLookup
	// Reassigned changes whenever an IP that had a country got another
	// one or lost it; Generation changes too, after it.
	Reassigned() uint64
}

// FinalCountryLookup is a CountryLookup that also tells when its answer for
// an IP is final. fail2ban_bans_total waits up to two minutes for a new
// ban's country, so that ban rates per country are not all "ZZ" only
// because geo had not answered yet; an IP whose answer is final is counted
// at once, with the country it has or under UnknownCountry.
type FinalCountryLookup interface {
	CountryLookup
	// CountryFinal returns ip's country as Country does, and whether that
	// answer will not change by waiting: a country, or an address no
	// provider can place (private, reserved), or no providers at all.
	CountryFinal(ip netip.Addr) (country string, final bool)
}

// NoCountries is the CountryLookup used when geo resolution is off: every IP
// counts under UnknownCountry.
type NoCountries struct{}

func (NoCountries) Track(netip.Addr)          {}
func (NoCountries) Untrack(netip.Addr)        {}
func (NoCountries) Country(netip.Addr) string { return "" }
func (NoCountries) Generation() uint64        { return 0 }

// CountryFinal is final at once: without geo no country ever comes.
func (NoCountries) CountryFinal(netip.Addr) (string, bool) { return "", true }
