// Package banmap answers "who and where" for the IPs fail2ban bans right
// now, with bounded cardinality: the top autonomous systems per jail
// (fail2ban_banned_ips_by_asn) and the top places (fail2ban_banned_ips_by_location,
// with a GeoLite2-City layout database), each with one "other" series so the
// series of a jail (or of all places) sum to its banned count; and, for the
// admin API, the list of banned IPs behind a country, paged, and the counts
// per country.
//
// Everything is computed off the scrape path: a background loop (Run) walks
// the engine's banned pairs (collector.Exporter.WalkBanned) on a ticker,
// looks each IP up in memory (memory-mapped databases, geo's memory tier),
// and publishes an immutable snapshot. Collect and the HTTP handlers only
// read the latest snapshot; they never touch a database.
package banmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/geo"
)

// Defaults of the options (and of the flags).
const (
	DefaultASNTop   = 20
	DefaultCityTop  = 50
	DefaultInterval = time.Minute
)

// Source walks the currently banned (jail, IP) pairs; collector.Exporter
// implements it.
type Source interface {
	WalkBanned(ctx context.Context, fn func([]collector.BannedIP)) error
}

// ASLookup answers an IP's autonomous system from a GeoLite2-ASN layout
// database (*geo.MMDB) or from geo's memory tier (*geo.Resolver, ip-api's
// "as" field).
type ASLookup interface {
	AS(ip netip.Addr) (geo.AS, bool)
}

// ASFunc adapts a function to ASLookup.
type ASFunc func(ip netip.Addr) (geo.AS, bool)

// AS implements ASLookup.
func (f ASFunc) AS(ip netip.Addr) (geo.AS, bool) { return f(ip) }

// PlaceLookup answers an IP's place from a GeoLite2-City layout database
// (*geo.MMDB).
type PlaceLookup interface {
	// HasPlaces reports whether the loaded database has cities and
	// coordinates (a City layout).
	HasPlaces() bool
	Place(ip netip.Addr) (geo.Place, bool)
}

// Options configure Maps.
type Options struct {
	Source Source
	// AS are the sources of autonomous systems, asked in order (the ASN
	// database, then geo's memory tier); none: no ASN metric.
	AS []ASLookup
	// Places is the City database; nil: no location metric.
	Places PlaceLookup
	// ASNTop and CityTop are N of the two top-N lists; 0 means the
	// default, negative is an error.
	ASNTop  int
	CityTop int
	// Interval is how often the lists are recomputed; 0 means
	// DefaultInterval.
	Interval time.Duration
	// List keeps the list of banned IPs for the admin API (memory: about
	// 36 bytes per banned pair); without it only the metrics are kept.
	List bool
	// Ready, when set, tells when the source has read fail2ban's database
	// once (collector.Exporter.Ready); Run computes the first snapshot as
	// soon as it is, rather than an empty one at start and the real one an
	// Interval later.
	Ready  func() bool
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Maps computes and holds the snapshot. Its Collect and handlers answer
// from the latest snapshot.
type Maps struct {
	opts Options
	snap atomic.Pointer[snapshot]
	// updateMu serialises Update; prev is the previous top-N, the tie
	// breaker that keeps series from flapping.
	updateMu sync.Mutex
	prev     previousTop
	// problem is the last walk error logged ("" after a success).
	problem string
}

// New checks opts and returns Maps with an empty snapshot.
func New(opts Options) (*Maps, error) {
	switch {
	case opts.Source == nil:
		return nil, errors.New("banmap: no source of banned IPs")
	case opts.ASNTop < 0:
		return nil, fmt.Errorf("banmap: --geo.asn.top must not be negative, got %d", opts.ASNTop)
	case opts.CityTop < 0:
		return nil, fmt.Errorf("banmap: --geo.city.top must not be negative, got %d", opts.CityTop)
	case opts.Interval < 0:
		return nil, fmt.Errorf("banmap: negative interval %s", opts.Interval)
	}
	for _, a := range opts.AS {
		if a == nil {
			return nil, errors.New("banmap: nil AS source")
		}
	}
	if opts.ASNTop == 0 {
		opts.ASNTop = DefaultASNTop
	}
	if opts.CityTop == 0 {
		opts.CityTop = DefaultCityTop
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Maps{opts: opts}
	m.snap.Store(&snapshot{})
	return m, nil
}

// readyPoll is how often Run checks Ready before the first snapshot.
const readyPoll = 250 * time.Millisecond

// Run computes the first snapshot once the source is ready, then a new one
// every Interval, until ctx ends.
func (m *Maps) Run(ctx context.Context) {
	if m.opts.Ready != nil {
		poll := time.NewTicker(readyPoll)
		for !m.opts.Ready() {
			select {
			case <-ctx.Done():
				poll.Stop()
				return
			case <-poll.C:
			}
		}
		poll.Stop()
	}
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		if err := m.Update(ctx); err != nil && ctx.Err() == nil {
			m.opts.Logger.Debug("banmap update", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Update walks the banned pairs once and publishes a new snapshot. A walk
// that fails keeps the previous snapshot.
func (m *Maps) Update(ctx context.Context) error {
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
	start := m.opts.Now()
	b := newBuilder(m.opts, m.snap.Load().pairs)
	if err := m.opts.Source.WalkBanned(ctx, b.add); err != nil {
		if msg := err.Error(); msg != m.problem && ctx.Err() == nil {
			m.problem = msg
			m.opts.Logger.Warn("top networks and places not updated; the previous ones stay", "err", err)
		}
		return fmt.Errorf("banmap: %w", err)
	}
	m.problem = ""
	s := b.finish(&m.prev, start)
	s.took = m.opts.Now().Sub(start)
	m.snap.Store(s)
	return nil
}

// Snapshot facts for tests and logs.
func (m *Maps) current() *snapshot { return m.snap.Load() }
