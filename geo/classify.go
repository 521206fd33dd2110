package geo

import "net/netip"

// Final answers for addresses that have no country. They use ip-api's words,
// so an answer reads the same whichever side gave it.
const (
	msgPrivateRange  = "private range"
	msgReservedRange = "reserved range"
	msgInvalidQuery  = "invalid query"
	msgNotFound      = "not found"
)

type specialRange struct {
	prefix  netip.Prefix
	message string
}

// specialRanges are the IPv4 and IPv6 blocks of the IANA special-purpose
// registries that are not globally routable, plus the documentation blocks.
// Addresses in them are classified locally and never sent to a provider.
var specialRanges = func() []specialRange {
	private := []string{
		"10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
		"::1/128", "fc00::/7", "fe80::/10", "fec0::/10",
	}
	reserved := []string{
		"0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:2::/48", "2001:10::/28", "2001:20::/28",
		"2001:db8::/32", "3fff::/20", "5f00::/16", "ff00::/8",
	}
	var out []specialRange
	for _, s := range private {
		out = append(out, specialRange{netip.MustParsePrefix(s), msgPrivateRange})
	}
	for _, s := range reserved {
		out = append(out, specialRange{netip.MustParsePrefix(s), msgReservedRange})
	}
	return out
}()

// globalUnicast6 is the only IPv6 block IANA allocates global unicast
// addresses from; everything outside it is reserved.
var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// classifyLocal tells whether ip is a non-global address and, if so, the
// final answer for it ("private range" or "reserved range"). ip must be
// normalised (see normalize).
func classifyLocal(ip netip.Addr) (message string, special bool) {
	if !ip.IsValid() {
		return msgInvalidQuery, true
	}
	for _, r := range specialRanges {
		if r.prefix.Contains(ip) {
			return r.message, true
		}
	}
	if ip.Is6() && !globalUnicast6.Contains(ip) {
		return msgReservedRange, true
	}
	return "", false
}

// normalize strips the zone and turns IPv4-mapped IPv6 addresses into IPv4,
// so one host has one key.
func normalize(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}
