package collector

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/bangui/bangui_exporter/collector/archive"
)

const (
	namespace = "fail2ban"
	selfNS    = "bangui_exporter"
)

var (
	upDesc = prometheus.NewDesc(namespace+"_up",
		"1 when the last read of fail2ban's database succeeded, 0 otherwise.", nil, nil)
	jailEnabledDesc = prometheus.NewDesc(namespace+"_jail_enabled",
		"1 when the jail is enabled in fail2ban's jails table, 0 otherwise.", []string{"jail"}, nil)
	bannedDesc    = prometheus.NewDesc(cachedFamilyText[familyBanned].name, cachedFamilyText[familyBanned].help, []string{"jail", "country"}, nil)
	recentDesc    = prometheus.NewDesc(cachedFamilyText[familyRecent].name, cachedFamilyText[familyRecent].help, []string{"jail", "country", "window"}, nil)
	bansTotalDesc = prometheus.NewDesc(cachedFamilyText[familyTotal].name, cachedFamilyText[familyTotal].help, []string{"jail", "country"}, nil)
	oldestDesc    = prometheus.NewDesc(namespace+"_oldest_ban_timestamp_seconds",
		"timeofban of the oldest ban event in fail2ban's bans table or, when it is on, the exporter's ban archive: the history horizon of the windows.", nil, nil)

	readDurationDesc = prometheus.NewDesc(selfNS+"_fail2ban_read_duration_seconds",
		"Duration of the last read of fail2ban's database (incremental refresh).", nil, nil)
	lastSuccessDesc = prometheus.NewDesc(selfNS+"_fail2ban_last_read_success_timestamp_seconds",
		"Time of the last successful read of fail2ban's database.", nil, nil)
	readErrorsDesc = prometheus.NewDesc(selfNS+"_fail2ban_read_errors_total",
		"Failed reads of fail2ban's database by kind of error.", []string{"kind"}, nil)
	skippedDesc = prometheus.NewDesc(selfNS+"_fail2ban_skipped_rows",
		"Rows of fail2ban's database that cannot be counted (NULL or invalid ip, jail, timeofban or bantime).", []string{"table", "reason"}, nil)
	rowsDesc = prometheus.NewDesc(selfNS+"_fail2ban_rows",
		"Rows of fail2ban's database held in memory.", []string{"table"}, nil)
	ipsDesc = prometheus.NewDesc(selfNS+"_fail2ban_ips",
		"Distinct IPs held in memory.", nil, nil)
	reconcileDesc = prometheus.NewDesc(selfNS+"_fail2ban_reconciliations_total",
		"Reconciliations of a table after rows were deleted (unban, purge) or replaced.", []string{"table"}, nil)
	schemaDesc = prometheus.NewDesc(selfNS+"_fail2ban_schema_version",
		"Schema version of fail2ban's database (2 or 4); 0 when unknown.", nil, nil)
)

// Exporter reads fail2ban's database and exposes it as metrics. A scrape
// brings the engine up to date when the database changed, then emits the
// aggregates; concurrent scrapes share one refresh.
type Exporter struct {
	opts      Options
	countries CountryLookup
	logger    *slog.Logger
	now       func() time.Time

	// flight lets concurrent scrapes share one refresh (Refresh).
	flight singleflight.Group

	ready atomic.Bool

	mu     sync.Mutex // guards everything below
	src    *source
	eng    *engine
	loaded bool // eng holds a complete read of src
	// loadedNow describes the complete read the current refresh made (log
	// attributes), nil when it made none.
	loadedNow   []any
	closed      bool
	up          bool
	jails       map[string]bool
	lastErrKind errorKind
	lastErrMsg  string
	readErrors  map[errorKind]float64
	reconciles  map[string]float64
	lastDur     time.Duration
	lastSuccess time.Time
	carry       *engineCarry
	snap        *snapshot
	// engineSeq numbers the engines (engine.seq); familyGen is the last
	// generation given to a cached family (snapshot.gen).
	engineSeq uint64
	familyGen uint64
	// encoded holds the cached families' encoded text (EncodedFamilies).
	encoded familyCache
	// settleLight is true during a scrape's refresh (refreshForScrape):
	// while RunVerify runs it settles without counting rows (dbsync.go).
	// While RunCountryRefresh runs, every refresh leaves countries to it.
	// unverified is true while the engine was last settled without a
	// count: RunVerify settles fully in the background then.
	settleLight bool
	unverified  bool
	// verifying and countriesAside are true while RunVerify and
	// RunCountryRefresh run; kickCountries wakes RunCountryRefresh.
	verifying      atomic.Bool
	countriesAside atomic.Bool
	kickCountries  chan struct{}
	// inlineCountries is the most IPs for which a refresh moves countries
	// itself while RunCountryRefresh runs (inlineCountryIPs; tests lower
	// it to exercise the background pass with a few IPs).
	inlineCountries int
	// countryChunk is how many IPs a background country pass handles at
	// a time (countryProbeChunk; tests set fewer).
	countryChunk int
	// integrityErr is the damage the last integrity pass found (nil: none,
	// or no pass yet); while set, refreshes fail with it.
	integrityErr error
	// integrityPace is the integrity check's rest after a chunk, as a
	// multiple of the chunk's cost (integrityPace; tests lower it).
	integrityPace int
	// historyLoaded is true once an engine loaded the archive's events:
	// later engines (after a reload) take them from carry instead.
	historyLoaded bool

	// archPending holds events the archive's full queue did not take, to
	// offer again first at the next refresh (guarded by archMu).
	archMu      sync.Mutex
	archPending []archive.Event
	// offerWG tracks the background offering of a startup read's events;
	// offerCtx ends it when Close cannot wait any longer.
	offerWG     sync.WaitGroup
	offerCtx    context.Context
	offerCancel context.CancelFunc

	// backfillAbove: a startup read with more rows for the archive than
	// this backfills them (backfill.go); tests lower it.
	backfillAbove int64
	// backfillChunk is how many rows one backfill step reads.
	backfillChunk int
	// testHookBackfillStep, when set, runs before each backfill read.
	testHookBackfillStep func()

	// testHookBeforeSettle, when set, runs before settle's read
	// transaction (tests interleave fail2ban's writes there).
	testHookBeforeSettle func()
}

// NewExporter returns an Exporter for opts. countries answers countries from
// memory; use NoCountries when geo resolution is off.
func NewExporter(opts Options, countries CountryLookup) *Exporter {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 20000
	}
	if opts.DefaultBantime <= 0 {
		opts.DefaultBantime = 10 * time.Minute
	}
	if countries == nil {
		countries = NoCountries{}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	offerCtx, offerCancel := context.WithCancel(context.Background())
	return &Exporter{
		backfillAbove:   backfillAbove,
		backfillChunk:   backfillChunk,
		integrityPace:   integrityPace,
		opts:            opts,
		countries:       countries,
		logger:          opts.Logger,
		now:             now,
		readErrors:      map[errorKind]float64{},
		reconciles:      map[string]float64{},
		offerCtx:        offerCtx,
		offerCancel:     offerCancel,
		kickCountries:   make(chan struct{}, 1),
		inlineCountries: inlineCountryIPs,
		countryChunk:    countryProbeChunk,
	}
}

// Describe implements prometheus.Collector.
func (ex *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, jailEnabledDesc, bannedDesc, recentDesc, bansTotalDesc, oldestDesc,
		readDurationDesc, lastSuccessDesc, readErrorsDesc, skippedDesc, rowsDesc, ipsDesc, reconcileDesc, schemaDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it refreshes, then emits every
// metric of the Exporter.
func (ex *Exporter) Collect(ch chan<- prometheus.Metric) {
	ex.refreshForScrape()
	ex.collect(ch, true)
}

// refreshForScrape brings the engine up to date for a scrape, leaving to
// RunVerify and RunCountryRefresh what they do in the background.
func (ex *Exporter) refreshForScrape() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The error is in fail2ban_up and the error counter.
	_ = ex.refresh(ctx, ex.verifying.Load() || ex.countriesAside.Load())
}

// collect emits the metrics of the last refresh; the cached families
// (fail2ban_banned_ips, fail2ban_recent_bans, fail2ban_bans_total) only
// with withCached.
func (ex *Exporter) collect(ch chan<- prometheus.Metric, withCached bool) {
	ex.mu.Lock()
	up, snap, jails := ex.up, ex.snap, ex.jails
	readErrors := cloneMap(ex.readErrors)
	reconciles := cloneMap(ex.reconciles)
	dur, last := ex.lastDur, ex.lastSuccess
	schema := 0
	if ex.src != nil {
		schema = ex.src.schema
	}
	ex.mu.Unlock()

	ch <- gauge(upDesc, boolFloat(up))
	ch <- gauge(readDurationDesc, dur.Seconds())
	if !last.IsZero() {
		ch <- gauge(lastSuccessDesc, float64(last.UnixNano())/1e9)
	}
	for _, k := range errorKinds {
		ch <- prometheus.MustNewConstMetric(readErrorsDesc, prometheus.CounterValue, readErrors[k], string(k))
	}
	for _, t := range []string{"bans", "bips"} {
		ch <- prometheus.MustNewConstMetric(reconcileDesc, prometheus.CounterValue, reconciles[t], t)
	}
	ch <- gauge(schemaDesc, float64(schema))
	if snap == nil {
		return
	}
	if withCached {
		ex.collectCached(ch, snap, up)
	}
	if !up {
		return
	}
	for jail, enabled := range jails {
		ch <- prometheus.MustNewConstMetric(jailEnabledDesc, prometheus.GaugeValue, boolFloat(enabled), jail)
	}
	oldest, haveOldest := snap.oldest, snap.haveOldest
	if ex.opts.Archive != nil {
		// The archive may reach further back than the longest window the
		// engine holds.
		if o := ex.opts.Archive.Oldest(); !o.IsZero() && (!haveOldest || o.Unix() < oldest) {
			oldest, haveOldest = o.Unix(), true
		}
	}
	if haveOldest {
		ch <- gauge(oldestDesc, float64(oldest))
	}
	for k, v := range snap.skipped {
		ch <- prometheus.MustNewConstMetric(skippedDesc, prometheus.GaugeValue, float64(v), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(rowsDesc, prometheus.GaugeValue, float64(snap.bansRows), "bans")
	ch <- prometheus.MustNewConstMetric(rowsDesc, prometheus.GaugeValue, float64(snap.bipsRows), "bips")
	ch <- gauge(ipsDesc, float64(snap.ips))
}

// collectCached emits the cached families of snap as metrics: the counter
// fail2ban_bans_total also while the database is unreadable (up false), so
// it never looks reset; the gauges only with up.
func (ex *Exporter) collectCached(ch chan<- prometheus.Metric, snap *snapshot, up bool) {
	for k, v := range snap.bansTotal {
		ch <- prometheus.MustNewConstMetric(bansTotalDesc, prometheus.CounterValue, float64(v), snap.jails[k.jail], snap.countries[k.country])
	}
	if !up {
		return
	}
	for k, v := range snap.bannedNow {
		ch <- prometheus.MustNewConstMetric(bannedDesc, prometheus.GaugeValue, float64(v), snap.jails[k.jail], snap.countries[k.country])
	}
	for w, counts := range snap.windows {
		label := ex.opts.Windows[w].Label
		for k, v := range counts {
			ch <- prometheus.MustNewConstMetric(recentDesc, prometheus.GaugeValue, float64(v), snap.jails[k.jail], snap.countries[k.country], label)
		}
	}
}

// snapshot is a copy of the aggregates for one scrape. Its maps are never
// written after it was taken: the next snapshot shares the maps of the
// cached families whose counts did not change.
type snapshot struct {
	jails      []string
	countries  []string
	bannedNow  map[seriesKey]int
	windows    []map[seriesKey]int
	bansTotal  map[seriesKey]uint64
	oldest     int64
	haveOldest bool
	skipped    map[[2]string]int
	bansRows   int
	bipsRows   int
	ips        int

	// gen is, per cached family, the generation of its counts: two
	// snapshots with the same gen of a family hold the same counts and
	// names for it, so its encoded text is the same (exposition_cache.go).
	gen [numCachedFamilies]uint64
	// engSeq and changes are the engine and its change counters the
	// snapshot was taken from.
	engSeq  uint64
	changes [numCachedFamilies]uint64
}

// takeSnapshot copies the engine's aggregates for the scrapes until the
// next refresh; ex.mu is held. A cached family whose counts did not change
// since the previous snapshot of the same engine keeps its maps and its
// generation; any other gets a copy and a new generation.
func (ex *Exporter) takeSnapshot() {
	e, prev := ex.eng, ex.snap
	if e.seq == 0 {
		ex.engineSeq++
		e.seq = ex.engineSeq
	}
	s := &snapshot{
		jails:     slices.Clone(e.jailNames),
		countries: slices.Clone(e.countryNames),
		skipped:   cloneMap(e.skipped),
		bansRows:  len(e.bansRows),
		bipsRows:  e.liveBipsRows,
		ips:       e.ipIndex.count(),
		engSeq:    e.seq,
		changes:   e.changes,
	}
	if e.schema == 2 {
		s.bipsRows = 0
	}
	s.oldest, s.haveOldest = e.oldestBan()
	for f := range numCachedFamilies {
		if prev != nil && prev.engSeq == e.seq && prev.changes[f] == e.changes[f] {
			s.gen[f] = prev.gen[f]
			switch f {
			case familyBanned:
				s.bannedNow = prev.bannedNow
			case familyRecent:
				s.windows = prev.windows
			case familyTotal:
				s.bansTotal = prev.bansTotal
			}
			continue
		}
		ex.familyGen++
		s.gen[f] = ex.familyGen
		switch f {
		case familyBanned:
			s.bannedNow = cloneMap(e.bannedNow)
		case familyRecent:
			s.windows = make([]map[seriesKey]int, 0, len(e.windowCount))
			for _, w := range e.windowCount {
				s.windows = append(s.windows, cloneMap(w))
			}
		case familyTotal:
			s.bansTotal = cloneMap(e.bansTotal)
		}
	}
	ex.snap = s
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	maps.Copy(out, m)
	return out
}

func gauge(d *prometheus.Desc, v float64) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// String describes the exporter for logs.
func (ex *Exporter) String() string { return fmt.Sprintf("fail2ban exporter for %s", ex.opts.DBPath) }
