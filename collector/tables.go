package collector

// Two hash tables of the engine sized for what they hold, in place of Go
// maps: a map keeps 16 or 20-byte slots at up to 7/8 load and, presized or
// grown, rounds its directory up to a power of two, so at a million rows of
// bans its IP index took ~45 bytes per IP and its pair index ~32 bytes per
// bips row. Both tables probe linearly from a seeded hash (hash/maphash, so
// the IPs fail2ban bans cannot be chosen to collide) and delete by shifting
// the entries behind back, so no tombstones accumulate.

import (
	"hash/maphash"
	"math/bits"
)

// maxLoadNum/maxLoadDen is the highest load either table runs at: linear
// probing stays at a few probes per lookup up to three quarters full.
const (
	maxLoadNum = 3
	maxLoadDen = 4
)

// slotsFor is the number of slots that hold n entries at the highest load.
func slotsFor(n int) int { return n*maxLoadDen/maxLoadNum + 8 }

// home is the slot a hash h starts probing at in a table of n slots: the
// high half of h·n, any n, no power of two needed.
func home(h uint64, n int) int {
	hi, _ := bits.Mul64(h, uint64(n))
	return int(hi)
}

// between reports whether h lies cyclically in (i, j]: an entry whose home
// is h and that sits at j must not move to i when a deletion empties i.
func between(i, h, j int) bool {
	if i <= j {
		return i < h && h <= j
	}
	return i < h || h <= j
}

// ---- IPs ------------------------------------------------------------------

// ipTable indexes engine.ips by address: each slot holds an index into ips
// plus one (0 is empty) and the key is read from ips itself, so a slot is 4
// bytes and the table never holds a copy of an address.
type ipTable struct {
	seed  maphash.Seed
	slots []uint32
	n     int
}

func newIPTable() ipTable { return ipTable{seed: maphash.MakeSeed()} }

func (t *ipTable) hash(k *ipKey) uint64 { return maphash.Comparable(t.seed, *k) }

// count is the number of IPs in the table.
func (t *ipTable) count() int { return t.n }

// find returns the index of k in ips.
func (t *ipTable) find(ips []ipInfo, k ipKey) (uint32, bool) {
	if t.n == 0 {
		return 0, false
	}
	n := len(t.slots)
	for s := home(t.hash(&k), n); ; s++ {
		if s == n {
			s = 0
		}
		v := t.slots[s]
		if v == 0 {
			return 0, false
		}
		if ips[v-1].key == k {
			return v - 1, true
		}
	}
}

// insert adds index i, whose key ips[i].key is not in the table yet.
func (t *ipTable) insert(ips []ipInfo, i uint32) {
	if (t.n+1)*maxLoadDen > len(t.slots)*maxLoadNum {
		t.resize(ips, slotsFor(max(2*t.n, 1024)))
	}
	t.place(&ips[i].key, i)
	t.n++
}

func (t *ipTable) place(k *ipKey, i uint32) {
	n := len(t.slots)
	s := home(t.hash(k), n)
	for t.slots[s] != 0 {
		if s++; s == n {
			s = 0
		}
	}
	t.slots[s] = i + 1
}

func (t *ipTable) resize(ips []ipInfo, slots int) {
	old := t.slots
	t.slots = make([]uint32, slots)
	for _, v := range old {
		if v != 0 {
			t.place(&ips[v-1].key, v-1)
		}
	}
}

// remove takes out index i; ips[i].key must still be its key.
func (t *ipTable) remove(ips []ipInfo, i uint32) {
	n := len(t.slots)
	s := home(t.hash(&ips[i].key), n)
	for t.slots[s] != i+1 {
		if s++; s == n {
			s = 0
		}
	}
	// Shift back the entries of the run behind s that may live at s.
	for j := s; ; {
		if j++; j == n {
			j = 0
		}
		v := t.slots[j]
		if v == 0 {
			break
		}
		if between(s, home(t.hash(&ips[v-1].key), n), j) {
			continue
		}
		t.slots[s] = v
		s = j
	}
	t.slots[s] = 0
	t.n--
}

// ---- (ip, jail) pairs -------------------------------------------------------

// pairTable maps an (ip, jail) pair to the rowid of its latest bips row.
type pairTable struct {
	seed  maphash.Seed
	slots []pairSlot
	n     int
}

// pairSlot is 16 bytes; ip is the IP index plus one (0 is empty).
type pairSlot struct {
	ip    uint32
	jail  uint16
	rowid int64
}

func newPairTable() pairTable { return pairTable{seed: maphash.MakeSeed()} }

func (t *pairTable) hash(ip uint32, jail uint16) uint64 {
	return maphash.Comparable(t.seed, uint64(ip)<<16|uint64(jail))
}

// reserve makes room for n pairs without growing.
func (t *pairTable) reserve(n int) {
	if slotsFor(n) > len(t.slots) {
		t.resize(slotsFor(n))
	}
}

// slot returns the slot of pk, or of the empty slot where it would go.
func (t *pairTable) slot(pk pairKey) int {
	n := len(t.slots)
	s := home(t.hash(pk.ip, pk.jail), n)
	for {
		sl := &t.slots[s]
		if sl.ip == 0 || (sl.ip == pk.ip+1 && sl.jail == pk.jail) {
			return s
		}
		if s++; s == n {
			s = 0
		}
	}
}

// get returns the rowid stored for pk.
func (t *pairTable) get(pk pairKey) (int64, bool) {
	if t.n == 0 {
		return 0, false
	}
	sl := &t.slots[t.slot(pk)]
	return sl.rowid, sl.ip != 0
}

// set stores rowid for pk.
func (t *pairTable) set(pk pairKey, rowid int64) {
	if (t.n+1)*maxLoadDen > len(t.slots)*maxLoadNum {
		// Grow by half, not double: the table was sized for the load.
		t.resize(slotsFor(max(t.n+t.n/2, 1024)))
	}
	sl := &t.slots[t.slot(pk)]
	if sl.ip == 0 {
		*sl = pairSlot{ip: pk.ip + 1, jail: pk.jail}
		t.n++
	}
	sl.rowid = rowid
}

func (t *pairTable) resize(slots int) {
	old := t.slots
	t.slots = make([]pairSlot, slots)
	for _, sl := range old {
		if sl.ip != 0 {
			t.slots[t.slot(pairKey{ip: sl.ip - 1, jail: sl.jail})] = sl
		}
	}
}

// del removes pk (nothing when absent).
func (t *pairTable) del(pk pairKey) {
	if t.n == 0 {
		return
	}
	s := t.slot(pk)
	if t.slots[s].ip == 0 {
		return
	}
	n := len(t.slots)
	for j := s; ; {
		if j++; j == n {
			j = 0
		}
		sl := t.slots[j]
		if sl.ip == 0 {
			break
		}
		if between(s, home(t.hash(sl.ip-1, sl.jail), n), j) {
			continue
		}
		t.slots[s] = sl
		s = j
	}
	t.slots[s] = pairSlot{}
	t.n--
}

// clear removes every pair and keeps the slots.
func (t *pairTable) clear() {
	clear(t.slots)
	t.n = 0
}
