package collector

import (
	"context"
	"errors"
	"runtime/debug"
	"time"
)

// Ready reports whether fail2ban's database was read successfully once.
// It never waits for a refresh in progress.
func (x *Exporter) Ready() bool {
	return x.ready.Load()
}

// Warm reads the database at start so /-/ready turns true without waiting for
// a scrape, retrying until the first success or ctx ends.
func (x *Exporter) Warm(ctx context.Context) {
	delay := time.Second
	for {
		if err := x.Refresh(ctx); err == nil || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// Close closes fail2ban's database. Collect keeps answering with fail2ban_up 0.
// With the archive on, it first waits (bounded) until the events of a
// startup read are in the archive's queue: the archive's Run must still run,
// and its final flush, after Close, writes them.
func (x *Exporter) Close() error {
	x.mu.Lock()
	x.closed = true
	if x.src != nil {
		x.src.close()
		x.src = nil
	}
	x.mu.Unlock()
	done := make(chan struct{})
	go func() { x.offerWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeOfferWait):
		x.logger.Warn("ban archive: stopped offering the startup read's events; those still in fail2ban's database are offered again at the next start")
		x.offerCancel()
		<-done
	}
	x.offerCancel()
	return nil
}

// Refresh brings the engine up to date. Concurrent callers share one refresh:
// a caller arriving while one runs waits for it, and gives up when its own
// ctx ends, instead of starting another. All of them return its error.
func (x *Exporter) Refresh(ctx context.Context) error {
	ch := x.flight.DoChan("refresh", func() (any, error) {
		offers, err := x.refreshAndTake(ctx)
		x.offerArchive(offers.all())
		return nil, err
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshAndTake refreshes under the lock and returns the ban events read
// for the archive; those of a startup read are handed to a background
// AddWait here, under the lock, so Close can wait for them.
func (x *Exporter) refreshAndTake(ctx context.Context) (offers offerBatch, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	startup := !x.loaded
	err = x.refreshOnce(ctx)
	if x.opts.Archive == nil || x.eng == nil {
		return offerBatch{}, err
	}
	offers = x.eng.takeOffer()
	if startup && x.loaded && !x.closed && x.eng.bindBackfill(x.src.dev, x.src.ino) {
		eng, octx := x.eng, x.offerCtx
		x.offerWG.Go(func() { x.runBackfill(octx, eng) })
	}
	if startup && len(offers.chunks) > 0 && !x.closed {
		store, logger, octx, batch := x.opts.Archive, x.logger, x.offerCtx, offers
		x.offerWG.Go(func() {
			// Each chunk is released once queued: memory falls as
			// the archive catches up.
			for i := range batch.chunks {
				events := batch.take(i)
				if err := store.AddWait(octx, events...); err != nil {
					logger.Warn("ban archive: not all events of the startup read were offered", "left_at_most", batch.len()+len(events), "err", err)
					return
				}
			}
		})
		return offerBatch{}, err
	}
	return offers, err
}

// refreshOnce is one refresh; x.mu is held.
func (x *Exporter) refreshOnce(ctx context.Context) error {
	if x.closed {
		x.up = false
		return errors.New("exporter closed")
	}
	if x.opts.DBPath == "" {
		x.up = false
		x.lastErrMsg = "no fail2ban database configured"
		return errors.New(x.lastErrMsg)
	}
	start := time.Now()
	err := x.refreshLocked(ctx)
	x.lastDur = time.Since(start)
	if err != nil {
		kind := classifyError(err)
		x.readErrors[kind]++
		x.up = false
		if kind != x.lastErrKind {
			x.logger.Error("cannot read fail2ban's database; fail2ban_up is 0 until it can", "path", x.opts.DBPath, "kind", string(kind), "err", err)
		}
		x.lastErrKind = kind
		x.lastErrMsg = err.Error()
		if kind == kindSchema || kind == kindMissing || kind == kindCorrupt || kind == kindPermission {
			// Start over from a fresh open once the file is good again.
			x.dropSource()
		}
		return err
	}
	// One line per state change: the first complete read, or the recovery
	// (with what a complete reread found, when there was one).
	switch loaded := x.loadedNow; {
	case x.lastErrKind != "":
		x.logger.Info("fail2ban's database is readable again", append([]any{"path", x.opts.DBPath}, loaded...)...)
		x.lastErrKind = ""
	case loaded != nil:
		x.logger.Info("read fail2ban's database", append([]any{"path", x.opts.DBPath}, loaded...)...)
	}
	x.loadedNow = nil
	x.up = true
	x.ready.Store(true)
	x.lastSuccess = x.now()
	x.snap = x.eng.snapshot()
	return nil
}

func (x *Exporter) dropSource() {
	if x.src != nil {
		x.src.close()
		x.src = nil
	}
	if x.eng != nil {
		x.carry = x.eng.carry()
	}
	x.eng = nil
	x.loaded = false
}

func (x *Exporter) refreshLocked(ctx context.Context) error {
	now := x.now().Unix()
	if x.src != nil {
		replaced, err := x.src.replaced()
		if err != nil {
			return err
		}
		if replaced {
			x.logger.Warn("fail2ban's database file was replaced; reading the new one from scratch", "path", x.opts.DBPath)
			x.dropSource()
		}
	}
	if x.src == nil {
		src, err := openSource(ctx, x.opts.DBPath)
		if err != nil {
			return err
		}
		eng := newEngine(x.countries, x.opts.Windows, src.schema, x.opts.DefaultBantime, x.carry)
		if x.opts.Archive != nil {
			if err := x.loadHistory(ctx, eng, now); err != nil {
				src.close()
				return err
			}
		}
		x.src, x.eng = src, eng
		x.carry = nil
		x.loaded = false
	}
	src, eng := x.src, x.eng

	version, err := src.currentVersion(ctx)
	if err != nil {
		return err
	}
	eng.advance(now)
	eng.refreshCountries()
	if x.loaded && src.hasVersion && version == src.dataVersion {
		return nil
	}

	jails, err := src.readJails(ctx)
	if err != nil {
		return err
	}
	if !x.loaded {
		if err := x.reserve(ctx); err != nil {
			return err
		}
	}
	if err := x.readNew(ctx, "bans", now); err != nil {
		return err
	}
	if src.schema == 4 {
		if err := x.readNew(ctx, "bips", now); err != nil {
			return err
		}
	}
	if err := x.settle(ctx, now); err != nil {
		return err
	}
	// New bans whose country is already known (or final) count in
	// bans_total in this very scrape.
	eng.settlePending(now, false)
	x.jails = jails
	src.dataVersion, src.hasVersion = version, true
	if !x.loaded {
		x.loaded = true
		eng.endStartupRead()
		bansRows, bipsRows, ips := eng.sizes()
		x.loadedNow = []any{"schema", src.schema, "bans_rows", bansRows, "bips_rows", bipsRows, "ips", ips}
		if bansRows+bipsRows >= freeAfterLoadRows {
			// A large load leaves several times the engine's size as
			// garbage (rows, driver values): give those pages back to
			// the OS at once rather than keep them resident until the
			// scavenger gets to them.
			debug.FreeOSMemory()
		}
	}
	return nil
}

// freeAfterLoadRows is the size of a complete read from which the exporter
// returns the read's garbage to the OS right away (below it, a few MB).
const freeAfterLoadRows = 1 << 16

// reserve sizes the engine for the initial load from the tables' row
// counts (SQLite counts through the smallest index without reading rows).
func (x *Exporter) reserve(ctx context.Context) error {
	bans, err := readShape(ctx, x.src.conn, "bans")
	if err != nil {
		return err
	}
	var bips tableShape
	if x.src.schema == 4 {
		if bips, err = readShape(ctx, x.src.conn, "bips"); err != nil {
			return err
		}
	}
	x.eng.reserve(bans.count, bips.count)
	x.eng.startBackfill(bans.count, x.backfillAbove)
	return nil
}
