package geo

import (
	"context"
	"fmt"
	"iter"
	"net/netip"
	"time"

	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/sqliteread"
)

// migrations of the geo component's tables in the app database.
var migrations = []appdb.Migration{
	{Version: 1, SQL: `CREATE TABLE geo_cache (
		ip           TEXT PRIMARY KEY NOT NULL, -- canonical text form (IPv4 dotted, IPv6 RFC 5952)
		country_code TEXT,                      -- ISO 3166-1 alpha-2; NULL while unresolved
		country_name TEXT,
		asn          TEXT,
		provider     TEXT,                      -- mmdb, ipapi, local
		resolved_at  INTEGER,                   -- Unix seconds of the last answer (country or final no-country)
		failed_at    INTEGER,                   -- Unix seconds of the last failed lookup
		failures     INTEGER NOT NULL DEFAULT 0,
		message      TEXT                       -- "private range", "reserved range", "invalid query", or the last error
	)`},
	// geo_state: counters carried across restarts. "tracked" is how many
	// IPs the engine tracked at the last flush: the next start loads at
	// least that many entries, so a cache size below it does not leave the
	// rest of the banned IPs to be looked up (and written) again.
	{Version: 2, SQL: `CREATE TABLE geo_state (
		name  TEXT PRIMARY KEY NOT NULL,
		value INTEGER NOT NULL
	)`},
}

func migrate(ctx context.Context, db *appdb.DB) error {
	if err := db.Migrate(ctx, "geo", migrations); err != nil {
		return fmt.Errorf("geo: migrate geo_cache: %w", err)
	}
	return nil
}

// load fills the memory tier from geo_cache: the newest rows first, up to the
// cache size or, when more, the number of IPs tracked at the last flush
// (and a twentieth more, for the IPs banned since): tracked IPs are never
// evicted, so that many would be held again as soon as the engine has
// read, and those left out would be looked up and written again.
func (r *Resolver) load(ctx context.Context) error {
	start := time.Now()
	// A connection of its own, without database/sql: a restart loads
	// hundreds of thousands of rows, and through database/sql the driver
	// costs more than SQLite's reading.
	conn, err := r.db.BulkReader(ctx)
	if err != nil {
		return fmt.Errorf("geo: load geo_cache: %w", err)
	}
	defer conn.Close()
	limit := -1 // SQLite: no limit
	var tracked int64
	if r.cacheSize > 0 {
		if tracked, err = trackedAtLastFlush(ctx, conn); err != nil {
			return err
		}
		limit = max(r.cacheSize, int(tracked+tracked/20))
	}
	rows, err := conn.Query(ctx, `SELECT ip, country_code, country_name, asn, provider,
		resolved_at, failed_at, failures, message FROM geo_cache ORDER BY rowid DESC LIMIT ?`, limit)
	if err != nil {
		return fmt.Errorf("geo: load geo_cache: %w", err)
	}
	defer rows.Close()
	var loaded, skipped int
	r.mu.Lock()
	defer r.mu.Unlock()
	for rows.Next() {
		// In SQLite's memory until the next row: copied (interned)
		// below before that.
		ipText, code, name, asn, provider, message := rows.Bytes(0), rows.Bytes(1), rows.Bytes(2), rows.Bytes(3), rows.Bytes(4), rows.Bytes(8)
		resolvedAt, failedAt, failures := rows.Int64(5), rows.Int64(6), rows.Int64(7)
		ip, err := netip.ParseAddr(string(ipText))
		if err != nil || (len(code) != 0 && !validCountryCode(string(code))) {
			skipped++
			continue
		}
		ip = normalize(ip)
		ce := cacheEntry{
			asn:      r.asns.intern(string(asn)),
			provider: r.providerIndex(string(provider)),
			failures: uint8(min(max(failures, 0), 255)),
		}
		switch {
		case len(code) == 2:
			ce.country = [2]byte{code[0], code[1]}
			ce.text = r.texts.intern(string(name))
			ce.at = unixSeconds(time.Unix(resolvedAt, 0))
			ce.failures = 0
			ce.flags |= flagFinal
		case ce.failures == 0:
			ce.text = r.texts.intern(string(message))
			ce.at = unixSeconds(time.Unix(resolvedAt, 0))
			if ce.at != 0 {
				ce.flags |= flagFinal // private, reserved, invalid
			}
		default:
			ce.text = r.texts.intern(string(message))
			ce.at = unixSeconds(time.Unix(failedAt, 0))
		}
		k := keyOf(ip)
		if old, dup := r.entries.get(k); dup {
			// Two spellings of one IP (e.g. IPv4-mapped): keep the first (newest).
			_ = old
			skipped++
			continue
		}
		r.entries.set(k, ce)
		if ce.country != ([2]byte{}) {
			r.nResolved++
		} else if !ce.has(flagFinal) {
			r.waiting[k] = struct{}{}
		}
		loaded++
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("geo: load geo_cache: %w", err)
	}
	if loaded > 0 {
		r.generation.Add(1)
	}
	r.logger.Info("geo cache loaded", "entries", loaded, "resolved", r.nResolved, "skipped_rows", skipped,
		"tracked_at_last_flush", tracked, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// trackedAtLastFlush reads geo_state's tracked count (0 when no flush
// recorded one).
func trackedAtLastFlush(ctx context.Context, conn *sqliteread.Conn) (int64, error) {
	rows, err := conn.Query(ctx, `SELECT value FROM geo_state WHERE name = 'tracked'`)
	if err != nil {
		return 0, fmt.Errorf("geo: read geo_state: %w", err)
	}
	defer rows.Close()
	var n int64
	if rows.Next() {
		n = max(rows.Int64(0), 0)
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("geo: read geo_state: %w", err)
	}
	return n, nil
}

const trackedSQL = `INSERT INTO geo_state (name, value) VALUES ('tracked', ?)
	ON CONFLICT (name) DO UPDATE SET value = excluded.value`

// flushRow is one dirty entry as written to geo_cache.
type flushRow struct {
	k                                 key
	ip                                string
	country, name, asn, provider, msg string
	resolvedAt, failedAt              uint32
	failures                          uint8
}

// flushChunk is how many dirty entries Flush copies and writes at a time.
// A first start resolves every banned IP at once (235,000 at a million bans
// rows): copied in one piece, their rows (~140 bytes each with the IP's
// text) would be a transient 30 MB on top of the engine's data, at the
// process's peak. Chunks keep that at a few hundred KB; the transaction and
// its single commit span all of them.
const flushChunk = 2048

// Flush writes every dirty entry to geo_cache with one prepared statement in
// one transaction: one commit, however many entries. When it fails, the
// entries stay dirty for the next flush and nothing is lost. A flush with
// nothing dirty does not touch the database.
func (r *Resolver) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	var written flushProgress
	if keys := r.takeDirtyKeys(); keys.len() > 0 {
		var err error
		if written, err = r.writeDirty(ctx, keys); err != nil {
			r.restoreDirty(keys, written)
			r.metrics.flushErrors.Inc()
			r.mu.Lock()
			r.flushState.lastErr = err.Error()
			r.flushing = 0
			r.mu.Unlock()
			return err
		}
		if written.rows > 0 {
			r.metrics.flushes.Inc()
			r.metrics.flushedEntries.Add(float64(written.rows))
		}
	}
	now := r.clock.Now()
	r.metrics.lastFlush.Set(float64(now.UnixNano()) / 1e9)
	r.mu.Lock()
	r.flushState = flushState{last: now, lastRows: written.rows}
	r.flushing = 0
	r.mu.Unlock()
	return nil
}

// takeDirtyKeys takes the list of dirty entries; their flags stay set until
// writeDirty copies them.
func (r *Resolver) takeDirtyKeys() keyList {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := r.dirty
	r.dirty = keyList{}
	r.flushing = keys.len()
	return keys
}

// flushProgress is how far writeDirty got: the keys at indexes [0, taken)
// had their dirty flags cleared (copied), rows of them were still dirty and
// written.
type flushProgress struct {
	taken, rows int
}

// writeDirty upserts the dirty entries of keys in one transaction, copying
// flushChunk of them at a time under the lock (the IPs formatted outside
// it, so Country calls wait for a copy, not for formatting).
func (r *Resolver) writeDirty(ctx context.Context, keys keyList) (flushProgress, error) {
	var p flushProgress
	tx, err := r.db.Writer.BeginTx(ctx, nil)
	if err != nil {
		return p, fmt.Errorf("geo: flush: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	stmt, err := tx.PrepareContext(ctx, upsertSQL)
	if err != nil {
		return p, fmt.Errorf("geo: flush: prepare: %w", err)
	}
	defer stmt.Close() //nolint:errcheck // closed with the transaction anyway
	rows := make([]flushRow, 0, min(keys.len(), flushChunk))
	for p.taken < keys.len() {
		next := min(p.taken+flushChunk, keys.len())
		rows = r.copyDirty(rows[:0], keys.span(p.taken, next))
		p.taken = next
		for i := range rows {
			row := &rows[i]
			row.ip = row.k.addr().String()
			if _, err := stmt.ExecContext(ctx, row.ip, nullString(row.country), nullString(row.name), nullString(row.asn),
				nullString(row.provider), nullTime(row.resolvedAt), nullTime(row.failedAt), int(row.failures), nullString(row.msg)); err != nil {
				return p, fmt.Errorf("geo: flush: write %s: %w", row.ip, err)
			}
		}
		p.rows += len(rows)
	}
	r.mu.Lock()
	tracked := r.nTracked
	r.mu.Unlock()
	if _, err := tx.ExecContext(ctx, trackedSQL, tracked); err != nil {
		return p, fmt.Errorf("geo: flush: record the tracked count: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return p, fmt.Errorf("geo: flush: commit %d entries: %w", p.rows, err)
	}
	return p, nil
}

// copyDirty appends to rows the entries of keys that are still dirty and
// clears their dirty flags.
func (r *Resolver) copyDirty(rows []flushRow, keys iter.Seq2[int, key]) []flushRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		ce, ok := r.entries.get(k)
		if !ok || !ce.has(flagDirty) {
			continue
		}
		ce.flags &^= flagDirty
		r.entries.set(k, ce)
		rows = append(rows, flushRow{
			k:          k,
			country:    countryString(ce.country),
			name:       r.texts.get(ce.nameIndex()),
			asn:        r.asns.get(ce.asn),
			provider:   r.texts.get(uint16(ce.provider)),
			msg:        r.texts.get(ce.messageIndex()),
			resolvedAt: ce.resolvedAt(),
			failedAt:   ce.failedAt(),
			failures:   ce.failures,
		})
	}
	return rows
}

// restoreDirty puts the entries of a failed flush back in the dirty list:
// those it copied are marked dirty again (unless they changed since and are
// dirty already); those it had not reached yet kept their flags and only
// need their place in the list back.
func (r *Resolver) restoreDirty(keys keyList, p flushProgress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, k := range keys.all() {
		ce, ok := r.entries.get(k)
		if !ok {
			continue
		}
		if i >= p.taken {
			if ce.has(flagDirty) {
				r.dirty.append(k)
			}
			continue
		}
		r.markDirtyLocked(k, &ce)
		r.entries.set(k, ce)
	}
}

const upsertSQL = `INSERT INTO geo_cache (ip, country_code, country_name, asn, provider, resolved_at, failed_at, failures, message)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (ip) DO UPDATE SET country_code = excluded.country_code, country_name = excluded.country_name,
		asn = excluded.asn, provider = excluded.provider, resolved_at = excluded.resolved_at,
		failed_at = excluded.failed_at, failures = excluded.failures, message = excluded.message`

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullTime(s uint32) any {
	if s == 0 {
		return nil
	}
	return int64(s)
}
