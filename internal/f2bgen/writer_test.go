package f2bgen

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openWriter(t *testing.T, path string) *Writer {
	t.Helper()
	w, err := OpenWriter(context.Background(), path, WriterOptions{Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func TestAddBansLikeFail2ban(t *testing.T) {
	for _, schema := range []int{4, 2} {
		t.Run(fmt.Sprintf("schema %d", schema), func(t *testing.T) {
			path, st := generate(t, Spec{Rows: 3000, Seed: 4, Now: testNow, Schema: schema})
			w := openWriter(t, path)
			if w.Schema() != schema {
				t.Fatalf("Schema() = %d", w.Schema())
			}
			at := testNow.Add(time.Hour)
			bans, err := w.AddBans(context.Background(), 300, at)
			if err != nil {
				t.Fatal(err)
			}
			if len(bans) != 300 {
				t.Fatalf("%d bans", len(bans))
			}
			db := openRO(t, path)
			if got := queryInt(t, db, "SELECT count(*) FROM bans"); got != int64(st.BanRows+300) {
				t.Fatalf("bans rows %d, want %d", got, st.BanRows+300)
			}
			repeats := 0
			for _, b := range bans {
				a, err := netip.ParseAddr(b.IP)
				if err != nil || !IsPublic(a) {
					t.Fatalf("ban of %q: not a public address", b.IP)
				}
				if !b.TimeOfBan.Equal(at) {
					t.Fatalf("timeofban %v, want %v", b.TimeOfBan, at)
				}
				if b.BanCount > 1 {
					repeats++
				}
				if schema == 2 {
					continue
				}
				// bips holds the ban just written.
				var tob, bt, bc int64
				var data []byte
				err = db.QueryRow("SELECT timeofban, bantime, bancount, data FROM bips WHERE ip = ? AND jail = ?", b.IP, b.Jail).Scan(&tob, &bt, &bc, &data)
				if err != nil || tob != at.Unix() || bt != b.BanTime || bc != b.BanCount || string(data) != string(b.Data) {
					t.Fatalf("bips row of %s/%s: %d %d %d %s %v; want %+v", b.Jail, b.IP, tob, bt, bc, data, err, b)
				}
				if b.BanCount > 1 {
					// A repeat follows the bips row it replaced: one more ban than before.
					if n := queryInt(t, db, "SELECT count(*) FROM bans WHERE ip = ? AND jail = ? AND bancount = ?", b.IP, b.Jail, b.BanCount-1); n == 0 {
						t.Errorf("repeat ban %+v has no previous ban with bancount %d", b, b.BanCount-1)
					}
				}
			}
			if schema == 4 && repeats == 0 {
				t.Errorf("no repeat offender among 300 bans")
			}
			if schema == 4 {
				if got := queryInt(t, db, "SELECT count(*) FROM bips WHERE timeofban = ?", at.Unix()); got != 300 {
					t.Errorf("%d bips rows at the new time, want 300", got)
				}
			}
		})
	}
}

// f2bPython runs fail2ban's own Fail2BanDb method on a copy of a database
// at the given time, so the writer's SQL can be compared with fail2ban's.
const f2bPython = `
import sys
from fail2ban.server.mytime import MyTime
from fail2ban.server.database import Fail2BanDb
path, now, op = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MyTime.setTime(now)
class Jail:
    def __init__(self, name): self.name = name
if op == "purge":
    db = Fail2BanDb(path, purgeAge=int(sys.argv[4]))
    db.purge()
elif op == "unban":
    db = Fail2BanDb(path)
    db.delBan(Jail(sys.argv[4]), *sys.argv[5:])
db.close()
`

// tableDigest summarises the content of the fail2ban tables.
func tableDigest(t *testing.T, path string) string {
	t.Helper()
	db := openRO(t, path)
	var b strings.Builder
	for _, q := range []string{
		"SELECT count(*), total(timeofban), total(length(ip)), total(bantime), total(bancount) FROM bans",
		"SELECT count(*), total(timeofban), total(length(ip)), total(bantime), total(bancount) FROM bips",
		"SELECT count(*), group_concat(name || '=' || enabled) FROM jails",
	} {
		row := db.QueryRow(q)
		var a, c, d, e sql.NullFloat64
		var n sql.NullInt64
		var s sql.NullString
		var err error
		if strings.Contains(q, "jails") {
			err = row.Scan(&n, &s)
		} else {
			err = row.Scan(&n, &a, &c, &d, &e)
		}
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		fmt.Fprintf(&b, "%d %v %v %v %v %q\n", n.Int64, a.Float64, c.Float64, d.Float64, e.Float64, s.String)
	}
	return b.String()
}

// TestPurgeEqualsFail2ban runs fail2ban's own purge and the writer's on two
// copies of one database and compares the result, for several purge ages,
// with a stopped jail that loses all its rows.
func TestPurgeEqualsFail2ban(t *testing.T) {
	src, _ := generate(t, Spec{Rows: 4000, Seed: 6, Now: testNow})
	for _, age := range []time.Duration{24 * time.Hour, 7 * 24 * time.Hour, time.Hour} {
		t.Run(age.String(), func(t *testing.T) {
			dir := t.TempDir()
			ours, theirs := filepath.Join(dir, "ours.sqlite3"), filepath.Join(dir, "theirs.sqlite3")
			for _, p := range []string{ours, theirs} {
				if err := CopyFile(p, src); err != nil {
					t.Fatal(err)
				}
				w := openWriter(t, p)
				// A stopped jail whose rows all go: purge deletes the jail too.
				if err := w.SetJailEnabled(context.Background(), "nginx-http-auth", false); err != nil {
					t.Fatal(err)
				}
				if err := w.SetJailEnabled(context.Background(), "old-jail", true); err != nil {
					t.Fatal(err)
				}
				if err := w.SetJailEnabled(context.Background(), "old-jail", false); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			}
			before := tableDigest(t, ours)
			w := openWriter(t, ours)
			res, err := w.Purge(context.Background(), testNow, age)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			runFail2banPython(t, f2bPython, theirs, itoa(testNow.Unix()), "purge", itoa(int64(age/time.Second)))
			got, want := tableDigest(t, ours), tableDigest(t, theirs)
			if got != want {
				t.Fatalf("after purge(%s):\n ours: %s\nfail2ban's: %s", age, got, want)
			}
			if got == before || res.Bans == 0 || res.Jails != 1 {
				t.Fatalf("purge(%s) deleted nothing worth comparing: %+v", age, res)
			}
		})
	}
}

func TestUnbanEqualsFail2ban(t *testing.T) {
	src, _ := generate(t, Spec{Rows: 3000, Seed: 8, Now: testNow})
	db := openRO(t, src)
	var ip1, ip2, jail string
	if err := db.QueryRow("SELECT ip, jail FROM bans GROUP BY ip, jail HAVING count(*) > 2 LIMIT 1").Scan(&ip1, &jail); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT ip FROM bans WHERE jail = ? AND ip != ? LIMIT 1", jail, ip1).Scan(&ip2); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	for _, tc := range []struct {
		name string
		ips  []string
	}{{"two IPs", []string{ip1, ip2}}, {"whole jail", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ours, theirs := filepath.Join(dir, "ours.sqlite3"), filepath.Join(dir, "theirs.sqlite3")
			for _, p := range []string{ours, theirs} {
				if err := CopyFile(p, src); err != nil {
					t.Fatal(err)
				}
			}
			w := openWriter(t, ours)
			n, err := w.Unban(context.Background(), jail, tc.ips...)
			if err != nil {
				t.Fatal(err)
			}
			if n < 3 {
				t.Fatalf("unban deleted %d bans rows, want at least 3", n)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			runFail2banPython(t, f2bPython, append([]string{theirs, itoa(testNow.Unix()), "unban", jail}, tc.ips...)...)
			if got, want := tableDigest(t, ours), tableDigest(t, theirs); got != want {
				t.Fatalf("after unban:\n ours: %s\nfail2ban's: %s", got, want)
			}
		})
	}
}

func TestAdvanceLogPositions(t *testing.T) {
	path, _ := generate(t, Spec{Rows: 100, Now: testNow})
	before := queryInt(t, openRO(t, path), "SELECT sum(lastfilepos) FROM logs")
	w := openWriter(t, path)
	if err := w.AdvanceLogPositions(context.Background(), 100); err != nil {
		t.Fatal(err)
	}
	if after := queryInt(t, openRO(t, path), "SELECT sum(lastfilepos) FROM logs"); after != before+600 {
		t.Fatalf("lastfilepos sum %d, want %d", after, before+600)
	}
}

func TestOpenWriterRefusesMissingFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sqlite3")
	if _, err := OpenWriter(context.Background(), missing, WriterOptions{}); err == nil {
		t.Fatal("OpenWriter opened a missing file")
	}
	if m, _ := filepath.Glob(missing); len(m) != 0 {
		t.Fatal("OpenWriter created a file")
	}
}
