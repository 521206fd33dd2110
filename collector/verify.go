package collector

// Full settles off the scrape path: a scrape settles lightly (settle)
// while RunVerify runs, and RunVerify counts the rows afterwards.

import (
	"context"
	"time"
)

// verifyEvery is how often RunVerify looks for a light settle to verify.
const verifyEvery = time.Second

// RunVerify lets scrapes settle lightly (without counting the rows of
// fail2ban's tables: tens of milliseconds at a million rows) and, after a
// light settle, settles fully in the background within verifyEvery, so a
// row deleted below the top bucket (an unban, a purge that kept the oldest
// row) shows within about a second. It returns when ctx ends; scrapes
// settle fully again then.
func (ex *Exporter) RunVerify(ctx context.Context) {
	ex.verifying.Store(true)
	defer ex.verifying.Store(false)
	everyTick(ctx, verifyEvery, func() {
		ex.mu.Lock()
		due := ex.unverified
		ex.mu.Unlock()
		if due {
			_ = ex.Refresh(ctx) // the error is in fail2ban_up and the error counter
		}
	})
}

// everyTick calls fn every interval until ctx ends (the first call one
// interval after the start).
func everyTick(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}
