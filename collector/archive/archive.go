// Package archive keeps fail2ban's ban events beyond fail2ban's own purge.
//
// fail2ban deletes rows of its bans table older than dbpurgeage (one day by
// default). The archive stores every ban event the exporter sees — jail, IP,
// timeofban, bantime, bancount — in the app database (internal/appdb), so
// trailing windows of 7, 30 or 365 days stay complete back to the archive's
// horizon.
//
// Writes never happen on a scrape: Add only appends to a bounded in-memory
// queue, and Run writes the queue in the background with one transaction
// and one commit per cycle (INSERT OR IGNORE through one prepared
// statement). Inserts are idempotent: an event is identified by (timeofban,
// jail, ip), so fail2ban's duplicate rows, rereads and restarts never create
// duplicates. Run also prunes events older than the retention in small
// batches, each its own short transaction, and flushes the queue on shutdown.
//
// Load streams archived events in chunks for the engine's startup; Oldest is
// the archive's horizon and Count the number of archived events (both kept
// in memory, cheap to call on a scrape).
package archive

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

// Event is one ban event: one row of fail2ban's bans table.
type Event struct {
	Jail string
	IP   netip.Addr
	// TimeOfBan is fail2ban's timeofban in Unix seconds.
	TimeOfBan int64
	// Bantime in seconds; -1 is permanent, -2 unknown (fail2ban's own
	// conventions; schema-2 databases have no bantime: use -2).
	Bantime int64
	// Bancount is fail2ban's bancount (0 where the schema has none).
	Bancount int64
}

// Defaults of Options.
const (
	DefaultRetention     = 400 * 24 * time.Hour
	DefaultInterval      = 10 * time.Second
	DefaultMaxQueue      = 200_000
	DefaultFlushAt       = 50_000
	DefaultPruneInterval = time.Hour
	DefaultPruneBatch    = 5_000
	DefaultFlushTimeout  = 10 * time.Second
	DefaultLoadChunk     = 20_000
)

// Options configure a Store. Zero values take the defaults above.
type Options struct {
	// Retention: events with timeofban older than now-Retention are pruned
	// and never written.
	Retention time.Duration
	// Interval between ingest cycles of Run.
	Interval time.Duration
	// MaxQueue bounds the events waiting for the next cycle (about 64 bytes
	// each plus the IP's jail string, shared). Add drops what does not fit
	// and counts it; AddWait waits for room instead.
	MaxQueue int
	// FlushAt starts a cycle before Interval has passed once this many
	// events wait.
	FlushAt int
	// PruneInterval between retention passes of Run (the first runs at
	// start).
	PruneInterval time.Duration
	// PruneBatch is the most events one pruning transaction deletes.
	PruneBatch int
	// FlushTimeout bounds the final flush at shutdown.
	FlushTimeout time.Duration
	// LoadChunk is the most events one read of Load returns.
	LoadChunk int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Logger (slog.Default when nil).
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	if o.FlushAt <= 0 || o.FlushAt > o.MaxQueue {
		o.FlushAt = min(DefaultFlushAt, o.MaxQueue)
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = DefaultPruneInterval
	}
	if o.PruneBatch <= 0 {
		o.PruneBatch = DefaultPruneBatch
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = DefaultFlushTimeout
	}
	if o.LoadChunk <= 0 {
		o.LoadChunk = DefaultLoadChunk
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// migrations of the archive's tables in the app database.
//
// archive_events is a WITHOUT ROWID table clustered on its primary key
// (timeofban, jail, ip): one B-tree serves uniqueness, Load's range scans
// from a time on, and pruning from the oldest end. Jails are small integers
// into archive_jails; IPs are 4 or 16 raw bytes.
var migrations = []appdb.Migration{
	{Version: 1, SQL: `CREATE TABLE archive_jails (
		id   INTEGER PRIMARY KEY,
		name TEXT NOT NULL UNIQUE
	);
	CREATE TABLE archive_events (
		timeofban INTEGER NOT NULL,          -- Unix seconds (fail2ban's timeofban)
		jail      INTEGER NOT NULL,          -- archive_jails.id
		ip        BLOB NOT NULL,             -- 4 (IPv4) or 16 (IPv6) bytes
		bantime   INTEGER NOT NULL,          -- seconds; -1 permanent, -2 unknown
		bancount  INTEGER NOT NULL,
		PRIMARY KEY (timeofban, jail, ip)
	) WITHOUT ROWID`},
}

// Store is the ban archive. Create it with Open; run Run in one goroutine.
type Store struct {
	db   *appdb.DB
	opts Options
	log  *slog.Logger
	m    *metrics

	mu       sync.Mutex
	queue    []Event
	inflight int           // events taken by a running flush, counted in the bound
	room     chan struct{} // closed (and replaced) whenever the queue shrinks
	kick     chan struct{} // buffered 1: FlushAt reached

	flushMu sync.Mutex // one flush or prune at a time

	jailsMu  sync.Mutex
	jailIDs  map[string]int64
	jailName map[int64]string

	count  atomic.Int64
	oldest atomic.Int64 // Unix seconds; valid when count > 0
}

// Open migrates the archive's tables and reads its size and horizon.
func Open(ctx context.Context, db *appdb.DB, opts Options) (*Store, error) {
	opts.defaults()
	if err := db.Migrate(ctx, "archive", migrations); err != nil {
		return nil, fmt.Errorf("archive: migrate: %w", err)
	}
	s := &Store{
		db:       db,
		opts:     opts,
		log:      opts.Logger,
		room:     make(chan struct{}),
		kick:     make(chan struct{}, 1),
		jailIDs:  map[string]int64{},
		jailName: map[int64]string{},
	}
	s.m = newMetrics(s)
	if err := s.loadJails(ctx); err != nil {
		return nil, err
	}
	var n int64
	if err := db.Reader.QueryRowContext(ctx, "SELECT count(*) FROM archive_events").Scan(&n); err != nil {
		return nil, fmt.Errorf("archive: count events: %w", err)
	}
	s.count.Store(n)
	if err := s.readOldest(ctx, db.Reader); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) loadJails(ctx context.Context) error {
	rows, err := s.db.Reader.QueryContext(ctx, "SELECT id, name FROM archive_jails")
	if err != nil {
		return fmt.Errorf("archive: read jails: %w", err)
	}
	defer rows.Close() //nolint:errcheck // rows.Err reports what matters
	s.jailsMu.Lock()
	defer s.jailsMu.Unlock()
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			return fmt.Errorf("archive: read jails: %w", err)
		}
		s.jailIDs[name] = id
		s.jailName[id] = name
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("archive: read jails: %w", err)
	}
	return nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) readOldest(ctx context.Context, q querier) error {
	var oldest sql.NullInt64
	if err := q.QueryRowContext(ctx, "SELECT min(timeofban) FROM archive_events").Scan(&oldest); err != nil {
		return fmt.Errorf("archive: read oldest event: %w", err)
	}
	s.oldest.Store(oldest.Int64)
	return nil
}

// Count is the number of archived (committed) events.
func (s *Store) Count() int64 { return s.count.Load() }

// Oldest is the archive's horizon: the timeofban of its oldest event, or the
// zero time when the archive is empty.
func (s *Store) Oldest() time.Time {
	if s.count.Load() == 0 {
		return time.Time{}
	}
	return time.Unix(s.oldest.Load(), 0)
}

// Queued is the number of events waiting to be written (including those of
// a flush in progress).
func (s *Store) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) + s.inflight
}

// valid reports whether e can be archived.
func valid(e *Event) bool { return e.Jail != "" && e.IP.IsValid() }

// Add queues events for the next ingest cycle and returns how many it took.
// It never touches the database: it is cheap and safe on a scrape path.
// Events without jail or a valid IP are skipped (counted as invalid, and
// included in the returned number, since offering them again is useless).
// When the queue is full (MaxQueue), the rest are dropped and counted: the
// caller may offer events[n:] again later; events still in fail2ban's
// database are offered again anyway when the engine rereads it at startup.
func (s *Store) Add(events ...Event) int {
	n, _ := s.add(events, s.opts.MaxQueue, true)
	return n
}

// add queues as many of events as fit below limit (at most MaxQueue) and
// returns how many it consumed and a channel closed when the queue next
// shrinks. countFull counts the events that did not fit as dropped: false
// for AddWait, which queues them later.
func (s *Store) add(events []Event, limit int, countFull bool) (int, <-chan struct{}) {
	s.mu.Lock()
	taken, invalid := 0, 0
	for i := range events {
		if len(s.queue)+s.inflight >= limit {
			break
		}
		taken++
		if !valid(&events[i]) {
			invalid++
			continue
		}
		s.queue = append(s.queue, events[i])
	}
	kick := len(s.queue) >= s.opts.FlushAt
	room := s.room
	s.mu.Unlock()
	if invalid > 0 {
		s.m.dropped.WithLabelValues(reasonInvalid).Add(float64(invalid))
	}
	if d := len(events) - taken; d > 0 && countFull {
		s.m.dropped.WithLabelValues(reasonQueueFull).Add(float64(d))
	}
	if kick {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return taken, room
}

// AddWait queues all events, waiting for room when the queue is full. It is
// for background work (the engine's startup read), never for a scrape; it
// needs Run to be running to make progress, and returns ctx's error when ctx
// ends first (events queued so far stay queued).
func (s *Store) AddWait(ctx context.Context, events ...Event) error {
	return s.AddWaitBelow(ctx, s.opts.MaxQueue, events...)
}

// AddWaitBelow is AddWait for a producer that may fill the queue faster
// than the archive writes it (the backfill of a first start): it waits
// while limit events (at most MaxQueue) are queued or being written, so
// the queue it keeps is at most limit events, not MaxQueue (200,000
// events are 13 MB).
func (s *Store) AddWaitBelow(ctx context.Context, limit int, events ...Event) error {
	limit = min(max(limit, 1), s.opts.MaxQueue)
	for len(events) > 0 {
		s.mu.Lock()
		full := len(s.queue)+s.inflight >= limit
		room := s.room
		s.mu.Unlock()
		if full {
			select {
			case s.kick <- struct{}{}:
			default:
			}
			select {
			case <-room:
			case <-ctx.Done():
				return fmt.Errorf("archive: waiting for queue room: %w", ctx.Err())
			}
			continue
		}
		n, _ := s.add(events, limit, false)
		events = events[n:]
	}
	return nil
}

// signalRoom wakes AddWait callers; s.mu must be held.
func (s *Store) signalRoomLocked() {
	close(s.room)
	s.room = make(chan struct{})
}

// Run ingests queued events every Interval (sooner when FlushAt events
// wait), prunes expired events every PruneInterval (first at start), and on
// ctx's end flushes what is queued with a fresh context bounded by
// FlushTimeout. It returns when that final flush is done; its error is
// returned. Failed cycles keep their events for the next cycle.
func (s *Store) Run(ctx context.Context) error {
	ingest := time.NewTicker(s.opts.Interval)
	defer ingest.Stop()
	prune := time.NewTimer(0)
	defer prune.Stop()
	var failing, pruneFailing bool // log state changes only: no flood while the database is unwritable
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), s.opts.FlushTimeout)
			defer cancel()
			if err := s.Flush(fctx); err != nil {
				s.log.Error("archive: final flush failed; queued events are lost from the archive", "events", s.Queued(), "err", err)
				return err
			}
			return nil
		case <-ingest.C:
			failing = s.cycle(ctx, failing)
		case <-s.kick:
			failing = s.cycle(ctx, failing)
		case <-prune.C:
			n, err := s.Prune(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				if !pruneFailing {
					s.log.Warn("archive: pruning failed; retrying every prune interval", "pruned", n, "err", err)
				}
				pruneFailing = true
			case err == nil:
				if pruneFailing {
					s.log.Info("archive: pruning works again")
				}
				pruneFailing = false
				if n > 0 {
					s.log.Debug("archive: pruned expired events", "events", n)
				}
			}
			prune.Reset(s.opts.PruneInterval)
		}
	}
}

// cycle runs one ingest cycle and returns whether it failed; it logs when
// ingest starts failing and when it recovers, not every failed cycle.
func (s *Store) cycle(ctx context.Context, failing bool) bool {
	err := s.Flush(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		return failing // shutting down: the final flush reports
	case err != nil:
		if !failing {
			s.log.Warn("archive: ingest failed; events stay queued and every cycle retries", "events", s.Queued(), "err", err)
		}
		return true
	case failing:
		s.log.Info("archive: ingest works again", "archived_events", s.Count())
	}
	return false
}

// maxReusedQueue is the largest written batch whose array the queue reuses
// (64 bytes an event: 2 MB).
const maxReusedQueue = 1 << 15

// Flush writes every queued event in one transaction with one commit. On
// failure the events go back to the front of the queue and the error is
// returned. With nothing queued it does not touch the database.
func (s *Store) Flush(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	batch := s.queue
	s.queue = nil
	s.inflight = len(batch)
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	res, err := s.write(ctx, batch)
	s.mu.Lock()
	s.inflight = 0
	if err != nil {
		s.queue = append(batch, s.queue...)
	} else {
		if s.queue == nil && cap(batch) <= maxReusedQueue {
			// The next events go into the written batch's array
			// (cleared: it must not keep their strings alive) instead
			// of growing a new one from nothing: a backfill queues a
			// million events, a batch at a time.
			clear(batch)
			s.queue = batch[:0]
		}
		s.signalRoomLocked()
	}
	s.mu.Unlock()
	if err != nil {
		s.m.ingestErrors.Inc()
		return err
	}
	if res.inserted > 0 {
		if s.count.Load() == 0 || res.oldest < s.oldest.Load() {
			s.oldest.Store(res.oldest)
		}
		s.count.Add(res.inserted)
	}
	s.m.cycles.Inc()
	s.m.ingested.Add(float64(res.inserted))
	if res.expired > 0 {
		s.m.dropped.WithLabelValues(reasonExpired).Add(float64(res.expired))
	}
	return nil
}

// insertRows is how many events one INSERT statement takes: one statement
// per event spent most of an ingest in the driver (binding, stepping and
// resetting a statement, a goroutine per execution watching the context),
// not in SQLite's B-tree.
const insertRows = 128

// insertSQL inserts n events.
func insertSQL(n int) string {
	return "INSERT OR IGNORE INTO archive_events (timeofban, jail, ip, bantime, bancount) VALUES " +
		strings.Repeat("(?, ?, ?, ?, ?), ", n-1) + "(?, ?, ?, ?, ?)"
}

// writeResult is what one ingest transaction did.
type writeResult struct {
	inserted int64 // new rows (duplicates are ignored)
	// oldest is the oldest timeofban among the statements that inserted a
	// row: each of their events is in the archive after the commit (new,
	// or the duplicate of one there).
	oldest  int64
	expired int64 // events older than the retention, not written
}

// write inserts batch in one transaction, insertRows events per statement.
// Jail ids created by the transaction enter the in-memory maps only after
// its commit.
func (s *Store) write(ctx context.Context, batch []Event) (writeResult, error) {
	var r writeResult
	cutoff := s.cutoff()
	tx, err := s.db.Writer.BeginTx(ctx, nil)
	if err != nil {
		return writeResult{}, fmt.Errorf("archive: ingest: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	var full *sql.Stmt  // the statement for insertRows events, prepared once
	newJails := map[string]int64{}
	args := make([]any, 0, 5*insertRows)
	ips := make([]byte, 0, 16*insertRows) // the rows' IP bytes, never reallocated
	var first *Event                      // the statement's first event, for errors
	oldest, rows := int64(0), 0
	flush := func() error {
		if rows == 0 {
			return nil
		}
		stmt := full
		if rows < insertRows || full == nil {
			var err error
			if stmt, err = tx.PrepareContext(ctx, insertSQL(rows)); err != nil {
				return fmt.Errorf("archive: ingest: prepare: %w", err)
			}
			if rows == insertRows {
				full = stmt
			} else {
				defer stmt.Close() //nolint:errcheck // closed with the transaction anyway
			}
		}
		res, err := stmt.ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("archive: ingest: insert %d events from %s %s %d: %w", rows, first.Jail, first.IP, first.TimeOfBan, err)
		}
		if n, err := res.RowsAffected(); err == nil && n > 0 {
			if r.inserted == 0 || oldest < r.oldest {
				r.oldest = oldest
			}
			r.inserted += n
		}
		args, ips, rows = args[:0], ips[:0], 0
		return nil
	}
	for i := range batch {
		e := &batch[i]
		if e.TimeOfBan < cutoff {
			r.expired++
			continue
		}
		jail, err := s.jailID(ctx, tx, e.Jail, newJails)
		if err != nil {
			return writeResult{}, err
		}
		if rows == 0 || e.TimeOfBan < oldest {
			oldest = e.TimeOfBan
		}
		if rows == 0 {
			first = e
		}
		from := len(ips)
		ips = appendIP(ips, e.IP)
		args = append(args, e.TimeOfBan, jail, ips[from:len(ips):len(ips)], e.Bantime, e.Bancount)
		if rows++; rows == insertRows {
			if err := flush(); err != nil {
				return writeResult{}, err
			}
		}
	}
	if err := flush(); err != nil {
		return writeResult{}, err
	}
	if full != nil {
		_ = full.Close()
	}
	if err := tx.Commit(); err != nil {
		return writeResult{}, fmt.Errorf("archive: ingest: commit %d events: %w", len(batch), err)
	}
	if len(newJails) > 0 {
		s.jailsMu.Lock()
		for name, id := range newJails {
			s.jailIDs[name] = id
			s.jailName[id] = name
		}
		s.jailsMu.Unlock()
	}
	return r, nil
}

// jailID returns the id of jail, creating it inside tx when new.
func (s *Store) jailID(ctx context.Context, tx *sql.Tx, name string, created map[string]int64) (int64, error) {
	if id, ok := created[name]; ok {
		return id, nil
	}
	s.jailsMu.Lock()
	id, ok := s.jailIDs[name]
	s.jailsMu.Unlock()
	if ok {
		return id, nil
	}
	if _, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO archive_jails (name) VALUES (?)", name); err != nil {
		return 0, fmt.Errorf("archive: ingest: add jail %q: %w", name, err)
	}
	if err := tx.QueryRowContext(ctx, "SELECT id FROM archive_jails WHERE name = ?", name).Scan(&id); err != nil {
		return 0, fmt.Errorf("archive: ingest: read jail %q: %w", name, err)
	}
	created[name] = id
	return id, nil
}

// appendIP appends the archive's form of a to b: 4 bytes for IPv4, 16 for
// IPv6.
func appendIP(b []byte, a netip.Addr) []byte {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		v := a.As4()
		return append(b, v[:]...)
	}
	v := a.As16()
	return append(b, v[:]...)
}

func (s *Store) cutoff() int64 {
	return s.opts.Now().Add(-s.opts.Retention).Unix()
}

// Prune deletes events with timeofban older than now-Retention in batches of
// at most PruneBatch events, each batch its own short transaction, until
// none is left or ctx ends. It returns how many it deleted.
func (s *Store) Prune(ctx context.Context) (int64, error) {
	var total int64
	for {
		n, err := s.pruneBatch(ctx)
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(s.opts.PruneBatch) {
			return total, nil
		}
	}
}

func (s *Store) pruneBatch(ctx context.Context) (int64, error) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	cutoff := s.cutoff()
	tx, err := s.db.Writer.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("archive: prune: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// The key of the batch's last event; none means fewer than a batch expired.
	var (
		timeOfBan, jail int64
		ip              []byte
		res             sql.Result
	)
	err = tx.QueryRowContext(ctx, `SELECT timeofban, jail, ip FROM archive_events WHERE timeofban < ?
		ORDER BY timeofban, jail, ip LIMIT 1 OFFSET ?`, cutoff, s.opts.PruneBatch-1).Scan(&timeOfBan, &jail, &ip)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		res, err = tx.ExecContext(ctx, "DELETE FROM archive_events WHERE timeofban < ?", cutoff)
	case err == nil:
		res, err = tx.ExecContext(ctx, "DELETE FROM archive_events WHERE (timeofban, jail, ip) <= (?, ?, ?)", timeOfBan, jail, ip)
	}
	if err != nil {
		return 0, fmt.Errorf("archive: prune: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("archive: prune: %w", err)
	}
	if n == 0 {
		return 0, nil // the transaction wrote nothing; rolled back
	}
	if err := s.readOldest(ctx, tx); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("archive: prune: commit: %w", err)
	}
	s.count.Add(-n)
	s.m.pruned.Add(float64(n))
	return n, nil
}
