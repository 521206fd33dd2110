package geo

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Run resolves queued IPs in the background, flushes dirty entries every
// flush interval, retries the negative tier, evicts beyond the cache size and
// checks the files of providers with on-disk data (Reloader) for changes,
// until ctx is done. It does not flush on return: call Flush after Run
// returned (main does it on shutdown).
func (r *Resolver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i, st := range r.stages {
		wg.Go(func() { r.runStage(ctx, i) })
		if rl, ok := st.provider.(Reloader); ok && rl.CheckInterval() > 0 {
			wg.Go(func() { r.runChecks(ctx, rl) })
		}
	}
	wg.Go(func() { r.runMaintenance(ctx) })
	wg.Wait()
}

func (r *Resolver) runMaintenance(ctx context.Context) {
	flush := time.NewTicker(r.flushInterval)
	defer flush.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-flush.C:
			failing = r.flushCycle(ctx, failing)
			r.Evict()
			r.RetryDue()
		}
	}
}

// flushCycle runs one periodic flush and returns whether it failed; it logs
// when flushing starts failing and when it works again, not every failed
// flush (the flush metrics count each one).
func (r *Resolver) flushCycle(ctx context.Context, failing bool) bool {
	err := r.Flush(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		return failing // shutting down: the final flush reports
	case err != nil:
		if !failing {
			r.logger.Error("geo cache flush failed; entries stay dirty and every flush retries", "dirty", r.Status().Dirty, "err", err)
		}
		return true
	case failing:
		r.logger.Info("geo cache flush works again", "flushed_entries", r.Status().LastFlushedRows)
	}
	return false
}

// runChecks checks a provider's on-disk data every CheckInterval. The
// provider logs its own state changes (a missing file once, not every
// check).
func (r *Resolver) runChecks(ctx context.Context, rl Reloader) {
	t := time.NewTicker(rl.CheckInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = r.reloadProvider(rl, false) // the provider logs its own state changes
		}
	}
}

// reloadProvider reloads one provider's on-disk data. When the provider had
// no data before (an mmdb missing at start that appeared), the IPs whose
// lookups failed meanwhile are retried at once instead of after their
// backoff. A replacement of data in use does not retry them: that is what
// ReResolve is for. It reports whether new data was loaded.
func (r *Resolver) reloadProvider(rl Reloader, force bool) (bool, error) {
	lr, ok := rl.(interface{ Loaded() bool })
	hadData := !ok || lr.Loaded()
	changed, err := rl.Reload(force)
	if err != nil {
		r.logger.Debug("geo provider data check failed", "err", err)
	}
	if changed && !hadData {
		r.retryFailed()
	}
	return changed, err
}

// retryFailed queues the tracked IPs whose lookups failed at once, without
// waiting for their backoff: a provider that had no data just loaded some.
// It returns how many were queued.
func (r *Resolver) retryFailed() int {
	r.mu.Lock()
	for k := range r.waiting {
		ce, ok := r.entries.get(k)
		if !ok || ce.failures == 0 {
			continue
		}
		ce.failures, ce.at = 0, 0
		r.entries.set(k, ce)
	}
	r.mu.Unlock()
	return r.RetryDue()
}

// RetryDue queues the tracked IPs of the negative tier whose backoff has
// passed and the tracked IPs of the backlog, as far as the queue has room.
// It returns how many were queued.
func (r *Resolver) RetryDue() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.backlogged = false
	now := r.now()
	queued := 0
	for k := range r.waiting {
		ce, ok := r.entries.get(k)
		if !ok || ce.country != ([2]byte{}) || ce.has(flagFinal) || ce.has(flagPending) {
			delete(r.waiting, k)
			continue
		}
		if !ce.has(flagTracked) || !r.dueLocked(&ce, now) {
			continue
		}
		if len(r.stages) == 0 || len(r.stages[0].queue) >= r.queueSize {
			r.backlogged = true
			break
		}
		if r.enqueueLocked(0, k) {
			queued++
		}
	}
	return queued
}

// wakeCoalesce is how long a stage woken from an empty queue waits before
// taking from it. A refresh that reads a thousand new bans tracks their IPs
// within a few milliseconds.
const wakeCoalesce = 5 * time.Millisecond

// runStage feeds one provider from its queue.
func (r *Resolver) runStage(ctx context.Context, i int) {
	st := r.stages[i]
	for {
		batch := r.take(i)
		if i == 0 && len(batch) == 0 && r.takeBacklog() {
			// The first queue ran dry while IPs wait in the backlog.
			r.RetryDue()
			continue
		}
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-st.wake:
			}
			// Let the burst that woke the stage (a refresh tracking a
			// round of new bans' IPs, one Track each) fill the queue
			// first: one batch then, instead of a wake-up, a batch of
			// one and a round trip on r.mu per IP, racing the engine's
			// refresh for the lock and for the CPU while it holds its
			// own lock.
			t := time.NewTimer(wakeCoalesce)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		r.resolveBatch(ctx, i, batch)
		if ctx.Err() != nil {
			return
		}
	}
}

// takeBacklog reports (and clears) whether IPs were left out of the full
// first queue since the last RetryDue.
func (r *Resolver) takeBacklog() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.backlogged
	r.backlogged = false
	return b
}

// take pops up to the provider's batch size from stage i's queue.
// IPs the engine stopped counting while they waited (a ban that ended) are
// dropped instead of resolved, unless Lookup or ReResolve asked for them:
// that spares ip-api's quota. Track queues them again if they come back.
func (r *Resolver) take(i int) []key {
	st := r.stages[i]
	r.mu.Lock()
	defer r.mu.Unlock()
	limit := max(st.provider.MaxBatch(), 1)
	var batch []key
	for len(st.queue) > 0 && len(batch) < limit {
		k := st.queue[0]
		st.queue = st.queue[1:]
		ce, ok := r.entries.get(k)
		if !ok || !ce.has(flagPending) {
			continue
		}
		if ce.flags&(flagTracked|flagRequested) == 0 {
			ce.flags &^= flagPending
			r.nPending--
			r.entries.set(k, ce)
			continue
		}
		batch = append(batch, k)
	}
	if len(st.queue) == 0 && cap(st.queue) > 1024 {
		st.queue = nil // give a drained big queue's memory back
	}
	return batch
}

// resolveBatch classifies (stage 0) and resolves one batch, then stores the
// answers.
func (r *Resolver) resolveBatch(ctx context.Context, i int, batch []key) {
	st := r.stages[i]
	ips := make([]netip.Addr, 0, len(batch))
	keys := make([]key, 0, len(batch))
	var local []key
	var localMsgs []string
	for _, k := range batch {
		ip := k.addr()
		if i == 0 {
			if msg, special := classifyLocal(ip); special {
				local = append(local, k)
				localMsgs = append(localMsgs, msg)
				continue
			}
		}
		ips = append(ips, ip)
		keys = append(keys, k)
	}
	if len(local) > 0 {
		answers := make([]Answer, len(local))
		for j := range local {
			answers[j] = Answer{Kind: AnswerNoCountry, Message: localMsgs[j]}
		}
		r.apply(-1, local, answers)
	}
	if len(ips) == 0 {
		return
	}
	answers, err := st.provider.Lookup(ctx, ips)
	if ctx.Err() != nil {
		r.abandon(keys)
		return
	}
	if err == nil && len(answers) != len(ips) {
		err = fmt.Errorf("%s returned %d answers for %d IPs", st.provider.Name(), len(answers), len(ips))
	}
	if err != nil {
		r.logger.Warn("geo lookup batch failed", "provider", st.provider.Name(), "ips", len(ips), "err", err)
		answers = make([]Answer, len(ips))
		for j := range answers {
			answers[j] = Answer{Kind: AnswerError, Message: shortError(err)}
		}
	}
	r.apply(i, keys, answers)
}

// abandon clears the pending flag of a batch that was not resolved because
// the resolver is stopping.
func (r *Resolver) abandon(keys []key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		ce, ok := r.entries.get(k)
		if !ok || !ce.has(flagPending) {
			continue
		}
		ce.flags &^= flagPending
		r.nPending--
		r.entries.set(k, ce)
		r.waiting[k] = struct{}{}
	}
}

const providerLocal = "local"

// apply stores the answers of stage i (-1: local classification) for keys.
func (r *Resolver) apply(i int, keys []key, answers []Answer) {
	providerName := providerLocal
	if i >= 0 {
		providerName = r.stages[i].provider.Name()
	}
	var counts [4]int
	r.mu.Lock()
	defer func() {
		r.mu.Unlock()
		for kind, n := range counts {
			if n > 0 {
				r.metrics.lookups.WithLabelValues(providerName, AnswerKind(kind).resultLabel()).Add(float64(n))
			}
		}
	}()
	now := r.now()
	provider := r.providerIndex(providerName)
	countryChanged, reassigned := false, false
	for j, k := range keys {
		a := answers[j]
		counts[a.Kind]++
		ce, ok := r.entries.get(k)
		if !ok {
			continue // cannot happen: pending entries are never evicted
		}
		if ce.has(flagPending) {
			ce.flags &^= flagPending
			r.nPending--
		}
		hadCountry := ce.country != ([2]byte{})
		switch {
		case a.Kind == AnswerFound && validCountryCode(a.CountryCode):
			code := [2]byte{a.CountryCode[0], a.CountryCode[1]}
			if ce.country != code {
				countryChanged = true
				reassigned = reassigned || hadCountry
			}
			ce.country = code
			ce.text = r.texts.intern(a.CountryName)
			ce.asn = r.asns.intern(a.ASN)
			ce.provider = provider
			ce.at = now
			ce.failures = 0
			ce.flags |= flagFinal
			delete(r.waiting, k)
			if !hadCountry {
				r.nResolved++
			}
		case a.Kind == AnswerNoCountry:
			if hadCountry {
				r.nResolved--
				countryChanged, reassigned = true, true
			}
			ce.country = [2]byte{}
			ce.asn = r.asns.intern(a.ASN)
			ce.provider = provider
			ce.at = now
			ce.failures = 0
			ce.text = r.texts.intern(a.Message)
			ce.flags |= flagFinal
			delete(r.waiting, k)
		default:
			msg := a.Message
			if a.Kind == AnswerFound {
				msg = fmt.Sprintf("invalid country code %q", a.CountryCode)
				counts[AnswerFound]--
				counts[AnswerError]++
			} else if a.Kind == AnswerNotFound && msg == "" {
				msg = msgNotFound
			}
			if i >= 0 && i+1 < len(r.stages) {
				// Ask the next provider; the entry stays pending there.
				r.entries.set(k, ce)
				r.enqueueLocked(i+1, k)
				continue
			}
			if hadCountry {
				// A provider lost an IP it knew; keep the old answer.
				ce.flags &^= flagRequested
				r.entries.set(k, ce)
				continue
			}
			ce.provider = provider
			ce.at = now
			if ce.failures < 255 {
				ce.failures++
			}
			ce.text = r.texts.intern(msg)
			ce.flags &^= flagFinal
			r.waiting[k] = struct{}{}
		}
		ce.flags &^= flagRequested
		r.markDirtyLocked(k, &ce)
		r.entries.set(k, ce)
	}
	if reassigned {
		r.reassigned.Add(1)
	}
	if countryChanged {
		r.generation.Add(1)
	}
}

// providerIndex interns a provider name into the 8-bit provider field
// (0, no provider, when the improbable 255 names are exceeded).
func (r *Resolver) providerIndex(name string) uint8 {
	i := r.texts.intern(name)
	if i > 255 {
		return 0
	}
	return uint8(i)
}

func (r *Resolver) markDirtyLocked(k key, ce *cacheEntry) {
	if !ce.has(flagDirty) {
		ce.flags |= flagDirty
		r.dirty.append(k)
	}
}

// Evict removes untracked, settled entries until the memory tier is back
// under 90% of the cache size. It returns how many were removed.
func (r *Resolver) Evict() int {
	if r.cacheSize <= 0 {
		return 0
	}
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries.len() <= r.cacheSize {
		return 0
	}
	target := r.cacheSize - r.cacheSize/10
	removed := 0
	for k, ce := range r.entries.all() {
		if r.entries.len() <= target {
			break
		}
		if ce.flags&(flagTracked|flagPending|flagDirty) != 0 {
			continue
		}
		if ce.country != ([2]byte{}) {
			r.nResolved--
		}
		r.entries.del(k)
		delete(r.waiting, k)
		removed++
	}
	return removed
}

// shortError is a bounded, IP-free message for an entry's negative tier
// (the full error is logged and shown in the provider's status).
func shortError(err error) string {
	var ue interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ue) && ue.Timeout():
		return "timeout"
	}
	if pe, ok := errors.AsType[*providerError](err); ok {
		return pe.short
	}
	return "lookup failed"
}

// providerError is an error with a short, bounded description for entries.
type providerError struct {
	short string
	err   error
}

func (e *providerError) Error() string { return e.err.Error() }
func (e *providerError) Unwrap() error { return e.err }
