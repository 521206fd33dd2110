package geo

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
)

func TestEntryMap(t *testing.T) {
	m := newEntryMap()
	ips := addrs("8.8.8.8", "::ffff:1.1.1.1", "2001:4860:4860::8888", "::", "0.0.0.0", "::ffff:0:0")
	for i, ip := range ips {
		m.set(keyOf(normalize(ip)), cacheEntry{failures: uint8(i + 1)})
	}
	// ::ffff:0:0 is 0.0.0.0 once normalised.
	if m.len() != 5 || m.v4.len() != 3 || len(m.v6) != 2 {
		t.Fatalf("len %d (v4 %d, v6 %d), want 5 (3, 2)", m.len(), m.v4.len(), len(m.v6))
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
	for _, ip := range []string{"8.8.4.4", "0.0.0.1", "2001:db8::1"} {
		if ce, ok := m.get(keyOf(normalize(netip.MustParseAddr(ip)))); ok {
			t.Errorf("get(%s) = %+v, want absent", ip, ce)
		}
	}
	seen := map[netip.Addr]bool{}
	for k := range m.all() {
		seen[k.addr()] = true
		m.del(k) // deleting during iteration is allowed
	}
	if len(seen) != 5 || m.len() != 0 || !seen[netip.MustParseAddr("1.1.1.1")] || !seen[netip.MustParseAddr("::")] ||
		!seen[netip.MustParseAddr("0.0.0.0")] {
		t.Fatalf("iteration saw %v, left %d", seen, m.len())
	}
	m.del(keyOf(netip.MustParseAddr("0.0.0.0"))) // absent: nothing
	if m.len() != 0 {
		t.Fatalf("len %d after deleting an absent key", m.len())
	}
}

// v4Key returns the 16-byte key of IPv4 address x.
func v4Key(x uint32) key {
	var k4 [4]byte
	binary.BigEndian.PutUint32(k4[:], x)
	return join4(k4)
}

// checkEntryMap compares m with the reference map want: len, get of every
// key, one pass of all() yielding each key once with its entry, and the
// segments' counts.
func checkEntryMap(t *testing.T, m *entryMap, want map[key]cacheEntry) {
	t.Helper()
	if m.len() != len(want) {
		t.Fatalf("len %d, want %d", m.len(), len(want))
	}
	for k, w := range want {
		if ce, ok := m.get(k); !ok || ce != w {
			t.Fatalf("get(%v) = %+v %v, want %+v", k.addr(), ce, ok, w)
		}
	}
	seen := make(map[key]bool, len(want))
	for k, ce := range m.all() {
		if seen[k] {
			t.Fatalf("all() yielded %v twice", k.addr())
		}
		seen[k] = true
		if w, ok := want[k]; !ok || ce != w {
			t.Fatalf("all() yielded %v %+v, want %+v %v", k.addr(), ce, w, ok)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("all() yielded %d keys, want %d", len(seen), len(want))
	}
	n := 0
	for i := range m.v4.segs {
		sg := &m.v4.segs[i]
		used := 0
		for _, x := range sg.keys {
			if x != 0 {
				used++
			}
		}
		if used != sg.n || (len(sg.keys) > 0 && sg.n*v4MaxLoadDen > len(sg.keys)*v4MaxLoadNum) {
			t.Fatalf("segment %d: %d keys in %d slots, counted %d", i, used, len(sg.keys), sg.n)
		}
		n += sg.n
	}
	if n != m.v4.n {
		t.Fatalf("segments hold %d, table counts %d", n, m.v4.n)
	}
}

// TestEntryMapMatchesMap runs random sets, updates and deletions against a
// Go map: over small key spaces (many collisions of the same keys, 0.0.0.0
// and IPv6 often) and large ones (every segment grows several times).
func TestEntryMapMatchesMap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		keys   uint32 // IPv4 keys drawn from [0, keys)
		ops    int
		delPct int
		v6Pct  int
	}{
		{name: "few keys, many deletions", keys: 40, ops: 5000, delPct: 45, v6Pct: 10},
		{name: "growing", keys: 1 << 20, ops: 60_000, delPct: 5},
		{name: "growing, then shrinking", keys: 30_000, ops: 80_000, delPct: 50, v6Pct: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.ops), uint64(tc.keys)))
			m := newEntryMap()
			want := map[key]cacheEntry{}
			for i := range tc.ops {
				var k key
				if rng.IntN(100) < tc.v6Pct {
					k = keyOf(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.IntN(8))}))
				} else {
					k = v4Key(rng.Uint32N(tc.keys))
				}
				if rng.IntN(100) < tc.delPct {
					m.del(k)
					delete(want, k)
				} else {
					ce := cacheEntry{at: uint32(i), flags: uint8(rng.IntN(32))}
					m.set(k, ce)
					want[k] = ce
				}
				if i%(tc.ops/8) == 0 {
					checkEntryMap(t, &m, want)
				}
			}
			checkEntryMap(t, &m, want)
		})
	}
}

// wrappedSegments counts the segments whose last and first slots are both
// used: a run of entries wraps around the segment's end there.
func wrappedSegments(m *entryMap) int {
	n := 0
	for i := range m.v4.segs {
		sg := &m.v4.segs[i]
		if len(sg.keys) > 0 && sg.keys[0] != 0 && sg.keys[len(sg.keys)-1] != 0 {
			n++
		}
	}
	return n
}

// TestEntryMapAllWithChanges: a body that updates or deletes the entry it is
// given sees every entry exactly once, however the deletions shift the runs
// of entries behind them back (runs wrapping around a segment's end
// included), and leaves exactly what it did not delete.
func TestEntryMapAllWithChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int // entries, IPv4 (and 0.0.0.0) plus a few IPv6
		delete func(k key, i int) bool
		update bool
	}{
		{name: "delete all", n: 5000, delete: func(key, int) bool { return true }},
		{name: "delete every other", n: 5000, delete: func(_ key, i int) bool { return i%2 == 0 }},
		{name: "delete by key", n: 5000, delete: func(k key, _ int) bool { return k[15]%3 != 0 }},
		{name: "update all", n: 5000, delete: func(key, int) bool { return false }, update: true},
		{name: "update or delete", n: 5000, delete: func(_ key, i int) bool { return i%3 == 1 }, update: true},
		{name: "small segments, nearly full", n: 64 * 18, delete: func(_ key, i int) bool { return i%4 != 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wrapped := 0
			for seed := range uint64(20) {
				rng := rand.New(rand.NewPCG(seed, 7))
				m := newEntryMap()
				want := map[key]cacheEntry{}
				add := func(k key) {
					ce := cacheEntry{at: uint32(len(want) + 1)}
					m.set(k, ce)
					want[k] = ce
				}
				add(v4Key(0))
				add(keyOf(netip.MustParseAddr("2001:db8::1")))
				add(keyOf(netip.MustParseAddr("2001:db8::2")))
				for len(want) < tc.n {
					add(v4Key(rng.Uint32()))
				}
				wrapped += wrappedSegments(&m)
				seen := map[key]bool{}
				i := 0
				for k, ce := range m.all() {
					if seen[k] {
						t.Fatalf("seed %d: %v yielded twice", seed, k.addr())
					}
					seen[k] = true
					if ce != want[k] {
						t.Fatalf("seed %d: %v yielded %+v, want %+v", seed, k.addr(), ce, want[k])
					}
					switch {
					case tc.delete(k, i):
						m.del(k)
						delete(want, k)
					case tc.update:
						ce.flags |= flagDirty
						m.set(k, ce)
						want[k] = ce
					}
					i++
				}
				if i != tc.n {
					t.Fatalf("seed %d: %d entries yielded, want %d", seed, i, tc.n)
				}
				checkEntryMap(t, &m, want)
			}
			// The case that matters: a deletion near a segment's end
			// shifting entries from its start back.
			if wrapped == 0 {
				t.Fatal("no run of entries wrapped around a segment's end: the test proves less than it says")
			}
		})
	}
}

// TestV4TableStaysDense: the segments' staggered sizes keep the table's
// slots per entry near their mean (8/7 · 4/3·ln(4/3)/(1/3) = 1.32) across a
// whole growth step of the segments, instead of the 8/7 · 4/3 = 1.52 of
// segments growing in step, just after they did.
func TestV4TableStaysDense(t *testing.T) {
	for i := range v4Segments {
		for r := range 30 {
			if lo, hi := v4Rung(i, r), v4Rung(i, r+1); hi <= lo || (i > 0 && v4Rung(i-1, r) > lo) || v4Rung(v4Segments-1, r) > hi {
				t.Fatalf("rungs out of order at segment %d, rung %d", i, r)
			}
		}
	}
	tab := newEntryMap().v4
	rng := rand.New(rand.NewPCG(9, 9))
	worst := 0.0
	for next := 60_000; next <= 80_000; next += 1000 {
		for tab.len() < next {
			if x := rng.Uint32(); x != 0 {
				tab.set(x, cacheEntry{})
			}
		}
		slots := 0
		for i := range tab.segs {
			slots += len(tab.segs[i].keys)
		}
		worst = max(worst, float64(slots)/float64(tab.len()))
	}
	// Staggered: 1.34 to 1.36 over seeds; in step: 1.43 to 1.45 here.
	if worst > 1.39 {
		t.Errorf("up to %.3f slots per entry, want at most 1.39", worst)
	}
}

func TestEntryMapAllStops(t *testing.T) {
	m := newEntryMap()
	for x := range uint32(1000) {
		m.set(v4Key(x), cacheEntry{})
	}
	m.set(keyOf(netip.MustParseAddr("2001:db8::1")), cacheEntry{})
	for _, stop := range []int{1, 2, 500, 1000, 1001} {
		n := 0
		for range m.all() {
			if n++; n == stop {
				break
			}
		}
		if n != stop {
			t.Errorf("break after %d: %d yielded", stop, n)
		}
	}
}

// TestEntryMapAllPanicsOnGrowth: adding entries during all() would grow a
// segment under the scan; it panics rather than yield entries twice or
// never.
func TestEntryMapAllPanicsOnGrowth(t *testing.T) {
	m := newEntryMap()
	m.set(v4Key(1), cacheEntry{})
	seg := segmentOf(m.v4.hash(1))
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	for range m.all() {
		// Fill the segment being scanned until it grows.
		for x := uint32(2); m.v4.segs[seg].rung == 0; x++ {
			if segmentOf(m.v4.hash(x)) == seg {
				m.set(v4Key(x), cacheEntry{})
			}
		}
	}
	t.Fatal("all() ended")
}

// benchEntries is the number of IPs the heap profile that motivated
// v4Table held (10M fail2ban rows, first start).
const benchEntries = 2_350_000

// v4Map is the IPv4 half of entryMap before v4Table, the baseline.
type v4Map map[[4]byte]cacheEntry

func (m v4Map) get(x uint32) (cacheEntry, bool) {
	var k4 [4]byte
	binary.BigEndian.PutUint32(k4[:], x)
	ce, ok := m[k4]
	return ce, ok
}

func (m v4Map) set(x uint32, ce cacheEntry) {
	var k4 [4]byte
	binary.BigEndian.PutUint32(k4[:], x)
	m[k4] = ce
}

type v4Index interface {
	get(uint32) (cacheEntry, bool)
	set(uint32, cacheEntry)
}

// BenchmarkEntryMapV4 measures the IPv4 index at 2.35M IPs: the heap it
// holds (bytes/IP, after GC) and the time of a get of a present and of an
// absent IP, of an update and of an insert (growth included). Baseline:
// the map[[4]byte]cacheEntry it replaced.
//
//	go test -run '^$' -bench 'EntryMapV4/.*/heap' -benchtime 1x ./geo
//	go test -run '^$' -bench 'EntryMapV4/.*/[giu]' -benchtime 2000000x ./geo
func BenchmarkEntryMapV4(b *testing.B) {
	// distinct, non-zero: the first benchEntries present, the rest absent;
	// the set that makes them distinct is garbage before the heap is measured
	ips := func() []uint32 {
		rng := rand.New(rand.NewPCG(5, 6))
		seen := make(map[uint32]bool, benchEntries+benchEntries/2)
		var ips []uint32
		for len(ips) < benchEntries+benchEntries/2 {
			if x := rng.Uint32(); x != 0 && !seen[x] {
				seen[x] = true
				ips = append(ips, x)
			}
		}
		return ips
	}()
	present, absent := ips[:benchEntries], ips[benchEntries:]
	for _, impl := range []struct {
		name string
		mk   func() v4Index
	}{
		{"v4Table", func() v4Index { t := newEntryMap().v4; return &t }},
		{"baseline-map", func() v4Index { return v4Map{} }},
	} {
		fill := func(m v4Index) {
			for i, x := range present {
				m.set(x, cacheEntry{at: uint32(i)})
			}
		}
		b.Run(impl.name+"/heap", func(b *testing.B) {
			for b.Loop() {
				before := heapAlloc()
				m := impl.mk()
				fill(m)
				after := heapAlloc()
				b.ReportMetric(float64(after-before)/benchEntries, "bytes/IP")
				runtime.KeepAlive(m)
			}
		})
		b.Run(impl.name+"/insert", func(b *testing.B) {
			m := impl.mk()
			i := 0
			for b.Loop() {
				if i == len(present) {
					b.StopTimer()
					m, i = impl.mk(), 0
					b.StartTimer()
				}
				m.set(present[i], cacheEntry{at: 1})
				i++
			}
		})
		m := impl.mk()
		fill(m)
		for _, op := range []struct {
			name string
			keys []uint32
			do   func(x uint32)
		}{
			{"get-present", present, func(x uint32) {
				if _, ok := m.get(x); !ok {
					panic(fmt.Sprint(x, " absent"))
				}
			}},
			{"get-absent", absent, func(x uint32) {
				if _, ok := m.get(x); ok {
					panic(fmt.Sprint(x, " present"))
				}
			}},
			{"update", present, func(x uint32) { m.set(x, cacheEntry{at: x}) }},
		} {
			b.Run(impl.name+"/"+op.name, func(b *testing.B) {
				i := 0
				for b.Loop() {
					op.do(op.keys[i])
					if i++; i == len(op.keys) {
						i = 0
					}
				}
			})
		}
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
