package geo

import (
	"net/netip"
	"testing"
)

func TestEntryMap(t *testing.T) {
	m := newEntryMap()
	ips := addrs("8.8.8.8", "::ffff:1.1.1.1", "2001:4860:4860::8888", "::", "0.0.0.0", "::ffff:0:0")
	for i, ip := range ips {
		m.set(keyOf(normalize(ip)), cacheEntry{failures: uint8(i + 1)})
	}
	// ::ffff:0:0 is 0.0.0.0 once normalised.
	if m.len() != 5 || len(m.v4) != 3 || len(m.v6) != 2 {
		t.Fatalf("len %d (v4 %d, v6 %d), want 5 (3, 2)", m.len(), len(m.v4), len(m.v6))
	}
	tests := []struct {
		ip   string
		want uint8
	}{
		{"8.8.8.8", 1}, {"1.1.1.1", 2}, {"2001:4860:4860::8888", 3}, {"::", 4}, {"0.0.0.0", 6},
	}
	for _, tt := range tests {
		ce, ok := m.get(keyOf(normalize(netip.MustParseAddr(tt.ip))))
		if !ok || ce.failures != tt.want {
			t.Errorf("get(%s) = %+v %v, want failures %d", tt.ip, ce, ok, tt.want)
		}
	}
	seen := map[netip.Addr]bool{}
	for k := range m.all() {
		seen[k.addr()] = true
		m.del(k) // deleting during iteration is allowed
	}
	if len(seen) != 5 || m.len() != 0 || !seen[netip.MustParseAddr("1.1.1.1")] || !seen[netip.MustParseAddr("::")] {
		t.Fatalf("iteration saw %v, left %d", seen, m.len())
	}
}
