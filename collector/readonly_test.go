package collector

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fileState is everything about a file the exporter could change by
// writing: its bytes, size, mtime and ctime (a chmod or any write moves
// ctime).
type fileState struct {
	sum   [32]byte
	size  int64
	mtime time.Time
	ctime time.Time
	ino   uint64
}

func stateOf(t testing.TB, path string) fileState {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fileState{
		sum:   sha256.Sum256(data),
		size:  fi.Size(),
		mtime: fi.ModTime(),
		ctime: time.Unix(st.Ctim.Sec, st.Ctim.Nsec),
		ino:   st.Ino,
	}
}

// dirNames lists a directory.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestReadOnlyOverHours simulates six hours of a busy fail2ban in
// ten-minute steps with the fake clock: the test's writer bans, unbans and
// purges (hourly) between snapshots of the file; between two snapshots only
// the exporter acts, refreshing five times while time passes. The file's
// bytes, size, mtime and ctime never change by the exporter, no -journal,
// -wal or -shm file ever appears, and the exporter's counts follow every
// write (so it really read the file each time).
func TestReadOnlyOverHours(t *testing.T) {
	d := newF2BDB(t, 4)
	for _, j := range []string{"sshd", "nginx"} {
		d.addJail(j, true)
	}
	dir := filepath.Dir(d.path)
	clk := newClock(t0)
	windows := windowsOf(t, "1h", "24h")
	x := newFixtureExporter(t, d.path, clk, NoCountries{}, Options{Windows: windows, ChunkSize: 7})
	ctx := context.Background()
	ip := func(i int) string { return fmt.Sprintf("198.51.%d.%d", i/250, i%250+1) }
	n := 0
	for step := range 36 {
		now := clk.Now().Unix()
		// fail2ban writes.
		for k := range 5 {
			d.ban([]string{"sshd", "nginx"}[k%2], ip(n), now-int64(k*30), []int64{600, 3600, -1}[n%3])
			n++
		}
		if step%4 == 3 {
			d.unban("sshd", ip(n-2))
		}
		if step%6 == 5 {
			d.purge(now, 3600)
		}
		before := stateOf(t, d.path)
		// Only the exporter acts.
		for r := range 5 {
			if err := x.Refresh(ctx); err != nil {
				t.Fatalf("step %d: refresh: %v", step, err)
			}
			if r == 0 {
				got := only(scrape(t, x), "fail2ban_banned_ips", "fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds")
				want := naive(t, d, clk.Now().Unix(), windows, func(netip.Addr) string { return "" }, 600)
				assertSamples(t, fmt.Sprintf("step %d", step), got, want)
			}
			clk.Add(2 * time.Minute)
		}
		if after := stateOf(t, d.path); after != before {
			t.Fatalf("step %d: the exporter changed the database file: before %+v, after %+v", step, before, after)
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{"fail2ban.sqlite3"}) {
			t.Fatalf("step %d: directory holds %v, want only the database", step, names)
		}
	}
	if n < 150 {
		t.Fatalf("only %d bans written", n)
	}
}

// TestReadOnlyNoWritePermission: the exporter reads a database whose file
// (0444) and directory (0555) nobody may write, and leaves them as they
// were. As root, permission bits do not bind, so the test runs again as
// nobody in a copy of the test binary.
func TestReadOnlyNoWritePermission(t *testing.T) {
	if runUnprivileged(t) {
		return
	}
	parent := t.TempDir()
	dir := filepath.Join(parent, "fail2ban")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fail2ban.sqlite3")
	d := newF2BDBAt(t, path, 4)
	d.addJail("sshd", true)
	d.ban("sshd", "198.51.100.1", t0-10, 600)
	d.ban("sshd", "198.51.100.2", t0-10, -1)
	if err := d.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755) }) // so TempDir's cleanup can remove it
	// The bits bind here: a write must fail.
	if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		_ = f.Close()
		t.Fatal("the database file is writable: the test would prove nothing")
	}
	before := stateOf(t, path)
	clk := newClock(t0)
	x := newFixtureExporter(t, path, clk, NoCountries{}, Options{})
	for i := range 10 {
		got := only(scrape(t, x), "fail2ban_up", "fail2ban_banned_ips")
		assertSamples(t, fmt.Sprintf("scrape %d", i), got, map[string]float64{
			"fail2ban_up{}": 1,
			"fail2ban_banned_ips{country=ZZ,jail=sshd}": float64(map[bool]int{true: 2, false: 1}[i == 0]),
		})
		clk.Add(20 * time.Minute)
	}
	if after := stateOf(t, path); after != before {
		t.Fatalf("the exporter changed the database file: before %+v, after %+v", before, after)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"fail2ban.sqlite3"}) {
		t.Fatalf("directory holds %v, want only the database", names)
	}
}

// TestNeverCreatesMissingFile: a missing database is an error, never a new
// empty file — in an existing directory, in a missing one, and at a path
// with characters a file: URI must escape.
func TestNeverCreatesMissingFile(t *testing.T) {
	tests := []struct {
		name string
		path func(dir string) string
	}{
		{"missing file", func(dir string) string { return filepath.Join(dir, "fail2ban.sqlite3") }},
		{"missing directory", func(dir string) string { return filepath.Join(dir, "lib", "fail2ban.sqlite3") }},
		{"uri characters", func(dir string) string { return filepath.Join(dir, "a b?mode=rwc#x%20", "fail2ban.sqlite3") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.path(dir)
			if p := filepath.Dir(path); p != dir {
				if err := os.Mkdir(p, 0o755); err != nil && tt.name == "uri characters" {
					t.Fatal(err)
				}
				if tt.name == "missing directory" {
					_ = os.Remove(p)
				}
			}
			x := newFixtureExporter(t, path, newClock(t0), NoCountries{}, Options{})
			for range 3 {
				if err := x.Refresh(context.Background()); err == nil {
					t.Fatal("refresh of a missing database succeeded")
				}
			}
			if s := scrape(t, x); s["fail2ban_up{}"] != 0 || s["bangui_exporter_fail2ban_read_errors_total{kind=missing}"] != 4 {
				t.Fatalf("up %v, missing errors %v; want 0 and 4", s["fail2ban_up{}"], s["bangui_exporter_fail2ban_read_errors_total{kind=missing}"])
			}
			var found []string
			_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					found = append(found, p)
				}
				return nil
			})
			if len(found) != 0 {
				t.Fatalf("the exporter created %v", found)
			}
			// Once the file exists, the same exporter reads it (the path
			// survives the URI's escaping).
			if tt.name != "missing directory" {
				// Built at a plain path (the test's writer opens a plain
				// path, where '?' would start a query), then moved.
				d := newF2BDB(t, 4)
				d.addJail("sshd", true)
				d.ban("sshd", "198.51.100.1", t0, 600)
				if err := d.db.Close(); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(d.path, path); err != nil {
					t.Fatal(err)
				}
				if got := scrape(t, x)["fail2ban_banned_ips{country=ZZ,jail=sshd}"]; got != 1 {
					t.Fatalf("banned_ips = %v after the file appeared, want 1", got)
				}
			}
		})
	}
}

// TestReadOnlyURI checks the DSN itself: it never creates a file, refuses
// writes, and sets query_only and a busy timeout below fail2ban's 5 s.
func TestReadOnlyURI(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.sqlite3")
	db, err := sql.Open("sqlite", readOnlyURI(missing))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err == nil {
		t.Error("opening a missing file read-only succeeded")
	}
	_ = db.Close()
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("the read-only DSN created the missing file")
	}

	d := newF2BDB(t, 4)
	before := stateOf(t, d.path)
	db, err = sql.Open("sqlite", readOnlyURI(d.path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{"CREATE TABLE x(a)", "INSERT INTO jails(name) VALUES('x')", "PRAGMA user_version = 7"} {
		if _, err := db.Exec(q); err == nil {
			t.Errorf("%s through the read-only DSN succeeded", q)
		}
	}
	var queryOnly, busy int
	if err := db.QueryRow("PRAGMA query_only").Scan(&queryOnly); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("PRAGMA busy_timeout").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if queryOnly != 1 || busy <= 0 || busy >= 5000 {
		t.Errorf("query_only %d, busy_timeout %d ms; want 1 and between 0 and 5000", queryOnly, busy)
	}
	if !strings.Contains(readOnlyURI(d.path), "mode=ro") {
		t.Errorf("DSN %s lacks mode=ro", readOnlyURI(d.path))
	}
	if after := stateOf(t, d.path); after != before {
		t.Fatal("the file changed")
	}
}

// TestSourceConnectionIsReadOnly checks the source's own connection
// (sqliteread, not database/sql) as TestReadOnlyURI checks the DSN: a
// missing file is not created, writes are refused, query_only is on and
// the busy timeout is below fail2ban's 5 s, and the file is unchanged.
func TestSourceConnectionIsReadOnly(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "none.sqlite3")
	if _, err := openSource(ctx, missing); err == nil {
		t.Error("opening a missing file succeeded")
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("the source created the missing file")
	}

	d := newF2BDB(t, 4)
	d.ban("sshd", "192.0.2.1", 1_790_000_000, 600)
	before := stateOf(t, d.path)
	for _, extra := range [][]string{nil, {"PRAGMA cache_size = -256"}} { // the refresh's and the backfill's
		src, err := openSource(ctx, d.path, extra...)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"CREATE TABLE x(a)", "INSERT INTO jails(name) VALUES('x')", "DELETE FROM bans", "PRAGMA user_version = 7"} {
			if err := src.conn.Exec(ctx, q); err == nil {
				t.Errorf("%s through the source's connection succeeded", q)
			}
		}
		var v [1]int64
		if err := queryInts(ctx, src.conn, v[:], nil, "PRAGMA query_only"); err != nil || v[0] != 1 {
			t.Errorf("query_only %d (%v), want 1", v[0], err)
		}
		if err := queryInts(ctx, src.conn, v[:], nil, "PRAGMA busy_timeout"); err != nil || v[0] <= 0 || v[0] >= 5000 {
			t.Errorf("busy_timeout %d ms (%v), want between 0 and 5000", v[0], err)
		}
		rows, err := src.readAfter(ctx, nil, "bans", 0, 10)
		if err != nil || len(rows) != 1 || rows[0].IP != "192.0.2.1" {
			t.Errorf("read %v (%v), want the one ban", rows, err)
		}
		src.close()
	}
	if after := stateOf(t, d.path); after != before {
		t.Fatal("the file changed")
	}
}
