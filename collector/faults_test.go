package collector

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// faultFixture is a fail2ban database directory and an exporter on it.
type faultFixture struct {
	t      *testing.T
	dir    string
	path   string
	d      *f2bDB // the current writer (nil when the file does not exist)
	clk    *clock
	logs   *testkit.LogBuffer
	x      *Exporter
	good   []byte    // bytes of the last good file, for repairs
	locked *sql.Conn // the connection holding an exclusive lock
}

func newFaultFixture(t *testing.T) *faultFixture {
	dir := t.TempDir()
	fx := &faultFixture{t: t, dir: dir, path: filepath.Join(dir, "fail2ban.sqlite3"), clk: newClock(t0), logs: &testkit.LogBuffer{}}
	fx.x = newFixtureExporter(t, fx.path, fx.clk, NoCountries{}, Options{Logger: fx.logs.Logger(slog.LevelInfo)})
	return fx
}

// create writes a fresh database at fx.path with n banned IPs in sshd
// (replacing whatever was there by a new file).
func (fx *faultFixture) create(n int) {
	fx.t.Helper()
	tmp := filepath.Join(fx.dir, fmt.Sprintf("new-%d.sqlite3", time.Now().UnixNano()))
	d := newF2BDBAt(fx.t, tmp, 4)
	d.addJail("sshd", true)
	for i := range n {
		d.ban("sshd", fmt.Sprintf("198.51.100.%d", i+1), t0-int64(i), 3600)
	}
	if err := d.db.Close(); err != nil {
		fx.t.Fatal(err)
	}
	if err := os.Rename(tmp, fx.path); err != nil {
		fx.t.Fatal(err)
	}
	fx.d = newF2BDBAtExisting(fx.t, fx.path, 4)
	fx.saveGood()
}

func (fx *faultFixture) saveGood() {
	fx.t.Helper()
	b, err := os.ReadFile(fx.path)
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.good = b
}

// restore writes the last good bytes back in place (same inode).
func (fx *faultFixture) restore() {
	fx.t.Helper()
	if err := os.WriteFile(fx.path, fx.good, 0o600); err != nil {
		fx.t.Fatal(err)
	}
}

// newF2BDBAtExisting opens an existing fail2ban database for writing.
func newF2BDBAtExisting(t testing.TB, path string, schema int) *f2bDB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	d := &f2bDB{t: t, path: path, db: db, schema: schema}
	// fail2ban's connection: Python's sqlite3 waits up to 5 s for a lock.
	d.exec("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF; PRAGMA busy_timeout = 5000")
	return d
}

// scrapeState is what one scrape shows of the fault.
func (fx *faultFixture) scrape() (up, banned float64, errs map[string]float64) {
	fx.t.Helper()
	s := scrape(fx.t, fx.x)
	errs = map[string]float64{}
	for _, k := range errorKinds {
		errs[string(k)] = s[fmt.Sprintf("bangui_exporter_fail2ban_read_errors_total{kind=%s}", k)]
	}
	return s["fail2ban_up{}"], s["fail2ban_banned_ips{country=ZZ,jail=sshd}"], errs
}

// TestFaults drives the exporter through every fault a production host throws at it.
// For each: the collector keeps answering with fail2ban_up 0 and no data
// series, read_errors_total counts one error of the right kind per scrape,
// exactly one log line tells about it over five failing scrapes, and the
// first scrape after the file is good again shows fail2ban_up 1 and the
// right counts, with one line saying so.
func TestFaults(t *testing.T) {
	tests := []struct {
		name         string
		kind         errorKind
		unprivileged bool // needs permission bits that bind
		start        int  // banned IPs of the good file before the fault; -1: no file at start
		fault        func(fx *faultFixture)
		repair       func(fx *faultFixture)
		want         float64 // banned IPs after the repair
	}{
		{
			name: "missing at start", kind: kindMissing, start: -1,
			fault:  func(fx *faultFixture) {},
			repair: func(fx *faultFixture) { fx.create(3) },
			want:   3,
		},
		{
			name: "deleted", kind: kindMissing, start: 2,
			fault: func(fx *faultFixture) {
				if err := os.Remove(fx.path); err != nil {
					fx.t.Fatal(err)
				}
			},
			repair: func(fx *faultFixture) { fx.create(4) }, // fail2ban starts a new database
			want:   4,
		},
		{
			name: "unreadable at start", kind: kindPermission, unprivileged: true, start: -1,
			fault: func(fx *faultFixture) {
				fx.create(2)
				if err := os.Chmod(fx.path, 0); err != nil {
					fx.t.Fatal(err)
				}
			},
			repair: func(fx *faultFixture) {
				if err := os.Chmod(fx.path, 0o600); err != nil {
					fx.t.Fatal(err)
				}
			},
			want: 2,
		},
		{
			name: "replaced by an unreadable file", kind: kindPermission, unprivileged: true, start: 2,
			fault: func(fx *faultFixture) {
				fx.create(5)
				if err := os.Chmod(fx.path, 0); err != nil {
					fx.t.Fatal(err)
				}
			},
			repair: func(fx *faultFixture) {
				if err := os.Chmod(fx.path, 0o600); err != nil {
					fx.t.Fatal(err)
				}
			},
			want: 5,
		},
		{
			name: "locked past the busy timeout", kind: kindLocked, start: 2,
			fault: func(fx *faultFixture) {
				// Another connection holds an EXCLUSIVE lock (a rollback
				// journal, as other connections see fail2ban's database)
				// and writes one more ban it commits at the repair.
				ctx := context.Background()
				conn, err := fx.d.db.Conn(ctx)
				if err != nil {
					fx.t.Fatal(err)
				}
				for _, q := range []string{"PRAGMA journal_mode = DELETE", "BEGIN EXCLUSIVE",
					fmt.Sprintf("INSERT INTO bips(ip, jail, timeofban, bantime) VALUES('203.0.113.1', 'sshd', %d, 3600)", t0)} {
					if _, err := conn.ExecContext(ctx, q); err != nil {
						fx.t.Fatalf("%s: %v", q, err)
					}
				}
				fx.locked = conn
			},
			repair: func(fx *faultFixture) {
				if _, err := fx.locked.ExecContext(context.Background(), "COMMIT"); err != nil {
					fx.t.Fatal(err)
				}
				_ = fx.locked.Close()
			},
			want: 3,
		},
		{
			name: "overwritten with garbage", kind: kindCorrupt, start: 2,
			fault: func(fx *faultFixture) {
				garbage := []byte(strings.Repeat("this is no sqlite database\n", len(fx.good)/27+1))[:len(fx.good)]
				if err := os.WriteFile(fx.path, garbage, 0o600); err != nil {
					fx.t.Fatal(err)
				}
			},
			repair: func(fx *faultFixture) { fx.restore() },
			want:   2,
		},
		{
			name: "truncated to half", kind: kindCorrupt, start: 200,
			fault: func(fx *faultFixture) {
				if err := os.Truncate(fx.path, int64(len(fx.good)/2)); err != nil {
					fx.t.Fatal(err)
				}
			},
			repair: func(fx *faultFixture) { fx.restore() },
			want:   200,
		},
		{
			name: "truncated to zero bytes", kind: kindCorrupt, start: 3,
			fault: func(fx *faultFixture) {
				if err := os.Truncate(fx.path, 0); err != nil {
					fx.t.Fatal(err)
				}
			},
			repair: func(fx *faultFixture) { fx.restore() },
			want:   3,
		},
		{
			name: "truncated inside the header", kind: kindCorrupt, start: 3,
			fault: func(fx *faultFixture) {
				if err := os.Truncate(fx.path, 40); err != nil {
					fx.t.Fatal(err)
				}
			},
			repair: func(fx *faultFixture) { fx.restore() },
			want:   3,
		},
		{
			name: "schema changed to an unknown version in place", kind: kindSchema, start: 2,
			fault:  func(fx *faultFixture) { fx.d.exec("UPDATE fail2banDb SET version = 5") },
			repair: func(fx *faultFixture) { fx.d.exec("UPDATE fail2banDb SET version = 4") },
			want:   2,
		},
		{
			name: "replaced by a file of an unknown schema", kind: kindSchema, start: 2,
			fault: func(fx *faultFixture) {
				fx.create(6)
				fx.d.exec("UPDATE fail2banDb SET version = 99")
			},
			repair: func(fx *faultFixture) { fx.d.exec("UPDATE fail2banDb SET version = 4") },
			want:   6,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unprivileged && runUnprivileged(t) {
				return
			}
			t.Parallel()
			fx := newFaultFixture(t)
			if tt.start >= 0 {
				fx.create(tt.start)
				if up, banned, _ := fx.scrape(); up != 1 || banned != float64(tt.start) {
					t.Fatalf("before the fault: up %v, banned %v; want 1, %d", up, banned, tt.start)
				}
				if !fx.x.Ready() {
					t.Fatal("not ready after a good read")
				}
			}
			fx.logs.Take()
			tt.fault(fx)
			for i := 1; i <= 5; i++ {
				up, banned, errs := fx.scrape()
				if up != 0 || banned != 0 {
					t.Fatalf("failing scrape %d: up %v, banned %v; want 0 and no series", i, up, banned)
				}
				for k, v := range errs {
					want := 0.0
					if k == string(tt.kind) {
						want = float64(i)
					}
					if v != want {
						t.Fatalf("failing scrape %d: read_errors_total = %v; want %v of kind %s only", i, errs, i, tt.kind)
					}
				}
				fx.clk.Add(time.Minute)
			}
			var errLines []string
			for _, l := range fx.logs.Take() {
				if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "replaced") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 || !strings.Contains(errLines[0], "level=ERROR") || !strings.Contains(errLines[0], "kind="+string(tt.kind)) {
				t.Fatalf("five failing scrapes logged %d lines, want one ERROR line of kind %s:\n%s", len(errLines), tt.kind, strings.Join(errLines, "\n"))
			}

			tt.repair(fx)
			up, banned, _ := fx.scrape()
			if up != 1 || banned != tt.want {
				t.Fatalf("first scrape after the repair: up %v, banned %v; want 1 and %v", up, banned, tt.want)
			}
			if !fx.x.Ready() {
				t.Fatal("not ready after the repair")
			}
			lines := fx.logs.Take()
			recovered := 0
			for _, l := range lines {
				if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
					t.Errorf("repair logged %q", l)
				}
				if strings.Contains(l, "readable again") {
					recovered++
				}
			}
			if recovered != 1 || len(lines) != 1 {
				t.Fatalf("repair logged %d lines (%d recovery lines), want exactly one recovery line:\n%s", len(lines), recovered, strings.Join(lines, "\n"))
			}
			// Good from now on: no more lines.
			for range 3 {
				if up, _, _ := fx.scrape(); up != 1 {
					t.Fatal("down again after the repair")
				}
			}
			if lines := fx.logs.Take(); len(lines) != 0 {
				t.Fatalf("good scrapes logged:\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}

// TestReplacedFile: fail2ban reinstalled (the database replaced by another
// file, a new inode). The exporter reads the new file from scratch within
// the scrape that sees it, logs one line, stays up, and fail2ban_bans_total
// does not go down; later writes to the new file are read incrementally.
func TestReplacedFile(t *testing.T) {
	fx := newFaultFixture(t)
	fx.create(2)
	fx.scrape()
	fx.d.ban("sshd", "203.0.113.10", t0, 3600) // counted in bans_total
	if s := scrape(t, fx.x); s["fail2ban_bans_total{country=ZZ,jail=sshd}"] != 1 {
		t.Fatalf("bans_total = %v, want 1", s["fail2ban_bans_total{country=ZZ,jail=sshd}"])
	}
	fx.logs.Take()

	// The new file: other jails, other bans.
	tmp := filepath.Join(fx.dir, "reinstalled.sqlite3")
	d := newF2BDBAt(t, tmp, 4)
	d.addJail("sshd", false)
	d.addJail("nginx", true)
	for i := range 7 {
		d.ban("nginx", fmt.Sprintf("192.0.2.%d", i+1), t0, 3600)
	}
	if err := os.Rename(tmp, fx.path); err != nil {
		t.Fatal(err)
	}
	s := scrape(t, fx.x)
	assertSamples(t, "after the replacement", only(s, "fail2ban_up", "fail2ban_banned_ips", "fail2ban_jail_enabled", "fail2ban_bans_total"), map[string]float64{
		"fail2ban_up{}": 1,
		"fail2ban_banned_ips{country=ZZ,jail=nginx}": 7,
		"fail2ban_jail_enabled{jail=sshd}":           0,
		"fail2ban_jail_enabled{jail=nginx}":          1,
		"fail2ban_bans_total{country=ZZ,jail=sshd}":  1,
	})
	lines := fx.logs.Take()
	warn := 0
	for _, l := range lines {
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("replacement logged an error: %s", l)
		}
		if strings.Contains(l, "level=WARN") {
			warn++
		}
	}
	if warn != 1 {
		t.Fatalf("replacement logged %d warnings, want 1:\n%s", warn, strings.Join(lines, "\n"))
	}
	// The new file is followed incrementally.
	d.ban("nginx", "192.0.2.100", t0, 3600)
	s = scrape(t, fx.x)
	if s["fail2ban_banned_ips{country=ZZ,jail=nginx}"] != 8 || s["fail2ban_bans_total{country=ZZ,jail=nginx}"] != 1 || s["fail2ban_bans_total{country=ZZ,jail=sshd}"] != 1 {
		t.Fatalf("after a ban into the new file: %v", only(s, "fail2ban_banned_ips", "fail2ban_bans_total"))
	}
	if lines := fx.logs.Take(); len(lines) != 0 {
		t.Fatalf("a ban into the new file logged:\n%s", strings.Join(lines, "\n"))
	}
}

// TestSchemaUpgradeInPlace: fail2ban 0.11 upgrades a schema-2 database to
// schema 4 in the same file. The exporter must notice and switch to bips,
// within a scrape or two.
func TestSchemaUpgradeInPlace(t *testing.T) {
	d := newF2BDB(t, 2)
	d.addJail("sshd", true)
	d.ban("sshd", "198.51.100.1", t0-100, 0) // banned under the 10m default
	clk := newClock(t0)
	x := newFixtureExporter(t, d.path, clk, NoCountries{}, Options{})
	if s := scrape(t, x); s["bangui_exporter_fail2ban_schema_version{}"] != 2 || s["fail2ban_banned_ips{country=ZZ,jail=sshd}"] != 1 {
		t.Fatalf("schema 2: %v", only(s, "bangui_exporter_fail2ban_schema_version", "fail2ban_banned_ips"))
	}
	// fail2ban's updateDb from version 2: the old bans get bantime -2 and
	// a bips table is filled; here 198.51.100.1 is banned for a day.
	d.exec(`ALTER TABLE bans RENAME TO _bans;
CREATE TABLE bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON, FOREIGN KEY(jail) REFERENCES jails(name));
INSERT INTO bans SELECT jail, ip, timeofban, -2, 1, data FROM _bans;
DROP TABLE _bans;
CREATE TABLE bips(ip TEXT NOT NULL, jail TEXT NOT NULL, timeofban INTEGER NOT NULL, bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON, PRIMARY KEY(ip, jail), FOREIGN KEY(jail) REFERENCES jails(name));
INSERT INTO bips(ip, jail, timeofban, bantime) VALUES('198.51.100.1', 'sshd', ` + fmt.Sprint(t0-100) + `, 86400);
UPDATE fail2banDb SET version = 4;`)
	d.schema = 4
	clk.Add(time.Hour) // past the 10m default: only bips keeps it banned
	var s map[string]float64
	for range 2 {
		s = scrape(t, x)
		if s["bangui_exporter_fail2ban_schema_version{}"] == 4 {
			break
		}
	}
	if s["bangui_exporter_fail2ban_schema_version{}"] != 4 || s["fail2ban_up{}"] != 1 || s["fail2ban_banned_ips{country=ZZ,jail=sshd}"] != 1 {
		t.Fatalf("after the upgrade to schema 4: %v", only(s, "fail2ban_up", "bangui_exporter_fail2ban_schema_version", "fail2ban_banned_ips"))
	}
}

// TestUnreadableWhileOpen documents what chmod 000 does to a database the
// exporter already has open: nothing. Its open file descriptor keeps
// reading the same file, which is still fail2ban's live database, so
// fail2ban_up stays 1 and new bans are counted. (An unreadable file is
// caught when the exporter opens it: at start, after a replacement or after
// any fault that closed it — see TestFaults.)
func TestUnreadableWhileOpen(t *testing.T) {
	if runUnprivileged(t) {
		return
	}
	fx := newFaultFixture(t)
	fx.create(2)
	fx.scrape()
	if err := os.Chmod(fx.path, 0); err != nil {
		t.Fatal(err)
	}
	if f, err := os.Open(fx.path); err == nil {
		f.Close()
		t.Fatal("chmod 000 did not bind")
	}
	fx.d.ban("sshd", "203.0.113.1", t0, 3600) // the writer's connection is open too
	if up, banned, _ := fx.scrape(); up != 1 || banned != 3 {
		t.Fatalf("up %v banned %v, want 1 and 3", up, banned)
	}
}

// TestWarm: Warm retries until the database can be read, and Ready turns
// true then.
func TestWarm(t *testing.T) {
	fx := newFaultFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { fx.x.Warm(ctx); close(done) }()
	testkit.EventuallyTrue(t, 30*time.Second, "Warm's first failed read", func() bool {
		return fx.logs.Count("cannot read fail2ban's database") > 0
	})
	if fx.x.Ready() {
		t.Fatal("ready without a database")
	}
	fx.create(1)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Warm did not return after the database appeared")
	}
	if !fx.x.Ready() {
		t.Fatal("not ready after Warm")
	}
}

// TestConcurrentScrapesWhileWriting: several scrapes at once while the
// database is written share refreshes, never fail and never race (run with
// -race); once the writes stop, every scraper sees the final count.
func TestConcurrentScrapesWhileWriting(t *testing.T) {
	fx := newFaultFixture(t)
	fx.create(0)
	const bans = 300
	stop := make(chan struct{})
	errs := make(chan string, 16)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if s := scrape(t, fx.x); s["fail2ban_up{}"] != 1 {
					errs <- fmt.Sprintf("fail2ban_up %v during writes", s["fail2ban_up{}"])
					return
				}
			}
		})
	}
	for i := range bans {
		fx.d.ban("sshd", fmt.Sprintf("192.0.%d.%d", i/200, i%200+1), t0, 3600)
		if i%50 == 0 {
			fx.d.unban("sshd", fmt.Sprintf("192.0.%d.%d", i/200, i%200+1))
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if _, banned, _ := fx.scrape(); banned != bans-bans/50 {
		t.Fatalf("banned %v after the writes, want %d", banned, bans-bans/50)
	}
}
