package collector

import (
	"cmp"
	"context"
	"errors"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
)

// The backfill: a startup read with many rows the archive does not hold yet
// (a first start on a large fail2ban database) does not collect them for the
// archive — a million rows would stay in memory until written. It offers
// none, and once the exporter is ready a background goroutine reads those
// rows again from fail2ban's database, chunk by chunk in rowid order, and
// queues them with AddWait: memory stays at a chunk and the archive's queue.
//
// Nothing may be lost in between: a row fail2ban deletes (purge, unbanip)
// before the backfill reads it is an event the engine counted. So the engine
// notes what leaves its range before the backfill got there (removed), and
// each chunk is checked under the exporter's lock against the engine's own
// bans rows of the same rowids (step): a bans row the engine holds whose row is
// gone or changed is archived from the engine's data, with bantime -2
// (unknown) and bancount 0, the only fields the engine does not keep.

// backfillAbove is the number of rows for the archive above which a startup
// read backfills instead of collecting offers (≈ 2.6 MB of offers).
const backfillAbove = 1 << 16

// backfillChunk is how many rows one backfill step reads.
const backfillChunk = offerChunkLen

// backfillQueued is how many events the backfill keeps in the archive's
// queue (queued or being written): a few chunks keep the archive busy, and
// the queue's own bound (200,000 events, 13 MB, and the garbage of growing
// it) would put the backfill's memory on top of the first start's peak.
const backfillQueued = 4 * backfillChunk

// backfillState is the engine's part of a backfill.
type backfillState struct {
	// cursor: rows with rowid <= cursor are done. to: the highest rowid to
	// read (math.MaxInt64 until the startup read has ended).
	cursor, to int64
	// lost are bans rows removed from the engine before the backfill read
	// their rowids: deleted rows, or rows a reconciliation takes out and
	// reads again (then the row is still there and wins).
	lost []lostBansRow
	// dev and ino name the file the startup read read.
	dev, ino uint64
	// valid is backfillStep's scratch list of a chunk's valid rows.
	valid []*sourceRow
}

// lostBansRow is a bans row removed from the engine, with its rowid.
type lostBansRow struct {
	rowid int64
	offer pendingOffer
}

// engineOffer is the archive's view of a bansRow when its row cannot
// be read: bantime unknown, bancount 0.
func (e *engine) engineOffer(ev *bansRow) pendingOffer {
	return pendingOffer{ip: e.ips[ev.ip].key, bantime: -2, timeOfBan: ev.timeOfBan, jail: ev.jail}
}

// removed notes a counted bans row the engine drops before the backfill has
// read its rowid. Called by removeEvent before the IP is released.
func (b *backfillState) removed(e *engine, ev *bansRow) {
	if ev.rowid > b.cursor && ev.rowid <= b.to {
		b.lost = append(b.lost, lostBansRow{rowid: ev.rowid, offer: e.engineOffer(ev)})
	}
}

// abandon ends a backfill that will not go on (the engine is replaced) and
// returns the ban events it had not archived yet, from the engine's own data.
func (b *backfillState) abandon(e *engine) []pendingOffer {
	out := b.lostOffers()
	for i := e.bansRowsAfter(b.cursor); i < len(e.bansRows) && e.bansRows[i].rowid <= b.to; i++ {
		if ev := &e.bansRows[i]; ev.skip == 0 {
			out = append(out, e.engineOffer(ev))
		}
	}
	return out
}

// lostOffers are the offers of the bans rows removed before the backfill read
// their rows.
func (b *backfillState) lostOffers() []pendingOffer {
	out := make([]pendingOffer, len(b.lost))
	for i, l := range b.lost {
		out[i] = l.offer
	}
	return out
}

// bansRowsAfter is the index of the first stored bans row with rowid > rowid.
func (e *engine) bansRowsAfter(rowid int64) int {
	i, _ := slices.BinarySearchFunc(e.bansRows, rowid+1, func(ev bansRow, r int64) int { return cmp.Compare(ev.rowid, r) })
	return i
}

// startBackfill puts a startup read of a bans table of bansRows rows into
// backfill mode when more than above of them are not in the archive yet
// (rows beyond the ban events loaded from it).
func (e *engine) startBackfill(bansRows, above int64) {
	if fresh := bansRows - int64(e.fromArchive); e.keep && e.backfill == nil && fresh > above {
		e.backfill = &backfillState{to: math.MaxInt64}
	}
}

// bindBackfill records the file (device, inode) the startup read read and
// reports whether a backfill is to run on it.
func (e *engine) bindBackfill(dev, ino uint64) bool {
	if e.backfill == nil {
		return false
	}
	e.backfill.dev, e.backfill.ino = dev, ino
	return true
}

// endBackfillRange fixes the backfill's range at the end of the startup
// read: every stored bans row so far.
func (e *engine) endBackfillRange() {
	if e.backfill != nil {
		e.backfill.to = e.bansHigh()
		if e.backfill.to <= e.backfill.cursor && len(e.backfill.lost) == 0 {
			e.backfill = nil
		}
	}
}

// backfillStep takes the rows fail2ban's database holds with rowids in
// (cursor, hi] and returns the archive events of the step: the rows, plus
// the engine's bans rows of those rowids whose row is gone or changed, plus
// those removed since the last step. It returns done when the range is
// complete (the backfill is then over).
func (e *engine) backfillStep(rows []sourceRow, hi int64, events []archive.Event) (_ []archive.Event, done bool) {
	b := e.backfill
	hi = min(hi, b.to)
	// The valid rows of the step in rowid order (rows are read in rowid
	// order), found by binary search: no map of a chunk per step.
	valid := b.valid[:0]
	defer func() { clear(valid); b.valid = valid[:0] }()
	byRowid := func(rowid int64) (*sourceRow, bool) {
		i, ok := slices.BinarySearchFunc(valid, rowid, func(r *sourceRow, id int64) int { return cmp.Compare(r.Rowid, id) })
		if !ok {
			return nil, false
		}
		return valid[i], true
	}
	for i := range rows {
		r := &rows[i]
		if r.Rowid <= b.cursor || r.Rowid > hi {
			continue
		}
		addr, reason := classify(r, false)
		if reason != "" {
			continue
		}
		valid = append(valid, r)
		if e.isFromArchiveByName(r.Jail, addr, r.TimeOfBan) {
			continue // a restart's backfill: already archived
		}
		events = append(events, archive.Event{Jail: r.Jail, IP: addr, TimeOfBan: r.TimeOfBan, Bantime: rowBantime(r), Bancount: r.Bancount})
	}
	var missing []pendingOffer
	for i := e.bansRowsAfter(b.cursor); i < len(e.bansRows) && e.bansRows[i].rowid <= hi; i++ {
		ev := &e.bansRows[i]
		if ev.skip != 0 {
			continue
		}
		o := e.engineOffer(ev)
		if r, ok := byRowid(ev.rowid); ok && samePending(&o, e.jailNames, r) {
			continue
		}
		missing = append(missing, o)
	}
	// Removed bans rows of this step's rowids: archived from the engine
	// unless their row is still there (a reconciliation reread it).
	kept := b.lost[:0]
	for _, l := range b.lost {
		switch r, ok := byRowid(l.rowid); {
		case l.rowid > hi:
			kept = append(kept, l)
		case ok && samePending(&l.offer, e.jailNames, r):
		default:
			missing = append(missing, l.offer)
		}
	}
	b.lost = kept
	if len(missing) > 0 {
		events = append(events, convertOffers(missing, e.jailNames)...)
	}
	b.cursor = hi
	if hi >= b.to {
		e.backfill = nil
		return events, true
	}
	return events, false
}

// isFromArchiveByName reports whether the ban event (jail, addr, timeOfBan) was loaded from
// the archive at start (its window-index entry is marked stored), without
// interning anything.
func (e *engine) isFromArchiveByName(jail string, addr netip.Addr, timeOfBan int64) bool {
	j, ok := e.jailIndex[jail]
	if !ok || timeOfBan < 0 || timeOfBan > math.MaxUint32 {
		return false
	}
	ip, ok := e.ipIndex.find(e.ips, keyOf(addr))
	if !ok {
		return false
	}
	i, found := e.searchBanEvent(&banEvent{timeOfBan: uint32(timeOfBan), jail: j, ip: ip})
	return found && e.banEvents[i].fromArchive
}

// samePending reports whether row r is the ban event of offer o (rowids can be
// reused by fail2ban after a purge empties the table).
func samePending(o *pendingOffer, jails []string, r *sourceRow) bool {
	addr, reason := classify(r, false)
	return reason == "" && uint32(r.TimeOfBan) == o.timeOfBan && r.Jail == jails[o.jail] && keyOf(addr) == o.ip
}

// rowBantime is the bantime of a bans row for the archive: -2 (unknown,
// fail2ban's own convention) where the schema has none or it is invalid.
func rowBantime(r *sourceRow) int64 {
	if !r.HasBantime || !r.BanValid {
		return -2
	}
	return r.Bantime
}

// backfillRetry is how long the backfill waits after a failed read.
const backfillRetry = 5 * time.Second

// runBackfill reads the rows of eng's backfill from fail2ban's database and
// queues them for the archive, until done, eng is replaced (a reload: its
// carry took over what was left) or ctx ends (Close: the rows stay in
// fail2ban's database and are offered at the next start).
func (ex *Exporter) runBackfill(ctx context.Context, eng *engine) {
	store := ex.opts.Archive
	start := time.Now()
	var src *source
	defer func() {
		if src != nil {
			src.close()
		}
	}()
	var buf []sourceRow
	// The events of a step: AddWaitBelow copies them into the archive's
	// queue, so one buffer serves every step.
	var evBuf []archive.Event
	written := 0
	for {
		if src == nil {
			var err error
			// A small page cache: the backfill reads each page once,
			// in order, beside the startup's peak of memory.
			if src, err = openSource(ctx, ex.opts.DBPath, "PRAGMA cache_size = -256"); err != nil {
				if !ex.backfillWait(ctx, err) {
					return
				}
				continue
			}
		}
		if ex.testHookBackfillStep != nil {
			ex.testHookBackfillStep()
		}
		ex.mu.Lock()
		b := eng.backfill
		// Not after Close (ex.closed): Close waits for the backfill.
		live := ex.eng == eng && b != nil && b.dev == src.dev && b.ino == src.ino
		var cursor int64
		if live {
			cursor = b.cursor
		}
		ex.mu.Unlock()
		if !live {
			// Replaced (its carry holds what was left), or another file
			// than the engine's: stop here.
			return
		}
		rows, err := src.readAfter(ctx, buf, "bans", cursor, ex.backfillChunk)
		if err != nil {
			src.close()
			src = nil
			if !ex.backfillWait(ctx, err) {
				return
			}
			continue
		}
		buf = rows
		hi := int64(math.MaxInt64) // fewer rows than asked: the table ends here
		if len(rows) == ex.backfillChunk {
			hi = rows[len(rows)-1].Rowid
		}
		ex.mu.Lock()
		if ex.eng != eng || eng.backfill != b || b.cursor != cursor {
			ex.mu.Unlock()
			return
		}
		events, done := eng.backfillStep(rows, hi, evBuf[:0])
		evBuf = events
		ex.mu.Unlock()
		if err := store.AddWaitBelow(ctx, backfillQueued, events...); err != nil {
			ex.logger.Warn("ban archive: backfill stopped; the rows it did not queue stay in fail2ban's database and are offered at the next start", "err", err)
			ex.backfillGiveUp(eng, b)
			return
		}
		// Write the chunk now, in one transaction, rather than let a
		// million events pile up in the archive's queue (200,000 events,
		// 13 MB) between its cycles: the backfill's memory stays at one
		// chunk. 1M rows are ~120 commits (benchmarked: as fast as
		// cycles of 50,000). A failing write keeps the events queued for
		// the archive's own cycles; the backfill slows down, and AddWait
		// stops it once the queue is full.
		if err := store.Flush(ctx); err != nil && !ex.backfillWait(ctx, err) {
			ex.backfillGiveUp(eng, b)
			return
		}
		written += len(events)
		if done {
			ex.logger.Info("ban archive: backfill of the startup read done", "events", written, "duration", time.Since(start).Round(time.Millisecond))
			return
		}
	}
}

// backfillGiveUp queues, when the backfill ends early (Close could not wait
// any longer), the ban events of the bans rows removed from the engine before it read them:
// they are no longer in fail2ban's database to be offered at the next start.
func (ex *Exporter) backfillGiveUp(eng *engine, b *backfillState) {
	ex.mu.Lock()
	var events []archive.Event
	if eng.backfill == b && len(b.lost) > 0 {
		events = convertOffers(b.lostOffers(), eng.jailNames)
		b.lost = nil
	}
	ex.mu.Unlock()
	if len(events) > 0 {
		ex.opts.Archive.Add(events...)
	}
}

// backfillWait logs a failed backfill read or write and waits before the
// next try; false when ctx ended.
func (ex *Exporter) backfillWait(ctx context.Context, err error) bool {
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return false
	}
	ex.logger.Warn("ban archive: backfill failed; retrying", "err", err, "retry_in", backfillRetry)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(backfillRetry):
		return true
	}
}
