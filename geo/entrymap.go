package geo

import (
	"encoding/binary"
	"hash/maphash"
	"iter"
	"math"
	"math/bits"
)

// entryMap is the memory tier's index: IPv4 addresses (almost every banned
// IP) in a hash table of their own (v4Table), IPv6 in a Go map. Callers use
// the 16-byte key form throughout.
type entryMap struct {
	v4 v4Table
	v6 map[key]cacheEntry
}

func newEntryMap() entryMap {
	return entryMap{v4: v4Table{seed: maphash.MakeSeed()}, v6: make(map[key]cacheEntry)}
}

// v4InV6 is the prefix of an IPv4-mapped IPv6 address (::ffff:0:0/96),
// the 16-byte form of every IPv4 key.
var v4InV6 = [12]byte{10: 0xff, 11: 0xff}

func split4(k key) ([4]byte, bool) {
	if [12]byte(k[:12]) == v4InV6 {
		return [4]byte(k[12:]), true
	}
	return [4]byte{}, false
}

func join4(k4 [4]byte) key {
	var k key
	copy(k[:12], v4InV6[:])
	copy(k[12:], k4[:])
	return k
}

func (m *entryMap) get(k key) (cacheEntry, bool) {
	if k4, ok := split4(k); ok {
		return m.v4.get(binary.BigEndian.Uint32(k4[:]))
	}
	ce, found := m.v6[k]
	return ce, found
}

func (m *entryMap) set(k key, ce cacheEntry) {
	if k4, ok := split4(k); ok {
		m.v4.set(binary.BigEndian.Uint32(k4[:]), ce)
		return
	}
	m.v6[k] = ce
}

func (m *entryMap) del(k key) {
	if k4, ok := split4(k); ok {
		m.v4.del(binary.BigEndian.Uint32(k4[:]))
		return
	}
	delete(m.v6, k)
}

func (m *entryMap) len() int { return m.v4.len() + len(m.v6) }

// all iterates over every entry; like a map range, the body may update or
// delete the entry it is given. Unlike a map range it must not add entries.
func (m *entryMap) all() iter.Seq2[key, cacheEntry] {
	return func(yield func(key, cacheEntry) bool) {
		for x, ce := range m.v4.all() {
			var k4 [4]byte
			binary.BigEndian.PutUint32(k4[:], x)
			if !yield(join4(k4), ce) {
				return
			}
		}
		for k, ce := range m.v6 {
			if !yield(k, ce) {
				return
			}
		}
	}
}

// ---- IPv4 -----------------------------------------------------------------

// v4Table maps IPv4 addresses (as big-endian uint32) to entries, in place
// of a map[[4]byte]cacheEntry. A Go map keeps its 20-byte slots at up to
// 7/8 load but doubles as it grows, so its cost per IP swings between about
// 27 and 45 bytes (38 at 2.35M IPs). This table probes linearly from a
// seeded hash (hash/maphash: the IPs fail2ban bans cannot be chosen to
// collide) over keys held apart from their entries, so a probe reads 4-byte
// keys, 16 to a cache line, and the table can run at 7/8 load. Deletion
// shifts the entries behind back, so no tombstones accumulate.
//
// The table is split into v4Segments segments by the hash's top bits, each
// growing by a third on its own, from sizes staggered so that at any size
// of the table their loads are spread evenly between 21/32 and 7/8: about
// 27 bytes an IP at every size instead of a sawtooth. Moving entries is
// most of an insert's time when a segment grows: growing by a third moves
// an entry 4 times on average (by half 3, at 28 bytes an IP; by a quarter
// 5, at 25.5). And one segment grows at a time: a table growing as one
// would hold its old and new arrays at once (above the Go map it replaces
// at 2.35M IPs), a segment 1/64th of that.
//
// Key 0 (0.0.0.0) marks an empty slot, so that address has a field of its
// own.
type v4Table struct {
	seed    maphash.Seed
	segs    [v4Segments]v4Segment
	n       int // entries in segs
	zero    cacheEntry
	hasZero bool
}

// v4Segment is one open-addressing table: keys[i] == 0 is an empty slot,
// vals[i] the entry of keys[i].
type v4Segment struct {
	keys []uint32
	vals []cacheEntry
	n    int
	rung int // of v4Rung: the segment has v4Rung(i, rung) slots once allocated
}

const (
	v4SegmentBits = 6
	v4Segments    = 1 << v4SegmentBits

	// v4MaxLoadNum/v4MaxLoadDen is the highest load of a segment. At 7/8
	// linear probing takes 4.5 probes for a hit and 32 for a miss on
	// average: over 4-byte keys, one cache line and two or three.
	v4MaxLoadNum = 7
	v4MaxLoadDen = 8

	// A segment's sizes are the rungs v4FirstRung·v4Growth^(rung + i/64) of
	// segment i: growing by a third, the segments a 64th of a rung apart.
	v4FirstRung = 32
	v4Growth    = 4.0 / 3
)

// v4Rung is the number of slots of segment i at rung r.
func v4Rung(i, r int) int {
	return int(v4FirstRung * math.Pow(v4Growth, float64(r)+float64(i)/v4Segments))
}

// v4Home is the slot a hash h starts probing at in a segment of n slots:
// the high half of h·n (any n, no power of two needed) from the bits below
// the segment number.
func v4Home(h uint64, n int) int {
	hi, _ := bits.Mul64(h<<v4SegmentBits, uint64(n))
	return int(hi)
}

// v4Between reports whether h lies cyclically in (i, j]: an entry whose home
// is h and that sits at j must not move to i when a deletion empties i.
func v4Between(i, h, j int) bool {
	if i <= j {
		return i < h && h <= j
	}
	return i < h || h <= j
}

func (t *v4Table) hash(x uint32) uint64 { return maphash.Comparable(t.seed, x) }

func segmentOf(h uint64) int { return int(h >> (64 - v4SegmentBits)) }

func (t *v4Table) segment(h uint64) *v4Segment { return &t.segs[segmentOf(h)] }

func (t *v4Table) len() int {
	if t.hasZero {
		return t.n + 1
	}
	return t.n
}

func (t *v4Table) get(x uint32) (cacheEntry, bool) {
	if x == 0 {
		return t.zero, t.hasZero
	}
	h := t.hash(x)
	sg := t.segment(h)
	if sg.n == 0 {
		return cacheEntry{}, false
	}
	s := sg.slot(x, h)
	if sg.keys[s] == 0 {
		return cacheEntry{}, false // without reading vals: a cache miss saved
	}
	return sg.vals[s], true
}

func (t *v4Table) set(x uint32, ce cacheEntry) {
	if x == 0 {
		t.zero, t.hasZero = ce, true
		return
	}
	h := t.hash(x)
	sg := t.segment(h)
	s := -1
	if len(sg.keys) > 0 {
		if s = sg.slot(x, h); sg.keys[s] == x {
			// An update never grows the segment: all() relies on it.
			sg.vals[s] = ce
			return
		}
	}
	if (sg.n+1)*v4MaxLoadDen > len(sg.keys)*v4MaxLoadNum {
		if len(sg.keys) > 0 {
			sg.rung++
		}
		sg.resize(t, v4Rung(segmentOf(h), sg.rung))
		s = sg.slot(x, h)
	}
	sg.keys[s], sg.vals[s] = x, ce
	sg.n++
	t.n++
}

// del removes x (nothing when absent).
func (t *v4Table) del(x uint32) {
	if x == 0 {
		t.zero, t.hasZero = cacheEntry{}, false
		return
	}
	h := t.hash(x)
	sg := t.segment(h)
	if sg.n == 0 {
		return
	}
	s := sg.slot(x, h)
	if sg.keys[s] == 0 {
		return
	}
	// Shift back the entries of the run behind s that may live at s.
	n := len(sg.keys)
	for j := s; ; {
		if j++; j == n {
			j = 0
		}
		y := sg.keys[j]
		if y == 0 {
			break
		}
		if v4Between(s, v4Home(t.hash(y), n), j) {
			continue
		}
		sg.keys[s], sg.vals[s] = y, sg.vals[j]
		s = j
	}
	sg.keys[s], sg.vals[s] = 0, cacheEntry{}
	sg.n--
	t.n--
}

// all iterates over every entry. The body may update or delete the entry it
// is given, and every other entry is still yielded exactly once: each
// segment is scanned from an empty slot (one stays empty, as nothing is
// added), so no run of entries wraps around the scan's end, and a deletion
// only shifts entries the scan has yet to reach back to slots it has not
// left; a slot whose key changed in the body is looked at again. The body must not add entries: a growing
// segment panics the iteration rather than yield entries twice or never.
func (t *v4Table) all() iter.Seq2[uint32, cacheEntry] {
	return func(yield func(uint32, cacheEntry) bool) {
		if t.hasZero && !yield(0, t.zero) {
			return
		}
		for i := range t.segs {
			sg := &t.segs[i]
			if sg.n == 0 {
				continue
			}
			n := len(sg.keys)
			s := 0
			for sg.keys[s] != 0 {
				s++ // a segment is never more than 7/8 full
			}
			for left := n; left > 0; {
				if x := sg.keys[s]; x != 0 {
					if !yield(x, sg.vals[s]) {
						return
					}
					if len(sg.keys) != n {
						panic("geo: entryMap grew during all()")
					}
					if sg.keys[s] != x {
						continue // deleted: s may hold an entry shifted back
					}
				}
				if s++; s == n {
					s = 0
				}
				left--
			}
		}
	}
}

// slot returns the slot of x, or of the empty slot where it would go. The
// segment must have slots.
func (sg *v4Segment) slot(x uint32, h uint64) int {
	n := len(sg.keys)
	for s := v4Home(h, n); ; {
		if y := sg.keys[s]; y == x || y == 0 {
			return s
		}
		if s++; s == n {
			s = 0
		}
	}
}

// resize moves the entries to a segment of the given number of slots. The
// entries come in the order of their old homes, which is (almost) the order
// of their new ones: the new arrays are written front to back.
func (sg *v4Segment) resize(t *v4Table, slots int) {
	keys, vals := make([]uint32, slots), make([]cacheEntry, slots)
	for i, x := range sg.keys {
		if x == 0 {
			continue
		}
		s := v4Home(t.hash(x), slots)
		for keys[s] != 0 {
			if s++; s == slots {
				s = 0
			}
		}
		keys[s], vals[s] = x, sg.vals[i]
	}
	sg.keys, sg.vals = keys, vals
}
