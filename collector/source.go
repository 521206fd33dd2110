package collector

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/bangui/bangui_exporter/internal/sqliteread"
)

// source reads fail2ban's database strictly read-only: a file: URI with
// mode=ro (so a missing file is never created), opened SQLITE_OPEN_READONLY,
// query_only, and a busy timeout below fail2ban's own 5 s. Every statement
// is its own short read transaction; large reads go in chunks. It holds one
// connection of its own (sqliteread, not database/sql: a startup read of a
// million rows through database/sql spends most of its time in the driver).
type source struct {
	path   string
	conn   *sqliteread.Conn // one: PRAGMA data_version is per connection
	dev    uint64
	ino    uint64
	schema int
	// dataVersion is PRAGMA data_version when the last read started.
	dataVersion int64
	hasVersion  bool
	// jails are the jail names read so far, so rows of a known jail
	// share its string instead of each allocating one.
	jails []string
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
	code := -1
	if se, ok := errors.AsType[*sqlite.Error](err); ok {
		code = se.Code()
	} else if se, ok := errors.AsType[*sqliteread.Error](err); ok {
		code = se.Code()
	}
	switch code & 0xff {
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

// readOnlyURI is the database/sql DSN that opens path read-only (the
// integrity check's connection; the source's own is sourcePragmas').
func readOnlyURI(path string) string {
	u := url.URL{Scheme: "file", Path: path, OmitHost: true}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(3000)")
	q.Add("_pragma", "query_only(1)")
	u.RawQuery = q.Encode()
	return u.String()
}

// fileURI is the SQLite URI that opens path read-only: mode=ro, so a
// missing file is never created.
func fileURI(path string) string {
	u := url.URL{Scheme: "file", Path: path, OmitHost: true, RawQuery: "mode=ro"}
	return u.String()
}

// sourcePragmas are set on the source's connection when it opens: the
// busy timeout (below fail2ban's own 5 s) and query_only, as readOnlyURI's
// DSN sets them for database/sql.
var sourcePragmas = []string{"PRAGMA busy_timeout = 3000", "PRAGMA query_only = 1"}

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

// openSource opens fail2ban's database at path and checks its schema;
// pragmas are set after sourcePragmas.
func openSource(ctx context.Context, path string, pragmas ...string) (*source, error) {
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

	conn, err := sqliteread.Open(fileURI(path))
	if err != nil {
		return nil, fmt.Errorf("open fail2ban database: %w", err)
	}
	s := &source{path: path, conn: conn, dev: dev, ino: ino}
	for _, p := range append(slices.Clip(sourcePragmas), pragmas...) {
		if err := conn.Exec(ctx, p); err != nil {
			s.close()
			return nil, fmt.Errorf("open fail2ban database: %s: %w", p, err)
		}
	}
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
}

// errNoRows is queryInts' error for a query that returned no row.
var errNoRows = errors.New("no rows in result set")

// queryInts runs query, which returns one row of len(out) integer columns,
// into out; valid (when not nil) tells which were not NULL.
func queryInts(ctx context.Context, conn *sqliteread.Conn, out []int64, valid []bool, query string, args ...any) error {
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return errNoRows
	}
	for i := range out {
		if valid != nil {
			valid[i] = rows.Type(i) != sqliteread.Null
		}
		out[i] = rows.Int64(i)
	}
	return rows.Close()
}

// readVersion reads fail2ban's schema version; valid is false for NULL.
func (s *source) readVersion(ctx context.Context) (version int64, valid bool, err error) {
	var out [1]int64
	var ok [1]bool
	err = queryInts(ctx, s.conn, out[:], ok[:], "SELECT version FROM fail2banDb LIMIT 1")
	return out[0], ok[0], err
}

func (s *source) readSchema(ctx context.Context) error {
	version, _, err := s.readVersion(ctx)
	if err != nil {
		if errors.Is(err, errNoRows) || strings.Contains(err.Error(), "no such table") {
			if terr := truncated(s.path); terr != nil {
				return &readError{kind: kindCorrupt, err: terr}
			}
			return &readError{kind: kindSchema, err: fmt.Errorf("%s is not a fail2ban database (no fail2banDb version): %w", s.path, err)}
		}
		return fmt.Errorf("read fail2ban schema version: %w", err)
	}
	switch version {
	case 2, 4:
		s.schema = int(version)
	default:
		return &readError{kind: kindSchema, err: fmt.Errorf("unsupported fail2ban database schema version %d in %s (supported: 2 and 4, fail2ban 0.9 to 1.1)", version, s.path)}
	}
	// The tables the schema promises must be there.
	tables := []string{"bans", "jails"}
	if s.schema == 4 {
		tables = append(tables, "bips")
	}
	for _, t := range tables {
		var n [1]int64
		if err := queryInts(ctx, s.conn, n[:], nil, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", t); err != nil {
			return fmt.Errorf("read fail2ban schema: %w", err)
		}
		if n[0] == 0 {
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
	var v [1]int64
	if err := queryInts(ctx, s.conn, v[:], nil, "PRAGMA data_version"); err != nil {
		return 0, fmt.Errorf("read data_version: %w", err)
	}
	return v[0], nil
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
	rs, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rs.Close()
	hasBantime := table != "bans" || s.schema != 2
	for rs.Next() {
		r := sourceRow{
			Rowid:    rs.Int64(0),
			JailNull: rs.Int64(1) != 0, Jail: rs.Text(2),
			IPNull: rs.Int64(3) != 0, IP: rs.Text(4),
			TimeValid: rs.Int64(5) != 0, TimeOfBan: rs.Int64(6),
			BanValid: rs.Int64(7) != 0, Bantime: rs.Int64(8),
			IPLen: rs.Int64(9), JailLen: rs.Int64(10), Bancount: rs.Int64(11),
			HasBantime: hasBantime,
		}
		out = append(out, r)
	}
	if err := rs.Close(); err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	return out, nil
}

// leanColumns is the select list of the fast read of a bans or bips row:
// the columns as stored, without rowColumns' expressions, which the
// transpiled SQLite evaluates at several times the cost of reading the row.
// decodeLean gives the same sourceRow for every row of the shape fail2ban
// writes (NULL or plain ASCII text, NULL or integer numbers); a chunk with
// another row is read again with rowColumns.
func (s *source) leanColumns(table string) string {
	if s.schema == 2 {
		// No bantime in schema 2's bans (rowColumns: valid, 0), no bancount.
		return "rowid, jail, ip, timeofban, 0, 0"
	}
	return "rowid, jail, ip, timeofban, bantime, bancount"
}

// scanLean appends the rows of a leanColumns query to out. odd reports a row
// decodeLean cannot decode as rowColumns would: the caller reads the chunk
// again with rowColumns (out then holds a partial chunk).
func (s *source) scanLean(ctx context.Context, out []sourceRow, table, query string, args ...any) (_ []sourceRow, odd bool, _ error) {
	rs, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", table, err)
	}
	defer rs.Close()
	hasBantime := table != "bans" || s.schema != 2
	for rs.Next() {
		r := sourceRow{Rowid: rs.Int64(0), HasBantime: hasBantime}
		if !s.decodeLean(&r, rs) {
			return out, true, nil
		}
		out = append(out, r)
	}
	if err := rs.Close(); err != nil {
		return nil, false, fmt.Errorf("read %s: %w", table, err)
	}
	return out, false, nil
}

// decodeLean fills r from the stored values of a row as rowColumns'
// expressions compute them, and reports false for a value whose
// expression it does not reproduce (text that is not plain ASCII, a real,
// a blob, text in a number column).
func (s *source) decodeLean(r *sourceRow, rs *sqliteread.Rows) bool {
	jail, jailNull, ok1 := leanText(rs, 1)
	ip, ipNull, ok2 := leanText(rs, 2)
	if !ok1 || !ok2 {
		return false
	}
	r.Jail, r.JailNull, r.JailLen = s.jailName(jail), jailNull, int64(len(jail))
	r.IP, r.IPNull, r.IPLen = string(ip), ipNull, int64(len(ip))
	var ok3, ok4, ok5 bool
	r.TimeOfBan, r.TimeValid, ok3 = leanInt(rs, 3)
	r.Bantime, r.BanValid, ok4 = leanInt(rs, 4)
	r.Bancount, _, ok5 = leanInt(rs, 5)
	return ok3 && ok4 && ok5
}

// maxJailNames bounds the jail names a source keeps for sharing.
const maxJailNames = 256

// jailName returns b as a string, the same string for the same name.
func (s *source) jailName(b []byte) string {
	for _, j := range s.jails {
		if j == string(b) {
			return j
		}
	}
	name := string(b)
	if len(s.jails) < maxJailNames {
		s.jails = append(s.jails, name)
	}
	return name
}

// leanText decodes text column i as rowColumns' CAST to text (the empty
// string for NULL), IS NULL and length (0 for NULL) do; ok is false unless
// the value is NULL or ASCII text without NUL (where length counts bytes).
// text points into SQLite's memory (valid until the next row).
func leanText(rs *sqliteread.Rows, i int) (text []byte, null, ok bool) {
	switch rs.Type(i) {
	case sqliteread.Null:
		return nil, true, true
	case sqliteread.Text:
		b := rs.Bytes(i)
		for _, c := range b {
			if c == 0 || c >= 0x80 {
				return nil, false, false
			}
		}
		return b, false, true
	}
	return nil, false, false
}

// leanInt decodes number column i as coalesce(CAST(x AS INTEGER), 0) and
// typeof(x) IN ('integer','real') do; ok is false unless the value is NULL
// or an integer.
func leanInt(rs *sqliteread.Rows, i int) (n int64, valid, ok bool) {
	switch rs.Type(i) {
	case sqliteread.Null:
		return 0, false, true
	case sqliteread.Integer:
		return rs.Int64(i), true, true
	}
	return 0, false, false
}

// readRows reads the rows of table that match where (with args) into buf
// (reused from its start; nil allocates): with the lean select list, and
// again with rowColumns' when a row needs it.
func (s *source) readRows(ctx context.Context, buf []sourceRow, table, where string, args ...any) ([]sourceRow, error) {
	rows, odd, err := s.scanLean(ctx, buf[:0], table, "SELECT "+s.leanColumns(table)+" FROM "+table+" WHERE "+where, args...)
	if err != nil || !odd {
		return rows, err
	}
	return s.scanRows(ctx, rows[:0], table, "SELECT "+s.rowColumns(table)+" FROM "+table+" WHERE "+where, args...)
}

// readAfter reads at most limit rows of table with rowid > after into buf
// (reused from its start; nil allocates).
func (s *source) readAfter(ctx context.Context, buf []sourceRow, table string, after int64, limit int) ([]sourceRow, error) {
	return s.readRows(ctx, buf, table, "rowid > ? ORDER BY rowid LIMIT ?", after, limit)
}

// readRange reads the rows of table with rowid in [lo, hi].
func (s *source) readRange(ctx context.Context, table string, lo, hi int64) ([]sourceRow, error) {
	return s.readRows(ctx, nil, table, "rowid BETWEEN ? AND ? ORDER BY rowid", lo, hi)
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
	version, valid, err := s.readVersion(ctx)
	if err != nil {
		if errors.Is(err, errNoRows) || strings.Contains(err.Error(), "no such table") {
			if terr := truncated(s.path); terr != nil {
				return nil, &readError{kind: kindCorrupt, err: terr}
			}
			return nil, &readError{kind: kindSchema, err: fmt.Errorf("%s is no longer a fail2ban database (no fail2banDb version): %w", s.path, err)}
		}
		return nil, fmt.Errorf("read fail2ban schema version: %w", err)
	}
	if !valid || version != int64(s.schema) {
		return nil, &readError{kind: kindSchema, err: fmt.Errorf("fail2ban database %s changed from schema version %d to %v", s.path, s.schema, version)}
	}
	rs, err := s.conn.Query(ctx, "SELECT name, enabled FROM jails WHERE name IS NOT NULL")
	if err != nil {
		return nil, fmt.Errorf("read jails: %w", err)
	}
	defer rs.Close()
	out := map[string]bool{}
	for rs.Next() {
		name := validLabel(rs.Text(0))
		out[name] = out[name] || rs.Int64(1) != 0
	}
	if err := rs.Close(); err != nil {
		return nil, fmt.Errorf("read jails: %w", err)
	}
	return out, nil
}

// readShape reads the row count and the rowid bounds of table. Each is its
// own subquery so that SQLite counts through its smallest b-tree (without
// reading a row) and finds the bounds in the rowid b-tree; one aggregate
// over the three would scan every row of the table, data included.
func readShape(ctx context.Context, conn *sqliteread.Conn, table string) (tableShape, error) {
	var v [3]int64
	q := "SELECT (SELECT count(*) FROM " + table + "), (SELECT max(rowid) FROM " + table + "), (SELECT min(rowid) FROM " + table + ")"
	if err := queryInts(ctx, conn, v[:], nil, q); err != nil {
		return tableShape{}, fmt.Errorf("count %s: %w", table, err)
	}
	return tableShape{count: v[0], max: v[1], min: v[2]}, nil
}

// readBounds reads the rowid bounds of table, without its row count: two
// lookups in the rowid b-tree, where counting reads a whole index (tens of
// milliseconds at a million rows). count is -1.
func readBounds(ctx context.Context, conn *sqliteread.Conn, table string) (tableShape, error) {
	var v [2]int64
	var valid [2]bool
	q := "SELECT (SELECT max(rowid) FROM " + table + "), (SELECT min(rowid) FROM " + table + ")"
	if err := queryInts(ctx, conn, v[:], valid[:], q); err != nil {
		return tableShape{count: -1}, fmt.Errorf("bounds of %s: %w", table, err)
	}
	sh := tableShape{count: -1, max: v[0], min: v[1]}
	if !valid[0] {
		sh.count = 0 // an empty table
	}
	return sh, nil
}
