package collector

// Current bans: the bips rows (schema 4), or one derived bips row per (ip,
// jail) pair for schema 2, each banned while fail2ban's rule holds, an
// expiry heap that unbans them as time passes, and the per-series count of
// banned pairs (fail2ban_banned_ips).

import (
	"cmp"
	"container/heap"
	"math"
	"slices"
)

// bipsRow is the engine's copy of one row of fail2ban's bips table (schema
// 4) or, for schema 2, the latest ban of
// an (ip, jail) pair derived from bans.
// bantime and bancount hold fail2ban's values where they fit (nearly all
// rows: bantimes of seconds to years, bancounts of a few); a value that does
// not is wideBantime or wideBancount here and exact in the engine's sparse
// wideBantimes or wideBancounts, keyed by rowid (bantimeOf, bancountOf). So
// the bancount needs no map entry of its own (37 MB at ten million rows)
// and a bipsRow stays at 32 bytes.
type bipsRow struct {
	rowid     int64
	bantime   int32
	timeOfBan uint32
	ip        uint32
	mix       int32
	jail      uint16
	bancount  uint16
	skip      uint8
	state     uint8 // bipsBanned, bipsDead
}

const (
	wideBantime  = math.MinInt32  // bipsRow.bantime: see engine.wideBantimes
	wideBancount = math.MaxUint16 // bipsRow.bancount: see engine.wideBancounts
)

const (
	bipsBanned uint8 = 1 << iota // counted in banned right now
	bipsDead                     // removed; kept until compaction
)

func (r *bipsRow) banned() bool { return r.state&bipsBanned != 0 }
func (r *bipsRow) dead() bool   { return r.state&bipsDead != 0 }

type pairKey struct {
	ip   uint32
	jail uint16
}

// expiry is an entry of the expiry heap: the bips row with rowid expires at
// at.
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

// ---- bips / current bans ------------------------------------------------

func (e *engine) isBanned(rec *bipsRow, now int64) bool {
	bantime := e.bantimeOf(rec)
	return bantime <= -1 || int64(rec.timeOfBan)+bantime > now
}

// bantimeOf is the bantime of the bips row rec: for schema 2 the default
// bantime, which every derived row has.
func (e *engine) bantimeOf(rec *bipsRow) int64 {
	if rec.bantime != wideBantime {
		return int64(rec.bantime)
	}
	if e.schema == 2 {
		return e.defaultBanSec
	}
	return e.wideBantimes[rec.rowid]
}

// setBantime stores bantime in rec, in wideBantimes when it does not fit.
func (e *engine) setBantime(rec *bipsRow, bantime int64) {
	if bantime > math.MinInt32 && bantime <= math.MaxInt32 {
		rec.bantime = int32(bantime)
		return
	}
	rec.bantime = wideBantime
	if e.schema == 2 {
		return // always the default bantime (bantimeOf)
	}
	if e.wideBantimes == nil {
		e.wideBantimes = map[int64]int64{}
	}
	e.wideBantimes[rec.rowid] = bantime
}

// expiresAt is when the banned bips row rec expires, false when never.
func (e *engine) expiresAt(rec *bipsRow) (int64, bool) {
	bantime := e.bantimeOf(rec)
	return int64(rec.timeOfBan) + bantime, bantime > -1
}

func (e *engine) setBanned(rec *bipsRow, banned bool) {
	if rec.banned() == banned {
		return
	}
	rec.state ^= bipsBanned
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	jc := seriesKey{jail: rec.jail, country: e.ips[rec.ip].country}
	if banned {
		e.bannedRefs[pk]++
		if e.bannedRefs[pk] == 1 {
			e.bannedNow[jc]++
			e.changes[familyBanned]++
		}
		return
	}
	e.bannedRefs[pk]--
	if e.bannedRefs[pk] == 0 {
		delete(e.bannedRefs, pk)
		e.changes[familyBanned]++
		if e.bannedNow[jc]--; e.bannedNow[jc] <= 0 {
			delete(e.bannedNow, jc)
		}
	}
}

// findBipsRow returns the index of the live bips row with rowid, or -1.
func (e *engine) findBipsRow(rowid int64) int {
	i, found := slices.BinarySearchFunc(e.bipsRows, rowid, func(r bipsRow, id int64) int { return cmp.Compare(r.rowid, id) })
	if !found || e.bipsRows[i].dead() {
		return -1
	}
	return i
}

// newBipsRow builds the bipsRow of one row of bips (schema 4). A row for a
// pair that already has an older row replaces it: fail2ban writes bips with
// INSERT OR REPLACE, which deletes the old row, so the old bipsRow goes at
// once rather than being found missing by reconciliation later. The caller
// places the bipsRow in rowid order and then calls activateBipsRow.
func (e *engine) newBipsRow(r *sourceRow, now int64) bipsRow {
	rec := bipsRow{rowid: r.Rowid, mix: rowMix(r), ip: noIP}
	e.setBantime(&rec, r.Bantime)
	addr, reason := classify(r, true)
	if reason != "" {
		rec.skip = skipIndex(reason)
		return rec
	}
	rec.timeOfBan = uint32(r.TimeOfBan)
	e.setBancount(&rec, r.Bancount)
	rec.jail = e.jail(r.Jail)
	rec.ip = e.internIP(addr)
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if old, ok := e.latestBipsRow.get(pk); ok && old < r.Rowid {
		// The same spelling (same length) is the same primary key; two
		// spellings of one address are two rows and both stay.
		if idx := e.findBipsRow(old); idx >= 0 && e.spellingMix(idx) == spellingPart(r.IPLen, r.JailLen) {
			e.removeBipsRowAt(idx, now)
		}
	}
	return rec
}

// activateBipsRow counts the placed bips row at idx.
func (e *engine) activateBipsRow(idx int, now int64) {
	rec := &e.bipsRows[idx]
	addFP(e.bipsFP, rec.rowid, rec.mix, 1)
	e.liveBipsRows++
	if rec.skip != 0 {
		e.addSkip("bips", rec.skip, 1)
		return
	}
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if old, ok := e.latestBipsRow.get(pk); !ok || old < rec.rowid {
		e.latestBipsRow.set(pk, rec.rowid)
	}
	e.setBanned(rec, e.isBanned(rec, now))
	if at, expires := e.expiresAt(rec); rec.banned() && expires {
		heap.Push(&e.expiries, expiry{at: at, rowid: rec.rowid})
	}
}

// removeBipsRowAt takes the bips row at idx out of every aggregate and marks it
// dead; compact drops it later.
func (e *engine) removeBipsRowAt(idx int, _ int64) {
	rec := &e.bipsRows[idx]
	if rec.dead() {
		return
	}
	addFP(e.bipsFP, rec.rowid, rec.mix, -1)
	e.forgetWide(rec)
	rec.state |= bipsDead
	e.deadBipsRows++
	e.liveBipsRows--
	if rec.skip != 0 {
		e.addSkip("bips", rec.skip, -1)
		return
	}
	e.setBanned(rec, false)
	pk := pairKey{ip: rec.ip, jail: rec.jail}
	if latest, ok := e.latestBipsRow.get(pk); ok && latest == rec.rowid {
		e.latestBipsRow.del(pk)
	}
	e.releaseIP(rec.ip)
}

// deriveSchema2Ban takes in a ban event for schema 2, where a pair is banned while
// its latest ban plus the default bantime lies in the future (fail2ban
// 0.9/0.10's own rule). Derived bips rows get increasing rowids of their own.
func (e *engine) deriveSchema2Ban(pk pairKey, timeOfBan uint32, now int64) {
	if rowid, ok := e.latestBipsRow.get(pk); ok {
		rec := &e.bipsRows[e.findBipsRow(rowid)]
		if rec.timeOfBan >= timeOfBan {
			return
		}
		rec.timeOfBan = timeOfBan
		e.setBanned(rec, e.isBanned(rec, now))
	} else {
		e.lastDerivedRowid++
		e.ipRefs[pk.ip]++
		rec := bipsRow{rowid: e.lastDerivedRowid, timeOfBan: timeOfBan, ip: pk.ip, jail: pk.jail}
		e.setBantime(&rec, e.defaultBanSec)
		e.bipsRows = append(e.bipsRows, rec)
		e.liveBipsRows++
		e.latestBipsRow.set(pk, e.lastDerivedRowid)
		last := &e.bipsRows[len(e.bipsRows)-1]
		e.setBanned(last, e.isBanned(last, now))
	}
	latest, _ := e.latestBipsRow.get(pk)
	heap.Push(&e.expiries, expiry{at: int64(timeOfBan) + e.defaultBanSec, rowid: latest})
}

// rebuildSchema2Bans recomputes the derived schema-2 bips rows from the bans rows, after
// deletions.
func (e *engine) rebuildSchema2Bans(now int64) {
	for i := range e.bipsRows {
		if !e.bipsRows[i].dead() {
			e.setBanned(&e.bipsRows[i], false)
			e.releaseIP(e.bipsRows[i].ip)
		}
	}
	e.bipsRows = e.bipsRows[:0]
	e.deadBipsRows, e.liveBipsRows = 0, 0
	e.latestBipsRow.clear()
	e.expiries = e.expiries[:0]
	for i := range e.bansRows {
		if ev := &e.bansRows[i]; ev.skip == 0 {
			e.deriveSchema2Ban(pairKey{ip: ev.ip, jail: ev.jail}, ev.timeOfBan, now)
		}
	}
}

// recountBanned re-evaluates every bips row, after the clock went backwards.
func (e *engine) recountBanned(now int64) {
	e.expiries = e.expiries[:0]
	for i := range e.bipsRows {
		rec := &e.bipsRows[i]
		if rec.dead() || rec.skip != 0 {
			continue
		}
		e.setBanned(rec, e.isBanned(rec, now))
		if at, expires := e.expiresAt(rec); rec.banned() && expires {
			e.expiries = append(e.expiries, expiry{at: at, rowid: rec.rowid})
		}
	}
	heap.Init(&e.expiries)
}
