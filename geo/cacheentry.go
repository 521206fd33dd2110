package geo

import (
	"net/netip"
	"time"
)

// key is an IP in 16-byte form; IPv4 addresses are stored IPv4-mapped.
type key [16]byte

func keyOf(ip netip.Addr) key { return key(ip.As16()) }

func (k key) addr() netip.Addr { return netip.AddrFrom16(k).Unmap() }

// cacheEntry is one IP in the memory tier: 16 bytes, no pointers, so the map
// holding a million of them is small and never scanned by the garbage
// collector. Strings are interned (see interner).
type cacheEntry struct {
	// at is the Unix second of the last answer (failures == 0) or of the
	// last failure (failures > 0); 0 = never asked.
	at       uint32
	asn      uint32 // asns index
	text     uint16 // texts index: the country name when there is a country, else the message
	country  [2]byte
	provider uint8 // texts index of the provider name (a handful of values)
	failures uint8
	flags    uint8
}

func (ce *cacheEntry) resolvedAt() uint32 {
	if ce.failures == 0 {
		return ce.at
	}
	return 0
}

func (ce *cacheEntry) failedAt() uint32 {
	if ce.failures > 0 {
		return ce.at
	}
	return 0
}

func (ce *cacheEntry) hasCountry() bool { return ce.country != [2]byte{} }

// name and message share one field: a country has a name, no message.
func (ce *cacheEntry) nameIndex() uint16 {
	if ce.hasCountry() {
		return ce.text
	}
	return 0
}

func (ce *cacheEntry) messageIndex() uint16 {
	if ce.hasCountry() {
		return 0
	}
	return ce.text
}

const (
	flagTracked   uint8 = 1 << iota // the engine counts the IP
	flagPending                     // in a provider queue
	flagDirty                       // changed since the last flush
	flagFinal                       // the answer is final (a country, or private/reserved/invalid)
	flagRequested                   // asked for by Lookup or ReResolve: resolved even when not tracked
)

func (ce *cacheEntry) has(f uint8) bool { return ce.flags&f != 0 }

func unixSeconds(t time.Time) uint32 {
	s := t.Unix()
	if s <= 0 {
		return 0
	}
	if s > int64(^uint32(0)) {
		return ^uint32(0)
	}
	return uint32(s)
}

func fromUnixSeconds(s uint32) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(int64(s), 0).UTC()
}
