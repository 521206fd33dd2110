package collector

import (
	"container/heap"
	"math"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
)

// The engine holds fail2ban's bans in memory and keeps the aggregates the
// collector exposes up to date incrementally. It knows nothing of SQL: the
// Exporter feeds it the rows the source read (appendBans, appendBips,
// replaceBansRange, replaceBipsRange) and it answers with counts. Every
// method runs under the Exporter's lock. This file holds the engine's state,
// the bans rows and the clock; its other concerns have their own files (see
// doc.go).

// Skip reasons of rows the engine cannot count.
const (
	skipNullJail       = "null_jail"
	skipNullIP         = "null_ip"
	skipInvalidIP      = "invalid_ip"
	skipInvalidTime    = "invalid_timeofban"
	skipInvalidBantime = "invalid_bantime"
)

// sourceRow is one row of fail2ban's bans or bips table as the source read it.
// Numbers are SQLite's CAST(x AS INTEGER) of the column, so the engine's
// fingerprints equal those SQLite computes.
// The flags come last so the struct has no padding between fields (88
// bytes rather than 120): the source holds a chunk of them at a time.
type sourceRow struct {
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

// bansRow is the engine's copy of one row of fail2ban's bans table.
type bansRow struct {
	rowid     int64
	mix       int32
	timeOfBan uint32
	ip        uint32 // noIP for a skipped row
	jail      uint16
	skip      uint8 // index into skipReasons plus one; 0 when counted
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
	// window (banEvent.kept).
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
	// reassigns is countries when it tells reassignments (nil otherwise:
	// every country pass looks at every IP); reassignGen is its
	// Reassigned() as of the engine's last pass over every IP.
	reassigns   ReassignCountryLookup
	reassignGen uint64

	ips []ipInfo
	// ipRefs counts, per index of ips, the bans rows, bips rows and kept
	// ban events referencing the IP (0: free). Apart from ips, every
	// reference taken or dropped touches 4 bytes of a dense slice (9 MB
	// at ten million rows, 2.35M IPs) rather than a 24-byte entry of a 56
	// MB one: at a restart with ten million rows, 25 million references
	// taken one after the other each missed the cache.
	ipRefs []uint32
	// ipFirstEvent is, per index of ips, a lower bound of the timeofban of
	// every ban event merged for the IP since it was interned
	// (math.MaxUint32: none). A country pass that moves a few IPs walks
	// the ban events from the earliest of theirs, not from the start of
	// the longest window: an IP geo just placed was first banned moments
	// ago.
	ipFirstEvent []uint32
	ipIndex      ipTable
	ipFree       []uint32

	// bans
	bansRows      []bansRow  // sorted by rowid
	banEvents     []banEvent // sorted by compareBanEvents
	deadBanEvents int        // entries of banEvents with count 0
	newBanEvents  []banEvent // added rows not yet merged into banEvents
	mergeTail     []banEvent // scratch of mergeBanEvents
	mergeBorn     []banEvent // scratch of mergeBanEvents
	cursors       []int      // per window: first index of banEvents inside the window
	searchHint    int        // where searchBanEvent starts: the last position found
	// fromArchive counts the entries of banEvents loaded from the archive
	// (banEvent.fromArchive) until the initial load ends; 0 afterwards,
	// when rows are new ban events and no longer looked up.
	fromArchive int
	lastNow     int64
	windowCount []map[seriesKey]int
	bansFP      map[int64]fingerprint

	// bips (schema 4) or derived latest bans (schema 2)
	bipsRows         []bipsRow // sorted by rowid
	deadBipsRows     int
	liveBipsRows     int
	latestBipsRow    pairTable // pair → rowid of its latest bips row
	expiries         expiryHeap
	bannedRefs       map[pairKey]uint16 // banned bips rows per pair
	bannedNow        map[seriesKey]int
	bipsFP           map[int64]fingerprint
	lastDerivedRowid int64 // last rowid given to a derived schema-2 bips row

	skipped map[[2]string]int // (table, reason) → rows

	// wideBantimes and wideBancounts: bips rowid → fail2ban's bantime or
	// bancount, only for the rare rows whose value does not fit in its
	// bipsRow field (wideBantime, wideBancount).
	wideBantimes  map[int64]int64
	wideBancounts map[int64]int64

	// bans_total
	live       bool // past the initial load: new ban events count into bans_total
	bansTotal  map[seriesKey]uint64
	pending    []pendingBan
	pendingAge time.Duration
	// reread holds the ban events a reconciliation took out and is about
	// to read again: they are not new and must not count in bans_total.
	reread map[banEventKey]struct{}

	// changes counts, per cached family, the changes of its counts
	// (bannedNow, windowCount, bansTotal): the Exporter copies and encodes
	// a family again only when its counter moved (exposition_cache.go).
	// Time passing changes nothing until a ban expires or a counted ban
	// event leaves a window.
	changes [numCachedFamilies]uint64
	// seq tells engines apart (a reload replaces the engine): set by the
	// Exporter's first snapshot of it.
	seq uint64
}

// banEventKey names one distinct ban event independently of IP indices (an IP
// index can be freed and reused while a range is replaced).
type banEventKey struct {
	addr      netip.Addr
	timeOfBan uint32
	jail      uint16
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
	bansTotal    map[seriesKey]uint64
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
		ipIndex:       newIPTable(),
		cursors:       make([]int, len(windows)),
		windowCount:   make([]map[seriesKey]int, len(windows)),
		bansFP:        map[int64]fingerprint{},
		latestBipsRow: newPairTable(),
		bannedRefs:    map[pairKey]uint16{},
		bannedNow:     map[seriesKey]int{},
		bipsFP:        map[int64]fingerprint{},
		skipped:       map[[2]string]int{},
		bansTotal:     map[seriesKey]uint64{},
		pendingAge:    2 * time.Minute,
		countryGen:    countries.Generation(),
	}
	if r, ok := countries.(ReassignCountryLookup); ok {
		e.reassigns, e.reassignGen = r, r.Reassigned()
	}
	for i := range e.windowCount {
		e.windowCount[i] = map[seriesKey]int{}
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
	if len(e.bansRows) == 0 && bans > 0 {
		e.bansRows = make([]bansRow, 0, room(bans))
		// banEvents may already hold the archive's events (loadHistory),
		// most of them the same events as the rows: room for the larger
		// of the two.
		e.reserveBanEvents(max(int64(len(e.banEvents)), bans))
	}
	if len(e.bipsRows) == 0 && bips > 0 {
		e.bipsRows = make([]bipsRow, 0, room(bips))
		// One entry per (ip, jail) pair: bips has one row per pair.
		e.latestBipsRow.reserve(room(bips))
	}
}

// reserveBanEvents makes room in banEvents for n entries in one allocation (with
// headroom when it has to grow). Before the archive's events are loaded it
// is sized from the archive's event count, so the load neither doubles
// banEvents step by step nor copies it again for the rows of bans, which are
// mostly the same ban events.
func (e *engine) reserveBanEvents(n int64) {
	if int64(cap(e.banEvents)) < n {
		grown := make([]banEvent, len(e.banEvents), room(n))
		copy(grown, e.banEvents)
		e.banEvents = grown
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
		// read yet is offered from the engine's own bans rows.
		c.offer = append(c.offer, e.backfill.abandon(e))
		e.backfill = nil
	}
	if e.keep {
		e.mergeBanEvents(e.lastNow)
		for i := e.cursors[e.longest]; i < len(e.banEvents); i++ {
			if t := &e.banEvents[i]; t.alive() {
				c.kept = append(c.kept, archive.Event{Jail: e.jailNames[t.jail], IP: e.ips[t.ip].key.addr(), TimeOfBan: int64(t.timeOfBan)})
			}
		}
	}
	return c
}

// classify validates r and returns its skip reason ("" when countable).
func classify(r *sourceRow, needBantime bool) (netip.Addr, string) {
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

// addBansRow takes one row of bans into account and returns its bansRow; the
// caller stores it in rowid order and calls mergeBanEvents after the batch.
func (e *engine) addBansRow(r *sourceRow, now int64) bansRow {
	ev := bansRow{rowid: r.Rowid, mix: rowMix(r), ip: noIP}
	addr, reason := classify(r, false)
	if reason != "" {
		ev.skip = skipIndex(reason)
		e.addSkip("bans", ev.skip, 1)
		return ev
	}
	ev.jail = e.jail(r.Jail)
	ev.timeOfBan = uint32(r.TimeOfBan)
	stored, inPlace := false, false
	if e.fromArchive > 0 {
		// A start with the archive's events loaded: most rows are ban
		// events banEvents holds already. One that is kept (as every
		// loaded event is) takes the row in place: merging it in again
		// would move every newer entry, for each chunk of rows. The
		// event is found by its time and jail and its IP's key, and
		// gives the IP's index: no lookup in the IP index, the largest
		// cost of a restart with ten million rows.
		if i, found := e.searchLoadedEvent(ev.timeOfBan, ev.jail, keyOf(addr)); found {
			t := &e.banEvents[i]
			ev.ip = t.ip
			e.ipRefs[t.ip]++
			stored = t.fromArchive
			if t.kept {
				t.count++
				inPlace = true
			}
		} else {
			ev.ip = e.internIP(addr)
		}
	} else {
		ev.ip = e.internIP(addr)
	}
	if !inPlace {
		e.newBanEvents = append(e.newBanEvents, banEvent{timeOfBan: ev.timeOfBan, ip: ev.ip, jail: ev.jail, count: 1})
	}
	// A startup read in backfill mode offers nothing (the backfill reads
	// its rows again); rows read later are offered as always.
	if e.keep && (e.backfill == nil || e.live) && !stored {
		e.addOffer(pendingOffer{ip: keyOf(addr), bantime: rowBantime(r), bancount: r.Bancount, timeOfBan: ev.timeOfBan, jail: ev.jail})
	}
	if e.schema == 2 {
		e.deriveSchema2Ban(pairKey{ip: ev.ip, jail: ev.jail}, ev.timeOfBan, now)
	}
	return ev
}

// removeBansRow takes a stored bans row out of every aggregate. banEvents
// must be merged (newBanEvents empty). With the archive on, its ban event is
// kept: it
// stays in the windows until it leaves the longest one.
func (e *engine) removeBansRow(ev *bansRow, now int64) {
	if ev.skip != 0 {
		e.addSkip("bans", ev.skip, -1)
		return
	}
	if e.backfill != nil {
		e.backfill.removed(e, ev)
	}
	key := banEvent{timeOfBan: ev.timeOfBan, ip: ev.ip, jail: ev.jail}
	i, found := slices.BinarySearchFunc(e.banEvents, &key, func(a banEvent, b *banEvent) int { return compareBanEvents(&a, b) })
	if found && e.banEvents[i].count > 0 {
		t := &e.banEvents[i]
		t.count--
		if t.count == 0 && t.kept {
			if !e.inWindow(e.longest, int64(t.timeOfBan), now) {
				e.dropKept(t)
			}
		} else if t.count == 0 {
			jc := seriesKey{jail: t.jail, country: e.ips[t.ip].country}
			for w := range e.windows {
				if e.inWindow(w, int64(t.timeOfBan), now) {
					e.decWindow(w, jc)
				}
			}
			e.deadBanEvents++
		}
	}
	e.releaseIP(ev.ip)
}

// ---- time ----------------------------------------------------------------

// advance moves the engine's clock to now: bans expire, ban events leave the
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
		idx := e.findBipsRow(x.rowid)
		if idx < 0 {
			continue
		}
		rec := &e.bipsRows[idx]
		if rec.skip != 0 || e.isBanned(rec, now) {
			// Stale entry: the bips row moved on and has a newer entry.
			continue
		}
		e.setBanned(rec, false)
	}
	from := e.cursors[e.longest]
	for w := range e.windows {
		limit := now - int64(e.windows[w].Length/time.Second)
		c := e.cursors[w]
		for c < len(e.banEvents) && int64(e.banEvents[c].timeOfBan) < limit {
			if t := &e.banEvents[c]; t.alive() {
				e.decWindow(w, seriesKey{jail: t.jail, country: e.ips[t.ip].country})
			}
			c++
		}
		e.cursors[w] = c
	}
	if e.keep {
		// Kept entries without rows that left the longest window are
		// history no window counts any more.
		for c := from; c < e.cursors[e.longest]; c++ {
			if t := &e.banEvents[c]; t.kept && t.count == 0 {
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
	if e.deadBanEvents > 1024 && e.deadBanEvents > len(e.banEvents)/4 {
		out := e.banEvents[:0]
		for _, t := range e.banEvents {
			if t.alive() {
				out = append(out, t)
			}
		}
		e.banEvents = slices.Clip(out)
		e.deadBanEvents = 0
		e.resetCursors(e.lastNow)
	}
	if e.deadBipsRows > 1024 && e.deadBipsRows > len(e.bipsRows)/4 {
		out := e.bipsRows[:0]
		for _, r := range e.bipsRows {
			if !r.dead() {
				out = append(out, r)
			}
		}
		e.bipsRows = slices.Clip(out)
		e.deadBipsRows = 0
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
			e.bansTotal[seriesKey{jail: p.jail, country: e.country(c)}]++
			e.changes[familyTotal]++
			continue
		}
		keep = append(keep, p)
	}
	e.pending = keep
}

// ---- applying rows -------------------------------------------------------

// appendBans adds bans rows whose rowids are above every stored one, in
// rowid order.
func (e *engine) appendBans(rows []sourceRow, now int64) {
	for i := range rows {
		ev := e.addBansRow(&rows[i], now)
		addFP(e.bansFP, ev.rowid, ev.mix, 1)
		e.bansRows = append(e.bansRows, ev)
	}
	e.mergeBanEvents(now)
}

// appendBips adds bips rows whose rowids are above every stored one, in
// rowid order.
func (e *engine) appendBips(rows []sourceRow, now int64) {
	for i := range rows {
		e.bipsRows = append(e.bipsRows, e.newBipsRow(&rows[i], now))
		e.activateBipsRow(len(e.bipsRows)-1, now)
	}
}

// replaceBansRange makes the stored bans rows with rowids in [lo, hi] equal
// to rows (sorted by rowid).
func (e *engine) replaceBansRange(lo, hi int64, rows []sourceRow, now int64) {
	e.mergeBanEvents(now)
	i := sort.Search(len(e.bansRows), func(k int) bool { return e.bansRows[k].rowid >= lo })
	j := sort.Search(len(e.bansRows), func(k int) bool { return e.bansRows[k].rowid > hi })
	if e.live && j > i {
		e.reread = make(map[banEventKey]struct{}, j-i)
		for k := i; k < j; k++ {
			if ev := &e.bansRows[k]; ev.skip == 0 {
				e.reread[banEventKey{addr: e.ips[ev.ip].key.addr(), timeOfBan: ev.timeOfBan, jail: ev.jail}] = struct{}{}
			}
		}
	}
	for k := i; k < j; k++ {
		addFP(e.bansFP, e.bansRows[k].rowid, e.bansRows[k].mix, -1)
		e.removeBansRow(&e.bansRows[k], now)
	}
	added := make([]bansRow, 0, len(rows))
	for k := range rows {
		ev := e.addBansRow(&rows[k], now)
		addFP(e.bansFP, ev.rowid, ev.mix, 1)
		added = append(added, ev)
	}
	e.bansRows = slices.Replace(e.bansRows, i, j, added...)
	e.mergeBanEvents(now)
	e.reread = nil
	if j > i && e.schema == 2 {
		e.rebuildSchema2Bans(now)
	}
}

// replaceBipsRange makes the stored bips rows with rowids in [lo, hi] equal
// to rows (sorted by rowid).
func (e *engine) replaceBipsRange(lo, hi int64, rows []sourceRow, now int64) {
	i := sort.Search(len(e.bipsRows), func(k int) bool { return e.bipsRows[k].rowid >= lo })
	j := sort.Search(len(e.bipsRows), func(k int) bool { return e.bipsRows[k].rowid > hi })
	for k := i; k < j; k++ {
		e.removeBipsRowAt(k, now)
	}
	added := make([]bipsRow, 0, len(rows))
	for k := range rows {
		added = append(added, e.newBipsRow(&rows[k], now))
	}
	// Every bips row of the range is dead now: drop them, put the new ones
	// in place and count them.
	e.deadBipsRows -= j - i
	e.bipsRows = slices.Replace(e.bipsRows, i, j, added...)
	for k := i; k < i+len(added); k++ {
		e.activateBipsRow(k, now)
	}
}

// bansHigh is the highest stored bans rowid (0 when none).
func (e *engine) bansHigh() int64 {
	if n := len(e.bansRows); n > 0 {
		return e.bansRows[n-1].rowid
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

// low is the lowest rowid of table the engine holds (0 when none).
func (e *engine) low(table string) int64 {
	if table == "bips" {
		for k := range e.bipsRows {
			if !e.bipsRows[k].dead() {
				return e.bipsRows[k].rowid
			}
		}
		return 0
	}
	if len(e.bansRows) > 0 {
		return e.bansRows[0].rowid
	}
	return 0
}

// bipsHigh is the highest live bips rowid (0 when none).
func (e *engine) bipsHigh() int64 {
	for k := len(e.bipsRows) - 1; k >= 0; k-- {
		if !e.bipsRows[k].dead() {
			return e.bipsRows[k].rowid
		}
	}
	return 0
}

// oldestBan is the timeofban of the oldest counted ban event.
func (e *engine) oldestBan() (int64, bool) {
	for i := range e.banEvents {
		if e.banEvents[i].alive() {
			return int64(e.banEvents[i].timeOfBan), true
		}
	}
	return 0, false
}

// endStartupRead ends the initial load: rows read from now on are new ban
// events (they count in bans_total and are no longer looked up among the
// events loaded from the archive), and a backfill's range is fixed.
func (e *engine) endStartupRead() {
	e.live = true
	e.fromArchive = 0
	e.endBackfillRange()
}

// keepHistory turns the archive's mode on: ban events stay in the windows
// after their rows leave fail2ban's bans table, until they leave the longest
// window.
func (e *engine) keepHistory() { e.keep = true }

// sizes is what the engine holds: rows of bans, live rows of bips (schema 4)
// and distinct IPs.
func (e *engine) sizes() (bansRows, bipsRows, ips int) {
	return len(e.bansRows), e.liveBipsRows, e.ipIndex.count()
}

// tableState is what settle compares with the database's shape of table:
// the engine's row count, highest rowid and bucket fingerprints.
func (e *engine) tableState(table string) (count, high int64, fps map[int64]fingerprint) {
	if table == "bips" {
		return int64(e.liveBipsRows), e.bipsHigh(), e.bipsFP
	}
	return int64(len(e.bansRows)), e.bansHigh(), e.bansFP
}
