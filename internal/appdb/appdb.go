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
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/bangui/bangui_exporter/internal/sqliteread"
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
// database at path. The file is created with mode 0600 before SQLite opens
// it. When the open fails, the error names the path and, when it can be
// told, the cause (a read-only file system, a full disk, a directory that
// is not writable); whatever this call created (the file, its -wal and
// -shm, missing directories) is removed again.
func Open(ctx context.Context, path string) (db *DB, err error) {
	if path == "" {
		return nil, errors.New("appdb: empty storage path")
	}
	dir := filepath.Dir(path)
	createdDir := firstMissing(dir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("appdb: storage %s: create directory: %w", path, err)
	}
	created, err := createFile(path)
	if err != nil {
		removeDirs(dir, createdDir)
		return nil, fmt.Errorf("appdb: storage %s: %w", path, err)
	}
	defer func() {
		if err == nil {
			return
		}
		err = explain(path, err)
		if created {
			for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
				_ = os.Remove(path + suffix)
			}
			removeDirs(dir, createdDir)
		}
	}()
	return open(ctx, path)
}

func open(ctx context.Context, path string) (*DB, error) {
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

// Wrap makes a DB of pools the caller opened on the database file at path
// (e.g. with counting connectors in a test): Migrate and BulkReader work on
// it as on one from Open. The caller has created the file in WAL mode
// (Open does) and closes the pools with Close.
func Wrap(path string, writer, reader *sql.DB) *DB {
	return &DB{Writer: writer, Reader: reader, path: path}
}

// createFile creates path with mode 0600 when it is missing (created
// true), or checks that the existing file can be opened for writing. The
// error is the operating system's, which names the path and the cause
// (e.g. "open /x/bangui.sqlite3: read-only file system").
func createFile(path string) (created bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	} else if err == nil {
		created = true
	}
	if err != nil {
		return false, err
	}
	return created, f.Close()
}

// explain adds to an error of SQLite what it does not say: whether the
// directory (where SQLite creates the -wal and -shm files) is writable,
// and whether the file system is full.
func explain(path string, err error) error {
	dir := filepath.Dir(path)
	var causes []string
	if aerr := unix.Access(dir, unix.W_OK); aerr != nil {
		causes = append(causes, fmt.Sprintf("directory %s is not writable: %v", dir, aerr))
	}
	var st unix.Statfs_t
	if serr := unix.Statfs(dir, &st); serr == nil && st.Bavail == 0 {
		causes = append(causes, fmt.Sprintf("no space left on the file system of %s", dir))
	}
	if len(causes) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(causes, "; "))
}

// firstMissing is the outermost missing directory of dir's ancestors (and
// dir itself), or "" when dir exists.
func firstMissing(dir string) string {
	missing := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			return missing
		}
		missing = d
		if parent := filepath.Dir(d); parent == d {
			return missing
		}
	}
}

// removeDirs removes dir and its parents up to and including top, the
// directories Open created; "" removes nothing. Only empty directories go.
func removeDirs(dir, top string) {
	if top == "" {
		return
	}
	for d := dir; ; d = filepath.Dir(d) {
		if os.Remove(d) != nil || d == top || filepath.Dir(d) == d {
			return
		}
	}
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

// BulkReader opens a connection of its own for one large read (a startup
// load of a million rows), without database/sql (see sqliteread): opened
// read-only, query_only, with the pools' busy timeout. It sees the
// database as the Reader pool does (WAL: the last commit, never blocking
// the writer). The caller closes it when the read is done.
func (d *DB) BulkReader(ctx context.Context) (*sqliteread.Conn, error) {
	if d.path == "" {
		return nil, errors.New("appdb: bulk reader: the database has no path (make it with Open or Wrap)")
	}
	u := url.URL{Scheme: "file", Path: d.path, OmitHost: true, RawQuery: "mode=ro"}
	c, err := sqliteread.Open(u.String())
	if err != nil {
		return nil, fmt.Errorf("appdb: open bulk reader %s: %w", d.path, err)
	}
	for _, p := range []string{"PRAGMA busy_timeout = 10000", "PRAGMA query_only = 1"} {
		if err := c.Exec(ctx, p); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("appdb: open bulk reader %s: %s: %w", d.path, p, err)
		}
	}
	return c, nil
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
