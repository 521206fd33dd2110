package collector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// source reads fail2ban's database strictly read-only: a file: URI with
// mode=ro (so a missing file is never created), query_only, and a busy
// timeout below fail2ban's own 5 s. Every statement is its own short read
// transaction; large reads go in chunks.
type source struct {
	path   string
	db     *sql.DB
	conn   *sql.Conn // pinned: PRAGMA data_version is per connection
	dev    uint64
	ino    uint64
	schema int
	// dataVersion is PRAGMA data_version when the last read started.
	dataVersion int64
	hasVersion  bool
}

// errorKind classifies read errors for bangui_exporter_fail2ban_read_errors_total
// and for one log line per state change.
type errorKind string

const (
	kindMissing    errorKind = "missing"
	kindPermission errorKind = "permission"
	kindLocked     errorKind = "locked"
	kindCorrupt    errorKind = "corrupt"
	kindSchema     errorKind = "schema"
	kindOther      errorKind = "other"
)

var errorKinds = []errorKind{kindMissing, kindPermission, kindLocked, kindCorrupt, kindSchema, kindOther}

// readError is an error of a read with its kind.
type readError struct {
	kind errorKind
	err  error
}

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

func classifyError(err error) errorKind {
	if re, ok := errors.AsType[*readError](err); ok {
		return re.kind
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return kindMissing
	case errors.Is(err, fs.ErrPermission):
		return kindPermission
	}
	if se, ok := errors.AsType[*sqlite.Error](err); ok {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return kindLocked
		case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
			return kindCorrupt
		case sqlite3.SQLITE_CANTOPEN:
			return kindMissing
		case sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH, sqlite3.SQLITE_READONLY:
			return kindPermission
		case sqlite3.SQLITE_IOERR:
			return kindCorrupt
		}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "database is locked"):
		return kindLocked
	case strings.Contains(msg, "malformed"), strings.Contains(msg, "not a database"):
		return kindCorrupt
	case strings.Contains(msg, "no such table"), strings.Contains(msg, "no such column"):
		return kindSchema
	}
	return kindOther
}

// readOnlyURI is the DSN that opens path read-only.
func readOnlyURI(path string) string {
	u := url.URL{Scheme: "file", Path: path, OmitHost: true}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(3000)")
	q.Add("_pragma", "query_only(1)")
	u.RawQuery = q.Encode()
	return u.String()
}

// fileID returns the device and inode of path, to notice a replaced file.
func fileID(path string) (dev, ino uint64, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, 0, &readError{kind: kindOther, err: fmt.Errorf("%s is not a regular file", path)}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino), nil //nolint:unconvert // Dev is int32 on some platforms
	}
	return 0, 0, nil
}

// openSource opens fail2ban's database at path and checks its schema.
func openSource(ctx context.Context, path string) (*source, error) {
	dev, ino, err := fileID(path)
	if err != nil {
		return nil, fmt.Errorf("stat fail2ban database: %w", err)
	}
	// Check read permission up front for a clear error: SQLite reports
	// an unreadable file only as "unable to open".
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open fail2ban database: %w", err)
	}
	_ = f.Close()

	db, err := sql.Open("sqlite", readOnlyURI(path))
	if err != nil {
		return nil, fmt.Errorf("open fail2ban database: %w", err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	conn, err := db.Conn(ctx)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open fail2ban database: %w", err)
	}
	s := &source{path: path, db: db, conn: conn, dev: dev, ino: ino}
	if err := s.readSchema(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *source) close() {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if s.db != nil {
		_ = s.db.Close()
	}
}

func (s *source) readSchema(ctx context.Context) error {
	var version sql.NullInt64
	err := s.conn.QueryRowContext(ctx, "SELECT version FROM fail2banDb LIMIT 1").Scan(&version)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) || strings.Contains(err.Error(), "no such table") {
			if terr := truncated(s.path); terr != nil {
				return &readError{kind: kindCorrupt, err: terr}
			}
			return &readError{kind: kindSchema, err: fmt.Errorf("%s is not a fail2ban database (no fail2banDb version): %w", s.path, err)}
		}
		return fmt.Errorf("read fail2ban schema version: %w", err)
	}
	switch version.Int64 {
	case 2, 4:
		s.schema = int(version.Int64)
	default:
		return &readError{kind: kindSchema, err: fmt.Errorf("unsupported fail2ban database schema version %d in %s (supported: 2 and 4, fail2ban 0.9 to 1.1)", version.Int64, s.path)}
	}
	// The tables the schema promises must be there.
	tables := []string{"bans", "jails"}
	if s.schema == 4 {
		tables = append(tables, "bips")
	}
	for _, t := range tables {
		var n int
		if err := s.conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", t).Scan(&n); err != nil {
			return fmt.Errorf("read fail2ban schema: %w", err)
		}
		if n == 0 {
			return &readError{kind: kindSchema, err: fmt.Errorf("fail2ban database %s (schema %d) has no table %q", s.path, s.schema, t)}
		}
	}
	return nil
}

// sqliteHeaderSize is the size of the header at the start of every SQLite
// database file.
const sqliteHeaderSize = 100

// truncated returns an error when the file at path is shorter than a SQLite
// database can be: empty, cut inside its header, or shorter than the pages
// its header counts. SQLite opens an empty or short file as an empty
// database, so without this a fail2ban database truncated by a full disk or
// a bad restore would be reported as "not a fail2ban database" (a schema
// error) instead of damage.
func truncated(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // missing or unreadable: reported as such elsewhere
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	size := st.Size()
	if size == 0 {
		return fmt.Errorf("fail2ban database %s is empty (0 bytes): truncated", path)
	}
	if size < sqliteHeaderSize {
		return fmt.Errorf("fail2ban database %s is %d bytes, shorter than a SQLite header: truncated", path, size)
	}
	var h [sqliteHeaderSize]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return nil
	}
	pageSize := int64(h[16])<<8 | int64(h[17])
	if pageSize == 1 {
		pageSize = 65536
	}
	pages := int64(h[28])<<24 | int64(h[29])<<16 | int64(h[30])<<8 | int64(h[31])
	if want := pageSize * pages; pageSize >= 512 && size < want {
		return fmt.Errorf("fail2ban database %s is %d bytes, its header counts %d pages of %d bytes: truncated", path, size, pages, pageSize)
	}
	return nil
}

// replaced reports whether the file at path is no longer the one open.
func (s *source) replaced() (bool, error) {
	dev, ino, err := fileID(s.path)
	if err != nil {
		return false, fmt.Errorf("stat fail2ban database: %w", err)
	}
	return dev != s.dev || ino != s.ino, nil
}

// currentVersion is PRAGMA data_version of the pinned connection: it
// changes when another connection commits.
func (s *source) currentVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read data_version: %w", err)
	}
	return v, nil
}

// rowColumns returns the select list of a bans or bips row.
func (s *source) rowColumns(table string) string {
	bantime := "typeof(bantime) IN ('integer','real'), coalesce(CAST(bantime AS INTEGER), 0)"
	if table == "bans" && s.schema == 2 {
		bantime = "1, 0"
	}
	// bancount (schema 4) goes to the archive with the event.
	bancount := "coalesce(CAST(bancount AS INTEGER), 0)"
	if s.schema == 2 {
		bancount = "0"
	}
	return "rowid, jail IS NULL, coalesce(CAST(jail AS TEXT), ''), ip IS NULL, coalesce(CAST(ip AS TEXT), ''), " +
		"typeof(timeofban) IN ('integer','real'), coalesce(CAST(timeofban AS INTEGER), 0), " + bantime + ", " +
		"coalesce(length(ip), 0), coalesce(length(jail), 0), " + bancount
}

// scanRows appends the rows of query to out (a buffer to reuse, may be nil).
func (s *source) scanRows(ctx context.Context, out []sourceRow, table, query string, args ...any) ([]sourceRow, error) {
	rs, err := s.conn.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rs.Close()
	hasBantime := table != "bans" || s.schema != 2
	for rs.Next() {
		var r sourceRow
		if err := rs.Scan(&r.Rowid, &r.JailNull, &r.Jail, &r.IPNull, &r.IP, &r.TimeValid, &r.TimeOfBan, &r.BanValid, &r.Bantime, &r.IPLen, &r.JailLen, &r.Bancount); err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		r.HasBantime = hasBantime
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	return out, nil
}

// readAfter reads at most limit rows of table with rowid > after into buf
// (reused from its start; nil allocates).
func (s *source) readAfter(ctx context.Context, buf []sourceRow, table string, after int64, limit int) ([]sourceRow, error) {
	q := "SELECT " + s.rowColumns(table) + " FROM " + table + " WHERE rowid > ? ORDER BY rowid LIMIT ?"
	return s.scanRows(ctx, buf[:0], table, q, after, limit)
}

// readRange reads the rows of table with rowid in [lo, hi].
func (s *source) readRange(ctx context.Context, table string, lo, hi int64) ([]sourceRow, error) {
	q := "SELECT " + s.rowColumns(table) + " FROM " + table + " WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
	return s.scanRows(ctx, nil, table, q, lo, hi)
}

// tableShape is what tells cheaply whether a table still holds what the
// engine thinks: its row count and its highest rowid.
type tableShape struct {
	count int64
	max   int64
	min   int64
}

// readJails reads the jails table: name → enabled. The database changed
// when it is called, so it first checks that the schema version is still the
// one the source was opened with: fail2ban upgrades a database in place
// (0.11 turns schema 2 into 4 in the same file), and a changed version is a
// schema error, so the exporter reopens the file and reads it afresh.
func (s *source) readJails(ctx context.Context) (map[string]bool, error) {
	var version sql.NullInt64
	if err := s.conn.QueryRowContext(ctx, "SELECT version FROM fail2banDb LIMIT 1").Scan(&version); err != nil {
		if errors.Is(err, sql.ErrNoRows) || strings.Contains(err.Error(), "no such table") {
			if terr := truncated(s.path); terr != nil {
				return nil, &readError{kind: kindCorrupt, err: terr}
			}
			return nil, &readError{kind: kindSchema, err: fmt.Errorf("%s is no longer a fail2ban database (no fail2banDb version): %w", s.path, err)}
		}
		return nil, fmt.Errorf("read fail2ban schema version: %w", err)
	}
	if !version.Valid || version.Int64 != int64(s.schema) {
		return nil, &readError{kind: kindSchema, err: fmt.Errorf("fail2ban database %s changed from schema version %d to %v", s.path, s.schema, version.Int64)}
	}
	rs, err := s.conn.QueryContext(ctx, "SELECT name, enabled FROM jails WHERE name IS NOT NULL")
	if err != nil {
		return nil, fmt.Errorf("read jails: %w", err)
	}
	defer rs.Close()
	out := map[string]bool{}
	for rs.Next() {
		var name string
		var enabled sql.NullInt64
		if err := rs.Scan(&name, &enabled); err != nil {
			return nil, fmt.Errorf("read jails: %w", err)
		}
		name = validLabel(name)
		out[name] = out[name] || enabled.Int64 != 0
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read jails: %w", err)
	}
	return out, nil
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
