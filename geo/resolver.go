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
	// The durations and sizes below: 0 means the default (DefaultXxx; for
	// CacheSize, no bound), negative values are errors.

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
}

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
	stages        []*stage
	metrics       *metrics

	generation atomic.Uint64
	// reassigned moves (before generation) whenever an IP that had a
	// country got another one or lost it.
	reassigned atomic.Uint64

	mu      sync.Mutex
	entries entryMap
	dirty   keyList // keys of the dirty entries no running Flush took, each once
	// flushing is how many dirty entries a running Flush took: they count
	// as dirty (not yet persisted) until its transaction committed.
	flushing   int
	waiting    map[key]struct{} // unresolved, not final, not pending: negative tier and backlog
	texts      interner16
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
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = DefaultNegativeTTL
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.QueueSize == 0 {
		opts.QueueSize = DefaultQueueSize
	}
	r := &Resolver{
		db:            opts.DB,
		logger:        opts.Logger,
		clock:         opts.Clock,
		cacheSize:     opts.CacheSize,
		negativeTTL:   opts.NegativeTTL,
		flushInterval: opts.FlushInterval,
		queueSize:     opts.QueueSize,
		entries:       newEntryMap(),
		waiting:       make(map[key]struct{}),
		texts:         newInterner16(),
		asns:          newInterner32(),
	}
	for _, p := range opts.Providers {
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

// validate reports the first option that can never work. Zero values mean
// the defaults; negative ones are errors, never silently replaced.
func (opts *Options) validate() error {
	switch {
	case opts.DB == nil:
		return errors.New("geo: no app database")
	case opts.CacheSize < 0:
		return fmt.Errorf("geo: cache size must not be negative, got %d", opts.CacheSize)
	case opts.QueueSize < 0:
		return fmt.Errorf("geo: queue size must not be negative, got %d", opts.QueueSize)
	case opts.NegativeTTL < 0:
		return fmt.Errorf("geo: negative TTL must not be negative, got %s", opts.NegativeTTL)
	case opts.FlushInterval < 0:
		return fmt.Errorf("geo: flush interval must not be negative, got %s", opts.FlushInterval)
	}
	seen := map[string]bool{}
	for _, p := range opts.Providers {
		if p == nil {
			return errors.New("geo: nil provider")
		}
		if seen[p.Name()] {
			return fmt.Errorf("geo: provider %q given twice", p.Name())
		}
		seen[p.Name()] = true
	}
	return nil
}

// now returns the clock's time in Unix seconds.
func (r *Resolver) now() uint32 { return unixSeconds(r.clock.Now()) }

// retryAt is when a failed, non-final entry may be looked up again.
func (r *Resolver) retryAt(ce *cacheEntry) uint32 {
	if ce.failures == 0 {
		return 0
	}
	d := r.negativeTTL
	for i := 1; i < int(ce.failures) && d < r.negativeTTL*maxBackoffFactor && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.negativeTTL*maxBackoffFactor, maxBackoff)
	return ce.failedAt() + uint32(d/time.Second)
}

// dueLocked reports whether an unresolved entry should be queued now.
func (r *Resolver) dueLocked(ce *cacheEntry, now uint32) bool {
	if ce.country != ([2]byte{}) || ce.has(flagFinal) || ce.has(flagPending) {
		return false
	}
	return ce.failures == 0 || r.retryAt(ce) <= now
}

// Track tells the resolver that the engine counts ip. It keeps the entry in
// memory for as long as it is tracked and queues it for resolution when its
// country is unknown. Calling it again for a tracked IP changes nothing.
func (r *Resolver) Track(ip netip.Addr) {
	ip = normalize(ip)
	k := keyOf(ip)
	r.mu.Lock()
	defer r.mu.Unlock()
	ce, ok := r.entries.get(k)
	if ok && ce.has(flagTracked) {
		return
	}
	ce.flags |= flagTracked
	r.nTracked++
	if !ok {
		r.entries.set(k, ce)
		r.enqueueLocked(0, k)
		return
	}
	r.entries.set(k, ce)
	if r.dueLocked(&ce, r.now()) {
		r.enqueueLocked(0, k)
	}
}

// Untrack tells the resolver that the engine no longer counts ip; the entry
// stays cached until the cache size bound evicts it.
func (r *Resolver) Untrack(ip netip.Addr) {
	k := keyOf(normalize(ip))
	r.mu.Lock()
	defer r.mu.Unlock()
	ce, ok := r.entries.get(k)
	if !ok || !ce.has(flagTracked) {
		return
	}
	ce.flags &^= flagTracked
	r.entries.set(k, ce)
	r.nTracked--
}

// Country returns ip's country code, or "" when it is not known (yet).
func (r *Resolver) Country(ip netip.Addr) string {
	k := keyOf(normalize(ip))
	r.mu.Lock()
	ce, _ := r.entries.get(k)
	r.mu.Unlock()
	return countryString(ce.country)
}

// CountryFinal returns ip's country as Country does, and whether the answer
// is final: a country, or an address no provider can place (private,
// reserved). An IP not resolved yet, or whose lookups failed, is not final.
func (r *Resolver) CountryFinal(ip netip.Addr) (string, bool) {
	k := keyOf(normalize(ip))
	r.mu.Lock()
	ce, _ := r.entries.get(k)
	r.mu.Unlock()
	c := countryString(ce.country)
	return c, c != "" || ce.has(flagFinal)
}

// Generation changes whenever an IP's country changed: it got one it did
// not have, another one, or lost it.
func (r *Resolver) Generation() uint64 { return r.generation.Load() }

// Reassigned changes whenever an IP that had a country got another one or
// lost it (a reloaded database, a re-resolve); Generation changes after it.
func (r *Resolver) Reassigned() uint64 { return r.reassigned.Load() }

// Lookup returns what the memory tier knows about ip. When ip is unknown,
// or unresolved and due for a retry, it is queued for background resolution
// (Entry.Pending tells); Lookup itself never waits and never writes.
func (r *Resolver) Lookup(ip netip.Addr) (Entry, bool) {
	ip = normalize(ip)
	k := keyOf(ip)
	r.mu.Lock()
	defer r.mu.Unlock()
	ce, ok := r.entries.get(k)
	if !ok {
		r.entries.set(k, cacheEntry{flags: flagRequested})
		r.enqueueLocked(0, k)
		ce, _ = r.entries.get(k)
		return r.entryLocked(k, ce), false
	}
	if r.dueLocked(&ce, r.now()) {
		ce.flags |= flagRequested
		r.entries.set(k, ce)
		r.enqueueLocked(0, k)
		ce, _ = r.entries.get(k)
	}
	return r.entryLocked(k, ce), true
}

func (r *Resolver) entryLocked(k key, ce cacheEntry) Entry {
	e := Entry{
		IP:          k.addr(),
		CountryCode: countryString(ce.country),
		CountryName: r.texts.get(ce.nameIndex()),
		ASN:         r.asns.get(ce.asn),
		Provider:    r.texts.get(uint16(ce.provider)),
		ResolvedAt:  fromUnixSeconds(ce.resolvedAt()),
		FailedAt:    fromUnixSeconds(ce.failedAt()),
		Failures:    int(ce.failures),
		Message:     r.texts.get(ce.messageIndex()),
		Pending:     ce.has(flagPending),
		Final:       ce.has(flagFinal),
		Tracked:     ce.has(flagTracked),
	}
	if !e.Final && ce.failures > 0 && ce.country == ([2]byte{}) {
		e.RetryAt = fromUnixSeconds(r.retryAt(&ce))
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
	local := r.texts.lookup(providerLocal)
	scheduled := 0
	for k, ce := range r.entries.all() {
		if ce.country != ([2]byte{}) || ce.has(flagPending) {
			continue
		}
		if ce.has(flagFinal) && local != 0 && uint16(ce.provider) == local {
			continue
		}
		ce.flags &^= flagFinal
		ce.flags |= flagRequested
		if ce.failures > 0 {
			ce.failures = 0
			ce.at = 0
		}
		r.entries.set(k, ce)
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
	ce, _ := r.entries.get(k)
	if len(r.stages) == 0 {
		return false
	}
	st := r.stages[i]
	if len(st.queue) >= r.queueSize {
		if ce.has(flagPending) {
			ce.flags &^= flagPending
			r.nPending--
			r.entries.set(k, ce)
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
	if !ce.has(flagPending) {
		ce.flags |= flagPending
		r.nPending++
		r.entries.set(k, ce)
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
		Dirty:           r.dirty.len() + r.flushing,
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
// calls it on SIGHUP. See reloadProvider for the IPs whose lookups failed.
func (r *Resolver) Reload() error {
	var errs []error
	for _, st := range r.stages {
		rl, ok := st.provider.(Reloader)
		if !ok {
			continue
		}
		if _, err := r.reloadProvider(rl, true); err != nil {
			errs = append(errs, fmt.Errorf("reload %s: %w", st.provider.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// HasReloader reports whether a provider has on-disk data that Reload
// reopens (main listens for SIGHUP only then).
func (r *Resolver) HasReloader() bool {
	for _, st := range r.stages {
		if _, ok := st.provider.(Reloader); ok {
			return true
		}
	}
	return false
}
