package appdb

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenCreatesDirectoryWALAndMigrates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nested", "dir", "app.sqlite3")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.Reader.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	migs := []Migration{
		{1, "CREATE TABLE a(x INTEGER)"},
		{2, "CREATE TABLE b(y INTEGER)"},
	}
	for range 2 { // idempotent
		if err := db.Migrate(ctx, "test", migs); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Migrate(ctx, "other", []Migration{{1, "CREATE TABLE c(z INTEGER)"}}); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := db.Reader.QueryRowContext(ctx, "SELECT version FROM schema_versions WHERE component='test'").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != 2 {
		t.Fatalf("version = %d, want 2", v)
	}
	if _, err := db.Reader.ExecContext(ctx, "INSERT INTO a VALUES(1)"); err == nil {
		t.Fatal("reader pool accepted a write")
	}
	if _, err := db.Writer.ExecContext(ctx, "INSERT INTO a VALUES(1)"); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "app.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Migrate(ctx, "bad", []Migration{{1, "CREATE TABLE ok(x)"}, {2, "THIS IS NOT SQL"}})
	if err == nil {
		t.Fatal("want error")
	}
	var n int
	if err := db.Reader.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE name='ok'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("partial migration was committed")
	}
}

// TestOpenPaths: relative paths (resolved against the working directory, as
// a user types them on the command line) and file names SQLite's URI syntax
// treats specially open the file at exactly that path.
func TestOpenPaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	tests := []struct{ name, path, file string }{
		{"relative file", "app.sqlite3", "app.sqlite3"},
		{"relative directory", "state/app.sqlite3", "state/app.sqlite3"},
		{"dot directory", "./state2/app.sqlite3", "state2/app.sqlite3"},
		{"question mark and hash", "odd?name#x.sqlite3", "odd?name#x.sqlite3"},
		{"absolute", filepath.Join(dir, "abs", "app.sqlite3"), "abs/app.sqlite3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(context.Background(), tc.path)
			if err != nil {
				t.Fatalf("Open(%q): %v", tc.path, err)
			}
			if err := db.Migrate(context.Background(), "test", []Migration{{1, "CREATE TABLE a(x INTEGER)"}}); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(filepath.Join(dir, tc.file)); err != nil || st.Size() == 0 {
				t.Fatalf("database not at %s: %v", tc.file, err)
			}
		})
	}
}

// The bulk reader sees what the writer committed, never what it has not,
// and cannot write.
func TestBulkReader(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "app.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Writer.ExecContext(ctx, "CREATE TABLE t(v INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Writer.ExecContext(ctx, "INSERT INTO t VALUES (1), (2), (3)"); err != nil {
		t.Fatal(err)
	}
	// An open write transaction: the reader must not wait for it or see it.
	tx, err := db.Writer.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // the test's end
	if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (100)"); err != nil {
		t.Fatal(err)
	}
	r, err := db.BulkReader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rows, err := r.Query(ctx, "SELECT sum(v), count(*) FROM t")
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatal(rows.Err())
	}
	if sum, n := rows.Int64(0), rows.Int64(1); sum != 6 || n != 3 {
		t.Errorf("sum %d of %d rows, want 6 of 3 (the committed rows only)", sum, n)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Exec(ctx, "INSERT INTO t VALUES (7)"); err == nil {
		t.Error("the bulk reader wrote")
	}
}

// A DB without a path (pools put together by hand, not Open or Wrap) has no
// file for a bulk reader: an error, not an empty temporary database.
func TestBulkReaderNeedsPath(t *testing.T) {
	if _, err := (&DB{}).BulkReader(context.Background()); err == nil {
		t.Fatal("a bulk reader without a path opened")
	}
}
