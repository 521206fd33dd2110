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

// ipTable indexes engine.ips by address. A slot is 8 bytes: word and ref.
// ref is the index into ips plus one (0 is empty), with ipv6Ref set for an
// IPv6 address. For an IPv4 address (nearly every banned IP) word is the
// address itself, so a lookup compares in the slot and reads nothing else;
// for IPv6 word is 32 bits of the hash and the key is compared in ips. With
// 4-byte slots that held only the index, each probe of a lookup read the
// key from ips, one more cache miss per probe: at ten million rows a
// restart spent 9.6 s of its 30 in this table's lookups.
type ipTable struct {
	seed  maphash.Seed
	slots []ipSlot
	n     int
}

type ipSlot struct {
	word uint32 // the IPv4 address, or a hash tag for IPv6
	ref  uint32 // index into ips plus one, ipv6Ref for IPv6; 0 is empty
}

// ipv6Ref marks the slot of an IPv6 address; indices stay far below it.
const ipv6Ref = 1 << 31

func newIPTable() ipTable { return ipTable{seed: maphash.MakeSeed()} }

// ipv4InV6 is the prefix of an IPv4-mapped address, the form of every IPv4
// key.
var ipv4InV6 = [12]byte{10: 0xff, 11: 0xff}

// slotKey is what a slot of k holds (ref without its index) and its hash.
func (t *ipTable) slotKey(k *ipKey) (word, v6 uint32, h uint64) {
	if [12]byte(k[:12]) == ipv4InV6 {
		word = uint32(k[12])<<24 | uint32(k[13])<<16 | uint32(k[14])<<8 | uint32(k[15])
		return word, 0, maphash.Comparable(t.seed, word)
	}
	h = maphash.Comparable(t.seed, *k)
	return uint32(h), ipv6Ref, h
}

// slotHash is the hash of the key in sl (its home), read from ips only for
// IPv6.
func (t *ipTable) slotHash(ips []ipInfo, sl ipSlot) uint64 {
	if sl.ref&ipv6Ref == 0 {
		return maphash.Comparable(t.seed, sl.word)
	}
	return maphash.Comparable(t.seed, ips[sl.ref&^ipv6Ref-1].key)
}

// count is the number of IPs in the table.
func (t *ipTable) count() int { return t.n }

// find returns the index of k in ips.
func (t *ipTable) find(ips []ipInfo, k ipKey) (uint32, bool) {
	if t.n == 0 {
		return 0, false
	}
	word, v6, h := t.slotKey(&k)
	n := len(t.slots)
	for s := home(h, n); ; s++ {
		if s == n {
			s = 0
		}
		sl := t.slots[s]
		if sl.ref == 0 {
			return 0, false
		}
		if sl.word == word && sl.ref&ipv6Ref == v6 {
			i := sl.ref&^ipv6Ref - 1
			if v6 == 0 || ips[i].key == k {
				return i, true
			}
		}
	}
}

// insert adds index i, whose key ips[i].key is not in the table yet.
func (t *ipTable) insert(ips []ipInfo, i uint32) {
	if (t.n+1)*maxLoadDen > len(t.slots)*maxLoadNum {
		// Grow by half, not double: 8-byte slots at half load after
		// doubling were 21 bytes an IP.
		t.resize(ips, slotsFor(max(t.n+t.n/2, 1024)))
	}
	word, v6, h := t.slotKey(&ips[i].key)
	t.place(ipSlot{word: word, ref: (i + 1) | v6}, h)
	t.n++
}

func (t *ipTable) place(sl ipSlot, h uint64) {
	n := len(t.slots)
	s := home(h, n)
	for t.slots[s].ref != 0 {
		if s++; s == n {
			s = 0
		}
	}
	t.slots[s] = sl
}

func (t *ipTable) resize(ips []ipInfo, slots int) {
	old := t.slots
	t.slots = make([]ipSlot, slots)
	for _, sl := range old {
		if sl.ref != 0 {
			t.place(sl, t.slotHash(ips, sl))
		}
	}
}

// remove takes out index i; ips[i].key must still be its key.
func (t *ipTable) remove(ips []ipInfo, i uint32) {
	word, v6, h := t.slotKey(&ips[i].key)
	ref := (i + 1) | v6
	n := len(t.slots)
	s := home(h, n)
	for t.slots[s].ref != ref || t.slots[s].word != word {
		if s++; s == n {
			s = 0
		}
	}
	// Shift back the entries of the run behind s that may live at s.
	for j := s; ; {
		if j++; j == n {
			j = 0
		}
		sl := t.slots[j]
		if sl.ref == 0 {
			break
		}
		if between(s, home(t.slotHash(ips, sl), n), j) {
			continue
		}
		t.slots[s] = sl
		s = j
	}
	t.slots[s] = ipSlot{}
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
