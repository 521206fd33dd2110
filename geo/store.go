package geo

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"time"

	"github.com/bangui/bangui_exporter/internal/appdb"
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
}

func migrate(ctx context.Context, db *appdb.DB) error {
	if err := db.Migrate(ctx, "geo", migrations); err != nil {
		return fmt.Errorf("geo: migrate geo_cache: %w", err)
	}
	return nil
}

// load fills the memory tier from geo_cache: the newest rows first, up to the
// cache size.
func (r *Resolver) load(ctx context.Context) error {
	start := time.Now()
	limit := -1 // SQLite: no limit
	if r.cacheSize > 0 {
		limit = r.cacheSize
	}
	rows, err := r.db.Reader.QueryContext(ctx, `SELECT ip, country_code, country_name, asn, provider,
		resolved_at, failed_at, failures, message FROM geo_cache ORDER BY rowid DESC LIMIT ?`, limit)
	if err != nil {
		return fmt.Errorf("geo: load geo_cache: %w", err)
	}
	defer rows.Close() //nolint:errcheck // rows.Err reports what matters
	var (
		ipText, code, name, asn, provider, message sql.RawBytes
		resolvedAt, failedAt                       sql.NullInt64
		failures                                   int64
		loaded, skipped                            int
	)
	r.mu.Lock()
	defer r.mu.Unlock()
	for rows.Next() {
		if err := rows.Scan(&ipText, &code, &name, &asn, &provider, &resolvedAt, &failedAt, &failures, &message); err != nil {
			return fmt.Errorf("geo: load geo_cache: %w", err)
		}
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
			ce.at = unixSeconds(time.Unix(resolvedAt.Int64, 0))
			ce.failures = 0
			ce.flags |= flagFinal
		case ce.failures == 0:
			ce.text = r.texts.intern(string(message))
			ce.at = unixSeconds(time.Unix(resolvedAt.Int64, 0))
			if ce.at != 0 {
				ce.flags |= flagFinal // private, reserved, invalid
			}
		default:
			ce.text = r.texts.intern(string(message))
			ce.at = unixSeconds(time.Unix(failedAt.Int64, 0))
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
	if err := rows.Err(); err != nil {
		return fmt.Errorf("geo: load geo_cache: %w", err)
	}
	if loaded > 0 {
		r.generation.Add(1)
	}
	r.logger.Info("geo cache loaded", "entries", loaded, "resolved", r.nResolved, "skipped_rows", skipped,
		"duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// flushRow is one dirty entry as written to geo_cache.
type flushRow struct {
	k                                 key
	ip                                string
	country, name, asn, provider, msg string
	resolvedAt, failedAt              uint32
	failures                          uint8
}

// Flush writes every dirty entry to geo_cache with one prepared statement in
// one transaction: one commit, however many entries. When it fails, the
// entries stay dirty for the next flush and nothing is lost. A flush with
// nothing dirty does not touch the database.
func (r *Resolver) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	rows := r.takeDirty()
	if len(rows) > 0 {
		if err := writeRows(ctx, r.db, rows); err != nil {
			r.restoreDirty(rows)
			r.metrics.flushErrors.Inc()
			r.mu.Lock()
			r.flushState.lastErr = err.Error()
			r.mu.Unlock()
			return err
		}
		r.metrics.flushes.Inc()
		r.metrics.flushedEntries.Add(float64(len(rows)))
	}
	now := r.clock.Now()
	r.metrics.lastFlush.Set(float64(now.UnixNano()) / 1e9)
	r.mu.Lock()
	r.flushState = flushState{last: now, lastRows: len(rows)}
	r.mu.Unlock()
	return nil
}

// takeDirty copies the dirty entries and clears their dirty flags. The IPs
// are formatted after the lock is released, so Country calls wait for a
// copy, not for formatting.
func (r *Resolver) takeDirty() []flushRow {
	rows := r.copyDirty()
	for i := range rows {
		rows[i].ip = rows[i].k.addr().String()
	}
	return rows
}

func (r *Resolver) copyDirty() []flushRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	rows := make([]flushRow, 0, len(r.dirty))
	for _, k := range r.dirty {
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
	r.dirty = nil
	return rows
}

// restoreDirty marks the rows of a failed flush dirty again (unless they
// changed since and are dirty already).
func (r *Resolver) restoreDirty(rows []flushRow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, row := range rows {
		ce, ok := r.entries.get(row.k)
		if !ok {
			continue
		}
		r.markDirtyLocked(row.k, &ce)
		r.entries.set(row.k, ce)
	}
}

const upsertSQL = `INSERT INTO geo_cache (ip, country_code, country_name, asn, provider, resolved_at, failed_at, failures, message)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (ip) DO UPDATE SET country_code = excluded.country_code, country_name = excluded.country_name,
		asn = excluded.asn, provider = excluded.provider, resolved_at = excluded.resolved_at,
		failed_at = excluded.failed_at, failures = excluded.failures, message = excluded.message`

// writeRows upserts rows in one transaction.
func writeRows(ctx context.Context, db *appdb.DB, rows []flushRow) error {
	tx, err := db.Writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("geo: flush: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	stmt, err := tx.PrepareContext(ctx, upsertSQL)
	if err != nil {
		return fmt.Errorf("geo: flush: prepare: %w", err)
	}
	defer stmt.Close() //nolint:errcheck // closed with the transaction anyway
	for _, row := range rows {
		if _, err := stmt.ExecContext(ctx, row.ip, nullString(row.country), nullString(row.name), nullString(row.asn),
			nullString(row.provider), nullTime(row.resolvedAt), nullTime(row.failedAt), int(row.failures), nullString(row.msg)); err != nil {
			return fmt.Errorf("geo: flush: write %s: %w", row.ip, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("geo: flush: commit %d entries: %w", len(rows), err)
	}
	return nil
}

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
