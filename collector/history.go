package collector

// The link to the ban archive (collector/archive): the ban events of new
// bans rows are collected as offers and handed to the archive's queue
// (offerArchive), and a new engine starts with the archive's ban events of
// the longest window (loadHistory). The backfill (backfill.go) is the
// archive's path for a large startup read.

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/bangui/bangui_exporter/collector/archive"
)

// addArchived counts an archived ban event (loaded from the archive at
// start, or carried over a reload) that belongs to no row of bans: a kept
// entry. A row of bans with the same (jail, ip, timeofban) read later is
// the same event and counts once. Events older than the longest window are
// left out: no window counts them. fromArchive is true for events read from the
// archive itself (not carried over a reload, where some may not be written
// yet): rows of bans with the same event are then not offered again. The
// caller calls mergeBanEvents after the batch.
func (e *engine) addArchived(ev *archive.Event, now int64, fromArchive bool) {
	addr := ev.IP.Unmap().WithZone("")
	if ev.Jail == "" || !addr.IsValid() || ev.TimeOfBan > math.MaxUint32 || !e.inWindow(e.longest, ev.TimeOfBan, now) {
		return
	}
	e.newBanEvents = append(e.newBanEvents, banEvent{timeOfBan: uint32(ev.TimeOfBan), ip: e.internIP(addr), jail: e.jail(ev.Jail), kept: true, fromArchive: fromArchive})
}

// pendingOffer is a ban event waiting to be offered to the archive: 40
// bytes and pointer-free, where an archive.Event is 64 with a string and a
// netip.Addr the garbage collector scans. A startup read that archives a
// million rows holds them all until the archive takes them.
type pendingOffer struct {
	ip        ipKey
	bantime   int64
	bancount  int64
	timeOfBan uint32
	jail      uint16
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
		out[k] = archive.Event{Jail: jails[o.jail], IP: o.ip.addr(), TimeOfBan: int64(o.timeOfBan), Bantime: o.bantime, Bancount: o.bancount}
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

// Bounds of offering events to the archive.
const (
	// maxArchPending bounds the events kept for the next refresh when the
	// archive's queue is full; events beyond it are still in fail2ban's
	// database (and are offered again at the next start) or lost from the
	// archive (bangui_exporter_archive_dropped_events_total counts them).
	maxArchPending = 100_000
	// closeOfferWait bounds how long Close waits for a startup read's
	// events to enter the archive's queue.
	closeOfferWait = 20 * time.Second
)

// offerArchive hands the ban events of a refresh to the archive's queue,
// after those a full queue did not take last time. Add never touches
// SQLite: this is cheap on a scrape.
func (ex *Exporter) offerArchive(events []archive.Event) {
	if ex.opts.Archive == nil {
		return
	}
	ex.archMu.Lock()
	defer ex.archMu.Unlock()
	if len(events) == 0 && len(ex.archPending) == 0 {
		return
	}
	all := append(ex.archPending, events...)
	n := ex.opts.Archive.Add(all...)
	rest := all[n:]
	if len(rest) > maxArchPending {
		rest = rest[len(rest)-maxArchPending:]
	}
	ex.archPending = slices.Clone(rest)
}

// loadHistory puts the archived ban events of the longest window into a new
// engine, before its first read of fail2ban's database: from the archive for
// the first engine, from the previous engine's carry after a reload (which
// also holds events not yet written to the archive).
func (ex *Exporter) loadHistory(ctx context.Context, eng *engine, now int64) error {
	eng.keepHistory()
	if ex.historyLoaded {
		if ex.carry != nil {
			for i := range ex.carry.kept {
				eng.addArchived(&ex.carry.kept[i], now, false)
			}
		}
		eng.mergeBanEvents(now)
		return nil
	}
	start := time.Now()
	since := time.Unix(now, 0).Add(-Longest(ex.opts.Windows))
	// The archive's count includes events older than the longest window
	// (retention is longer): a little more room than the load needs.
	eng.reserveBanEvents(ex.opts.Archive.Count())
	n := 0
	err := ex.opts.Archive.LoadKeys(ctx, since, func(ev archive.Event) error {
		eng.addArchived(&ev, now, true)
		if n++; n%archive.DefaultLoadChunk == 0 {
			eng.mergeBanEvents(now)
		}
		return nil
	})
	if err != nil {
		// The app database is local: a failed read is rare, and counting
		// without the history would show truncated windows as complete.
		return fmt.Errorf("load the ban archive: %w", err)
	}
	eng.mergeBanEvents(now)
	ex.historyLoaded = true
	ex.logger.Info("loaded the ban archive's events of the longest window", "events", n, "since", since.UTC().Format(time.RFC3339), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}
