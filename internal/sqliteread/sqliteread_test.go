package sqliteread

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// newDB writes a database with one table of every storage class and
// returns its path.
func newDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.sqlite3")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE TABLE t(k INTEGER PRIMARY KEY, v)",
		"INSERT INTO t VALUES (1, 42), (2, 1.5), (3, 'text'), (4, NULL), (5, x'00ff'), (6, '12'), (7, 'héllo')",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func open(t *testing.T, path string) *Conn {
	t.Helper()
	c, err := Open("file:" + path + "?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestColumns(t *testing.T) {
	c := open(t, newDB(t))
	ctx := context.Background()
	tests := []struct {
		k     int64
		typ   ColumnType
		i64   int64
		bytes []byte
	}{
		{1, Integer, 42, []byte("42")},
		{2, Float, 1, []byte("1.5")},
		{3, Text, 0, []byte("text")},
		{4, Null, 0, nil},
		{5, Blob, 0, []byte{0, 0xff}},
		{6, Text, 12, []byte("12")},
		{7, Text, 0, []byte("héllo")},
	}
	for _, tt := range tests {
		// The same statement each time: prepared once, reset by Close.
		rows, err := c.Query(ctx, "SELECT v FROM t WHERE k = ?", tt.k)
		if err != nil {
			t.Fatal(err)
		}
		if !rows.Next() {
			t.Fatalf("k=%d: no row (err %v)", tt.k, rows.Err())
		}
		// Type before the conversions: they may change the storage class.
		if got := rows.Type(0); got != tt.typ {
			t.Errorf("k=%d: Type %d, want %d", tt.k, got, tt.typ)
		}
		if got := rows.Bytes(0); !bytes.Equal(got, tt.bytes) {
			t.Errorf("k=%d: Bytes %q, want %q", tt.k, got, tt.bytes)
		}
		if got := rows.Int64(0); got != tt.i64 {
			t.Errorf("k=%d: Int64 %d, want %d", tt.k, got, tt.i64)
		}
		if rows.Next() {
			t.Errorf("k=%d: a second row", tt.k)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.stmts); n != 1 {
		t.Errorf("%d prepared statements, want 1 (reused)", n)
	}
}

func TestArgs(t *testing.T) {
	c := open(t, newDB(t))
	ctx := context.Background()
	tests := []struct {
		name  string
		query string
		args  []any
		want  []int64
	}{
		{"int64 range", "SELECT k FROM t WHERE k BETWEEN ? AND ? ORDER BY k", []any{int64(2), int64(4)}, []int64{2, 3, 4}},
		{"int limit", "SELECT k FROM t ORDER BY k LIMIT ?", []any{2}, []int64{1, 2}},
		{"string", "SELECT k FROM t WHERE v = ?", []any{"text"}, []int64{3}},
		{"no rows", "SELECT k FROM t WHERE k > ?", []any{int64(100)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := c.Query(ctx, tt.query, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for rows.Next() {
				got = append(got, rows.Int64(0))
			}
			if err := rows.Close(); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
	if _, err := c.Query(ctx, "SELECT ?", 1.5); err == nil {
		t.Error("a float argument was accepted")
	}
}

// A Query closes the Rows before it; the old Rows then ends.
func TestQueryClosesPrevious(t *testing.T) {
	c := open(t, newDB(t))
	ctx := context.Background()
	first, err := c.Query(ctx, "SELECT k FROM t ORDER BY k")
	if err != nil {
		t.Fatal(err)
	}
	if !first.Next() {
		t.Fatal("no first row")
	}
	second, err := c.Query(ctx, "SELECT count(*) FROM t")
	if err != nil {
		t.Fatal(err)
	}
	if first.Next() {
		t.Error("the first Rows went on after the second Query")
	}
	if !second.Next() || second.Int64(0) != 7 {
		t.Error("second query: want 7 rows counted")
	}
	_ = first.Close() // closing it again must not touch the second
	if second.Next() {
		t.Error("a second row of count(*)")
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnly(t *testing.T) {
	path := newDB(t)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := open(t, path)
	err = c.Exec(context.Background(), "INSERT INTO t VALUES (100, 1)")
	var se *Error
	if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_READONLY {
		t.Fatalf("insert on a read-only connection: %v, want SQLITE_READONLY", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the database file changed")
	}
	for _, suffix := range []string{"-journal", "-wal"} {
		if _, err := os.Stat(path + suffix); err == nil {
			t.Errorf("%s was created", suffix)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.sqlite3")
	tests := []struct {
		name  string
		path  string
		query string
		code  int // primary result code, at Open or at the query
	}{
		{"missing file", missing, "", sqlite3.SQLITE_CANTOPEN},
		{"not a database", garbage, "SELECT 1 FROM sqlite_master", sqlite3.SQLITE_NOTADB},
		{"no such table", newDB(t), "SELECT * FROM nope", sqlite3.SQLITE_ERROR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Open("file:" + tt.path + "?mode=ro")
			if err == nil {
				defer c.Close()
				err = c.Exec(context.Background(), tt.query)
			}
			var se *Error
			if !errors.As(err, &se) || se.Code()&0xff != tt.code {
				t.Fatalf("err %v, want code %d", err, tt.code)
			}
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("mode=ro created the missing file")
	}
}

// A context that ends interrupts a statement that runs, and stops the next.
func TestContext(t *testing.T) {
	c := open(t, newDB(t))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	rows, err := c.Query(ctx, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n")
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Fatal("an endless count returned a row")
	}
	if !errors.Is(rows.Err(), context.DeadlineExceeded) {
		t.Errorf("err %v, want the context's", rows.Err())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("interrupted after %v", d)
	}
	_ = rows.Close()
	if _, err := c.Query(ctx, "SELECT 1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("query with an ended context: %v", err)
	}
	// The connection still works with a live context.
	rows, err = c.Query(context.Background(), "SELECT count(*) FROM t")
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() || rows.Int64(0) != 7 {
		t.Errorf("after the interrupt: %v", rows.Err())
	}
	_ = rows.Close()
}
