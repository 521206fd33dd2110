// Package appdb opens bangui_exporter's own SQLite database: the one
// application database that every package stores its tables in.
//
// The database runs in WAL mode with exactly one writer connection, so
// writers never contend with each other, and a separate pool of read-only
// connections that never block on the writer. Each package owns and migrates
// its own tables through Migrate; no package touches another's tables.
package appdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// DB is the application database.
type DB struct {
	// Writer is the single writer connection (MaxOpenConns = 1). Every
	// INSERT, UPDATE, DELETE and migration goes through it.
	Writer *sql.DB
	// Reader is a pool of query_only connections for reads.
	Reader *sql.DB
	path   string
}

// Open opens (creating it and its directory when missing) the application
// database at path.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("appdb: empty storage path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("appdb: create directory %s: %w", dir, err)
		}
	}
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("appdb: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("appdb: open %s: %w", path, err)
	}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		w.Close()
		return nil, fmt.Errorf("appdb: enable WAL on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.Close()
		return nil, fmt.Errorf("appdb: chmod %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("appdb: open reader %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	return &DB{Writer: w, Reader: r, path: path}, nil
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	}
	q.Set("_txlock", "immediate")
	// OmitHost: a relative path must not become "file://dir/…", which
	// SQLite reads as a URI authority and refuses.
	u := url.URL{Scheme: "file", Path: path, OmitHost: true, RawQuery: q.Encode()}
	// url.URL escapes ( ) in RawQuery? It does not re-encode RawQuery.
	return u.String()
}

// Path is the file the database lives in.
func (d *DB) Path() string { return d.path }

// Close closes both pools.
func (d *DB) Close() error {
	return errors.Join(d.Reader.Close(), d.Writer.Close())
}

// Migration is one schema step of a package's tables.
type Migration struct {
	Version int
	SQL     string
}

// Migrate brings the tables owned by component up to the newest of
// migrations. The applied version is recorded per component in the
// schema_versions table, so packages migrate independently.
func (d *DB) Migrate(ctx context.Context, component string, migrations []Migration) error {
	tx, err := d.Writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("appdb: migrate %s: %w", component, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_versions (
		component TEXT PRIMARY KEY,
		version INTEGER NOT NULL,
		updated_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("appdb: migrate %s: %w", component, err)
	}
	var current int
	err = tx.QueryRowContext(ctx, "SELECT version FROM schema_versions WHERE component = ?", component).Scan(&current)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("appdb: migrate %s: read version: %w", component, err)
	}
	for _, m := range migrations {
		if m.Version <= current {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("appdb: migrate %s to version %d: %w", component, m.Version, err)
		}
		current = m.Version
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_versions(component, version, updated_at) VALUES(?, ?, ?)
		ON CONFLICT(component) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at`,
		component, current, time.Now().Unix()); err != nil {
		return fmt.Errorf("appdb: migrate %s: record version: %w", component, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("appdb: migrate %s: commit: %w", component, err)
	}
	return nil
}
