package f2bgen

import (
	"math/rand/v2"
	"net/netip"
)

// publicV4Blocks are first octets of IPv4 /8 blocks delegated to the five
// regional registries (APNIC, RIPE NCC, ARIN, LACNIC, AFRINIC), so generated
// addresses resolve to many countries. Blocks seen more often in attack
// traffic appear twice.
var publicV4Blocks = []byte{
	// APNIC
	1, 14, 27, 36, 36, 39, 42, 43, 43, 49, 58, 59, 60, 61, 61, 101, 103, 103, 106, 110, 111, 112, 113,
	114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 175, 180, 182, 183, 202, 203, 210, 211,
	218, 218, 219, 220, 221, 222, 222, 223,
	// RIPE NCC
	2, 5, 5, 31, 37, 46, 46, 62, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94,
	95, 109, 141, 145, 151, 176, 178, 185, 185, 188, 193, 194, 195, 212, 213, 217,
	// ARIN
	3, 4, 8, 12, 13, 18, 20, 23, 24, 34, 35, 44, 45, 45, 50, 52, 54, 63, 64, 65, 66, 67, 68, 69, 70, 71,
	72, 73, 74, 75, 76, 96, 97, 98, 99, 104, 107, 108, 128, 129, 130, 131, 132, 134, 136, 138, 140,
	142, 143, 144, 146, 147, 148, 149, 152, 155, 156, 157, 158, 159, 161, 162, 164, 165, 166, 167,
	168, 169, 170, 172, 173, 174, 184, 192, 198, 199, 204, 205, 206, 207, 208, 209, 216,
	// LACNIC
	177, 179, 181, 186, 187, 189, 190, 191, 200, 201,
	// AFRINIC
	41, 41, 102, 105, 154, 196, 197,
}

// publicV6Prefixes are IPv6 blocks delegated to the regional registries.
var publicV6Prefixes = []netip.Prefix{
	netip.MustParsePrefix("2400::/12"), // APNIC
	netip.MustParsePrefix("2600::/12"), // ARIN
	netip.MustParsePrefix("2800::/12"), // LACNIC
	netip.MustParsePrefix("2a00::/12"), // RIPE NCC
	netip.MustParsePrefix("2a10::/12"), // RIPE NCC
	netip.MustParsePrefix("2c00::/12"), // AFRINIC
	netip.MustParsePrefix("2001:4000::/23"),
	netip.MustParsePrefix("2001:1200::/23"),
}

// specialPurpose lists the IANA special-purpose ranges inside the blocks
// above that are not global unicast (RFC 6890 and its updates).
var specialPurpose = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("192.31.196.0/24"),
	netip.MustParsePrefix("192.52.193.0/24"),
	netip.MustParsePrefix("192.88.99.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("192.175.48.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
}

// IsPublic reports whether addr is a global unicast address outside every
// special-purpose range: what generated databases contain.
func IsPublic(addr netip.Addr) bool {
	if !addr.IsValid() || !addr.IsGlobalUnicast() || addr.IsPrivate() || addr.Is4In6() {
		return false
	}
	for _, p := range specialPurpose {
		if p.Contains(addr) {
			return false
		}
	}
	if addr.Is6() {
		for _, p := range publicV6Prefixes {
			if p.Contains(addr) {
				return true
			}
		}
		return false
	}
	return true
}

// ipSource draws distinct public addresses.
type ipSource struct {
	rng       *rand.Rand
	ipv6Share float64
	seen      map[netip.Addr]struct{}
}

func newIPSource(rng *rand.Rand, ipv6Share float64) *ipSource {
	return &ipSource{rng: rng, ipv6Share: ipv6Share, seen: make(map[netip.Addr]struct{})}
}

// next returns a public address never returned before by this source.
func (s *ipSource) next() netip.Addr {
	for {
		var a netip.Addr
		if s.rng.Float64() < s.ipv6Share {
			a = s.randomV6()
		} else {
			a = s.randomV4()
		}
		if !IsPublic(a) {
			continue
		}
		if _, dup := s.seen[a]; dup {
			continue
		}
		s.seen[a] = struct{}{}
		return a
	}
}

// markUsed records addresses that already exist (for writers appending to a
// database), so next does not return them as new.
func (s *ipSource) markUsed(a netip.Addr) { s.seen[a] = struct{}{} }

func (s *ipSource) randomV4() netip.Addr {
	r := s.rng.Uint32()
	first := publicV4Blocks[s.rng.IntN(len(publicV4Blocks))]
	// Avoid .0 and .255 host octets: scanners and brute-forcers are hosts.
	last := byte(1 + r%254)
	return netip.AddrFrom4([4]byte{first, byte(r >> 8), byte(r >> 16), last})
}

func (s *ipSource) randomV6() netip.Addr {
	p := publicV6Prefixes[s.rng.IntN(len(publicV6Prefixes))]
	b := p.Addr().As16()
	hi, lo := s.rng.Uint64(), s.rng.Uint64()
	var r [16]byte
	for i := range 8 {
		r[i] = byte(hi >> (56 - 8*i))
		r[8+i] = byte(lo >> (56 - 8*i))
	}
	// Most attacking hosts sit in a /64 with a small or random interface id.
	if s.rng.IntN(2) == 0 {
		for i := 8; i < 15; i++ {
			r[i] = 0
		}
	}
	bits := p.Bits()
	for i := range 16 {
		keep := min(max(bits-8*i, 0), 8) // prefix bits in this byte
		mask := byte(0xff << (8 - keep))
		b[i] = b[i]&mask | r[i]&^mask
	}
	return netip.AddrFrom16(b)
}
