package geo

import (
	"net/netip"
	"slices"
	"testing"
)

// keysOf returns the normalised keys of ips, as Track and Lookup make them.
func keysOf(ips ...string) []key {
	out := make([]key, len(ips))
	for i, s := range ips {
		out[i] = keyOf(normalize(netip.MustParseAddr(s)))
	}
	return out
}

// listOf returns a keyList with keys appended in turn.
func listOf(keys []key) keyList {
	var l keyList
	for _, k := range keys {
		l.append(k)
	}
	return l
}

func collect(l *keyList, from, to int) (idx []int, keys []key) {
	for i, k := range l.span(from, to) {
		idx = append(idx, i)
		keys = append(keys, k)
	}
	return idx, keys
}

func TestKeyList(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ips    []string // appended in turn
		want   []string // the list's fixed order: IPv4 as appended, then IPv6 as appended
		n4, n6 int      // keys held in 4 and in 16 bytes
	}{
		{name: "empty"},
		{
			name: "IPv4",
			ips:  []string{"8.8.8.8", "1.1.1.1", "0.0.0.0", "255.255.255.255"},
			want: []string{"8.8.8.8", "1.1.1.1", "0.0.0.0", "255.255.255.255"},
			n4:   4,
		},
		{
			name: "IPv6",
			ips:  []string{"2001:db8::1", "::", "::1", "64:ff9b::1"},
			want: []string{"2001:db8::1", "::", "::1", "64:ff9b::1"},
			n6:   4,
		},
		{
			// ::ffff:1.2.3.4 is 1.2.3.4 once normalised: one 4-byte key.
			name: "mixed",
			ips:  []string{"2001:db8::1", "8.8.8.8", "::", "::ffff:1.2.3.4", "2001:db8::2", "9.9.9.9"},
			want: []string{"8.8.8.8", "1.2.3.4", "9.9.9.9", "2001:db8::1", "::", "2001:db8::2"},
			n4:   3, n6: 3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listOf(keysOf(tc.ips...))
			want := keysOf(tc.want...)
			if l.len() != len(want) || len(l.v4) != tc.n4 || len(l.v6) != tc.n6 {
				t.Fatalf("len %d (v4 %d, v6 %d), want %d (%d, %d)", l.len(), len(l.v4), len(l.v6), len(want), tc.n4, tc.n6)
			}
			for i, w := range want {
				if got := l.at(i); got != w {
					t.Errorf("at(%d) = %v, want %v", i, got.addr(), w.addr())
				}
			}
			// Every range, across the IPv4/IPv6 boundary or not, is the
			// same slice of the fixed order, with its indexes.
			for from := 0; from <= len(want); from++ {
				for to := from; to <= len(want); to++ {
					idx, got := collect(&l, from, to)
					if !slices.Equal(got, want[from:to]) {
						t.Errorf("span(%d, %d) = %v, want %v", from, to, got, want[from:to])
					}
					for j, i := range idx {
						if i != from+j {
							t.Errorf("span(%d, %d) index %d = %d, want %d", from, to, j, i, from+j)
						}
					}
				}
			}
			// Stopping early stops in either half.
			for stop := range len(want) {
				n := 0
				for i := range l.all() {
					n++
					if i == stop {
						break
					}
				}
				if n != stop+1 {
					t.Errorf("break at %d: %d keys yielded", stop, n)
				}
			}
		})
	}
}

func TestKeyListSpanOutOfRange(t *testing.T) {
	l := listOf(keysOf("8.8.8.8", "2001:db8::1"))
	for _, tc := range []struct{ from, to int }{{-1, 1}, {0, 3}, {2, 1}, {3, 3}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("span(%d, %d) of 2 keys did not panic", tc.from, tc.to)
				}
			}()
			l.span(tc.from, tc.to)
		}()
	}
}

// TestRestoreDirty fails a flush after it copied the keys at indexes below
// taken (copyDirty cleared their flags) and checks that restoreDirty leaves
// every entry still in the memory tier dirty and listed exactly once: those
// copied are marked again, those changed meanwhile (dirty and listed
// already) are not listed twice, those not reached keep their flags and get
// their place back, evicted ones are dropped. An entry not reached that is
// no longer dirty (nothing does that today) is not listed.
func TestRestoreDirty(t *testing.T) {
	mixed := []string{"2001:db8::1", "8.8.8.8", "::", "1.2.3.4", "2001:db8::2", "9.9.9.9", "10.0.0.1"}
	// In the list's order: 8.8.8.8 1.2.3.4 9.9.9.9 10.0.0.1 | 2001:db8::1 :: 2001:db8::2
	for _, tc := range []struct {
		name      string
		ips       []string
		taken     int
		redirtied []int // copied indexes (< taken) changed again during the flush
		evicted   []int
		clean     []int // indexes not reached (>= taken) whose flag was cleared
	}{
		{name: "nothing copied", ips: mixed, taken: 0},
		{name: "all copied", ips: mixed, taken: 7},
		{name: "inside IPv4", ips: mixed, taken: 2},
		{name: "at the IPv4/IPv6 boundary", ips: mixed, taken: 4},
		{name: "inside IPv6", ips: mixed, taken: 5},
		{name: "changed again across the boundary", ips: mixed, taken: 6, redirtied: []int{1, 3, 4, 5}},
		{name: "evicted on both sides", ips: mixed, taken: 5, redirtied: []int{0}, evicted: []int{1, 4, 6}},
		{name: "only IPv4", ips: []string{"8.8.8.8", "9.9.9.9", "1.1.1.1"}, taken: 2, redirtied: []int{1}},
		{name: "only IPv6", ips: []string{"2001:db8::1", "::", "::1"}, taken: 1, evicted: []int{2}},
		{name: "not reached, no longer dirty", ips: mixed, taken: 3, clean: []int{3, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Resolver{entries: newEntryMap(), texts: newInterner16(), asns: newInterner32()}
			for _, k := range keysOf(tc.ips...) {
				ce := cacheEntry{flags: flagTracked}
				r.markDirtyLocked(k, &ce)
				r.entries.set(k, ce)
			}
			keys := r.takeDirtyKeys()
			if keys.len() != len(tc.ips) || r.dirty.len() != 0 {
				t.Fatalf("took %d keys, left %d; want %d, 0", keys.len(), r.dirty.len(), len(tc.ips))
			}
			if rows := r.copyDirty(nil, keys.span(0, tc.taken)); len(rows) != tc.taken {
				t.Fatalf("copied %d rows, want %d", len(rows), tc.taken)
			}
			for _, i := range tc.redirtied {
				k := keys.at(i)
				ce, _ := r.entries.get(k)
				r.markDirtyLocked(k, &ce)
				r.entries.set(k, ce)
			}
			want := map[key]bool{}
			for i, k := range keys.all() {
				switch {
				case slices.Contains(tc.evicted, i):
					r.entries.del(k)
				case slices.Contains(tc.clean, i):
					ce, _ := r.entries.get(k)
					ce.flags &^= flagDirty
					r.entries.set(k, ce)
				default:
					want[k] = true
				}
			}
			r.restoreDirty(keys, flushProgress{taken: tc.taken})
			seen := map[key]bool{}
			for _, k := range r.dirty.all() {
				if seen[k] {
					t.Errorf("%v listed twice", k.addr())
				}
				seen[k] = true
				if !want[k] {
					t.Errorf("%v listed, want it dropped (evicted or clean)", k.addr())
				}
			}
			for k := range want {
				ce, _ := r.entries.get(k)
				if !seen[k] || !ce.has(flagDirty) {
					t.Errorf("%v: listed %v, dirty %v; want both", k.addr(), seen[k], ce.has(flagDirty))
				}
			}
		})
	}
}
