package f2bgen

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func within(got, want int, tolerance float64) bool {
	return math.Abs(float64(got)-float64(want)) <= tolerance*float64(want)
}

// TestGenerateStatsMatchDatabase checks that Stats is exactly what the file
// holds (by SQL over the file) and that it meets the spec within tolerance.
func TestGenerateStatsMatchDatabase(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"6k schema 4", Spec{Rows: 6_000, Seed: 1, Now: testNow}},
		{"8k schema 4, more IPv6, 3 matches", Spec{Rows: 8_000, Seed: 7, Now: testNow, IPv6Share: 0.2, MatchesPerBan: 3}},
		{"5k schema 2", Spec{Rows: 5_000, Seed: 3, Now: testNow, Schema: 2}},
		{"tiny", Spec{Rows: 12, Seed: 5, Now: testNow}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, st := generate(t, tc.spec)
			db := openRO(t, path)
			n := tc.spec.Rows
			now := testNow.Unix()
			checks := []struct {
				what string
				got  int64
				want int
			}{
				{"bans rows", queryInt(t, db, "SELECT count(*) FROM bans"), st.BanRows},
				{"distinct IPs", queryInt(t, db, "SELECT count(DISTINCT ip) FROM bans"), st.DistinctIPs},
				{"IPv6", queryInt(t, db, "SELECT count(DISTINCT ip) FROM bans WHERE ip LIKE '%:%'"), st.IPv6},
				{"duplicate rows", queryInt(t, db, "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT * FROM bans)) FROM bans"), st.DuplicateRows},
				{"manual bans", queryInt(t, db, "SELECT count(*) FROM bans WHERE CAST(data AS TEXT) = '{\"matches\": [], \"failures\": 0}'"), st.ManualRows},
				{"oldest", queryInt(t, db, "SELECT min(timeofban) FROM bans"), int(st.OldestBan.Unix())},
				{"newest", queryInt(t, db, "SELECT max(timeofban) FROM bans"), int(st.NewestBan.Unix())},
				{"data not BLOB", queryInt(t, db, "SELECT count(*) FROM bans WHERE typeof(data) != 'blob'"), 0},
				{"data not JSON", queryInt(t, db, "SELECT count(*) FROM bans WHERE NOT json_valid(CAST(data AS TEXT))"), 0},
				{"jails", queryInt(t, db, "SELECT count(*) FROM jails WHERE enabled = 1"), len(DefaultJails())},
				{"logs", queryInt(t, db, "SELECT count(*) FROM logs"), len(DefaultJails())},
				{"rows outside history", queryInt(t, db, "SELECT count(*) FROM bans WHERE timeofban > ? OR timeofban < ?", now, now-30*86400), 0},
			}
			if st.Schema == 4 {
				checks = append(checks, []struct {
					what string
					got  int64
					want int
				}{
					{"bips rows", queryInt(t, db, "SELECT count(*) FROM bips"), st.BipsRows},
					{"permanent rows", queryInt(t, db, "SELECT count(*) FROM bans WHERE bantime = -1"), st.PermanentRows},
					{"currently banned", queryInt(t, db, "SELECT count(*) FROM bips WHERE bantime <= -1 OR timeofban + bantime > ?", now), st.CurrentlyBanned},
					// bips is the last inserted bans row of each (ip, jail).
					{"bips rows not the last ban", queryInt(t, db, `SELECT count(*) FROM bips b WHERE NOT EXISTS (
						SELECT 1 FROM bans x WHERE x.ip = b.ip AND x.jail = b.jail AND x.timeofban = b.timeofban
						AND x.bantime = b.bantime AND x.bancount = b.bancount AND x.data = b.data
						AND x.rowid = (SELECT max(rowid) FROM bans y WHERE y.ip = b.ip AND y.jail = b.jail))`), 0},
					{"pairs without bips row", queryInt(t, db, "SELECT count(*) FROM (SELECT DISTINCT ip, jail FROM bans) p WHERE NOT EXISTS (SELECT 1 FROM bips b WHERE b.ip = p.ip AND b.jail = p.jail)"), 0},
				}...)
				for _, js := range st.Jails {
					checks = append(checks, []struct {
						what string
						got  int64
						want int
					}{
						{js.Name + " bans", queryInt(t, db, "SELECT count(*) FROM bans WHERE jail = ?", js.Name), js.BanRows},
						{js.Name + " bips", queryInt(t, db, "SELECT count(*) FROM bips WHERE jail = ?", js.Name), js.BipsRows},
						{js.Name + " banned", queryInt(t, db, "SELECT count(*) FROM bips WHERE jail = ? AND (bantime <= -1 OR timeofban + bantime > ?)", js.Name, now), js.CurrentlyBanned},
					}...)
				}
			}
			for _, c := range checks {
				if c.got != int64(c.want) {
					t.Errorf("%s: database has %d, Stats says %d", c.what, c.got, c.want)
				}
			}
			if n < 1000 {
				return
			}
			// The spec, within tolerance.
			if !within(st.BanRows, n, 0) {
				t.Errorf("rows %d, want %d", st.BanRows, n)
			}
			if !within(st.DistinctIPs, int(0.235*float64(n)), 0.01) {
				t.Errorf("distinct IPs %d, want about %d", st.DistinctIPs, int(0.235*float64(n)))
			}
			if ipv6 := tc.spec.IPv6Share; ipv6 > 0 && !within(st.IPv6, int(ipv6*float64(st.DistinctIPs)), 0.25) {
				t.Errorf("IPv6 %d of %d, want share %v", st.IPv6, st.DistinctIPs, ipv6)
			}
			if st.IPv6 == 0 {
				t.Errorf("no IPv6 address")
			}
			if st.DuplicateRows == 0 {
				t.Errorf("no duplicate rows")
			}
			if st.Schema == 4 {
				if !within(st.BipsRows, n*49/100, 0.01) {
					t.Errorf("bips %d, want about %d", st.BipsRows, n*49/100)
				}
				if share := float64(st.PermanentRows) / float64(n); share < 0.01 || share > 0.08 {
					t.Errorf("permanent share %.3f, want a few percent", share)
				}
			}
			if span := st.NewestBan.Sub(st.OldestBan); span < 29*24*time.Hour {
				t.Errorf("history spans %s, want about 30 days", span)
			}
			// Every address is public and written canonically.
			rows, err := db.Query("SELECT DISTINCT ip FROM bans")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = rows.Close() }()
			for rows.Next() {
				var ip string
				if err := rows.Scan(&ip); err != nil {
					t.Fatal(err)
				}
				a, err := netip.ParseAddr(ip)
				if err != nil || !IsPublic(a) || a.String() != ip {
					t.Fatalf("address %q is not a canonical public address (%v)", ip, err)
				}
			}
			// data carries what fail2ban's tickets carry.
			var data string
			if err := db.QueryRow("SELECT CAST(data AS TEXT) FROM bans WHERE json_extract(CAST(data AS TEXT), '$.failures') > 0 LIMIT 1").Scan(&data); err != nil {
				t.Fatal(err)
			}
			var decoded struct {
				Matches  [][]string `json:"matches"`
				Failures int        `json:"failures"`
			}
			if err := json.Unmarshal([]byte(data), &decoded); err != nil || decoded.Failures == 0 || len(decoded.Matches) == 0 || len(decoded.Matches[0]) != 3 {
				t.Errorf("data %s: %+v %v", data, decoded, err)
			}
		})
	}
}

// TestBantimeIncrement checks fail2ban's bantime.increment arithmetic and
// that an IP is banned again in a jail only after its previous ban ended.
func TestBantimeIncrement(t *testing.T) {
	path, _ := generate(t, Spec{Rows: 10_000, Seed: 11, Now: testNow})
	db := openRO(t, path)
	for _, j := range DefaultJails() {
		base := int64(j.BanTime / time.Second)
		var bad int64
		switch {
		case j.Permanent():
			bad = queryInt(t, db, "SELECT count(*) FROM bans WHERE jail = ? AND (bantime != -1 OR bancount != 1)", j.Name)
			if n := queryInt(t, db, "SELECT count(*) FROM (SELECT ip FROM (SELECT DISTINCT * FROM bans WHERE jail = ?) GROUP BY ip HAVING count(*) > 1)", j.Name); n != 0 {
				t.Errorf("%s: a permanently banned IP was banned again", j.Name)
			}
		case j.Increment:
			bad = queryInt(t, db, "SELECT count(*) FROM bans WHERE jail = ? AND bantime != max(?, min(? << min(bancount - 1, 20), ?))",
				j.Name, base, base, int64(j.MaxTime/time.Second))
			if maxCount := queryInt(t, db, "SELECT max(bancount) FROM bans WHERE jail = ?", j.Name); maxCount < 4 {
				t.Errorf("%s: no repeat offender reached bancount 4 (max %d)", j.Name, maxCount)
			}
		default:
			bad = queryInt(t, db, "SELECT count(*) FROM bans WHERE jail = ? AND (bantime != ? OR bancount != 1)", j.Name, base)
		}
		if bad != 0 {
			t.Errorf("%s: %d rows with a wrong bantime or bancount", j.Name, bad)
		}
	}
	overlapping := queryInt(t, db, `SELECT count(*) FROM (
		SELECT timeofban, lag(timeofban) OVER w AS prev, lag(bantime) OVER w AS prevbt
		FROM (SELECT DISTINCT jail, ip, timeofban, bantime FROM bans)
		WINDOW w AS (PARTITION BY jail, ip ORDER BY timeofban))
		WHERE prev IS NOT NULL AND prevbt >= 0 AND timeofban < prev + prevbt`)
	if overlapping != 0 {
		t.Errorf("%d bans start before the previous ban of the same IP in the same jail ended", overlapping)
	}
}

// TestBipsAsFail2banRestoresThem compares Stats' currently-banned counts
// with what fail2ban's own Fail2BanDb.getCurrentBans restores per jail, and
// checks that fail2ban's JSON converter decodes every data column.
func TestBipsAsFail2banRestoresThem(t *testing.T) {
	path, st := generate(t, Spec{Rows: 5_000, Seed: 2, Now: testNow})
	out := runFail2banPython(t, `
import sys
from fail2ban.server.database import Fail2BanDb
db = Fail2BanDb(sys.argv[1])
now = int(sys.argv[2])
class Jail:
    def __init__(self, name): self.name = name
for name in sys.argv[3:]:
    tickets = db.getCurrentBans(jail=Jail(name), fromtime=now, correctBanTime=False)
    print(name, len(tickets))
bad = 0
for (data,) in db._db.cursor().execute("SELECT data FROM bans"):
    if not isinstance(data, dict) or "matches" not in data or "failures" not in data:
        bad += 1
print("undecodable", bad)
`, append([]string{path, itoa(testNow.Unix())}, jailNames(st)...)...)
	want := map[string]int{"undecodable": 0}
	for _, js := range st.Jails {
		want[js.Name] = js.CurrentlyBanned
	}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var name string
		var n int
		if _, err := fmtSscan(line, &name, &n); err != nil {
			t.Fatalf("python output %q: %v", line, err)
		}
		if want[name] != n {
			t.Errorf("%s: fail2ban restores %d, Stats says %d", name, n, want[name])
		}
		delete(want, name)
	}
	if len(want) != 0 {
		t.Errorf("no answer from fail2ban for %v", want)
	}
}

func TestDeterministic(t *testing.T) {
	spec := Spec{Rows: 5_000, Seed: 42, Now: testNow}
	a, sa := generate(t, spec)
	b, sb := generate(t, spec)
	c, _ := generate(t, Spec{Rows: 5_000, Seed: 43, Now: testNow})
	if fileHash(t, a) != fileHash(t, b) {
		t.Errorf("two databases of one spec differ")
	}
	sa.Elapsed, sb.Elapsed = 0, 0
	if !jsonEqual(t, sa, sb) {
		t.Errorf("stats differ: %+v vs %+v", sa, sb)
	}
	if fileHash(t, a) == fileHash(t, c) {
		t.Errorf("another seed gave the same database")
	}
}

func TestSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no rows", Spec{Now: testNow}, "Rows"},
		{"no now", Spec{Rows: 10}, "Now"},
		{"schema 3", Spec{Rows: 10, Now: testNow, Schema: 3}, "Schema"},
		{"pairs below IPs", Spec{Rows: 10, Now: testNow, IPsPerRow: 0.5, PairsPerRow: 0.4}, "PairsPerRow"},
		{"share above 1", Spec{Rows: 10, Now: testNow, IPv6Share: 1.5}, "IPv6Share"},
		{"duplicate jail", Spec{Rows: 10, Now: testNow, Jails: []Jail{{Name: "a", Weight: 1}, {Name: "a", Weight: 1}}}, "repeated"},
		{"64 jails", Spec{Rows: 10, Now: testNow, Jails: manyJails(64)}, "at most 63"},
		{"too many bans for permanent jails", Spec{Rows: 1000, Now: testNow, IPsPerRow: 0.2, PairsPerRow: 0.2, Jails: []Jail{{Name: "p", Weight: 1, BanTime: -1}}}, "do not fit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Generate(context.Background(), filepath.Join(t.TempDir(), "x.sqlite3"), tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestGenerateRefusesExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fail2ban.sqlite3")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(context.Background(), path, Spec{Rows: 10, Now: testNow}); err == nil {
		t.Fatal("Generate overwrote an existing file")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatalf("existing file changed: %q", b)
	}
}

func TestGenerateHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	path := filepath.Join(t.TempDir(), "fail2ban.sqlite3")
	if _, err := Generate(ctx, path, Spec{Rows: 50_000, Now: testNow}); err == nil {
		t.Fatal("Generate succeeded with a cancelled context")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a cancelled Generate left %s (%v)", path, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 0 {
		t.Fatalf("a cancelled Generate left files: %v", entries)
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}

func jailNames(st Stats) []string {
	var names []string
	for _, j := range st.Jails {
		names = append(names, j.Name)
	}
	return names
}

func manyJails(n int) []Jail {
	jails := make([]Jail, n)
	for i := range jails {
		jails[i] = Jail{Name: fmt.Sprintf("jail%d", i), Weight: 1}
	}
	return jails
}
