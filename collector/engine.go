package collector

import (
	"cmp"
	"container/heap"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
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
type row struct {
	Rowid      int64
	Jail       string
	JailNull   bool
	IP         string
	IPNull     bool
	TimeOfBan  int64
	TimeValid  bool // typeof(timeofban) is integer or real
	Bantime    int64
	BanValid   bool // typeof(bantime) is integer or real (always true for schema 2)
	IPLen      int64
	JailLen    int64
	HasBantime bool // false for schema 2 bans rows
}

// fingerprint sums what identifies the rows of one rowid bucket. SQLite
// computes the same sums with fingerprintSQL, so a bucket whose rows changed
// in any way the engine cares about shows a different fingerprint.
type fingerprint struct {
	Count    int64
	RowidSum int64
	TimeSum  int64
	BanSum   int64
	LenSum   int64
}

// fingerprintModulus keeps the sums of one bucket far from overflowing.
const fingerprintModulus = 1000003

func (f *fingerprint) add(r *row, sign int64) {
	f.Count += sign
	f.RowidSum += sign * r.Rowid
	f.TimeSum += sign * (r.TimeOfBan % fingerprintModulus)
	f.BanSum += sign * (r.Bantime % fingerprintModulus)
	f.LenSum += sign * (r.IPLen + 7*r.JailLen)
}

// bucketShift groups rowids into buckets of 8192 for reconciliation.
const bucketShift = 13

func bucketOf(rowid int64) int64 { return rowid >> bucketShift }

// noIP marks a stored row that was skipped.
const noIP = math.MaxUint32

// event is one row of bans.
type event struct {
	rowid int64
	tob   uint32
	ip    uint32 // noIP for a skipped row
	jail  uint16
	skip  uint8 // index into skipReasons+1, 0 when counted
	// fp are the row's contributions to its bucket fingerprint.
	fpTime, fpBan int32
	fpLen         int32
}

// eventKey identifies a ban event: exact duplicate rows count once.
type eventKey struct {
	ip   uint32
	tob  uint32
	jail uint16
}

type keyState struct {
	count  uint32 // rows with this key
	serial uint32 // serial of the live tobEntry, when count > 0
}

// tobEntry orders distinct ban events by time for the trailing windows.
type tobEntry struct {
	tob    uint32
	ip     uint32
	serial uint32
	jail   uint16
}

// record is one row of bips (schema 4) or, for schema 2, the latest ban of
// an (ip, jail) pair derived from bans.
type record struct {
	rowid   int64
	tob     int64
	bantime int64
	ip      uint32
	jail    uint16
	skip    uint8
	fpTime  int32
	fpBan   int32
	fpLen   int32
	banned  bool // counted in banned right now
	dead    bool // removed; kept until compaction
}

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

// ipInfo is what the engine knows of one interned IP.
type ipInfo struct {
	addr    netip.Addr
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
	schema        int
	defaultBanSec int64

	jailNames []string
	jailIndex map[string]uint16

	countryNames []string
	countryIndex map[string]uint16
	countryGen   uint64

	ips     []ipInfo
	ipIndex map[netip.Addr]uint32
	ipFree  []uint32

	// bans
	events      []event // sorted by rowid
	deadEvents  int
	eventKeys   map[eventKey]keyState
	serial      uint32
	byTob       []tobEntry // sorted by tob; dead entries skipped lazily
	deadTob     int
	newTob      []tobEntry // distinct events not yet merged into byTob
	cursors     []int      // per window: first index of byTob inside the window
	lastNow     int64
	windowCount []map[jcKey]int
	bansFP      map[int64]fingerprint

	// bips (schema 4) or derived latest bans (schema 2)
	records    []record // sorted by rowid
	deadRecs   int
	recByPair  map[pairKey]int64 // pair → rowid of its record (schema 4: latest bips row)
	recByRowid map[int64]int     // rowid → index in records
	expiries   expiryHeap
	bannedRefs map[pairKey]uint16
	bannedNow  map[jcKey]int
	bipsFP     map[int64]fingerprint

	liveRecs int // records not dead

	// schema 2: latest ban time per pair, from bans.
	latest map[pairKey]uint32
	synth  int64 // last synthetic rowid of a derived record

	skipped map[[2]string]int // (table, reason) → rows

	// counting bans_total
	live       bool // past the initial load: new events count into bans_total
	bansTotal  map[jcKey]uint64
	pending    []pendingBan
	pendingAge time.Duration
}

type pendingBan struct {
	addr  netip.Addr
	jail  uint16
	since int64
}

func newEngine(countries CountryLookup, windows []Window, schema int, defaultBantime time.Duration, bansTotal map[jcKey]uint64, carry *engineCarry) *engine {
	e := &engine{
		countries:     countries,
		windows:       windows,
		schema:        schema,
		defaultBanSec: int64(defaultBantime / time.Second),
		jailIndex:     map[string]uint16{},
		countryIndex:  map[string]uint16{},
		ipIndex:       map[netip.Addr]uint32{},
		eventKeys:     map[eventKey]keyState{},
		cursors:       make([]int, len(windows)),
		windowCount:   make([]map[jcKey]int, len(windows)),
		bansFP:        map[int64]fingerprint{},
		recByPair:     map[pairKey]int64{},
		recByRowid:    map[int64]int{},
		bannedRefs:    map[pairKey]uint16{},
		bannedNow:     map[jcKey]int{},
		bipsFP:        map[int64]fingerprint{},
		latest:        map[pairKey]uint32{},
		skipped:       map[[2]string]int{},
		bansTotal:     map[jcKey]uint64{},
		pendingAge:    2 * time.Minute,
	}
	for i := range e.windowCount {
		e.windowCount[i] = map[jcKey]int{}
	}
	e.countryIndex[UnknownCountry] = 0
	e.countryNames = []string{UnknownCountry}
	if carry != nil {
		// A reload (new file, schema change) keeps the counters monotonic:
		// bans_total never goes down.
		e.jailNames = carry.jailNames
		for i, n := range carry.jailNames {
			e.jailIndex[n] = uint16(i)
		}
		e.countryNames = carry.countryNames
		for i, n := range carry.countryNames {
			e.countryIndex[n] = uint16(i)
		}
		e.bansTotal = carry.bansTotal
	}
	e.countryGen = countries.Generation()
	return e
}

// engineCarry is what survives a reload of the whole database.
type engineCarry struct {
	jailNames    []string
	countryNames []string
	bansTotal    map[jcKey]uint64
}

func (e *engine) carry() *engineCarry {
	return &engineCarry{jailNames: e.jailNames, countryNames: e.countryNames, bansTotal: e.bansTotal}
}

func (e *engine) jail(name string) uint16 {
	if i, ok := e.jailIndex[name]; ok {
		return i
	}
	if len(e.jailNames) >= math.MaxUint16 {
		// More than 65k jails is not a fail2ban configuration; fold the
		// rest into the last one rather than overflow.
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
	if i, ok := e.ipIndex[addr]; ok {
		e.ips[i].refs++
		return i
	}
	info := ipInfo{addr: addr, refs: 1, country: e.country(normalizeCountry(e.countries.Country(addr)))}
	var i uint32
	if n := len(e.ipFree); n > 0 {
		i = e.ipFree[n-1]
		e.ipFree = e.ipFree[:n-1]
		e.ips[i] = info
	} else {
		i = uint32(len(e.ips))
		e.ips = append(e.ips, info)
	}
	e.ipIndex[addr] = i
	e.countries.Track(addr)
	return i
}

func (e *engine) releaseIP(i uint32) {
	e.ips[i].refs--
	if e.ips[i].refs > 0 {
		return
	}
	addr := e.ips[i].addr
	delete(e.ipIndex, addr)
	e.ips[i] = ipInfo{}
	e.ipFree = append(e.ipFree, i)
	e.countries.Untrack(addr)
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

func fpParts(r *row) (int32, int32, int32) {
	return int32(r.TimeOfBan % fingerprintModulus), int32(r.Bantime % fingerprintModulus), int32(r.IPLen + 7*r.JailLen)
}

// ---- bans -------------------------------------------------------------

// addEvent adds one bans row. Rows must arrive with rowids above every
// stored one, or through replaceBansRange.
func (e *engine) addEvent(r *row, now int64) event {
	fpT, fpB, fpL := fpParts(r)
	ev := event{rowid: r.Rowid, fpTime: fpT, fpBan: fpB, fpLen: fpL, ip: noIP}
	fp := e.bansFP[bucketOf(r.Rowid)]
	fp.add(r, 1)
	e.bansFP[bucketOf(r.Rowid)] = fp

	addr, reason := classify(r, false)
	if reason != "" {
		ev.skip = skipIndex(reason)
		e.skipped[[2]string{"bans", reason}]++
		return ev
	}
	ev.jail = e.jail(r.Jail)
	ev.ip = e.internIP(addr)
	ev.tob = uint32(r.TimeOfBan)
	key := eventKey{ip: ev.ip, tob: ev.tob, jail: ev.jail}
	ks := e.eventKeys[key]
	ks.count++
	if ks.count == 1 {
		e.serial++
		ks.serial = e.serial
		e.insertTob(tobEntry{tob: ev.tob, ip: ev.ip, serial: ks.serial, jail: ev.jail}, now)
		if e.live {
			e.pending = append(e.pending, pendingBan{addr: addr, jail: ev.jail, since: now})
		}
		if e.schema == 2 {
			e.v2Latest(pairKey{ip: ev.ip, jail: ev.jail}, ev.tob, now)
		}
	}
	e.eventKeys[key] = ks
	return ev
}

// removeEvent removes the contributions of a stored event.
func (e *engine) removeEvent(ev *event, now int64) {
	fp := e.bansFP[bucketOf(ev.rowid)]
	fp.Count--
	fp.RowidSum -= ev.rowid
	fp.TimeSum -= int64(ev.fpTime)
	fp.BanSum -= int64(ev.fpBan)
	fp.LenSum -= int64(ev.fpLen)
	if fp.Count == 0 {
		delete(e.bansFP, bucketOf(ev.rowid))
	} else {
		e.bansFP[bucketOf(ev.rowid)] = fp
	}
	if ev.skip != 0 {
		k := [2]string{"bans", skipReasons[ev.skip-1]}
		if e.skipped[k]--; e.skipped[k] == 0 {
			delete(e.skipped, k)
		}
		return
	}
	key := eventKey{ip: ev.ip, tob: ev.tob, jail: ev.jail}
	ks := e.eventKeys[key]
	ks.count--
	if ks.count == 0 {
		delete(e.eventKeys, key)
		// The tobEntry stays in byTob and is skipped as dead; take it out
		// of the window counts now.
		jc := jcKey{jail: ev.jail, country: e.ips[ev.ip].country}
		for w := range e.windows {
			if e.inWindow(w, int64(ev.tob), now) {
				e.decWindow(w, jc)
			}
		}
		e.deadTob++
	} else {
		e.eventKeys[key] = ks
	}
	e.releaseIP(ev.ip)
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

// insertTob queues a distinct event for the time order; mergeTob places the
// queued events and counts them in the windows that contain them.
func (e *engine) insertTob(t tobEntry, _ int64) {
	e.newTob = append(e.newTob, t)
}

// mergeTob merges the queued events into byTob: an append when they are all
// newer than every stored one (the common case), else one sort and one
// linear merge, so a batch costs O(n + m log m) rather than O(n·m).
func (e *engine) mergeTob(now int64) {
	if len(e.newTob) == 0 {
		return
	}
	added := e.newTob
	e.newTob = nil
	slices.SortFunc(added, func(a, b tobEntry) int { return cmp.Compare(a.tob, b.tob) })
	if n := len(e.byTob); n == 0 || e.byTob[n-1].tob <= added[0].tob {
		e.byTob = append(e.byTob, added...)
	} else {
		merged := make([]tobEntry, 0, len(e.byTob)+len(added))
		i, j := 0, 0
		for i < len(e.byTob) && j < len(added) {
			if e.byTob[i].tob <= added[j].tob {
				merged = append(merged, e.byTob[i])
				i++
			} else {
				merged = append(merged, added[j])
				j++
			}
		}
		merged = append(merged, e.byTob[i:]...)
		merged = append(merged, added[j:]...)
		e.byTob = merged
	}
	for _, t := range added {
		jc := jcKey{jail: t.jail, country: e.ips[t.ip].country}
		for w := range e.windows {
			if e.inWindow(w, int64(t.tob), now) {
				e.windowCount[w][jc]++
			}
		}
	}
	e.resetCursors(now)
}

// resetCursors places every window's cursor at the first event inside it.
func (e *engine) resetCursors(now int64) {
	for w := range e.windows {
		limit := now - int64(e.windows[w].Length/time.Second)
		e.cursors[w] = sort.Search(len(e.byTob), func(i int) bool { return int64(e.byTob[i].tob) >= limit })
	}
}

func (e *engine) tobAlive(t *tobEntry) bool {
	ks, ok := e.eventKeys[eventKey{ip: t.ip, tob: t.tob, jail: t.jail}]
	return ok && ks.serial == t.serial
}

// ---- bips / current bans ------------------------------------------------

func (e *engine) isBanned(rec *record, now int64) bool {
	return rec.bantime <= -1 || rec.tob+rec.bantime > now
}

func (e *engine) setBanned(rec *record, banned bool) {
	if rec.banned == banned {
		return
	}
	rec.banned = banned
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

// newRecord builds the record of one bips row (schema 4) and adds its
// fingerprint, skip count and IP reference. A row for a pair that already has
// an older record replaces it: fail2ban writes bips with INSERT OR REPLACE,
// which deletes the old row; the old record is removed here at once rather
// than found missing by reconciliation later. The caller places the record
// into e.records and then calls activateRecord.
func (e *engine) newRecord(r *row, now int64) record {
	fpT, fpB, fpL := fpParts(r)
	rec := record{rowid: r.Rowid, fpTime: fpT, fpBan: fpB, fpLen: fpL, ip: noIP, tob: r.TimeOfBan, bantime: r.Bantime}
	fp := e.bipsFP[bucketOf(r.Rowid)]
	fp.add(r, 1)
	e.bipsFP[bucketOf(r.Rowid)] = fp

	addr, reason := classify(r, true)
	if reason != "" {
		rec.skip = skipIndex(reason)
		e.skipped[[2]string{"bips", reason}]++
		return rec
	}
	rec.jail = e.jail(r.Jail)
	rec.ip = e.internIP(addr)
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if old, ok := e.recByPair[pk]; ok && old < r.Rowid {
		// Same raw spelling (same length) means the same primary key.
		if idx, ok := e.recByRowid[old]; ok && e.records[idx].fpLen == fpL {
			e.removeRecordAt(idx, now)
		}
	}
	return rec
}

// activateRecord indexes the placed record at idx and counts it.
func (e *engine) activateRecord(idx int, now int64) {
	rec := &e.records[idx]
	e.recByRowid[rec.rowid] = idx
	if rec.skip != 0 {
		return
	}
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if old, ok := e.recByPair[pk]; !ok || old < rec.rowid {
		e.recByPair[pk] = rec.rowid
	}
	e.setBanned(rec, e.isBanned(rec, now))
	if rec.banned && rec.bantime > -1 {
		heap.Push(&e.expiries, expiry{at: rec.tob + rec.bantime, rowid: rec.rowid})
	}
}

// removeRecordAt removes the record at index idx (marking it dead).
func (e *engine) removeRecordAt(idx int, _ int64) {
	rec := &e.records[idx]
	if rec.dead {
		return
	}
	fp := e.bipsFP[bucketOf(rec.rowid)]
	fp.Count--
	fp.RowidSum -= rec.rowid
	fp.TimeSum -= int64(rec.fpTime)
	fp.BanSum -= int64(rec.fpBan)
	fp.LenSum -= int64(rec.fpLen)
	if fp.Count == 0 {
		delete(e.bipsFP, bucketOf(rec.rowid))
	} else {
		e.bipsFP[bucketOf(rec.rowid)] = fp
	}
	delete(e.recByRowid, rec.rowid)
	rec.dead = true
	e.deadRecs++
	e.liveRecs--
	if rec.skip != 0 {
		k := [2]string{"bips", skipReasons[rec.skip-1]}
		if e.skipped[k]--; e.skipped[k] == 0 {
			delete(e.skipped, k)
		}
		return
	}
	e.setBanned(rec, false)
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if e.recByPair[pk] == rec.rowid {
		delete(e.recByPair, pk)
	}
	e.releaseIP(rec.ip)
}

// v2Latest records a ban event for schema 2, where "currently banned" is
// the latest ban of a pair plus the default bantime.
func (e *engine) v2Latest(pk pairKey, tob uint32, now int64) {
	cur, ok := e.latest[pk]
	if ok && cur >= tob {
		return
	}
	e.latest[pk] = tob
	rowid, has := e.recByPair[pk]
	if has {
		idx := e.recByRowid[rowid]
		rec := &e.records[idx]
		rec.tob = int64(tob)
		e.setBanned(rec, e.isBanned(rec, now))
	} else {
		// Derived records get synthetic negative rowids so they never mix
		// with real ones.
		e.synth--
		rowid = e.synth
		rec := record{rowid: rowid, tob: int64(tob), bantime: e.defaultBanSec, ip: pk.ip, jail: pk.jail}
		e.ips[pk.ip].refs++
		// Synthetic rowids decrease; keep records sorted by prepending
		// logically: they are never range-replaced, so order is irrelevant
		// for schema 2 and only recByRowid is used.
		e.records = append(e.records, rec)
		e.liveRecs++
		e.recByRowid[rowid] = len(e.records) - 1
		e.recByPair[pk] = rowid
		rec2 := &e.records[len(e.records)-1]
		e.setBanned(rec2, e.isBanned(rec2, now))
	}
	heap.Push(&e.expiries, expiry{at: int64(tob) + e.defaultBanSec, rowid: rowid})
}

// rebuildV2 recomputes the schema-2 derived records from the events, after
// deletions.
func (e *engine) rebuildV2(now int64) {
	for i := range e.records {
		if !e.records[i].dead {
			e.setBanned(&e.records[i], false)
			e.releaseIP(e.records[i].ip)
		}
	}
	e.records = e.records[:0]
	e.deadRecs = 0
	e.liveRecs = 0
	clear(e.recByPair)
	clear(e.recByRowid)
	clear(e.latest)
	e.expiries = e.expiries[:0]
	for i := range e.events {
		ev := &e.events[i]
		if ev.skip == 0 {
			e.v2Latest(pairKey{ip: ev.ip, jail: ev.jail}, ev.tob, now)
		}
	}
}

// ---- time ----------------------------------------------------------------

// advance moves the engine's clock to now: bans expire, events leave the
// windows, pending bans_total increments are settled.
func (e *engine) advance(now int64) {
	for e.expiries.Len() > 0 && e.expiries[0].at <= now {
		x := heap.Pop(&e.expiries).(expiry)
		idx, ok := e.recByRowid[x.rowid]
		if !ok {
			continue
		}
		rec := &e.records[idx]
		if rec.dead || rec.skip != 0 {
			continue
		}
		if e.isBanned(rec, now) {
			// Stale entry (schema 2 record moved on); a newer one exists.
			continue
		}
		e.setBanned(rec, false)
	}
	if now < e.lastNow {
		// The clock went backwards: recompute window membership.
		e.recountWindows(now)
	} else {
		for w := range e.windows {
			limit := now - int64(e.windows[w].Length/time.Second)
			c := e.cursors[w]
			for c < len(e.byTob) && int64(e.byTob[c].tob) < limit {
				t := &e.byTob[c]
				if e.tobAlive(t) {
					e.decWindow(w, jcKey{jail: t.jail, country: e.ips[t.ip].country})
				}
				c++
			}
			e.cursors[w] = c
		}
	}
	e.lastNow = now
	e.settlePending(now, false)
	if e.deadTob > 1024 && e.deadTob > len(e.byTob)/4 {
		e.compactTob()
	}
	if e.deadRecs > 1024 && e.deadRecs > len(e.records)/4 {
		e.compactRecords()
	}
}

// settlePending counts new ban events into bans_total once their IP has a
// country, or after pendingAge as unknown, so ban rates per country are not
// all "ZZ" just because geo had not answered yet.
func (e *engine) settlePending(now int64, all bool) {
	keep := e.pending[:0]
	for _, p := range e.pending {
		c := normalizeCountry(e.countries.Country(p.addr))
		if all || c != "" || now-p.since >= int64(e.pendingAge/time.Second) {
			e.bansTotal[jcKey{jail: p.jail, country: e.country(c)}]++
			continue
		}
		keep = append(keep, p)
	}
	e.pending = keep
}

func (e *engine) recountWindows(now int64) {
	for w := range e.windows {
		clear(e.windowCount[w])
		limit := now - int64(e.windows[w].Length/time.Second)
		e.cursors[w] = sort.Search(len(e.byTob), func(i int) bool { return int64(e.byTob[i].tob) >= limit })
		for i := e.cursors[w]; i < len(e.byTob); i++ {
			t := &e.byTob[i]
			if e.tobAlive(t) {
				e.windowCount[w][jcKey{jail: t.jail, country: e.ips[t.ip].country}]++
			}
		}
	}
}

func (e *engine) compactTob() {
	out := e.byTob[:0]
	for _, t := range e.byTob {
		if e.tobAlive(&t) {
			out = append(out, t)
		}
	}
	clear(e.byTob[len(out):])
	e.byTob = out
	e.deadTob = 0
	e.resetCursors(e.lastNow)
}

func (e *engine) compactRecords() {
	out := e.records[:0]
	for _, r := range e.records {
		if !r.dead {
			out = append(out, r)
		}
	}
	e.records = out
	e.deadRecs = 0
	clear(e.recByRowid)
	for i := range e.records {
		e.recByRowid[e.records[i].rowid] = i
	}
}

// ---- countries ---------------------------------------------------------

// refreshCountries moves IPs whose country changed since the last look.
// It runs only when the CountryLookup's generation changed.
func (e *engine) refreshCountries(now int64) {
	gen := e.countries.Generation()
	if gen == e.countryGen {
		return
	}
	e.countryGen = gen
	changed := map[uint32]uint16{}
	for i := range e.ips {
		info := &e.ips[i]
		if info.refs == 0 {
			continue
		}
		c := e.country(normalizeCountry(e.countries.Country(info.addr)))
		if c != info.country {
			changed[uint32(i)] = info.country
		}
	}
	if len(changed) == 0 {
		return
	}
	// Banned pairs move from their old country to the new one.
	for pk := range e.bannedRefs {
		old, ok := changed[pk.ip]
		if !ok {
			continue
		}
		jc := jcKey{jail: pk.jail, country: old}
		if e.bannedNow[jc]--; e.bannedNow[jc] <= 0 {
			delete(e.bannedNow, jc)
		}
	}
	for ip := range changed {
		e.ips[ip].country = e.country(normalizeCountry(e.countries.Country(e.ips[ip].addr)))
	}
	for pk := range e.bannedRefs {
		if _, ok := changed[pk.ip]; ok {
			e.bannedNow[jcKey{jail: pk.jail, country: e.ips[pk.ip].country}]++
		}
	}
	// Events inside the windows move too.
	for w := range e.windows {
		for j := e.cursors[w]; j < len(e.byTob); j++ {
			t := &e.byTob[j]
			old, ok := changed[t.ip]
			if !ok || !e.tobAlive(t) {
				continue
			}
			e.decWindow(w, jcKey{jail: t.jail, country: old})
			e.windowCount[w][jcKey{jail: t.jail, country: e.ips[t.ip].country}]++
		}
	}
}

// recountBanned re-evaluates every record, after the clock went backwards.
func (e *engine) recountBanned(now int64) {
	e.expiries = e.expiries[:0]
	for i := range e.records {
		rec := &e.records[i]
		if rec.dead || rec.skip != 0 {
			continue
		}
		e.setBanned(rec, e.isBanned(rec, now))
		if rec.banned && rec.bantime > -1 {
			e.expiries = append(e.expiries, expiry{at: rec.tob + rec.bantime, rowid: rec.rowid})
		}
	}
	heap.Init(&e.expiries)
}

// ---- applying rows -------------------------------------------------------

// appendBans adds bans rows whose rowids are all above the stored ones, in
// rowid order.
func (e *engine) appendBans(rows []row, now int64) {
	for i := range rows {
		e.events = append(e.events, e.addEvent(&rows[i], now))
	}
	e.mergeTob(now)
}

// appendBips adds bips rows whose rowids are all above the stored ones, in
// rowid order.
func (e *engine) appendBips(rows []row, now int64) {
	for i := range rows {
		rec := e.newRecord(&rows[i], now)
		e.records = append(e.records, rec)
		e.liveRecs++
		e.activateRecord(len(e.records)-1, now)
	}
}

// replaceBansRange makes the stored bans rows with rowids in [lo, hi] equal
// to rows (sorted by rowid).
func (e *engine) replaceBansRange(lo, hi int64, rows []row, now int64) {
	i := sort.Search(len(e.events), func(k int) bool { return e.events[k].rowid >= lo })
	j := sort.Search(len(e.events), func(k int) bool { return e.events[k].rowid > hi })
	removed := j > i
	for k := i; k < j; k++ {
		e.removeEvent(&e.events[k], now)
	}
	added := make([]event, 0, len(rows))
	for k := range rows {
		added = append(added, e.addEvent(&rows[k], now))
	}
	e.events = slices.Replace(e.events, i, j, added...)
	e.mergeTob(now)
	if removed && e.schema == 2 {
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
	// Every record of the range is dead now: drop them and put the new
	// ones in place.
	e.deadRecs -= j - i
	e.records = slices.Replace(e.records, i, j, added...)
	e.liveRecs += len(added)
	for k := i; k < len(e.records); k++ {
		if e.records[k].dead {
			continue
		}
		if k < i+len(added) {
			e.activateRecord(k, now)
		} else {
			e.recByRowid[e.records[k].rowid] = k
		}
	}
}

// bansHigh is the highest stored bans rowid (0 when none).
func (e *engine) bansHigh() int64 {
	if n := len(e.events); n > 0 {
		return e.events[n-1].rowid
	}
	return 0
}

// bipsHigh is the highest live bips rowid (0 when none).
func (e *engine) bipsHigh() int64 {
	for k := len(e.records) - 1; k >= 0; k-- {
		if !e.records[k].dead {
			return e.records[k].rowid
		}
	}
	return 0
}

// oldestBan is the timeofban of the oldest counted ban event.
func (e *engine) oldestBan() (int64, bool) {
	for i := range e.byTob {
		if e.tobAlive(&e.byTob[i]) {
			return int64(e.byTob[i].tob), true
		}
	}
	return 0, false
}

// snapshot copies the aggregates for the collector.
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
	for _, w := range e.windowCount {
		s.windows = append(s.windows, cloneMap(w))
	}
	s.oldest, s.haveOldest = e.oldestBan()
	return s
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
