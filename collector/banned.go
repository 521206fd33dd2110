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
			Bantime:   rec.bantime,
			Bancount:  e.bancountOf(rec.rowid),
		})
		if len(buf) == walkChunk {
			return buf, after, i == len(e.bipsRows)-1
		}
	}
	return buf, after, true
}

// bancountOf is fail2ban's bancount of the bips row rowid: 0 for schema 2,
// else the sparse table's value or 1 (fail2ban's default), which most rows
// have and the table leaves out.
func (e *engine) bancountOf(rowid int64) int64 {
	if e.schema < 4 {
		return 0
	}
	if n, ok := e.bancounts[rowid]; ok {
		return n
	}
	return 1
}

// noteBancount records the bancount of a schema-4 bips row when it is not
// 1; forgetBancount drops it with the row.
func (e *engine) noteBancount(rowid, bancount int64) {
	if bancount == 1 {
		return
	}
	if e.bancounts == nil {
		e.bancounts = map[int64]int64{}
	}
	e.bancounts[rowid] = bancount
}

func (e *engine) forgetBancount(rowid int64) {
	if e.bancounts != nil {
		delete(e.bancounts, rowid)
	}
}
