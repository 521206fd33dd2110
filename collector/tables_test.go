package collector

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestIPTableEqualsMap drives the IP index through random inserts and
// removals (growth, deletions inside probe runs, runs that wrap around the
// end) and checks it against a Go map after every step, as the engine uses
// it: keys read from the ips slice, freed indices reused.
func TestIPTableEqualsMap(t *testing.T) {
	cases := []struct {
		name     string
		universe int // distinct addresses drawn from
		steps    int
	}{
		{"few addresses, many collisions of reuse", 50, 5_000},
		{"growth past several resizes", 20_000, 60_000},
		{"IPv6", 3_000, 20_000},
		{"IPv4 and IPv6 mixed", 6_000, 40_000},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(ci), 99))
			addr := func(n int) netip.Addr {
				if tc.name == "IPv6" || (tc.name == "IPv4 and IPv6 mixed" && n%2 == 1) {
					return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(n >> 8), 15: byte(n)})
				}
				return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
			}
			tab := newIPTable()
			var ips []ipInfo
			var free []uint32
			want := map[ipKey]uint32{}
			for step := range tc.steps {
				k := keyOf(addr(rng.IntN(tc.universe)))
				i, found := tab.find(ips, k)
				wi, wfound := want[k]
				if found != wfound || (found && i != wi) {
					t.Fatalf("step %d: find = %d, %v; want %d, %v", step, i, found, wi, wfound)
				}
				switch {
				case !found:
					var idx uint32
					if n := len(free); n > 0 {
						idx, free = free[n-1], free[:n-1]
						ips[idx] = ipInfo{key: k}
					} else {
						idx = uint32(len(ips))
						ips = append(ips, ipInfo{key: k})
					}
					tab.insert(ips, idx)
					want[k] = idx
				case rng.IntN(3) > 0:
					tab.remove(ips, i)
					ips[i] = ipInfo{}
					free = append(free, i)
					delete(want, k)
				}
				if tab.count() != len(want) {
					t.Fatalf("step %d: count %d, want %d", step, tab.count(), len(want))
				}
			}
			for k, wi := range want {
				if i, ok := tab.find(ips, k); !ok || i != wi {
					t.Fatalf("%v: find = %d, %v; want %d", k.addr(), i, ok, wi)
				}
			}
			if load := float64(tab.count()) / float64(len(tab.slots)); load > 0.75 {
				t.Fatalf("load %.2f above three quarters", load)
			}
		})
	}
}

// TestPairTableEqualsMap does the same for the pair index: sets that insert
// and update, deletions of present and absent pairs, clear, and a table
// reserved for fewer pairs than it gets.
func TestPairTableEqualsMap(t *testing.T) {
	cases := []struct {
		name       string
		ips, jails int
		reserve    int
		steps      int
	}{
		{"small, dense", 20, 3, 0, 5_000},
		{"grows from a reservation", 5_000, 6, 1_000, 60_000},
		{"one IP, many jails", 1, 300, 10, 5_000},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			tab := newPairTable()
			tab.reserve(tc.reserve)
			want := map[pairKey]int64{}
			for step := range tc.steps {
				pk := pairKey{ip: uint32(rng.IntN(tc.ips)), jail: uint16(rng.IntN(tc.jails))}
				switch r := rng.IntN(10); {
				case r < 6:
					rowid := rng.Int64N(1 << 40)
					tab.set(pk, rowid)
					want[pk] = rowid
				case r < 9:
					tab.del(pk)
					delete(want, pk)
				case step%1000 == 0:
					tab.clear()
					clear(want)
				}
				got, ok := tab.get(pk)
				w, wok := want[pk]
				if ok != wok || got != w || tab.n != len(want) {
					t.Fatalf("step %d: get(%v) = %d, %v (n %d); want %d, %v (n %d)", step, pk, got, ok, tab.n, w, wok, len(want))
				}
			}
			for pk, w := range want {
				if got, ok := tab.get(pk); !ok || got != w {
					t.Fatalf("get(%v) = %d, %v; want %d", pk, got, ok, w)
				}
			}
		})
	}
}

// TestTablesAreCompact: at a million rows' scale the two indexes take what
// their entries need, not a power of two above it.
func TestTablesAreCompact(t *testing.T) {
	pairs := newPairTable()
	pairs.reserve(room(490_000))
	for i := range 490_000 {
		pairs.set(pairKey{ip: uint32(i / 2), jail: uint16(i % 2)}, int64(i))
	}
	if perPair := float64(len(pairs.slots)*16) / 490_000; perPair > 24 {
		t.Errorf("pair index: %.1f bytes per pair, want at most 24", perPair)
	}
	ips := make([]ipInfo, 235_000)
	tab := newIPTable()
	for i := range ips {
		ips[i].key = keyOf(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		tab.insert(ips, uint32(i))
	}
	if perIP := float64(len(tab.slots)*8) / 235_000; perIP > 16 {
		t.Errorf("IP index: %.1f bytes per IP, want at most 16", perIP)
	}
}
