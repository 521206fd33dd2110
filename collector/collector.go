package collector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	bannedDesc = prometheus.NewDesc(namespace+"_banned_ips",
		"IPs banned right now by fail2ban's rule on bips: bantime <= -1 OR timeofban + bantime > now.", []string{"jail", "country"}, nil)
	recentDesc = prometheus.NewDesc(namespace+"_recent_bans",
		"Ban events (distinct rows of bans, united with the exporter's ban archive when it is on) whose timeofban lies in the trailing window.", []string{"jail", "country", "window"}, nil)
	bansTotalDesc = prometheus.NewDesc(namespace+"_bans_total",
		"Ban events that appeared in fail2ban's database since the exporter started.", []string{"jail", "country"}, nil)
	oldestDesc = prometheus.NewDesc(namespace+"_oldest_ban_timestamp_seconds",
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

	// refreshMu serialises refreshes; flight lets concurrent scrapes share one.
	flightMu sync.Mutex
	flight   *refreshCall

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

type refreshCall struct {
	done chan struct{}
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
		backfillAbove: backfillAbove,
		backfillChunk: backfillChunk,
		opts:          opts,
		countries:     countries,
		logger:        opts.Logger,
		now:           now,
		readErrors:    map[errorKind]float64{},
		reconciles:    map[string]float64{},
		offerCtx:      offerCtx,
		offerCancel:   offerCancel,
	}
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
// a caller arriving while one runs waits for it instead of starting another.
func (x *Exporter) Refresh(ctx context.Context) error {
	x.flightMu.Lock()
	if c := x.flight; c != nil {
		x.flightMu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		x.mu.Lock()
		defer x.mu.Unlock()
		if !x.up {
			return errors.New(x.lastErrMsg)
		}
		return nil
	}
	c := &refreshCall{done: make(chan struct{})}
	x.flight = c
	x.flightMu.Unlock()
	defer func() {
		x.flightMu.Lock()
		x.flight = nil
		x.flightMu.Unlock()
		close(c.done)
	}()

	offers, err := x.refreshAndTake(ctx)
	x.offerArchive(offers.all())
	return err
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
	if startup && x.loaded && x.eng.backfill != nil && !x.closed {
		eng, octx := x.eng, x.offerCtx
		eng.backfill.dev, eng.backfill.ino = x.src.dev, x.src.ino
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

// offerArchive hands the ban events of a refresh to the archive's queue,
// after those a full queue did not take last time. Add never touches
// SQLite: this is cheap on a scrape.
func (x *Exporter) offerArchive(events []archive.Event) {
	if x.opts.Archive == nil {
		return
	}
	x.archMu.Lock()
	defer x.archMu.Unlock()
	if len(events) == 0 && len(x.archPending) == 0 {
		return
	}
	all := append(x.archPending, events...)
	n := x.opts.Archive.Add(all...)
	rest := all[n:]
	if len(rest) > maxArchPending {
		rest = rest[len(rest)-maxArchPending:]
	}
	x.archPending = slices.Clone(rest)
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
		eng.live = true
		eng.stored = 0 // rows read from now on are new events
		eng.endStartupRead()
		x.loadedNow = []any{"schema", src.schema, "bans_rows", len(eng.events), "bips_rows", eng.liveRecs, "ips", len(eng.ipIndex)}
		if len(eng.events)+eng.liveRecs >= freeAfterLoadRows {
			// A large load leaves several times the engine's size as
			// garbage (rows, driver values): give those pages back to
			// the OS at once rather than keep them resident until the
			// scavenger gets to them.
			debug.FreeOSMemory()
		}
	}
	return nil
}

// loadHistory puts the archived ban events of the longest window into a new
// engine, before its first read of fail2ban's database: from the archive for
// the first engine, from the previous engine's carry after a reload (which
// also holds events not yet written to the archive).
func (x *Exporter) loadHistory(ctx context.Context, eng *engine, now int64) error {
	eng.keep = true
	if x.historyLoaded {
		if x.carry != nil {
			for i := range x.carry.kept {
				eng.addArchived(&x.carry.kept[i], now, false)
			}
		}
		eng.mergeTob(now)
		return nil
	}
	start := time.Now()
	since := time.Unix(now, 0).Add(-Longest(x.opts.Windows))
	// The archive's count includes events older than the longest window
	// (retention is longer): a little more room than the load needs.
	eng.reserveTob(x.opts.Archive.Count())
	n := 0
	err := x.opts.Archive.Load(ctx, since, func(ev archive.Event) error {
		eng.addArchived(&ev, now, true)
		if n++; n%archive.DefaultLoadChunk == 0 {
			eng.mergeTob(now)
		}
		return nil
	})
	if err != nil {
		// The app database is local: a failed read is rare, and counting
		// without the history would show truncated windows as complete.
		return fmt.Errorf("load the ban archive: %w", err)
	}
	eng.mergeTob(now)
	x.historyLoaded = true
	x.logger.Info("loaded the ban archive's events of the longest window", "events", n, "since", since.UTC().Format(time.RFC3339), "duration", time.Since(start).Round(time.Millisecond))
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
	x.eng.startBackfill(bans.count-int64(x.eng.stored), x.backfillAbove)
	return nil
}

// readNew reads the rows of table above the engine's high-water mark in
// chunks, each chunk its own short read. Reading the next chunk overlaps
// with applying the previous one.
func (x *Exporter) readNew(ctx context.Context, table string, now int64) error {
	high := x.eng.high(table)
	type chunk struct {
		rows []row
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	chunks := make(chan chunk, 1)
	// Applied chunks' buffers go back to the reader: an initial load of a
	// million rows reuses three buffers instead of growing one per chunk.
	free := make(chan []row, 3)
	readerDone := make(chan struct{})
	// The reader must be finished with the connection before anyone else
	// uses it.
	defer func() { cancel(); <-readerDone }()
	go func() {
		defer close(readerDone)
		defer close(chunks)
		after := high
		for {
			var buf []row
			select {
			case buf = <-free:
			default:
			}
			rows, err := x.src.readAfter(ctx, buf, table, after, x.opts.ChunkSize)
			select {
			case chunks <- chunk{rows: rows, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil || len(rows) < x.opts.ChunkSize {
				return
			}
			after = rows[len(rows)-1].Rowid
		}
	}()
	for c := range chunks {
		if c.err != nil {
			return c.err
		}
		x.apply(table, c.rows, now)
		select {
		case free <- c.rows:
		default:
		}
	}
	return ctx.Err()
}

// settleAttempts bounds how often settle goes back to chunked reads when
// fail2ban keeps writing more than a chunk between two of its reads.
const settleAttempts = 3

// settle ends a refresh: in one short read transaction it takes in the rows
// committed since readNew and reads each table's shape (row count, highest
// rowid, fingerprint of the top bucket). The engine and the shapes then
// describe the same state of the database, so a ban committed while the
// exporter reads is never mistaken for a deletion. A table whose shape
// differs from the engine's lost or changed rows (unban, purge, reused
// rowids) and is reconciled.
func (x *Exporter) settle(ctx context.Context, now int64) error {
	tables := []string{"bans"}
	if x.src.schema == 4 {
		tables = append(tables, "bips")
	}
	for attempt := 1; ; attempt++ {
		if x.testHookBeforeSettle != nil {
			x.testHookBeforeSettle()
		}
		tails, more, err := x.readTails(ctx, tables)
		if err != nil {
			return err
		}
		for i, t := range tables {
			x.apply(t, tails[i].rows, now)
		}
		if more {
			if attempt == settleAttempts {
				// fail2ban writes faster than one chunk per read: the
				// engine holds a consistent prefix; the next refresh
				// goes on from there.
				return nil
			}
			for _, t := range tables {
				if err := x.readNew(ctx, t, now); err != nil {
					return err
				}
			}
			continue
		}
		for i, t := range tables {
			if !x.consistent(t, &tails[i]) {
				if err := x.reconcile(ctx, t, tails[i].shape, now); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

// tailRead is what settle reads of one table in its transaction.
type tailRead struct {
	rows  []row // rows above the engine's high-water mark
	shape tableShape
	topFP fingerprint // of the bucket of shape.max
}

// readTails reads, in one read transaction on the pinned connection, the
// new rows (at most one chunk) and the shape of each table. more reports
// that a table had a full chunk of new rows, so its shape may lie beyond
// what was read. The transaction holds a SHARED lock for a few
// milliseconds: a row count through the smallest index, two rowid lookups,
// one bucket's fingerprint.
func (x *Exporter) readTails(ctx context.Context, tables []string) (tails []tailRead, more bool, err error) {
	conn := x.src.conn
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return nil, false, fmt.Errorf("begin read: %w", err)
	}
	// A read transaction: ROLLBACK ends it as COMMIT would, and is safe
	// after an error that already ended it.
	defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") }()
	tails = make([]tailRead, len(tables))
	for i, t := range tables {
		tr := &tails[i]
		if tr.rows, err = x.src.readAfter(ctx, nil, t, x.eng.high(t), x.opts.ChunkSize); err != nil {
			return nil, false, err
		}
		more = more || len(tr.rows) >= x.opts.ChunkSize
		if tr.shape, err = readShape(ctx, conn, t); err != nil {
			return nil, false, err
		}
		if tr.shape.count > 0 {
			top := bucketOf(tr.shape.max)
			fps, err := x.src.fingerprints(ctx, t, top<<bucketShift, (top+1)<<bucketShift-1)
			if err != nil {
				return nil, false, err
			}
			tr.topFP = fps[top]
		}
	}
	return tails, more, nil
}

// readShape reads the row count and the rowid bounds of table. Each is its
// own subquery so that SQLite counts through its smallest b-tree (without
// reading a row) and finds the bounds in the rowid b-tree; one aggregate
// over the three would scan every row of the table, data included.
func readShape(ctx context.Context, conn *sql.Conn, table string) (tableShape, error) {
	var sh tableShape
	var mx, mn sql.NullInt64
	q := "SELECT (SELECT count(*) FROM " + table + "), (SELECT max(rowid) FROM " + table + "), (SELECT min(rowid) FROM " + table + ")"
	if err := conn.QueryRowContext(ctx, q).Scan(&sh.count, &mx, &mn); err != nil {
		return sh, fmt.Errorf("count %s: %w", table, err)
	}
	sh.max, sh.min = mx.Int64, mn.Int64
	return sh, nil
}

// apply adds rows read above the engine's high-water mark of table.
func (x *Exporter) apply(table string, rows []row, now int64) {
	if len(rows) == 0 {
		return
	}
	if table == "bans" {
		x.eng.appendBans(rows, now)
	} else {
		x.eng.appendBips(rows, now)
	}
}

// consistent reports whether the engine holds what tr says table holds.
func (x *Exporter) consistent(table string, tr *tailRead) bool {
	eng := x.eng
	count, high, fps := int64(len(eng.events)), eng.bansHigh(), eng.bansFP
	if table == "bips" {
		count, high, fps = int64(eng.liveRecs), eng.bipsHigh(), eng.bipsFP
	}
	if tr.shape.count != count || tr.shape.max != high {
		return false
	}
	return count == 0 || fps[bucketOf(high)] == tr.topFP
}

// reconcile compares the fingerprints of every bucket of table with the
// engine's and rereads the buckets that differ.
func (x *Exporter) reconcile(ctx context.Context, table string, sh tableShape, now int64) error {
	x.reconciles[table]++
	eng := x.eng
	ours := eng.bansFP
	if table == "bips" {
		ours = eng.bipsFP
	}
	// Ranges of rowids per fingerprint query: each is its own short read.
	span := int64(x.opts.ChunkSize)
	span = max(span>>bucketShift, 1) << bucketShift
	theirs := map[int64]fingerprint{}
	if sh.count > 0 {
		for lo := (sh.min >> bucketShift) << bucketShift; lo <= sh.max; lo += span {
			fps, err := x.src.fingerprints(ctx, table, lo, lo+span-1)
			if err != nil {
				return err
			}
			maps.Copy(theirs, fps)
		}
	}
	var differ []int64
	for b, f := range theirs {
		if ours[b] != f {
			differ = append(differ, b)
		}
	}
	for b := range ours {
		if _, ok := theirs[b]; !ok {
			differ = append(differ, b)
		}
	}
	for _, b := range differ {
		lo, hi := b<<bucketShift, (b+1)<<bucketShift-1
		var rows []row
		if _, ok := theirs[b]; ok {
			var err error
			if rows, err = x.src.readRange(ctx, table, lo, hi); err != nil {
				return err
			}
		}
		if table == "bans" {
			eng.replaceBansRange(lo, hi, rows, now)
		} else {
			eng.replaceBipsRange(lo, hi, rows, now)
		}
	}
	x.logger.Debug("reconciled fail2ban table", "table", table, "buckets", len(differ))
	return nil
}

// Describe implements prometheus.Collector.
func (x *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, jailEnabledDesc, bannedDesc, recentDesc, bansTotalDesc, oldestDesc,
		readDurationDesc, lastSuccessDesc, readErrorsDesc, skippedDesc, rowsDesc, ipsDesc, reconcileDesc, schemaDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (x *Exporter) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = x.Refresh(ctx) // the error is in fail2ban_up and the error counter

	x.mu.Lock()
	up, snap, jails := x.up, x.snap, x.jails
	readErrors := cloneMap(x.readErrors)
	reconciles := cloneMap(x.reconciles)
	dur, last := x.lastDur, x.lastSuccess
	schema := 0
	if x.src != nil {
		schema = x.src.schema
	}
	x.mu.Unlock()

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
	// The counter is exposed even while the database is unreadable, so it
	// never looks reset.
	for k, v := range snap.bansTotal {
		ch <- prometheus.MustNewConstMetric(bansTotalDesc, prometheus.CounterValue, float64(v), snap.jails[k.jail], snap.countries[k.country])
	}
	if !up {
		return
	}
	for jail, enabled := range jails {
		ch <- prometheus.MustNewConstMetric(jailEnabledDesc, prometheus.GaugeValue, boolFloat(enabled), jail)
	}
	for k, v := range snap.bannedNow {
		ch <- prometheus.MustNewConstMetric(bannedDesc, prometheus.GaugeValue, float64(v), snap.jails[k.jail], snap.countries[k.country])
	}
	for w, counts := range snap.windows {
		label := x.opts.Windows[w].Label
		for k, v := range counts {
			ch <- prometheus.MustNewConstMetric(recentDesc, prometheus.GaugeValue, float64(v), snap.jails[k.jail], snap.countries[k.country], label)
		}
	}
	oldest, haveOldest := snap.oldest, snap.haveOldest
	if x.opts.Archive != nil {
		// The archive may reach further back than the longest window the
		// engine holds.
		if o := x.opts.Archive.Oldest(); !o.IsZero() && (!haveOldest || o.Unix() < oldest) {
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
func (x *Exporter) String() string { return fmt.Sprintf("fail2ban exporter for %s", x.opts.DBPath) }
