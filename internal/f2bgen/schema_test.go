package f2bgen

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

type masterRow struct{ Type, Name, Table, SQL string }

// sqliteMaster returns sqlite_master in row order.
func sqliteMaster(t *testing.T, path string) []masterRow {
	t.Helper()
	rows, err := openRO(t, path).Query("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY rowid")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var out []masterRow
	for rows.Next() {
		var r masterRow
		if err := rows.Scan(&r.Type, &r.Name, &r.Table, &r.SQL); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// realFail2banDB starts a real fail2ban-server in a sandbox (own config,
// socket, pidfile and database; a noop action, so no firewall is touched),
// waits until it has created its database, stops it and returns the
// database's path.
func realFail2banDB(t *testing.T) string {
	t.Helper()
	server := requireTool(t, "fail2ban-server")
	dir := t.TempDir()
	for _, sub := range []string{"filter.d", "action.d", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := filepath.Join(dir, "run")
	dbPath := filepath.Join(run, "fail2ban.sqlite3")
	files := map[string]string{
		"fail2ban.conf": "[DEFAULT]\nloglevel = INFO\nlogtarget = " + run + "/fail2ban.log\nsocket = " + run + "/f2b.sock\n" +
			"pidfile = " + run + "/f2b.pid\ndbfile = " + dbPath + "\ndbpurgeage = 1d\n[Definition]\nallowipv6 = auto\n",
		"jail.conf": "[DEFAULT]\nbackend = polling\nusedns = no\nignoreself = false\nignoreip = 127.0.0.1/8 ::1\n" +
			"maxretry = 1\nfindtime = 10m\nbanaction = noop\naction = noop\n" +
			"[sshd]\nenabled = true\nfilter = sandbox\nlogpath = " + run + "/auth.log\nbantime = 1h\n",
		"filter.d/sandbox.conf": "[Definition]\nfailregex = ^ sshd\\[\\d+\\]: Failed password for \\S+ from <HOST> port \\d+\n" +
			"datepattern = ^%%Y-%%m-%%d %%H:%%M:%%S\n",
		"action.d/noop.conf": "[Definition]\nactionstart =\nactionstop =\nactioncheck =\nactionflush =\nactionban =\nactionunban =\n",
		"run/auth.log":       "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(server, "-c", dir, "-s", filepath.Join(run, "f2b.sock"), "-p", filepath.Join(run, "f2b.pid"), "-x", "-f")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fail2ban-server: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(dbPath); err == nil {
			// The jail row is written after the schema: the file is complete.
			db := openRO(t, dbPath)
			var n int
			if db.QueryRow("SELECT count(*) FROM jails").Scan(&n) == nil && n > 0 {
				_ = db.Close()
				break
			}
			_ = db.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("fail2ban-server did not create %s within 15 s; its output:\n%s", dbPath, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	return dbPath
}

func TestSchemaEqualsRealFail2banServer(t *testing.T) {
	realDB := realFail2banDB(t)
	want := sqliteMaster(t, realDB)
	if len(want) != 17 {
		t.Fatalf("real fail2ban database has %d schema objects, expected 17: %v", len(want), want)
	}
	for _, tc := range []struct {
		name         string
		indexesFirst bool
	}{
		{"indexes first: identical row for row", true},
		{"indexes after loading: identical objects", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, _ := generate(t, Spec{Rows: 2000, Now: testNow, IndexesFirst: tc.indexesFirst})
			got := sqliteMaster(t, path)
			if !tc.indexesFirst {
				byName := func(a, b masterRow) int { return strings.Compare(a.Name, b.Name) }
				got, want := slices.Clone(got), slices.Clone(want)
				slices.SortFunc(got, byName)
				slices.SortFunc(want, byName)
				if !slices.Equal(got, want) {
					t.Fatalf("schema objects differ\n got: %q\nwant: %q", got, want)
				}
				return
			}
			if !slices.Equal(got, want) {
				t.Fatalf("sqlite_master differs\n got: %q\nwant: %q", got, want)
			}
		})
	}
	// The file-level settings fail2ban leaves at SQLite's defaults.
	for _, pragma := range []string{"page_size", "auto_vacuum", "user_version", "application_id"} {
		path, _ := generate(t, Spec{Rows: 100, Now: testNow})
		got := queryInt(t, openRO(t, path), "PRAGMA "+pragma)
		want := queryInt(t, openRO(t, realDB), "PRAGMA "+pragma)
		if got != want {
			t.Errorf("PRAGMA %s = %d, fail2ban's = %d", pragma, got, want)
		}
	}
	if v := queryInt(t, openRO(t, realDB), "SELECT version FROM fail2banDb"); v != 4 {
		t.Errorf("real fail2ban wrote schema version %d, the generator writes 4", v)
	}
}

// TestSchemaTextEqualsFail2banSource checks the generator's CREATE
// statements against the ones in the installed fail2ban's database.py, so a
// fail2ban upgrade that changes the schema is noticed.
func TestSchemaTextEqualsFail2banSource(t *testing.T) {
	out := runFail2banPython(t, `
from fail2ban.server.database import Fail2BanDb
print(Fail2BanDb.__version__)
for name, script in Fail2BanDb._CREATE_SCRIPTS:
    for stmt in script.split(';'):
        if stmt.strip():
            print(stmt.strip() + ';')
`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "4" {
		t.Fatalf("installed fail2ban has schema version %s; the generator knows 4", lines[0])
	}
	var ours []string
	for _, obj := range schemaV4 {
		ours = append(ours, obj.sql)
	}
	if !slices.Equal(lines[1:], ours) {
		t.Fatalf("schema text differs from fail2ban's source\n got: %q\nwant: %q", ours, lines[1:])
	}
}

// TestSchemaV2UpgradedByFail2ban opens a generated schema-2 database with
// fail2ban's own Fail2BanDb, which upgrades it to version 4 the way it does
// for a database of fail2ban 0.9/0.10: it must succeed and keep every row,
// with bantime -2 (unknown).
func TestSchemaV2UpgradedByFail2ban(t *testing.T) {
	path, st := generate(t, Spec{Rows: 3000, Now: testNow, Schema: 2})
	if st.BipsRows != 0 || st.Schema != 2 {
		t.Fatalf("schema 2 stats: %+v", st)
	}
	db := openRO(t, path)
	if v := queryInt(t, db, "SELECT version FROM fail2banDb"); v != 2 {
		t.Fatalf("version %d", v)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM sqlite_master WHERE name IN ('bips', 'bips_ip')"); n != 0 {
		t.Fatalf("schema 2 has no bips table, found %d objects", n)
	}
	_ = db.Close()
	copyPath := filepath.Join(t.TempDir(), "upgrade.sqlite3")
	if err := CopyFile(copyPath, path); err != nil {
		t.Fatal(err)
	}
	out := runFail2banPython(t, `
import sys
from fail2ban.server.database import Fail2BanDb
db = Fail2BanDb(sys.argv[1])
cur = db._db.cursor()
print(cur.execute("SELECT version FROM fail2banDb").fetchone()[0])
print(cur.execute("SELECT count(*) FROM bans WHERE bantime = -2").fetchone()[0])
print(cur.execute("SELECT count(*) FROM bips").fetchone()[0])
`, copyPath)
	got := strings.Fields(out)
	want := []string{"4", "3000"}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("fail2ban's upgrade of the generated schema-2 file: got %q, want version 4 and 3000 rows with bantime -2", got)
	}
}
