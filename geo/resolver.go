package geo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

// Defaults of the resolver's options (and of the --geo.* flags).
const (
	DefaultCacheSize     = 1_000_000
	DefaultNegativeTTL   = 5 * time.Minute
	DefaultFlushInterval = 60 * time.Second
	DefaultQueueSize     = 1_000_000
	DefaultCheckInterval = time.Minute
	// maxBackoffFactor caps the negative tier's growing backoff at
	// NegativeTTL × maxBackoffFactor (and at maxBackoff).
	maxBackoffFactor = 64
	maxBackoff       = 24 * time.Hour
)

// Options configure a Resolver.
type Options struct {
	// DB is the app database; the resolver owns its geo_cache table.
	DB *appdb.DB
	// Providers are asked in order; an IP one cannot answer goes to the next.
	Providers []Provider
	Logger    *slog.Logger
	// Clock defaults to the system clock.
	Clock Clock
	// CacheSize bounds the memory tier; IPs the engine tracks, IPs waiting
	// for resolution and IPs not yet flushed are never evicted, so the
	// cache can hold more than CacheSize while that many are tracked.
	// 0 means no bound.
	CacheSize int
	// NegativeTTL is how long a failed lookup is not retried; it doubles
	// with every further failure of the same IP.
	NegativeTTL time.Duration
	// FlushInterval is how often dirty entries are written to the database.
	FlushInterval time.Duration
	// QueueSize bounds each provider's queue; IPs that do not fit wait in
	// the backlog and are queued when there is room.
	QueueSize int
	// CheckInterval is how often providers with on-disk data (mmdb) look
	// for a new file. 0 disables the timer (Reload still works).
	CheckInterval time.Duration
}

// key is an IP in 16-byte form; IPv4 addresses are stored IPv4-mapped.
type key [16]byte

func keyOf(ip netip.Addr) key { return key(ip.As16()) }

func (k key) addr() netip.Addr { return netip.AddrFrom16(k).Unmap() }

// record is one IP in the memory tier: 16 bytes, no pointers, so the map
// holding a million of them is small and never scanned by the garbage
// collector. Strings are interned (see interner).
type record struct {
	// at is the Unix second of the last answer (failures == 0) or of the
	// last failure (failures > 0); 0 = never asked.
	at       uint32
	asn      uint32 // asns index
	text     uint16 // strs index: the country name when there is a country, else the message
	country  [2]byte
	provider uint8 // strs index of the provider name (a handful of values)
	failures uint8
	flags    uint8
}

func (rec *record) resolvedAt() uint32 {
	if rec.failures == 0 {
		return rec.at
	}
	return 0
}

func (rec *record) failedAt() uint32 {
	if rec.failures > 0 {
		return rec.at
	}
	return 0
}

func (rec *record) hasCountry() bool { return rec.country != [2]byte{} }

// name and message share one field: a country has a name, no message.
func (rec *record) nameIndex() uint16 {
	if rec.hasCountry() {
		return rec.text
	}
	return 0
}

func (rec *record) messageIndex() uint16 {
	if rec.hasCountry() {
		return 0
	}
	return rec.text
}

const (
	flagTracked   uint8 = 1 << iota // the engine counts the IP
	flagPending                     // in a provider queue
	flagDirty                       // changed since the last flush
	flagFinal                       // the answer is final (a country, or private/reserved/invalid)
	flagRequested                   // asked for by Lookup or ReResolve: resolved even when not tracked
)

func (rec *record) has(f uint8) bool { return rec.flags&f != 0 }

// Resolver is geo's memory tier, background resolver and persistence. It
// implements collector.CountryLookup; every method of that interface answers
// from memory under a mutex that is never held across I/O.
type Resolver struct {
	db            *appdb.DB
	logger        *slog.Logger
	clock         Clock
	cacheSize     int
	negativeTTL   time.Duration
	flushInterval time.Duration
	queueSize     int
	checkInterval time.Duration
	stages        []*stage
	metrics       *metrics

	generation atomic.Uint64

	mu         sync.Mutex
	entries    entryMap
	dirty      []key
	waiting    map[key]struct{} // unresolved, not final, not pending: negative tier and backlog
	strs       interner16
	asns       interner32
	nResolved  int // entries with a country
	nPending   int
	nTracked   int
	backlogged bool // an IP did not fit in the first queue since the last RetryDue
	flushState flushState

	// flushMu serialises Flush and eviction, so an entry being written is
	// never evicted.
	flushMu sync.Mutex
}

type flushState struct {
	last     time.Time
	lastErr  string
	lastRows int
}

// stage is one provider with its queue. The queue is guarded by
// Resolver.mu; wake (capacity 1) tells the worker there is work.
type stage struct {
	provider Provider
	queue    []key
	wake     chan struct{}
}

// New creates the geo_cache table if needed, loads it into memory and
// returns a Resolver ready for Track and Country. Background resolution and
// periodic flushing start with Run.
func New(ctx context.Context, opts Options) (*Resolver, error) {
	if opts.DB == nil {
		return nil, errors.New("geo: no app database")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = DefaultNegativeTTL
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.CacheSize < 0 {
		return nil, fmt.Errorf("geo: negative cache size %d", opts.CacheSize)
	}
	r := &Resolver{
		db:            opts.DB,
		logger:        opts.Logger,
		clock:         opts.Clock,
		cacheSize:     opts.CacheSize,
		negativeTTL:   opts.NegativeTTL,
		flushInterval: opts.FlushInterval,
		queueSize:     opts.QueueSize,
		checkInterval: opts.CheckInterval,
		entries:       newEntryMap(),
		waiting:       make(map[key]struct{}),
		strs:          newInterner16(),
		asns:          newInterner32(),
	}
	seen := map[string]bool{}
	for _, p := range opts.Providers {
		if p == nil {
			return nil, errors.New("geo: nil provider")
		}
		if seen[p.Name()] {
			return nil, fmt.Errorf("geo: provider %q given twice", p.Name())
		}
		seen[p.Name()] = true
		r.stages = append(r.stages, &stage{provider: p, wake: make(chan struct{}, 1)})
	}
	r.metrics = newMetrics(r)
	if err := migrate(ctx, r.db); err != nil {
		return nil, err
	}
	if err := r.load(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// now returns the clock's time in Unix seconds.
func (r *Resolver) now() uint32 { return unixSeconds(r.clock.Now()) }

func unixSeconds(t time.Time) uint32 {
	s := t.Unix()
	if s <= 0 {
		return 0
	}
	if s > int64(^uint32(0)) {
		return ^uint32(0)
	}
	return uint32(s)
}

func fromUnixSeconds(s uint32) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(int64(s), 0).UTC()
}

// retryAt is when a failed, non-final entry may be looked up again.
func (r *Resolver) retryAt(rec *record) uint32 {
	if rec.failures == 0 {
		return 0
	}
	d := r.negativeTTL
	for i := 1; i < int(rec.failures) && d < r.negativeTTL*maxBackoffFactor && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.negativeTTL*maxBackoffFactor, maxBackoff)
	return rec.failedAt() + uint32(d/time.Second)
}

// dueLocked reports whether an unresolved entry should be queued now.
func (r *Resolver) dueLocked(rec *record, now uint32) bool {
	if rec.country != ([2]byte{}) || rec.has(flagFinal) || rec.has(flagPending) {
		return false
	}
	return rec.failures == 0 || r.retryAt(rec) <= now
}

// Track tells the resolver that the engine counts ip. It keeps the entry in
// memory for as long as it is tracked and queues it for resolution when its
// country is unknown. Calling it again for a tracked IP changes nothing.
func (r *Resolver) Track(ip netip.Addr) {
	ip = normalize(ip)
	k := keyOf(ip)
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.entries.get(k)
	if ok && rec.has(flagTracked) {
		return
	}
	rec.flags |= flagTracked
	r.nTracked++
	if !ok {
		r.entries.set(k, rec)
		r.enqueueLocked(0, k)
		return
	}
	r.entries.set(k, rec)
	if r.dueLocked(&rec, r.now()) {
		r.enqueueLocked(0, k)
	}
}

// Untrack tells the resolver that the engine no longer counts ip; the entry
// stays cached until the cache size bound evicts it.
func (r *Resolver) Untrack(ip netip.Addr) {
	k := keyOf(normalize(ip))
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.entries.get(k)
	if !ok || !rec.has(flagTracked) {
		return
	}
	rec.flags &^= flagTracked
	r.entries.set(k, rec)
	r.nTracked--
}

// Country returns ip's country code, or "" when it is not known (yet).
func (r *Resolver) Country(ip netip.Addr) string {
	k := keyOf(normalize(ip))
	r.mu.Lock()
	rec, _ := r.entries.get(k)
	r.mu.Unlock()
	return countryString(rec.country)
}

// CountryFinal returns ip's country as Country does, and whether the answer
// is final: a country, or an address no provider can place (private,
// reserved). An IP not resolved yet, or whose lookups failed, is not final.
func (r *Resolver) CountryFinal(ip netip.Addr) (string, bool) {
	k := keyOf(normalize(ip))
	r.mu.Lock()
	rec, _ := r.entries.get(k)
	r.mu.Unlock()
	c := countryString(rec.country)
	return c, c != "" || rec.has(flagFinal)
}

// Generation changes whenever an IP got a country it did not have.
func (r *Resolver) Generation() uint64 { return r.generation.Load() }

// Lookup returns what the memory tier knows about ip. When ip is unknown,
// or unresolved and due for a retry, it is queued for background resolution
// (Entry.Pending tells); Lookup itself never waits and never writes.
func (r *Resolver) Lookup(ip netip.Addr) (Entry, bool) {
	ip = normalize(ip)
	k := keyOf(ip)
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.entries.get(k)
	if !ok {
		r.entries.set(k, record{flags: flagRequested})
		r.enqueueLocked(0, k)
		rec, _ = r.entries.get(k)
		return r.entryLocked(k, rec), false
	}
	if r.dueLocked(&rec, r.now()) {
		rec.flags |= flagRequested
		r.entries.set(k, rec)
		r.enqueueLocked(0, k)
		rec, _ = r.entries.get(k)
	}
	return r.entryLocked(k, rec), true
}

func (r *Resolver) entryLocked(k key, rec record) Entry {
	e := Entry{
		IP:          k.addr(),
		CountryCode: countryString(rec.country),
		CountryName: r.strs.get(rec.nameIndex()),
		ASN:         r.asns.get(rec.asn),
		Provider:    r.strs.get(uint16(rec.provider)),
		ResolvedAt:  fromUnixSeconds(rec.resolvedAt()),
		FailedAt:    fromUnixSeconds(rec.failedAt()),
		Failures:    int(rec.failures),
		Message:     r.strs.get(rec.messageIndex()),
		Pending:     rec.has(flagPending),
		Final:       rec.has(flagFinal),
		Tracked:     rec.has(flagTracked),
	}
	if !e.Final && rec.failures > 0 && rec.country == ([2]byte{}) {
		e.RetryAt = fromUnixSeconds(r.retryAt(&rec))
	}
	return e
}

// ReResolve clears the negative tier (failures and final answers without a
// country from providers) and schedules every known IP without a country
// for resolution. It returns how many IPs it scheduled: queued now, or
// waiting in the backlog when the first queue is full (they are queued as
// it drains). IPs already queued are not counted. Addresses classified
// locally (private, reserved) are not scheduled: their answer cannot
// change.
func (r *Resolver) ReResolve() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	local := r.strs.lookup(providerLocal)
	scheduled := 0
	for k, rec := range r.entries.all() {
		if rec.country != ([2]byte{}) || rec.has(flagPending) {
			continue
		}
		if rec.has(flagFinal) && local != 0 && uint16(rec.provider) == local {
			continue
		}
		rec.flags &^= flagFinal
		rec.flags |= flagRequested
		if rec.failures > 0 {
			rec.failures = 0
			rec.at = 0
		}
		r.entries.set(k, rec)
		if len(r.stages) == 0 {
			continue
		}
		r.enqueueLocked(0, k) // queued, or waiting in the backlog
		scheduled++
	}
	return scheduled
}

// enqueueLocked queues k for stage i (marking it pending) and reports
// whether it fit; when the queue is full the entry waits in the backlog.
func (r *Resolver) enqueueLocked(i int, k key) bool {
	rec, _ := r.entries.get(k)
	if len(r.stages) == 0 {
		return false
	}
	st := r.stages[i]
	if len(st.queue) >= r.queueSize {
		if rec.has(flagPending) {
			rec.flags &^= flagPending
			r.nPending--
			r.entries.set(k, rec)
		}
		r.waiting[k] = struct{}{}
		if i == 0 {
			// The first queue is full: queue the backlog as soon as it
			// drains. A later provider's overflow waits for the next
			// maintenance tick instead, so a slow provider (ip-api) with a
			// full queue never makes the first stage spin.
			r.backlogged = true
		}
		r.metrics.queueDropped.Inc()
		return false
	}
	if !rec.has(flagPending) {
		rec.flags |= flagPending
		r.nPending++
		r.entries.set(k, rec)
	}
	delete(r.waiting, k)
	st.queue = append(st.queue, k)
	select {
	case st.wake <- struct{}{}:
	default:
	}
	return true
}

// Status is a snapshot for the admin API.
func (r *Resolver) Status() Status {
	r.mu.Lock()
	s := Status{
		Resolved:        r.nResolved,
		Unresolved:      r.entries.len() - r.nResolved,
		Pending:         r.nPending,
		Tracked:         r.nTracked,
		Dirty:           len(r.dirty),
		Generation:      r.generation.Load(),
		LastFlush:       r.flushState.last,
		LastFlushError:  r.flushState.lastErr,
		LastFlushedRows: r.flushState.lastRows,
	}
	queued := make([]int, len(r.stages))
	for i, st := range r.stages {
		queued[i] = len(st.queue)
	}
	r.mu.Unlock()
	for i, st := range r.stages {
		ps := st.provider.Status()
		ps.Queued = queued[i]
		s.Providers = append(s.Providers, ps)
	}
	return s
}

// Reload asks every provider with on-disk data (mmdb) to reopen it; main
// calls it on SIGHUP.
func (r *Resolver) Reload() error {
	return r.reload(true)
}

func (r *Resolver) reload(force bool) error {
	var errs []error
	for _, st := range r.stages {
		rl, ok := st.provider.(Reloader)
		if !ok {
			continue
		}
		if _, err := rl.Reload(force); err != nil {
			errs = append(errs, fmt.Errorf("geo: reload %s: %w", st.provider.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// Run resolves queued IPs in the background, flushes dirty entries every
// flush interval, retries the negative tier, evicts beyond the cache size and
// checks mmdb files for changes, until ctx is done. It does not flush on
// return: call Flush after Run returned (main does it on shutdown).
func (r *Resolver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range r.stages {
		wg.Go(func() { r.runStage(ctx, i) })
	}
	wg.Go(func() { r.runMaintenance(ctx) })
	wg.Wait()
}

func (r *Resolver) runMaintenance(ctx context.Context) {
	flush := time.NewTicker(r.flushInterval)
	defer flush.Stop()
	var check <-chan time.Time
	if r.checkInterval > 0 {
		t := time.NewTicker(r.checkInterval)
		defer t.Stop()
		check = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-flush.C:
			if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
				r.logger.Error("geo cache flush failed; entries stay dirty and are retried", "err", err)
			}
			r.Evict()
			r.RetryDue()
		case <-check:
			if err := r.reload(false); err != nil {
				r.logger.Warn("geo database check failed; the previous one stays in use", "err", err)
			}
		}
	}
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
		rec, ok := r.entries.get(k)
		if !ok || rec.country != ([2]byte{}) || rec.has(flagFinal) || rec.has(flagPending) {
			delete(r.waiting, k)
			continue
		}
		if !rec.has(flagTracked) || !r.dueLocked(&rec, now) {
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
				continue
			}
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
		rec, ok := r.entries.get(k)
		if !ok || !rec.has(flagPending) {
			continue
		}
		if rec.flags&(flagTracked|flagRequested) == 0 {
			rec.flags &^= flagPending
			r.nPending--
			r.entries.set(k, rec)
			continue
		}
		batch = append(batch, k)
	}
	if len(st.queue) == 0 && cap(st.queue) > 1024 {
		st.queue = nil // give a drained big queue's memory back
	}
	return batch
}

// resolveBatch classifies (stage 0) and resolves one batch, then records the
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
		rec, ok := r.entries.get(k)
		if !ok || !rec.has(flagPending) {
			continue
		}
		rec.flags &^= flagPending
		r.nPending--
		r.entries.set(k, rec)
		r.waiting[k] = struct{}{}
	}
}

const providerLocal = "local"

// apply records the answers of stage i (-1: local classification) for keys.
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
	gotCountry := false
	for j, k := range keys {
		a := answers[j]
		counts[a.Kind]++
		rec, ok := r.entries.get(k)
		if !ok {
			continue // cannot happen: pending entries are never evicted
		}
		if rec.has(flagPending) {
			rec.flags &^= flagPending
			r.nPending--
		}
		hadCountry := rec.country != ([2]byte{})
		switch {
		case a.Kind == AnswerFound && validCountryCode(a.CountryCode):
			code := [2]byte{a.CountryCode[0], a.CountryCode[1]}
			if rec.country != code {
				gotCountry = true
			}
			rec.country = code
			rec.text = r.strs.intern(a.CountryName)
			rec.asn = r.asns.intern(a.ASN)
			rec.provider = provider
			rec.at = now
			rec.failures = 0
			rec.flags |= flagFinal
			delete(r.waiting, k)
			if !hadCountry {
				r.nResolved++
			}
		case a.Kind == AnswerNoCountry:
			if hadCountry {
				r.nResolved--
			}
			rec.country = [2]byte{}
			rec.asn = r.asns.intern(a.ASN)
			rec.provider = provider
			rec.at = now
			rec.failures = 0
			rec.text = r.strs.intern(a.Message)
			rec.flags |= flagFinal
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
				r.entries.set(k, rec)
				r.enqueueLocked(i+1, k)
				continue
			}
			if hadCountry {
				// A provider lost an IP it knew; keep the old answer.
				rec.flags &^= flagRequested
				r.entries.set(k, rec)
				continue
			}
			rec.provider = provider
			rec.at = now
			if rec.failures < 255 {
				rec.failures++
			}
			rec.text = r.strs.intern(msg)
			rec.flags &^= flagFinal
			r.waiting[k] = struct{}{}
		}
		rec.flags &^= flagRequested
		r.markDirtyLocked(k, &rec)
		r.entries.set(k, rec)
	}
	if gotCountry {
		r.generation.Add(1)
	}
}

// providerIndex interns a provider name into the 8-bit provider field
// (0, no provider, when the improbable 255 names are exceeded).
func (r *Resolver) providerIndex(name string) uint8 {
	i := r.strs.intern(name)
	if i > 255 {
		return 0
	}
	return uint8(i)
}

func (r *Resolver) markDirtyLocked(k key, rec *record) {
	if !rec.has(flagDirty) {
		rec.flags |= flagDirty
		r.dirty = append(r.dirty, k)
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
	for k, rec := range r.entries.all() {
		if r.entries.len() <= target {
			break
		}
		if rec.flags&(flagTracked|flagPending|flagDirty) != 0 {
			continue
		}
		if rec.country != ([2]byte{}) {
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
