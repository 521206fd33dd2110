package geo

import "iter"

// entryMap is the memory tier's index: IPv4 addresses (almost every banned
// IP) keyed by 4 bytes, IPv6 by 16, so a million IPv4 entries cost 20 bytes
// a slot instead of 32. Callers use the 16-byte key form throughout.
type entryMap struct {
	v4 map[[4]byte]cacheEntry
	v6 map[key]cacheEntry
}

func newEntryMap() entryMap {
	return entryMap{v4: make(map[[4]byte]cacheEntry), v6: make(map[key]cacheEntry)}
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
		ce, found := m.v4[k4]
		return ce, found
	}
	ce, found := m.v6[k]
	return ce, found
}

func (m *entryMap) set(k key, ce cacheEntry) {
	if k4, ok := split4(k); ok {
		m.v4[k4] = ce
		return
	}
	m.v6[k] = ce
}

func (m *entryMap) del(k key) {
	if k4, ok := split4(k); ok {
		delete(m.v4, k4)
		return
	}
	delete(m.v6, k)
}

func (m *entryMap) len() int { return len(m.v4) + len(m.v6) }

// all iterates over every entry; like a map range, the body may update or
// delete the entry it is given.
func (m *entryMap) all() iter.Seq2[key, cacheEntry] {
	return func(yield func(key, cacheEntry) bool) {
		for k4, ce := range m.v4 {
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
