package f2bsandbox

import (
	"fmt"
	"net/netip"
)

// sampleBases are well-known public (globally routable) addresses from
// networks in many countries: public resolvers and root servers. Bans of
// them look like real bans to geo lookups; nothing ever connects to them.
var sampleBases = []string{
	"8.8.8.8",         // Google, US
	"1.1.1.1",         // Cloudflare, AU/US
	"9.9.9.9",         // Quad9, CH
	"208.67.222.222",  // OpenDNS, US
	"77.88.8.8",       // Yandex, RU
	"114.114.114.114", // 114DNS, CN
	"223.5.5.5",       // AliDNS, CN
	"180.76.76.76",    // Baidu, CN
	"168.126.63.1",    // KT, KR
	"101.101.101.101", // TWNIC, TW
	"84.200.69.80",    // DNS.WATCH, DE
	"91.239.100.100",  // UncensoredDNS, DK
	"193.0.14.129",    // k.root-servers.net, RIPE NCC, NL
	"202.12.27.33",    // m.root-servers.net, WIDE, JP
	"200.160.0.10",    // NIC.br, BR
	"196.216.2.1",     // AFRINIC, MU
	"203.119.101.61",  // APNIC, AU
	"156.154.70.1",    // UltraDNS, US
	"94.140.14.14",    // AdGuard, CY
	"185.228.168.9",   // CleanBrowsing, GB
	"2001:4860:4860::8888",
	"2606:4700:4700::1111",
}

// SampleIPs returns n distinct, globally routable sample addresses: the
// well-known addresses above first, then neighbours in the same networks
// (host part varied), so any n up to tens of thousands works. The result is
// the same for the same n.
func SampleIPs(n int) []string {
	ips := make([]string, 0, n)
	seen := make(map[netip.Addr]bool, n)
	add := func(a netip.Addr) {
		if len(ips) < n && !seen[a] && a.IsGlobalUnicast() && !a.IsPrivate() {
			seen[a] = true
			ips = append(ips, a.String())
		}
	}
	bases := make([]netip.Addr, len(sampleBases))
	for i, s := range sampleBases {
		bases[i] = netip.MustParseAddr(s)
		add(bases[i])
	}
	for step := 1; len(ips) < n; step++ {
		if step > 1<<16 {
			panic(fmt.Sprintf("f2bsandbox: cannot make %d sample IPs", n))
		}
		for _, b := range bases {
			add(offset(b, step))
		}
	}
	return ips
}

// offset adds step to the low 16 bits of a (the host part within its /16).
func offset(a netip.Addr, step int) netip.Addr {
	bytes := a.AsSlice()
	last := len(bytes) - 1
	v := (int(bytes[last-1])<<8 | int(bytes[last])) + step
	bytes[last-1], bytes[last] = byte(v>>8), byte(v)
	if bytes[last] == 0 || bytes[last] == 255 {
		bytes[last] = 1 // avoid network/broadcast-looking addresses
	}
	out, _ := netip.AddrFromSlice(bytes)
	return out
}
