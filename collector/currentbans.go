package collector

import (
	"cmp"
	"container/heap"
	"slices"
)

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
