package collector

// IP interning and countries: every IP the engine holds is interned once
// (ips, ipIndex) with a reference count and its country; jail and country
// names are interned as small indices. refreshCountries moves the counts of
// IPs whose country became known.

import (
	"math"
	"net/netip"
	"sort"
	"strings"
	"unicode/utf8"
)

// ipKey is an IP as its 16-byte form. parseIP unmaps IPv4-mapped IPv6
// addresses and drops zones, so the 16 bytes name one address exactly; and
// unlike netip.Addr the key holds no pointer, so neither the IP table nor
// its index costs the garbage collector a scan.
type ipKey [16]byte

func keyOf(a netip.Addr) ipKey { return a.As16() }

// addr is the address of k (IPv4 for the IPv4-mapped range).
func (k ipKey) addr() netip.Addr { return netip.AddrFrom16(k).Unmap() }

// ipInfo is what the engine knows of one interned IP; its reference count
// is apart, in engine.ipRefs.
type ipInfo struct {
	key     ipKey
	country uint16 // index into engine.countries; 0 is UnknownCountry
}

// seriesKey is a (jail, country) pair: the label set of the engine's series.
type seriesKey struct {
	jail    uint16
	country uint16
}

// validLabel returns name with every byte sequence that is not UTF-8
// replaced by U+FFFD: a jail name is a label value, and client_golang
// refuses (MustNewConstMetric panics on) a label value that is not UTF-8,
// while fail2ban's database stores whatever bytes a jail was named with.
func validLabel(name string) string {
	if utf8.ValidString(name) {
		return name
	}
	return strings.ToValidUTF8(name, "\uFFFD")
}

func (e *engine) jail(name string) uint16 {
	name = validLabel(name)
	if i, ok := e.jailIndex[name]; ok {
		return i
	}
	if len(e.jailNames) >= math.MaxUint16 {
		// 65k jails is no fail2ban configuration; fold the rest into the
		// last one rather than overflow.
		return uint16(len(e.jailNames) - 1)
	}
	i := uint16(len(e.jailNames))
	e.jailNames = append(e.jailNames, name)
	e.jailIndex[name] = i
	return i
}

func (e *engine) country(code string) uint16 {
	if code == "" {
		return 0
	}
	if i, ok := e.countryIndex[code]; ok {
		return i
	}
	i := uint16(len(e.countryNames))
	e.countryNames = append(e.countryNames, code)
	e.countryIndex[code] = i
	return i
}

// countryOf is country for a normalized code as two bytes (zero: none),
// without making a string of a code already interned.
func (e *engine) countryOf(code [2]byte) uint16 {
	if code == ([2]byte{}) {
		return 0
	}
	if i, ok := e.countryIndex[string(code[:])]; ok {
		return i
	}
	return e.country(string(code[:]))
}

// internIP returns the index of addr, adding a reference.
func (e *engine) internIP(addr netip.Addr) uint32 {
	key := keyOf(addr)
	if i, ok := e.ipIndex.find(e.ips, key); ok {
		e.ipRefs[i]++
		return i
	}
	info := ipInfo{key: key, country: e.country(normalizeCountry(e.countries.Country(addr)))}
	var i uint32
	if n := len(e.ipFree); n > 0 {
		i = e.ipFree[n-1]
		e.ipFree = e.ipFree[:n-1]
		e.ips[i] = info
		e.ipRefs[i] = 1
		e.ipFirstEvent[i] = noEvent
	} else {
		i = uint32(len(e.ips))
		e.ips = append(e.ips, info)
		e.ipRefs = append(e.ipRefs, 1)
		e.ipFirstEvent = append(e.ipFirstEvent, noEvent)
	}
	e.ipIndex.insert(e.ips, i)
	e.countries.Track(addr)
	return i
}

func (e *engine) releaseIP(i uint32) {
	e.ipRefs[i]--
	if e.ipRefs[i] > 0 {
		return
	}
	key := e.ips[i].key
	e.ipIndex.remove(e.ips, i)
	e.ips[i] = ipInfo{}
	e.ipFree = append(e.ipFree, i)
	e.countries.Untrack(key.addr())
}

// normalizeCountry accepts only two ASCII letters, upper-cased.
func normalizeCountry(code string) string {
	if len(code) != 2 {
		return ""
	}
	c := strings.ToUpper(code)
	if c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
		return ""
	}
	return c
}

// parseIP parses fail2ban's ip column.
func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// ---- countries ---------------------------------------------------------

// refreshCountries moves IPs whose country changed. It looks only when the
// CountryLookup's generation changed; RunCountryRefresh usually did the
// work before, off the scrape path.
func (e *engine) refreshCountries() {
	gen := e.countries.Generation()
	if gen == e.countryGen {
		return
	}
	reassigned, all := e.countryScope()
	e.countryGen, e.reassignGen = gen, reassigned
	var moves []countryMove
	for i := range e.ips {
		info := &e.ips[i]
		if e.ipRefs[i] == 0 || (!all && info.country != 0) {
			continue
		}
		if c := e.country(normalizeCountry(e.countries.Country(info.key.addr()))); c != info.country {
			moves = append(moves, countryMove{ip: uint32(i), to: c})
		}
	}
	e.moveCountries(moves)
}

// countryScope tells which IPs a country pass must look at: all of them
// when an IP that had a country may have got another one (or the lookup
// does not tell), else only those without a country. Read it after
// Generation: geo moves Reassigned first.
func (e *engine) countryScope() (reassigned uint64, all bool) {
	if e.reassigns == nil {
		return 0, true
	}
	reassigned = e.reassigns.Reassigned()
	return reassigned, reassigned != e.reassignGen
}

// noEvent is the ipFirstEvent of an IP without ban events.
const noEvent = math.MaxUint32

// countryMove gives the IP at index ip the country index to.
type countryMove struct {
	ip uint32
	to uint16
}

// moveCountries gives each IP of moves its new country and moves its counts
// in fail2ban_banned_ips and fail2ban_recent_bans with it. The window counts
// move in one pass over the ban events from the earliest of the moved IPs'
// (ipFirstEvent), with a lookup per event; when many IPs moved (a first
// start: every IP was interned before geo answered) counting the windows
// again is cheaper. A pass of the few IPs geo placed since the last one
// (new bans) touches their banned pairs and the last moments of ban events
// only, so the lock it holds stays short whatever the engine holds.
func (e *engine) moveCountries(moves []countryMove) {
	if len(moves) == 0 {
		return
	}
	old := e.movedFrom(moves)
	for _, m := range moves {
		e.ips[m.ip].country = m.to
	}
	moveBanned := func(pk pairKey, o uint16) {
		e.changes[familyBanned]++
		jc := seriesKey{jail: pk.jail, country: o}
		if e.bannedNow[jc]--; e.bannedNow[jc] <= 0 {
			delete(e.bannedNow, jc)
		}
		e.bannedNow[seriesKey{jail: pk.jail, country: e.ips[pk.ip].country}]++
	}
	if len(moves)*len(e.jailNames) < len(e.bannedRefs)/4 {
		// Few IPs: look their pairs up, jail by jail.
		for _, m := range moves {
			for j := range e.jailNames {
				pk := pairKey{ip: m.ip, jail: uint16(j)}
				if _, ok := e.bannedRefs[pk]; ok {
					moveBanned(pk, old.of(m.ip))
				}
			}
		}
	} else {
		for pk := range e.bannedRefs {
			if o := old.of(pk.ip); o != unchangedCountry {
				moveBanned(pk, o)
			}
		}
	}
	from := len(e.banEvents)
	for w := range e.windows {
		from = min(from, e.cursors[w])
	}
	first := uint32(noEvent)
	for _, m := range moves {
		first = min(first, e.ipFirstEvent[m.ip])
	}
	if first == noEvent {
		return // no moved IP has a ban event
	}
	from += sort.Search(len(e.banEvents)-from, func(i int) bool { return e.banEvents[from+i].timeOfBan >= first })
	if len(moves) >= recountMoves && len(moves) >= e.ipIndex.count()/8 {
		// Many IPs moved: counting the windows again is cheaper than
		// moving each of their ban events. The windows' generation moves
		// only if a moved IP has a counted ban event.
		for j := from; j < len(e.banEvents); j++ {
			if t := &e.banEvents[j]; t.alive() && old.of(t.ip) != unchangedCountry {
				e.changes[familyRecent]++
				e.countWindows()
				return
			}
		}
		return
	}
	for j := from; j < len(e.banEvents); j++ {
		t := &e.banEvents[j]
		if !t.alive() {
			continue
		}
		o := old.of(t.ip)
		if o == unchangedCountry {
			continue
		}
		for w := range e.windows {
			if j >= e.cursors[w] {
				e.decWindow(w, seriesKey{jail: t.jail, country: o}) // counts the change
				e.windowCount[w][seriesKey{jail: t.jail, country: e.ips[t.ip].country}]++
			}
		}
	}
}

// movedFrom records the country each IP of moves had before: a dense
// slice over every IP when many move, else a map (a slice of a few MB per
// pass of a handful of IPs would cost more than the pass).
func (e *engine) movedFrom(moves []countryMove) previousCountries {
	var p previousCountries
	if len(moves) > len(e.ips)/64 {
		p.dense = make([]uint16, len(e.ips))
		for k := range p.dense {
			p.dense[k] = unchangedCountry
		}
		for _, m := range moves {
			p.dense[m.ip] = e.ips[m.ip].country
		}
		return p
	}
	p.sparse = make(map[uint32]uint16, len(moves))
	for _, m := range moves {
		p.sparse[m.ip] = e.ips[m.ip].country
	}
	return p
}

// previousCountries is the country moved IPs had before moveCountries.
type previousCountries struct {
	dense  []uint16
	sparse map[uint32]uint16
}

// of returns the country IP i had before it moved, or unchangedCountry.
func (p previousCountries) of(i uint32) uint16 {
	if p.dense != nil {
		return p.dense[i]
	}
	if c, ok := p.sparse[i]; ok {
		return c
	}
	return unchangedCountry
}

// recountMoves is the least number of moved IPs for which moveCountries
// counts the windows again instead of moving ban events one by one.
const recountMoves = 4096

// unchangedCountry marks, in refreshCountries, an IP whose country did not
// change (country indices are far below it: two-letter codes).
const unchangedCountry = math.MaxUint16
