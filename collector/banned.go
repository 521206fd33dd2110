package collector

// A read-only walk over the currently banned (jail, IP) pairs, for parts
// that need more than the per-(jail, country) counts (banmap: the top
// autonomous systems and places, the admin API's list of banned IPs). It
// reads the engine as the last refresh left it and changes nothing.

import (
	"context"
	"fmt"
	"sort"
)

// BannedIP is one (jail, IP) pair banned as of the engine's last refresh:
// the pair fail2ban_banned_ips counts once.
type BannedIP struct {
	Jail string
	// IP is the address in its 16-byte form (IPv4 addresses IPv4-mapped);
	// netip.AddrFrom16(IP).Unmap() gives the address.
	IP [16]byte
	// Country is the engine's country of the IP (UnknownCountry when not
	// known), the country label fail2ban_banned_ips counts it under.
	Country string
	// TimeOfBan is the bips row's timeofban (Unix seconds).
	TimeOfBan int64
	// Bantime is the ban's length in seconds (-1: permanent); for schema 2
	// databases the assumed --fail2ban.default-bantime.
	Bantime int64
	// Bancount is fail2ban's bancount (schema 4); 0 where the schema has
	// none (schema 2).
	Bancount int64
}

// walkChunk is how many banned pairs one step of WalkBanned copies while it
// holds the Exporter's lock.
const walkChunk = 4096

// WalkBanned calls fn with the currently banned pairs in chunks (in the
// order of their bips rows), holding the Exporter's lock only while it
// copies one chunk, never while fn runs, so a refresh can run between two
// chunks; a pair may then be seen in the state before or after it. fn must
// not keep the slice. It returns ctx's error when ctx ends first. Before the
// first read of the database it calls fn never.
func (ex *Exporter) WalkBanned(ctx context.Context, fn func([]BannedIP)) error {
	buf := make([]BannedIP, 0, walkChunk)
	// multi holds the pairs with more than one banned bips row (two
	// spellings of one address) already yielded: each pair once.
	multi := map[pairKey]struct{}{}
	after := int64(-1 << 63)
	var gen *engine
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("walk banned IPs: %w", err)
		}
		buf = buf[:0]
		ex.mu.Lock()
		eng := ex.eng
		if eng == nil || (gen != nil && eng != gen) {
			// No engine yet, or a reload replaced it: the rowids of the
			// old walk mean nothing in the new one.
			ex.mu.Unlock()
			return nil
		}
		gen = eng
		var done bool
		buf, after, done = eng.bannedChunk(buf, after, multi)
		ex.mu.Unlock()
		if len(buf) > 0 {
			fn(buf)
		}
		if done {
			return nil
		}
	}
}

// bannedChunk appends to buf the banned pairs of the bips rows after rowid
// after, up to walkChunk of them, and returns the last rowid looked at and
// whether the rows ended.
func (e *engine) bannedChunk(buf []BannedIP, after int64, multi map[pairKey]struct{}) ([]BannedIP, int64, bool) {
	i := sort.Search(len(e.bipsRows), func(k int) bool { return e.bipsRows[k].rowid > after })
	for ; i < len(e.bipsRows); i++ {
		rec := &e.bipsRows[i]
		after = rec.rowid
		if rec.dead() || rec.skip != 0 || !rec.banned() {
			continue
		}
		pk := pairKey{ip: rec.ip, jail: rec.jail}
		if e.bannedRefs[pk] > 1 {
			if _, seen := multi[pk]; seen {
				continue
			}
			multi[pk] = struct{}{}
		}
		info := &e.ips[rec.ip]
		buf = append(buf, BannedIP{
			Jail:      e.jailNames[rec.jail],
			IP:        info.key,
			Country:   e.countryNames[info.country],
			TimeOfBan: int64(rec.timeOfBan),
			Bantime:   e.bantimeOf(rec),
			Bancount:  e.bancountOf(rec),
		})
		if len(buf) == walkChunk {
			return buf, after, i == len(e.bipsRows)-1
		}
	}
	return buf, after, true
}

// bancountOf is fail2ban's bancount of the bips row rec: 0 for schema 2.
func (e *engine) bancountOf(rec *bipsRow) int64 {
	if e.schema < 4 {
		return 0
	}
	if rec.bancount == wideBancount {
		return e.wideBancounts[rec.rowid]
	}
	return int64(rec.bancount)
}

// setBancount stores bancount in rec, in wideBancounts when it does not
// fit.
func (e *engine) setBancount(rec *bipsRow, bancount int64) {
	if bancount >= 0 && bancount < wideBancount {
		rec.bancount = uint16(bancount)
		return
	}
	rec.bancount = wideBancount
	if e.wideBancounts == nil {
		e.wideBancounts = map[int64]int64{}
	}
	e.wideBancounts[rec.rowid] = bancount
}

// forgetWide drops the wide values of the bips row rec with the row.
func (e *engine) forgetWide(rec *bipsRow) {
	if rec.bantime == wideBantime && e.wideBantimes != nil {
		delete(e.wideBantimes, rec.rowid)
	}
	if rec.bancount == wideBancount && e.wideBancounts != nil {
		delete(e.wideBancounts, rec.rowid)
	}
}
