package collector

// The Exporter's lifecycle (Warm, Ready, Close) and its refresh: open or
// reopen the database, bring the engine up to date when the database
// changed (dbsync.go), and record the outcome for the self-metrics.

import (
	"context"
	"errors"
	"runtime/debug"
	"time"
)

// Ready reports whether fail2ban's database was read successfully once.
// It never waits for a refresh in progress.
func (ex *Exporter) Ready() bool {
	return ex.ready.Load()
}

// Warm reads the database at start so /-/ready turns true without waiting for
// a scrape, retrying until the first success or ctx ends.
func (ex *Exporter) Warm(ctx context.Context) {
	delay := time.Second
	for {
		if err := ex.Refresh(ctx); err == nil || ctx.Err() != nil {
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
func (ex *Exporter) Close() error {
	ex.mu.Lock()
	ex.closed = true
	if ex.src != nil {
		ex.src.close()
		ex.src = nil
	}
	ex.mu.Unlock()
	done := make(chan struct{})
	go func() { ex.offerWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeOfferWait):
		ex.logger.Warn("ban archive: stopped offering the startup read's events; those still in fail2ban's database are offered again at the next start")
		ex.offerCancel()
		<-done
	}
	ex.offerCancel()
	return nil
}

// Refresh brings the engine up to date. Concurrent callers share one refresh:
// a caller arriving while one runs waits for it, and gives up when its own
// ctx ends, instead of starting another. All of them return its error.
func (ex *Exporter) Refresh(ctx context.Context) error { return ex.refresh(ctx, false) }

// refresh is Refresh; with light, the refresh settles without counting
// rows (settle), and shares only other light refreshes.
func (ex *Exporter) refresh(ctx context.Context, light bool) error {
	key := "refresh"
	if light {
		key = "refresh-light"
	}
	ch := ex.flight.DoChan(key, func() (any, error) {
		offers, err := ex.refreshAndTake(ctx, light)
		ex.offerArchive(offers.all())
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
func (ex *Exporter) refreshAndTake(ctx context.Context, light bool) (offers offerBatch, err error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	startup := !ex.loaded
	ex.settleLight = light
	err = ex.refreshOnce(ctx)
	ex.settleLight = false
	if ex.opts.Archive == nil || ex.eng == nil {
		return offerBatch{}, err
	}
	offers = ex.eng.takeOffer()
	if startup && ex.loaded && !ex.closed && ex.eng.bindBackfill(ex.src.dev, ex.src.ino) {
		eng, octx := ex.eng, ex.offerCtx
		ex.offerWG.Go(func() { ex.runBackfill(octx, eng) })
	}
	if startup && len(offers.chunks) > 0 && !ex.closed {
		store, logger, octx, batch := ex.opts.Archive, ex.logger, ex.offerCtx, offers
		ex.offerWG.Go(func() {
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

// refreshOnce is one refresh; ex.mu is held.
func (ex *Exporter) refreshOnce(ctx context.Context) error {
	if ex.closed {
		ex.up = false
		return errors.New("exporter closed")
	}
	if ex.opts.DBPath == "" {
		ex.up = false
		ex.lastErrMsg = "no fail2ban database configured"
		return errors.New(ex.lastErrMsg)
	}
	start := time.Now()
	err := ex.integrityErr
	if err == nil {
		err = ex.refreshLocked(ctx)
	}
	ex.lastDur = time.Since(start)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		// The caller stopped (a shutdown ends the background refreshes'
		// context): the refresh was abandoned, not failed. The engine
		// keeps the whole chunks it applied, the next refresh goes on
		// from there, and scrapes keep the last complete snapshot; no
		// error is counted or logged, fail2ban_up stays as it was.
		return err
	}
	if err != nil {
		kind := classifyError(err)
		ex.readErrors[kind]++
		ex.up = false
		if kind != ex.lastErrKind {
			ex.logger.Error("cannot read fail2ban's database; fail2ban_up is 0 until it can", "path", ex.opts.DBPath, "kind", string(kind), "err", err)
		}
		ex.lastErrKind = kind
		ex.lastErrMsg = err.Error()
		if kind == kindSchema || kind == kindMissing || kind == kindCorrupt || kind == kindPermission {
			// Start over from a fresh open once the file is good again.
			ex.dropSource()
		}
		return err
	}
	// One line per state change: the first complete read, or the recovery
	// (with what a complete reread found, when there was one).
	switch loaded := ex.loadedNow; {
	case ex.lastErrKind != "":
		ex.logger.Info("fail2ban's database is readable again", append([]any{"path", ex.opts.DBPath}, loaded...)...)
		ex.lastErrKind = ""
	case loaded != nil:
		ex.logger.Info("read fail2ban's database", append([]any{"path", ex.opts.DBPath}, loaded...)...)
	}
	ex.loadedNow = nil
	ex.up = true
	ex.ready.Store(true)
	ex.lastSuccess = ex.now()
	ex.takeSnapshot()
	return nil
}

func (ex *Exporter) dropSource() {
	if ex.src != nil {
		ex.src.close()
		ex.src = nil
	}
	if ex.eng != nil {
		ex.carry = ex.eng.carry()
	}
	ex.eng = nil
	ex.loaded = false
}

func (ex *Exporter) refreshLocked(ctx context.Context) error {
	now := ex.now().Unix()
	if ex.src != nil {
		replaced, err := ex.src.replaced()
		if err != nil {
			return err
		}
		if replaced {
			ex.logger.Warn("fail2ban's database file was replaced; reading the new one from scratch", "path", ex.opts.DBPath)
			ex.dropSource()
		}
	}
	if ex.src == nil {
		src, err := openSource(ctx, ex.opts.DBPath)
		if err != nil {
			return err
		}
		eng := newEngine(ex.countries, ex.opts.Windows, src.schema, ex.opts.DefaultBantime, ex.carry)
		if ex.opts.Archive != nil {
			if err := ex.loadHistory(ctx, eng, now); err != nil {
				src.close()
				return err
			}
		}
		ex.src, ex.eng = src, eng
		ex.carry = nil
		ex.loaded = false
	}
	src, eng := ex.src, ex.eng

	version, err := src.currentVersion(ctx)
	if err != nil {
		return err
	}
	eng.advance(now)
	if ex.countriesAside.Load() && eng.ipIndex.count() > ex.inlineCountries {
		// RunCountryRefresh moves what geo learned, now, beside this
		// refresh (a scrape's or RunVerify's, which would hold the lock
		// for the whole pass).
		if ex.countries.Generation() != eng.countryGen {
			select {
			case ex.kickCountries <- struct{}{}:
			default:
			}
		}
	} else {
		eng.refreshCountries()
	}
	if ex.loaded && src.hasVersion && version == src.dataVersion && (ex.settleLight || !ex.unverified) {
		return nil
	}

	jails, err := src.readJails(ctx)
	if err != nil {
		return err
	}
	if !ex.loaded {
		if err := ex.reserve(ctx); err != nil {
			return err
		}
	}
	if err := ex.readNew(ctx, "bans", now); err != nil {
		return err
	}
	if src.schema == 4 {
		if err := ex.readNew(ctx, "bips", now); err != nil {
			return err
		}
	}
	if err := ex.settle(ctx, now); err != nil {
		return err
	}
	// New bans whose country is already known (or final) count in
	// bans_total in this very scrape.
	eng.settlePending(now, false)
	ex.jails = jails
	src.dataVersion, src.hasVersion = version, true
	if !ex.loaded {
		ex.loaded = true
		eng.endStartupRead()
		bansRows, bipsRows, ips := eng.sizes()
		ex.loadedNow = []any{"schema", src.schema, "bans_rows", bansRows, "bips_rows", bipsRows, "ips", ips}
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
func (ex *Exporter) reserve(ctx context.Context) error {
	bans, err := readShape(ctx, ex.src.conn, "bans")
	if err != nil {
		return err
	}
	var bips tableShape
	if ex.src.schema == 4 {
		if bips, err = readShape(ctx, ex.src.conn, "bips"); err != nil {
			return err
		}
	}
	ex.eng.reserve(bans.count, bips.count)
	ex.eng.startBackfill(bans.count, ex.backfillAbove)
	return nil
}
