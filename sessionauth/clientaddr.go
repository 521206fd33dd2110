package sessionauth

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// peerAddr is the address of the connection's peer; invalid for peers
// without one (a Unix socket).
func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// forwardedFor returns every hop of every X-Forwarded-For header, in order.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, v := range h.Values("X-Forwarded-For") {
		for hop := range strings.SplitSeq(v, ",") {
			hops = append(hops, strings.TrimSpace(hop))
		}
	}
	return hops
}

// ParseTrustedProxies parses --web.trusted-proxies values: addresses or
// CIDR prefixes, each value possibly a comma-separated list.
func ParseTrustedProxies(values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			if strings.Contains(item, "/") {
				p, err := netip.ParsePrefix(item)
				if err != nil {
					return nil, fmt.Errorf("trusted proxy %q: %w", item, err)
				}
				if p.Addr().Is4In6() {
					return nil, fmt.Errorf("trusted proxy %q: write IPv4 prefixes in IPv4 form", item)
				}
				out = append(out, p.Masked())
				continue
			}
			a, err := netip.ParseAddr(item)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("trusted proxy %q: not an IP address or CIDR prefix", item)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}
