package collector

// Reading between scrapes: RunWatch takes in fail2ban's new rows shortly
// after fail2ban commits them, so a scrape finds the engine up to date.

import (
	"context"
	"time"
)

// DefaultWatchInterval is how often RunWatch looks for fail2ban's writes
// unless Options say otherwise (--fail2ban.watch-interval).
const DefaultWatchInterval = 250 * time.Millisecond

// RunWatch reads fail2ban's new rows between scrapes. Every
// Options.WatchInterval it compares fail2ban's data_version with the one
// the engine last read (one pragma on the pinned connection, no rows read)
// and, when fail2ban wrote, refreshes as a scrape does: the new rows go
// into the engine, their IPs to geo and their events to the archive. A
// scrape then reads only what fail2ban wrote since the last tick, instead
// of everything since the previous scrape.
//
// It reads only while the last refresh succeeded: while fail2ban's
// database is unreadable, scrapes retry and count the errors as before. A
// tick that finds a refresh running (a scrape's, RunVerify's, the
// startup read) skips. It returns when ctx ends; an interval of 0 turns it
// off.
func (ex *Exporter) RunWatch(ctx context.Context) {
	interval := ex.opts.WatchInterval
	if interval <= 0 || ex.opts.DBPath == "" {
		return
	}
	everyTick(ctx, interval, func() {
		if ex.wroteSinceRead(ctx) {
			// The error is in fail2ban_up and the error counter.
			_ = ex.refresh(ctx, true)
		}
	})
}

// wroteSinceRead reports whether fail2ban committed since the engine last
// read, while no refresh runs and the last one succeeded. It never waits
// for the lock. A tick that finds nothing new does not refresh at all, so
// the self-metrics (the last read's duration, the snapshot) stay those of
// the last real read. A failing check answers true: the refresh then
// records the error, and the watcher stops until a scrape recovers.
func (ex *Exporter) wroteSinceRead(ctx context.Context) bool {
	if !ex.mu.TryLock() {
		return false
	}
	defer ex.mu.Unlock()
	if !ex.up || !ex.loaded || ex.closed || ex.src == nil {
		return false
	}
	v, err := ex.src.currentVersion(ctx)
	return err != nil || !ex.src.hasVersion || v != ex.src.dataVersion
}
