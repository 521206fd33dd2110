package collector

import (
	"cmp"
	"container/heap"
	"maps"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
)

// The engine holds fail2ban's bans in memory and keeps the aggregates the
// collector exposes up to date incrementally. It knows nothing of SQL: the
// source feeds it rows (applyBans, applyBips, replace*Range) and it answers
// with counts. Every method runs under the Exporter's lock.

// Skip reasons of rows the engine cannot count.
const (
	skipNullJail       = "null_jail"
	skipNullIP         = "null_ip"
	skipInvalidIP      = "invalid_ip"
	skipInvalidTime    = "invalid_timeofban"
	skipInvalidBantime = "invalid_bantime"
)

// row is one row of fail2ban's bans or bips table as the source read it.
// Numbers are SQLite's CAST(x AS INTEGER) of the column, so the engine's
// fingerprints equal those SQLite computes.
// The flags come last so the struct has no padding between fields (88
// bytes rather than 120): the source holds a chunk of them at a time.
type row struct {
	Rowid      int64
	TimeOfBan  int64
	Bantime    int64
	IPLen      int64
	JailLen    int64
	Bancount   int64 // 0 where the schema has none (schema 2)
	Jail       string
	IP         string
	JailNull   bool
	IPNull     bool
	TimeValid  bool // typeof(timeofban) is integer or real
	BanValid   bool // typeof(bantime) is integer or real (always true for schema 2)
	HasBantime bool // false for schema 2 bans rows
}

// fingerprint sums what identifies the rows of one rowid bucket. SQLite
// computes the same sums with the query in source.fingerprints, so a bucket
// whose rows changed in any way the engine cares about shows a different
// fingerprint.
type fingerprint struct {
	Count    int64
	RowidSum int64
	MixSum   int64
}

// fingerprintModulus keeps the sums of one bucket far from overflowing.
const fingerprintModulus = 1000003

// rowMix is the part of a row's fingerprint beyond its rowid: it changes
// when timeofban, bantime, the ip's or the jail's spelling change.
func rowMix(r *row) int32 {
	return int32(r.TimeOfBan%fingerprintModulus + 3*(r.Bantime%fingerprintModulus) + 5*r.IPLen + 7*r.JailLen)
}

func (f *fingerprint) add(rowid int64, mix int32, sign int64) {
	f.Count += sign
	f.RowidSum += sign * rowid
	f.MixSum += sign * int64(mix)
}

// bucketShift groups rowids into buckets of 8192 for reconciliation.
const bucketShift = 13

func bucketOf(rowid int64) int64 { return rowid >> bucketShift }

// noIP marks a stored row that was skipped.
const noIP = math.MaxUint32

// event is one row of bans.
type event struct {
	rowid int64
	mix   int32
	tob   uint32
	ip    uint32 // noIP for a skipped row
	jail  uint16
	skip  uint8 // index into skipReasons plus one; 0 when counted
}

// tobEntry is one distinct ban event (jail, ip, timeofban) in time order,
// for the trailing windows. Exact duplicate rows (fail2ban issue 1844) share
// one entry: count is the number of rows. With the archive on, kept entries
// are archived history: they stay counted after their rows left bans (purge,
// unbanip) until they leave the longest window, and hold a reference of
// their own on their IP. An entry neither counted nor kept is dead and
// dropped at the next compaction. stored marks an event loaded from the
// archive at start: a row of bans with the same event is not offered to the
// archive again.
type tobEntry struct {
	tob    uint32
	ip     uint32
	count  uint32
	jail   uint16
	kept   bool
	stored bool
}

// alive reports whether t counts in the windows.
func (t *tobEntry) alive() bool { return t.count > 0 || t.kept }

func compareTob(a, b *tobEntry) int {
	if c := cmp.Compare(a.tob, b.tob); c != 0 {
		return c
	}
	if c := cmp.Compare(a.jail, b.jail); c != 0 {
		return c
	}
	return cmp.Compare(a.ip, b.ip)
}

// record is one row of bips (schema 4) or, for schema 2, the latest ban of
// an (ip, jail) pair derived from bans.
type record struct {
	rowid   int64
	bantime int64
	tob     uint32
	ip      uint32
	mix     int32
	jail    uint16
	skip    uint8
	state   uint8 // recBanned, recDead: one byte keeps a record at 32 bytes
}

const (
	recBanned uint8 = 1 << iota // counted in banned right now
	recDead                     // removed; kept until compaction
)

func (r *record) banned() bool { return r.state&recBanned != 0 }
func (r *record) dead() bool   { return r.state&recDead != 0 }

type pairKey struct {
	ip   uint32
	jail uint16
}

// expiry is an entry of the expiry heap: record idx expires at t.
type expiry struct {
	at    int64
	rowid int64
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// ipKey is an IP as its 16-byte form. parseIP unmaps IPv4-mapped IPv6
// addresses and drops zones, so the 16 bytes name one address exactly; and
// unlike netip.Addr the key holds no pointer, so neither the IP table nor
// its index costs the garbage collector a scan.
type ipKey [16]byte

func keyOf(a netip.Addr) ipKey { return a.As16() }

// addr is the address of k (IPv4 for the IPv4-mapped range).
func (k ipKey) addr() netip.Addr { return netip.AddrFrom16(k).Unmap() }

// ipInfo is what the engine knows of one interned IP.
type ipInfo struct {
	key     ipKey
	country uint16 // index into engine.countries; 0 is UnknownCountry
	refs    uint32 // events and records referencing this IP
}

// jcKey is a (jail, country) pair: the label set of the engine's series.
type jcKey struct {
	jail    uint16
	country uint16
}

var skipReasons = []string{skipNullJail, skipNullIP, skipInvalidIP, skipInvalidTime, skipInvalidBantime}

func skipIndex(reason string) uint8 {
	for i, r := range skipReasons {
		if r == reason {
			return uint8(i + 1)
		}
	}
	panic("unknown skip reason " + reason)
}

// engine is the in-memory model of fail2ban's database.
type engine struct {
	countries     CountryLookup
	windows       []Window
	longest       int // index of the longest window
	schema        int
	defaultBanSec int64
	// keep is true with the archive on: ban events stay in the windows
	// after their rows leave fail2ban's bans, until they leave the longest
	// window (tobEntry.kept).
	keep bool
	// offer collects, with keep, the ban events of the rows counted since
	// the last takeOffer, for the archive, in chunks of offerChunkLen.
	offer [][]pendingOffer
	// backfill is set when a startup read has more rows for the archive
	// than backfillAbove: it offers none of them, and the Exporter reads
	// them again for the archive in the background (see backfill.go).
	backfill *backfillState

	jailNames []string
	jailIndex map[string]uint16

	countryNames []string
	countryIndex map[string]uint16
	countryGen   uint64

	ips     []ipInfo
	ipIndex map[ipKey]uint32
	ipFree  []uint32

	// bans
	events  []event    // sorted by rowid
	byTob   []tobEntry // sorted by compareTob
	deadTob int        // entries of byTob with count 0
	newTob  []tobEntry // added rows not yet merged into byTob
	tobTail []tobEntry // scratch of mergeTob
	born    []tobEntry // scratch of mergeTob
	cursors []int      // per window: first index of byTob inside the window
	tobHint int        // where searchTob starts: the last position found
	// stored counts the entries of byTob loaded from the archive (stored)
	// until the initial load ends; 0 afterwards, when rows are
	// new events and no longer looked up.
	stored      int
	lastNow     int64
	windowCount []map[jcKey]int
	bansFP      map[int64]fingerprint

	// bips (schema 4) or derived latest bans (schema 2)
	records    []record // sorted by rowid
	deadRecs   int
	liveRecs   int
	recByPair  map[pairKey]int64 // pair → rowid of its latest record
	expiries   expiryHeap
	bannedRefs map[pairKey]uint16 // banned records per pair
	bannedNow  map[jcKey]int
	bipsFP     map[int64]fingerprint
	synth      int64 // last rowid given to a derived schema-2 record

	skipped map[[2]string]int // (table, reason) → rows

	// bans_total
	live       bool // past the initial load: new events count into bans_total
	bansTotal  map[jcKey]uint64
	pending    []pendingBan
	pendingAge time.Duration
	// reread holds the ban events a reconciliation took out and is about
	// to read again: they are not new and must not count in bans_total.
	reread map[eventKey]struct{}
}

// eventKey names one distinct ban event independently of IP indices (an IP
// index can be freed and reused while a range is replaced).
type eventKey struct {
	addr netip.Addr
	tob  uint32
	jail uint16
}

type pendingBan struct {
	addr  netip.Addr
	jail  uint16
	since int64
}

// engineCarry is what survives a reload of the whole database, so that
// bans_total never goes down and, with the archive on, the archived history
// stays in the windows.
type engineCarry struct {
	jailNames    []string
	countryNames []string
	bansTotal    map[jcKey]uint64
	// kept are the events counted in the longest window (archive on).
	kept []archive.Event
	// offer are events not yet handed to the archive (jail indices of
	// jailNames, which the next engine keeps).
	offer [][]pendingOffer
}

func newEngine(countries CountryLookup, windows []Window, schema int, defaultBantime time.Duration, carry *engineCarry) *engine {
	e := &engine{
		countries:     countries,
		windows:       windows,
		schema:        schema,
		defaultBanSec: int64(defaultBantime / time.Second),
		jailIndex:     map[string]uint16{},
		countryIndex:  map[string]uint16{UnknownCountry: 0},
		countryNames:  []string{UnknownCountry},
		ipIndex:       map[ipKey]uint32{},
		cursors:       make([]int, len(windows)),
		windowCount:   make([]map[jcKey]int, len(windows)),
		bansFP:        map[int64]fingerprint{},
		recByPair:     map[pairKey]int64{},
		bannedRefs:    map[pairKey]uint16{},
		bannedNow:     map[jcKey]int{},
		bipsFP:        map[int64]fingerprint{},
		skipped:       map[[2]string]int{},
		bansTotal:     map[jcKey]uint64{},
		pendingAge:    2 * time.Minute,
		countryGen:    countries.Generation(),
	}
	for i := range e.windowCount {
		e.windowCount[i] = map[jcKey]int{}
		if windows[i].Length > windows[e.longest].Length {
			e.longest = i
		}
	}
	if carry != nil {
		e.jailNames = carry.jailNames
		for i, n := range carry.jailNames {
			e.jailIndex[n] = uint16(i)
		}
		e.countryNames = carry.countryNames
		for i, n := range carry.countryNames {
			e.countryIndex[n] = uint16(i)
		}
		e.bansTotal = carry.bansTotal
		e.offer = carry.offer
	}
	return e
}

// reserve sizes the engine's tables before the initial load of a database
// with bans and bips rows (bips is 0 for schema 2), so the load neither
// copies its largest slices while they double nor leaves them with up to
// twice the room they need. A few percent of headroom takes in new bans for
// a while before the first growth.
func (e *engine) reserve(bans, bips int64) {
	if len(e.events) == 0 && bans > 0 {
		e.events = make([]event, 0, room(bans))
		// byTob may already hold the archive's events (loadHistory),
		// most of them the same events as the rows: room for the larger
		// of the two.
		e.reserveTob(max(int64(len(e.byTob)), bans))
	}
	if len(e.records) == 0 && bips > 0 {
		e.records = make([]record, 0, room(bips))
		// One entry per (ip, jail) pair: bips has one row per pair.
		e.recByPair = make(map[pairKey]int64, bips)
	}
}

// reserveTob makes room in byTob for n entries in one allocation (with
// headroom when it has to grow). Before the archive's events are loaded it is sized from the
// archive's event count, so the load neither doubles byTob step by step nor
// copies it again for the rows of bans, which are mostly the same events.
func (e *engine) reserveTob(n int64) {
	if int64(cap(e.byTob)) < n {
		grown := make([]tobEntry, len(e.byTob), room(n))
		copy(grown, e.byTob)
		e.byTob = grown
	}
}

// room is the capacity reserved for n rows: a few percent of headroom takes
// in new bans for a while before the first growth.
func room(n int64) int {
	if n <= 0 {
		return 0
	}
	return int(n + n/16 + 1024)
}

func (e *engine) carry() *engineCarry {
	e.settlePending(e.lastNow, true)
	c := &engineCarry{jailNames: e.jailNames, countryNames: e.countryNames, bansTotal: e.bansTotal, offer: e.offer}
	if e.backfill != nil {
		// The next engine reads another file: what the backfill has not
		// read yet is offered from the engine's own events.
		c.offer = append(c.offer, e.backfill.abandon(e))
		e.backfill = nil
	}
	if e.keep {
		e.mergeTob(e.lastNow)
		for i := e.cursors[e.longest]; i < len(e.byTob); i++ {
			if t := &e.byTob[i]; t.alive() {
				c.kept = append(c.kept, archive.Event{Jail: e.jailNames[t.jail], IP: e.ips[t.ip].key.addr(), TimeOfBan: int64(t.tob)})
			}
		}
	}
	return c
}

// addArchived counts an archived ban event (loaded from the archive at
// start, or carried over a reload) that belongs to no row of bans: a kept
// entry. A row of bans with the same (jail, ip, timeofban) read later is
// the same event and counts once. Events older than the longest window are
// left out: no window counts them. stored is true for events read from the
// archive itself (not carried over a reload, where some may not be written
// yet): rows of bans with the same event are then not offered again. The
// caller calls mergeTob after the batch.
func (e *engine) addArchived(ev *archive.Event, now int64, stored bool) {
	addr := ev.IP.Unmap().WithZone("")
	if ev.Jail == "" || !addr.IsValid() || ev.TimeOfBan > math.MaxUint32 || !e.inWindow(e.longest, ev.TimeOfBan, now) {
		return
	}
	e.newTob = append(e.newTob, tobEntry{tob: uint32(ev.TimeOfBan), ip: e.internIP(addr), jail: e.jail(ev.Jail), kept: true, stored: stored})
}

// archived reports whether the ban event (tob, jail, ip) was loaded from the
// archive: it is stored there already. byTob holds the loaded events merged.
func (e *engine) archived(tob uint32, jail uint16, ip uint32) bool {
	if e.stored == 0 {
		return false
	}
	i, found := e.searchTob(&tobEntry{tob: tob, jail: jail, ip: ip})
	return found && e.byTob[i].stored
}

// searchTob finds key in byTob like a binary search, but gallops out from
// the position of the previous search first: rows of bans come in rowid
// order, which is nearly timeofban order, so consecutive searches land
// close together and touch a few cache lines instead of twenty.
func (e *engine) searchTob(key *tobEntry) (int, bool) {
	n := len(e.byTob)
	lo, hi := 0, n
	if h := e.tobHint; h < n {
		if compareTob(&e.byTob[h], key) <= 0 {
			// byTob[lo] <= key; find hi with key < byTob[hi].
			lo = h
			for step := 1; lo+step < n; step *= 2 {
				if compareTob(&e.byTob[lo+step], key) > 0 {
					hi = lo + step
					break
				}
				lo += step
			}
		} else {
			// key < byTob[hi]; find lo with byTob[lo] <= key.
			hi = h
			for step := 1; hi-step >= 0; step *= 2 {
				if compareTob(&e.byTob[hi-step], key) <= 0 {
					lo = hi - step
					break
				}
				hi -= step
			}
		}
	}
	i, found := slices.BinarySearchFunc(e.byTob[lo:hi], key, func(a tobEntry, b *tobEntry) int { return compareTob(&a, b) })
	e.tobHint = lo + i
	return lo + i, found
}

// pendingOffer is a ban event waiting to be offered to the archive: 40
// bytes and pointer-free, where an archive.Event is 64 with a string and a
// netip.Addr the garbage collector scans. A startup read that archives a
// million rows holds them all until the archive takes them.
type pendingOffer struct {
	ip       ipKey
	bantime  int64
	bancount int64
	tob      uint32
	jail     uint16
}

// offerChunkLen is the length of a chunk of offers. The offers of a read are
// a list of chunks, never one growing slice: they accumulate without being
// copied, and the startup read's are released chunk by chunk as the archive
// takes them, so memory falls while the archive catches up.
const offerChunkLen = 8192

// addOffer collects one event for the archive.
func (e *engine) addOffer(o pendingOffer) {
	n := len(e.offer)
	if n == 0 || len(e.offer[n-1]) == offerChunkLen {
		var chunk []pendingOffer
		if !e.live {
			// The startup read: full chunks, allocated once.
			chunk = make([]pendingOffer, 0, offerChunkLen)
		}
		e.offer = append(e.offer, chunk)
		n++
	}
	e.offer[n-1] = append(e.offer[n-1], o)
}

// offerBatch is what takeOffer hands over: the collected events and the
// jail names their indices refer to (a snapshot of jailNames, which only
// ever grows by append, so it is safe to read without the engine's lock).
type offerBatch struct {
	chunks [][]pendingOffer
	jails  []string
}

// len is the number of events in b.
func (b *offerBatch) len() int {
	n := 0
	for _, c := range b.chunks {
		n += len(c)
	}
	return n
}

// take converts chunk i into archive events and releases it.
func (b *offerBatch) take(i int) []archive.Event {
	out := convertOffers(b.chunks[i], b.jails)
	b.chunks[i] = nil
	return out
}

// convertOffers converts offers into archive events; jails names their
// jail indices.
func convertOffers(offers []pendingOffer, jails []string) []archive.Event {
	out := make([]archive.Event, len(offers))
	for k := range offers {
		o := &offers[k]
		out[k] = archive.Event{Jail: jails[o.jail], IP: o.ip.addr(), TimeOfBan: int64(o.tob), Bantime: o.bantime, Bancount: o.bancount}
	}
	return out
}

// all converts every chunk into archive events.
func (b *offerBatch) all() []archive.Event {
	if len(b.chunks) == 1 {
		return b.take(0)
	}
	out := make([]archive.Event, 0, b.len())
	for i := range b.chunks {
		out = append(out, b.take(i)...)
	}
	return out
}

// takeOffer returns the events collected for the archive and starts a new
// collection.
func (e *engine) takeOffer() offerBatch {
	b := offerBatch{chunks: e.offer, jails: e.jailNames}
	e.offer = nil
	return b
}

func (e *engine) jail(name string) uint16 {
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

// internIP returns the index of addr, adding a reference.
func (e *engine) internIP(addr netip.Addr) uint32 {
	key := keyOf(addr)
	if i, ok := e.ipIndex[key]; ok {
		e.ips[i].refs++
		return i
	}
	info := ipInfo{key: key, refs: 1, country: e.country(normalizeCountry(e.countries.Country(addr)))}
	var i uint32
	if n := len(e.ipFree); n > 0 {
		i = e.ipFree[n-1]
		e.ipFree = e.ipFree[:n-1]
		e.ips[i] = info
	} else {
		i = uint32(len(e.ips))
		e.ips = append(e.ips, info)
	}
	e.ipIndex[key] = i
	e.countries.Track(addr)
	return i
}

func (e *engine) releaseIP(i uint32) {
	e.ips[i].refs--
	if e.ips[i].refs > 0 {
		return
	}
	key := e.ips[i].key
	delete(e.ipIndex, key)
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

// classify validates r and returns its skip reason ("" when countable).
func classify(r *row, needBantime bool) (netip.Addr, string) {
	switch {
	case r.JailNull:
		return netip.Addr{}, skipNullJail
	case r.IPNull:
		return netip.Addr{}, skipNullIP
	}
	addr, ok := parseIP(r.IP)
	if !ok {
		return netip.Addr{}, skipInvalidIP
	}
	if !r.TimeValid || r.TimeOfBan < 0 || r.TimeOfBan > math.MaxUint32 {
		return netip.Addr{}, skipInvalidTime
	}
	if needBantime && !r.BanValid {
		return netip.Addr{}, skipInvalidBantime
	}
	return addr, ""
}

func (e *engine) addSkip(table string, reason uint8, delta int) {
	k := [2]string{table, skipReasons[reason-1]}
	e.skipped[k] += delta
	if e.skipped[k] <= 0 {
		delete(e.skipped, k)
	}
}

func addFP(m map[int64]fingerprint, rowid int64, mix int32, sign int64) {
	b := bucketOf(rowid)
	fp := m[b]
	fp.add(rowid, mix, sign)
	if fp.Count == 0 {
		delete(m, b)
	} else {
		m[b] = fp
	}
}

// ---- bans -------------------------------------------------------------

// addEvent takes one bans row into account and returns its event; the
// caller stores it in rowid order and calls mergeTob after the batch.
func (e *engine) addEvent(r *row, now int64) event {
	ev := event{rowid: r.Rowid, mix: rowMix(r), ip: noIP}
	addr, reason := classify(r, false)
	if reason != "" {
		ev.skip = skipIndex(reason)
		e.addSkip("bans", ev.skip, 1)
		return ev
	}
	ev.jail = e.jail(r.Jail)
	ev.ip = e.internIP(addr)
	ev.tob = uint32(r.TimeOfBan)
	e.newTob = append(e.newTob, tobEntry{tob: ev.tob, ip: ev.ip, jail: ev.jail, count: 1})
	// A startup read in backfill mode offers nothing (the backfill reads
	// its rows again); rows read later are offered as always.
	if e.keep && (e.backfill == nil || e.live) && !e.archived(ev.tob, ev.jail, ev.ip) {
		e.addOffer(pendingOffer{ip: keyOf(addr), bantime: rowBantime(r), bancount: r.Bancount, tob: ev.tob, jail: ev.jail})
	}
	if e.schema == 2 {
		e.v2Latest(pairKey{ip: ev.ip, jail: ev.jail}, ev.tob, now)
	}
	return ev
}

// removeEvent takes a stored event out of every aggregate. byTob must be
// merged (newTob empty). With the archive on, the event's entry is kept: it
// stays in the windows until it leaves the longest one.
func (e *engine) removeEvent(ev *event, now int64) {
	if ev.skip != 0 {
		e.addSkip("bans", ev.skip, -1)
		return
	}
	if e.backfill != nil {
		e.backfill.removed(e, ev)
	}
	key := tobEntry{tob: ev.tob, ip: ev.ip, jail: ev.jail}
	i, found := slices.BinarySearchFunc(e.byTob, &key, func(a tobEntry, b *tobEntry) int { return compareTob(&a, b) })
	if found && e.byTob[i].count > 0 {
		t := &e.byTob[i]
		t.count--
		if t.count == 0 && t.kept {
			if !e.inWindow(e.longest, int64(t.tob), now) {
				e.dropKept(t)
			}
		} else if t.count == 0 {
			jc := jcKey{jail: t.jail, country: e.ips[t.ip].country}
			for w := range e.windows {
				if e.inWindow(w, int64(t.tob), now) {
					e.decWindow(w, jc)
				}
			}
			e.deadTob++
		}
	}
	e.releaseIP(ev.ip)
}

// dropKept ends a kept entry without rows that left the longest window.
func (e *engine) dropKept(t *tobEntry) {
	t.kept = false
	e.deadTob++
	e.releaseIP(t.ip)
}

func (e *engine) inWindow(w int, tob, now int64) bool {
	return tob >= now-int64(e.windows[w].Length/time.Second)
}

func (e *engine) decWindow(w int, jc jcKey) {
	m := e.windowCount[w]
	if m[jc]--; m[jc] <= 0 {
		delete(m, jc)
	}
}

// mergeTob merges newTob into byTob. Only the entries of byTob not older
// than the oldest new event move: they are copied aside and merged with the
// sorted batch back into place, so a batch costs O(m log m + k) where k is
// the number of stored entries newer than the batch's oldest — small, since
// new bans are recent — rather than O(n) for the whole slice. Events that
// become distinct (count 0 → 1) are counted in their windows and, past the
// initial load, in bans_total.
func (e *engine) mergeTob(now int64) {
	if len(e.newTob) == 0 {
		return
	}
	added := e.newTob
	slices.SortFunc(added, func(a, b tobEntry) int { return compareTob(&a, &b) })
	// Fold duplicates within the batch.
	folded := added[:1]
	for _, t := range added[1:] {
		if last := &folded[len(folded)-1]; compareTob(last, &t) == 0 {
			last.count += t.count
			last.stored = last.stored || t.stored
			if t.kept {
				e.foldKept(last)
			}
		} else {
			folded = append(folded, t)
		}
	}
	added = folded
	if e.keep {
		// With the archive on every counted event is archived history:
		// its entry is kept and holds its own reference on the IP.
		for k := range added {
			if t := &added[k]; !t.kept {
				t.kept = true
				e.ips[t.ip].refs++
			}
		}
	}
	born := e.born[:0] // entries that start counting
	n := len(e.byTob)
	p := sort.Search(n, func(i int) bool { return compareTob(&e.byTob[i], &added[0]) >= 0 })
	if p == n {
		e.byTob = append(e.byTob, added...)
		born = append(born, added...)
	} else {
		tail := append(e.tobTail[:0], e.byTob[p:]...)
		out := e.byTob[:p]
		i, j := 0, 0
		for i < len(tail) || j < len(added) {
			var c int
			switch {
			case i == len(tail):
				c = 1
			case j == len(added):
				c = -1
			default:
				c = compareTob(&tail[i], &added[j])
			}
			switch {
			case c < 0:
				out = append(out, tail[i])
				i++
			case c > 0:
				out = append(out, added[j])
				born = append(born, added[j])
				j++
			default:
				t := tail[i]
				if !t.alive() {
					born = append(born, added[j])
					e.deadTob--
				}
				t.count += added[j].count
				if added[j].stored && !t.stored {
					t.stored = true
					e.stored++
				}
				if added[j].kept {
					e.foldKept(&t)
				}
				out = append(out, t)
				i++
				j++
			}
		}
		e.byTob = out
		e.tobTail = keepBuffer(tail)
	}
	e.newTob = keepBuffer(e.newTob)
	for _, t := range born {
		if t.stored {
			e.stored++
		}
		jc := jcKey{jail: t.jail, country: e.ips[t.ip].country}
		for w := range e.windows {
			if e.inWindow(w, int64(t.tob), now) {
				e.windowCount[w][jc]++
			}
		}
		if e.live {
			addr := e.ips[t.ip].key.addr()
			if _, ok := e.reread[eventKey{addr: addr, tob: t.tob, jail: t.jail}]; !ok {
				e.pending = append(e.pending, pendingBan{addr: addr, jail: t.jail, since: now})
			}
		}
	}
	e.born = keepBuffer(born)
	e.resetCursors(now)
}

// foldKept makes t kept when a kept entry of the same event folds into it:
// the folded entry's reference on the IP moves to t, or is released when t
// holds one already.
func (e *engine) foldKept(t *tobEntry) {
	if t.kept {
		e.releaseIP(t.ip)
		return
	}
	t.kept = true
}

// keepBuffer empties a scratch buffer for reuse, unless it grew large (an
// initial load or a batch far in the past): that memory goes back to the
// garbage collector.
func keepBuffer[T any](buf []T) []T {
	if cap(buf) > 1<<16 {
		return nil
	}
	return buf[:0]
}

// resetCursors places every window's cursor at the first event inside it.
func (e *engine) resetCursors(now int64) {
	for w := range e.windows {
		limit := now - int64(e.windows[w].Length/time.Second)
		e.cursors[w] = sort.Search(len(e.byTob), func(i int) bool { return int64(e.byTob[i].tob) >= limit })
	}
}

// ---- bips / current bans ------------------------------------------------

func isBanned(rec *record, now int64) bool {
	return rec.bantime <= -1 || int64(rec.tob)+rec.bantime > now
}

func (e *engine) setBanned(rec *record, banned bool) {
	if rec.banned() == banned {
		return
	}
	rec.state ^= recBanned
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	jc := jcKey{jail: rec.jail, country: e.ips[rec.ip].country}
	if banned {
		e.bannedRefs[pk]++
		if e.bannedRefs[pk] == 1 {
			e.bannedNow[jc]++
		}
		return
	}
	e.bannedRefs[pk]--
	if e.bannedRefs[pk] == 0 {
		delete(e.bannedRefs, pk)
		if e.bannedNow[jc]--; e.bannedNow[jc] <= 0 {
			delete(e.bannedNow, jc)
		}
	}
}

// findRecord returns the index of the live record with rowid, or -1.
func (e *engine) findRecord(rowid int64) int {
	i, found := slices.BinarySearchFunc(e.records, rowid, func(r record, id int64) int { return cmp.Compare(r.rowid, id) })
	if !found || e.records[i].dead() {
		return -1
	}
	return i
}

// newRecord builds the record of one bips row (schema 4). A row for a pair
// that already has an older record replaces it: fail2ban writes bips with
// INSERT OR REPLACE, which deletes the old row, so the old record goes at
// once rather than being found missing by reconciliation later. The caller
// places the record in rowid order and then calls activateRecord.
func (e *engine) newRecord(r *row, now int64) record {
	rec := record{rowid: r.Rowid, mix: rowMix(r), ip: noIP, bantime: r.Bantime}
	addr, reason := classify(r, true)
	if reason != "" {
		rec.skip = skipIndex(reason)
		return rec
	}
	rec.tob = uint32(r.TimeOfBan)
	rec.jail = e.jail(r.Jail)
	rec.ip = e.internIP(addr)
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if old, ok := e.recByPair[pk]; ok && old < r.Rowid {
		// The same spelling (same length) is the same primary key; two
		// spellings of one address are two rows and both stay.
		if idx := e.findRecord(old); idx >= 0 && e.lenPart(idx) == 5*r.IPLen+7*r.JailLen {
			e.removeRecordAt(idx, now)
		}
	}
	return rec
}

// lenPart is the part of the mix of the record at idx that comes from the
// spellings of its ip and jail.
func (e *engine) lenPart(idx int) int64 {
	rec := &e.records[idx]
	return int64(rec.mix) - int64(rec.tob)%fingerprintModulus - 3*(rec.bantime%fingerprintModulus)
}

// activateRecord counts the placed record at idx.
func (e *engine) activateRecord(idx int, now int64) {
	rec := &e.records[idx]
	addFP(e.bipsFP, rec.rowid, rec.mix, 1)
	e.liveRecs++
	if rec.skip != 0 {
		e.addSkip("bips", rec.skip, 1)
		return
	}
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if old, ok := e.recByPair[pk]; !ok || old < rec.rowid {
		e.recByPair[pk] = rec.rowid
	}
	e.setBanned(rec, isBanned(rec, now))
	if rec.banned() && rec.bantime > -1 {
		heap.Push(&e.expiries, expiry{at: int64(rec.tob) + rec.bantime, rowid: rec.rowid})
	}
}

// removeRecordAt takes the record at idx out of every aggregate and marks it
// dead; compact drops it later.
func (e *engine) removeRecordAt(idx int, _ int64) {
	rec := &e.records[idx]
	if rec.dead() {
		return
	}
	addFP(e.bipsFP, rec.rowid, rec.mix, -1)
	rec.state |= recDead
	e.deadRecs++
	e.liveRecs--
	if rec.skip != 0 {
		e.addSkip("bips", rec.skip, -1)
		return
	}
	e.setBanned(rec, false)
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if e.recByPair[pk] == rec.rowid {
		delete(e.recByPair, pk)
	}
	e.releaseIP(rec.ip)
}

// v2Latest records a ban event for schema 2, where a pair is banned while
// its latest ban plus the default bantime lies in the future (fail2ban
// 0.9/0.10's own rule). Derived records get increasing synthetic rowids.
func (e *engine) v2Latest(pk pairKey, tob uint32, now int64) {
	if rowid, ok := e.recByPair[pk]; ok {
		rec := &e.records[e.findRecord(rowid)]
		if rec.tob >= tob {
			return
		}
		rec.tob = tob
		e.setBanned(rec, isBanned(rec, now))
	} else {
		e.synth++
		e.ips[pk.ip].refs++
		e.records = append(e.records, record{rowid: e.synth, tob: tob, bantime: e.defaultBanSec, ip: pk.ip, jail: pk.jail})
		e.liveRecs++
		e.recByPair[pk] = e.synth
		last := &e.records[len(e.records)-1]
		e.setBanned(last, isBanned(last, now))
	}
	heap.Push(&e.expiries, expiry{at: int64(tob) + e.defaultBanSec, rowid: e.recByPair[pk]})
}

// rebuildV2 recomputes the schema-2 derived records from the events, after
// deletions.
func (e *engine) rebuildV2(now int64) {
	for i := range e.records {
		if !e.records[i].dead() {
			e.setBanned(&e.records[i], false)
			e.releaseIP(e.records[i].ip)
		}
	}
	e.records = e.records[:0]
	e.deadRecs, e.liveRecs = 0, 0
	clear(e.recByPair)
	e.expiries = e.expiries[:0]
	for i := range e.events {
		if ev := &e.events[i]; ev.skip == 0 {
			e.v2Latest(pairKey{ip: ev.ip, jail: ev.jail}, ev.tob, now)
		}
	}
}

// ---- time ----------------------------------------------------------------

// advance moves the engine's clock to now: bans expire, events leave the
// windows, pending bans_total increments are settled.
func (e *engine) advance(now int64) {
	if now < e.lastNow {
		// The clock went backwards: recompute what depends on it.
		e.lastNow = now
		e.recountBanned(now)
		e.recountWindows(now)
		e.settlePending(now, false)
		return
	}
	for e.expiries.Len() > 0 && e.expiries[0].at <= now {
		x := heap.Pop(&e.expiries).(expiry)
		idx := e.findRecord(x.rowid)
		if idx < 0 {
			continue
		}
		rec := &e.records[idx]
		if rec.skip != 0 || isBanned(rec, now) {
			// Stale entry: the record moved on and has a newer entry.
			continue
		}
		e.setBanned(rec, false)
	}
	from := e.cursors[e.longest]
	for w := range e.windows {
		limit := now - int64(e.windows[w].Length/time.Second)
		c := e.cursors[w]
		for c < len(e.byTob) && int64(e.byTob[c].tob) < limit {
			if t := &e.byTob[c]; t.alive() {
				e.decWindow(w, jcKey{jail: t.jail, country: e.ips[t.ip].country})
			}
			c++
		}
		e.cursors[w] = c
	}
	if e.keep {
		// Kept entries without rows that left the longest window are
		// history no window counts any more.
		for c := from; c < e.cursors[e.longest]; c++ {
			if t := &e.byTob[c]; t.kept && t.count == 0 {
				e.dropKept(t)
			}
		}
	}
	e.lastNow = now
	e.settlePending(now, false)
	e.compact()
}

// compact drops dead entries once they are a quarter of their slice.
func (e *engine) compact() {
	if e.deadTob > 1024 && e.deadTob > len(e.byTob)/4 {
		out := e.byTob[:0]
		for _, t := range e.byTob {
			if t.alive() {
				out = append(out, t)
			}
		}
		e.byTob = slices.Clip(out)
		e.deadTob = 0
		e.resetCursors(e.lastNow)
	}
	if e.deadRecs > 1024 && e.deadRecs > len(e.records)/4 {
		out := e.records[:0]
		for _, r := range e.records {
			if !r.dead() {
				out = append(out, r)
			}
		}
		e.records = slices.Clip(out)
		e.deadRecs = 0
	}
}

// settlePending counts new ban events into bans_total once their IP has a
// country or a final answer without one (FinalCountryLookup), or after
// pendingAge as unknown, so that ban rates per country are not all "ZZ" only
// because geo had not answered yet.
func (e *engine) settlePending(now int64, all bool) {
	keep := e.pending[:0]
	final, _ := e.countries.(FinalCountryLookup)
	for _, p := range e.pending {
		var c string
		settled := all || now-p.since >= int64(e.pendingAge/time.Second)
		if final != nil {
			var isFinal bool
			c, isFinal = final.CountryFinal(p.addr)
			c = normalizeCountry(c)
			settled = settled || isFinal || c != ""
		} else {
			c = normalizeCountry(e.countries.Country(p.addr))
			settled = settled || c != ""
		}
		if settled {
			e.bansTotal[jcKey{jail: p.jail, country: e.country(c)}]++
			continue
		}
		keep = append(keep, p)
	}
	e.pending = keep
}

func (e *engine) recountWindows(now int64) {
	e.resetCursors(now)
	for w := range e.windows {
		clear(e.windowCount[w])
		for i := e.cursors[w]; i < len(e.byTob); i++ {
			if t := &e.byTob[i]; t.alive() {
				e.windowCount[w][jcKey{jail: t.jail, country: e.ips[t.ip].country}]++
			}
		}
	}
}

// recountBanned re-evaluates every record, after the clock went backwards.
func (e *engine) recountBanned(now int64) {
	e.expiries = e.expiries[:0]
	for i := range e.records {
		rec := &e.records[i]
		if rec.dead() || rec.skip != 0 {
			continue
		}
		e.setBanned(rec, isBanned(rec, now))
		if rec.banned() && rec.bantime > -1 {
			e.expiries = append(e.expiries, expiry{at: int64(rec.tob) + rec.bantime, rowid: rec.rowid})
		}
	}
	heap.Init(&e.expiries)
}

// ---- countries ---------------------------------------------------------

// refreshCountries moves IPs whose country changed. It looks only when the
// CountryLookup's generation changed.
func (e *engine) refreshCountries() {
	gen := e.countries.Generation()
	if gen == e.countryGen {
		return
	}
	e.countryGen = gen
	changed := map[uint32]uint16{} // ip → old country
	for i := range e.ips {
		info := &e.ips[i]
		if info.refs == 0 {
			continue
		}
		if c := e.country(normalizeCountry(e.countries.Country(info.key.addr()))); c != info.country {
			changed[uint32(i)] = info.country
		}
	}
	if len(changed) == 0 {
		return
	}
	for pk := range e.bannedRefs {
		if old, ok := changed[pk.ip]; ok {
			jc := jcKey{jail: pk.jail, country: old}
			if e.bannedNow[jc]--; e.bannedNow[jc] <= 0 {
				delete(e.bannedNow, jc)
			}
		}
	}
	for ip := range changed {
		e.ips[ip].country = e.country(normalizeCountry(e.countries.Country(e.ips[ip].key.addr())))
	}
	for pk := range e.bannedRefs {
		if _, ok := changed[pk.ip]; ok {
			e.bannedNow[jcKey{jail: pk.jail, country: e.ips[pk.ip].country}]++
		}
	}
	for w := range e.windows {
		for j := e.cursors[w]; j < len(e.byTob); j++ {
			t := &e.byTob[j]
			old, ok := changed[t.ip]
			if !ok || !t.alive() {
				continue
			}
			e.decWindow(w, jcKey{jail: t.jail, country: old})
			e.windowCount[w][jcKey{jail: t.jail, country: e.ips[t.ip].country}]++
		}
	}
}

// ---- applying rows -------------------------------------------------------

// appendBans adds bans rows whose rowids are above every stored one, in
// rowid order.
func (e *engine) appendBans(rows []row, now int64) {
	for i := range rows {
		ev := e.addEvent(&rows[i], now)
		addFP(e.bansFP, ev.rowid, ev.mix, 1)
		e.events = append(e.events, ev)
	}
	e.mergeTob(now)
}

// appendBips adds bips rows whose rowids are above every stored one, in
// rowid order.
func (e *engine) appendBips(rows []row, now int64) {
	for i := range rows {
		e.records = append(e.records, e.newRecord(&rows[i], now))
		e.activateRecord(len(e.records)-1, now)
	}
}

// replaceBansRange makes the stored bans rows with rowids in [lo, hi] equal
// to rows (sorted by rowid).
func (e *engine) replaceBansRange(lo, hi int64, rows []row, now int64) {
	e.mergeTob(now)
	i := sort.Search(len(e.events), func(k int) bool { return e.events[k].rowid >= lo })
	j := sort.Search(len(e.events), func(k int) bool { return e.events[k].rowid > hi })
	if e.live && j > i {
		e.reread = make(map[eventKey]struct{}, j-i)
		for k := i; k < j; k++ {
			if ev := &e.events[k]; ev.skip == 0 {
				e.reread[eventKey{addr: e.ips[ev.ip].key.addr(), tob: ev.tob, jail: ev.jail}] = struct{}{}
			}
		}
	}
	for k := i; k < j; k++ {
		addFP(e.bansFP, e.events[k].rowid, e.events[k].mix, -1)
		e.removeEvent(&e.events[k], now)
	}
	added := make([]event, 0, len(rows))
	for k := range rows {
		ev := e.addEvent(&rows[k], now)
		addFP(e.bansFP, ev.rowid, ev.mix, 1)
		added = append(added, ev)
	}
	e.events = slices.Replace(e.events, i, j, added...)
	e.mergeTob(now)
	e.reread = nil
	if j > i && e.schema == 2 {
		e.rebuildV2(now)
	}
}

// replaceBipsRange makes the stored bips rows with rowids in [lo, hi] equal
// to rows (sorted by rowid).
func (e *engine) replaceBipsRange(lo, hi int64, rows []row, now int64) {
	i := sort.Search(len(e.records), func(k int) bool { return e.records[k].rowid >= lo })
	j := sort.Search(len(e.records), func(k int) bool { return e.records[k].rowid > hi })
	for k := i; k < j; k++ {
		e.removeRecordAt(k, now)
	}
	added := make([]record, 0, len(rows))
	for k := range rows {
		added = append(added, e.newRecord(&rows[k], now))
	}
	// Every record of the range is dead now: drop them, put the new ones
	// in place and count them.
	e.deadRecs -= j - i
	e.records = slices.Replace(e.records, i, j, added...)
	for k := i; k < i+len(added); k++ {
		e.activateRecord(k, now)
	}
}

// bansHigh is the highest stored bans rowid (0 when none).
func (e *engine) bansHigh() int64 {
	if n := len(e.events); n > 0 {
		return e.events[n-1].rowid
	}
	return 0
}

// high is the high-water mark of table: its rows above it are new.
func (e *engine) high(table string) int64 {
	if table == "bips" {
		return e.bipsHigh()
	}
	return e.bansHigh()
}

// bipsHigh is the highest live bips rowid (0 when none).
func (e *engine) bipsHigh() int64 {
	for k := len(e.records) - 1; k >= 0; k-- {
		if !e.records[k].dead() {
			return e.records[k].rowid
		}
	}
	return 0
}

// oldestBan is the timeofban of the oldest counted ban event.
func (e *engine) oldestBan() (int64, bool) {
	for i := range e.byTob {
		if e.byTob[i].alive() {
			return int64(e.byTob[i].tob), true
		}
	}
	return 0, false
}

// snapshot is a copy of the aggregates for one scrape.
type snapshot struct {
	jails      []string
	countries  []string
	bannedNow  map[jcKey]int
	windows    []map[jcKey]int
	bansTotal  map[jcKey]uint64
	oldest     int64
	haveOldest bool
	skipped    map[[2]string]int
	bansRows   int
	bipsRows   int
	ips        int
}

func (e *engine) snapshot() *snapshot {
	s := &snapshot{
		jails:     slices.Clone(e.jailNames),
		countries: slices.Clone(e.countryNames),
		bannedNow: cloneMap(e.bannedNow),
		bansTotal: cloneMap(e.bansTotal),
		skipped:   cloneMap(e.skipped),
		bansRows:  len(e.events),
		bipsRows:  e.liveRecs,
		ips:       len(e.ipIndex),
	}
	if e.schema == 2 {
		s.bipsRows = 0
	}
	for _, w := range e.windowCount {
		s.windows = append(s.windows, cloneMap(w))
	}
	s.oldest, s.haveOldest = e.oldestBan()
	return s
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	maps.Copy(out, m)
	return out
}
