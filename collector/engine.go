package collector

import (
	"container/heap"
	"maps"
	"math"
	"net/netip"
	"slices"
	"sort"
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

// endStartupRead ends the initial load: rows read from now on are new ban
// events (they count in bans_total and are no longer looked up among the
// events loaded from the archive), and a backfill's range is fixed.
func (e *engine) endStartupRead() {
	e.live = true
	e.stored = 0
	e.endBackfillRange()
}

// keepHistory turns the archive's mode on: ban events stay in the windows
// after their rows leave fail2ban's bans table, until they leave the longest
// window.
func (e *engine) keepHistory() { e.keep = true }

// sizes is what the engine holds: rows of bans, live rows of bips (schema 4)
// and distinct IPs.
func (e *engine) sizes() (bansRows, bipsRows, ips int) {
	return len(e.events), e.liveRecs, len(e.ipIndex)
}

// tableState is what settle compares with the database's shape of table:
// the engine's row count, highest rowid and bucket fingerprints.
func (e *engine) tableState(table string) (count, high int64, fps map[int64]fingerprint) {
	if table == "bips" {
		return int64(e.liveRecs), e.bipsHigh(), e.bipsFP
	}
	return int64(len(e.events)), e.bansHigh(), e.bansFP
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
