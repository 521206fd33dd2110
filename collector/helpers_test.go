package collector

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bangui/bangui_exporter/collector/archive"
	"github.com/bangui/bangui_exporter/internal/appdb"
)

// fail2ban 1.0.2's schema version 4, as fail2ban/server/database.py creates it.
const schemaV4 = `
CREATE TABLE IF NOT EXISTS fail2banDb(version INTEGER);
CREATE TABLE IF NOT EXISTS jails(name TEXT NOT NULL UNIQUE, enabled INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS jails_name ON jails(name);
CREATE TABLE IF NOT EXISTS logs(jail TEXT NOT NULL, path TEXT, firstlinemd5 TEXT, lastfilepos INTEGER DEFAULT 0, FOREIGN KEY(jail) REFERENCES jails(name) ON DELETE CASCADE, UNIQUE(jail, path),UNIQUE(jail, path, firstlinemd5));
CREATE INDEX IF NOT EXISTS logs_path ON logs(path);
CREATE INDEX IF NOT EXISTS logs_jail_path ON logs(jail, path);
CREATE TABLE IF NOT EXISTS bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON, FOREIGN KEY(jail) REFERENCES jails(name) );
CREATE INDEX IF NOT EXISTS bans_jail_timeofban_ip ON bans(jail, timeofban);
CREATE INDEX IF NOT EXISTS bans_jail_ip ON bans(jail, ip);
CREATE INDEX IF NOT EXISTS bans_ip ON bans(ip);
CREATE TABLE IF NOT EXISTS bips(ip TEXT NOT NULL, jail TEXT NOT NULL, timeofban INTEGER NOT NULL, bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON, PRIMARY KEY(ip, jail), FOREIGN KEY(jail) REFERENCES jails(name) );
CREATE INDEX IF NOT EXISTS bips_timeofban ON bips(timeofban);
CREATE INDEX IF NOT EXISTS bips_ip ON bips(ip);
INSERT INTO fail2banDb(version) VALUES(4);
`

// fail2ban 0.9/0.10's schema version 2.
const schemaV2 = `
CREATE TABLE fail2banDb(version INTEGER);
CREATE TABLE jails(name TEXT NOT NULL UNIQUE, enabled INTEGER NOT NULL DEFAULT 1);
CREATE INDEX jails_name ON jails(name);
CREATE TABLE logs(jail TEXT NOT NULL, path TEXT, firstlinemd5 TEXT, lastfilepos INTEGER DEFAULT 0, FOREIGN KEY(jail) REFERENCES jails(name) ON DELETE CASCADE, UNIQUE(jail, path), UNIQUE(jail, path, firstlinemd5));
CREATE INDEX logs_path ON logs(path);
CREATE INDEX logs_jail_path ON logs(jail, path);
CREATE TABLE bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, data JSON, FOREIGN KEY(jail) REFERENCES jails(name) );
CREATE INDEX bans_jail_timeofban_ip ON bans(jail, timeofban);
CREATE INDEX bans_jail_ip ON bans(jail, ip);
CREATE INDEX bans_ip ON bans(ip);
INSERT INTO fail2banDb(version) VALUES(2);
`

// f2bDB is a fail2ban database written the way fail2ban writes it.
type f2bDB struct {
	t      testing.TB
	path   string
	db     *sql.DB
	schema int
}

func newF2BDB(t testing.TB, schema int) *f2bDB {
	t.Helper()
	return newF2BDBAt(t, filepath.Join(t.TempDir(), "fail2ban.sqlite3"), schema)
}

func newF2BDBAt(t testing.TB, path string, schema int) *f2bDB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	d := &f2bDB{t: t, path: path, db: db, schema: schema}
	ddl := schemaV4
	if schema == 2 {
		ddl = schemaV2
	}
	d.exec(ddl)
	// fail2ban's own connection settings.
	d.exec("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF")
	return d
}

func (d *f2bDB) exec(q string, args ...any) {
	d.t.Helper()
	if _, err := d.db.Exec(q, args...); err != nil {
		d.t.Fatalf("%s: %v", q, err)
	}
}

func (d *f2bDB) addJail(name string, enabled bool) {
	d.exec("INSERT OR REPLACE INTO jails(name, enabled) VALUES(?, ?)", name, enabled)
}

// ban writes one ban the way fail2ban does: one transaction with an INSERT
// into bans and an INSERT OR REPLACE into bips.
func (d *f2bDB) ban(jail, ip string, tob, bantime int64) {
	d.t.Helper()
	tx, err := d.db.Begin()
	if err != nil {
		d.t.Fatal(err)
	}
	data := []byte(`{"matches": [], "failures": 1}`)
	if d.schema == 2 {
		_, err = tx.Exec("INSERT INTO bans(jail, ip, timeofban, data) VALUES(?, ?, ?, ?)", jail, ip, tob, data)
	} else {
		_, err = tx.Exec("INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data) VALUES(?, ?, ?, ?, 1, ?)", jail, ip, tob, bantime, data)
		if err == nil {
			_, err = tx.Exec("INSERT OR REPLACE INTO bips(ip, jail, timeofban, bantime, bancount, data) VALUES(?, ?, ?, ?, 1, ?)", ip, jail, tob, bantime, data)
		}
	}
	if err != nil {
		_ = tx.Rollback()
		d.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		d.t.Fatal(err)
	}
}

// unban deletes an IP from a jail the way fail2ban's delBan does.
func (d *f2bDB) unban(jail, ip string) {
	d.exec("DELETE FROM bans WHERE jail = ? AND ip = ?", jail, ip)
	if d.schema == 4 {
		d.exec("DELETE FROM bips WHERE jail = ? AND ip = ?", jail, ip)
	}
}

// purge runs fail2ban's purge with dbpurgeage age at now.
func (d *f2bDB) purge(now, age int64) {
	d.exec("DELETE FROM bans WHERE timeofban < ?", now-age)
	if d.schema == 4 {
		d.exec("DELETE FROM bips WHERE timeofban < ? and bantime != -1 and (timeofban + (bantime * 3)) < ?", now-age, now-age)
	}
}

// clock is a settable clock for the engine.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(unix int64) *clock { return &clock{t: time.Unix(unix, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// tableCountries is a deterministic CountryLookup for engine tests: the
// country of an IP is whatever the test put in the table; set bumps the
// generation as geo does when an IP gets a country.
type tableCountries struct {
	mu  sync.Mutex
	m   map[netip.Addr]string
	gen uint64
	// reassigned moves when an IP that had a country gets another or
	// loses it (ReassignCountryLookup).
	reassigned uint64
	tracked    map[netip.Addr]int
}

func newTableCountries() *tableCountries {
	return &tableCountries{m: map[netip.Addr]string{}, tracked: map[netip.Addr]int{}}
}

func (c *tableCountries) set(ip, country string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := netip.MustParseAddr(ip)
	if old := c.m[addr]; old != "" && old != country {
		c.reassigned++
	}
	c.m[addr] = country
	c.gen++
}

func (c *tableCountries) Reassigned() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reassigned
}

func (c *tableCountries) Track(ip netip.Addr) {
	c.mu.Lock()
	c.tracked[ip]++
	c.mu.Unlock()
}

func (c *tableCountries) Untrack(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tracked[ip]--; c.tracked[ip] <= 0 {
		delete(c.tracked, ip)
	}
}

func (c *tableCountries) Country(ip netip.Addr) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[ip]
}

func (c *tableCountries) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// gather registers cs with a pedantic registry and gathers them.
func gather(t testing.TB, cs ...prometheus.Collector) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// scrape gathers cs and returns every sample as "name{k=v,...}" → value,
// with labels sorted.
func scrape(t testing.TB, cs ...prometheus.Collector) map[string]float64 {
	t.Helper()
	mfs := gather(t, cs...)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[sampleKey(mf.GetName(), m.GetLabel())] = value(mf, m)
		}
	}
	return out
}

func sampleKey(name string, labels []*dto.LabelPair) string {
	parts := make([]string, 0, len(labels))
	for _, l := range labels {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

func value(mf *dto.MetricFamily, m *dto.Metric) float64 {
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

// only keeps the samples of the named metrics.
func only(samples map[string]float64, names ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range samples {
		for _, n := range names {
			if strings.HasPrefix(k, n+"{") {
				out[k] = v
			}
		}
	}
	return out
}

// naive recomputes the metrics from scratch with plain SQL and Go maps: the
// reference the engine must equal.
func naive(t testing.TB, d *f2bDB, now int64, windows []Window, countryOf func(netip.Addr) string, defaultBantime int64) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	country := func(a netip.Addr) string {
		if c := normalizeCountry(countryOf(a)); c != "" {
			return c
		}
		return UnknownCountry
	}
	events := bansEvents(t, d)
	var oldest int64 = -1
	latest := map[[2]any]int64{}
	for e := range events {
		for _, w := range windows {
			if e.tob >= now-int64(w.Length/time.Second) {
				out[fmt.Sprintf("fail2ban_recent_bans{country=%s,jail=%s,window=%s}", country(e.ip), e.jail, w.Label)]++
			}
		}
		if oldest < 0 || e.tob < oldest {
			oldest = e.tob
		}
		k := [2]any{e.jail, e.ip}
		if e.tob > latest[k] {
			latest[k] = e.tob
		}
	}
	if oldest >= 0 {
		out["fail2ban_oldest_ban_timestamp_seconds{}"] = float64(oldest)
	}
	banned := map[[2]any]bool{}
	if d.schema == 2 {
		for k, tob := range latest {
			if tob+defaultBantime > now {
				banned[k] = true
			}
		}
	} else {
		rows, err := d.db.Query("SELECT jail, CAST(ip AS TEXT), CAST(timeofban AS INTEGER), CAST(bantime AS INTEGER), typeof(timeofban), typeof(bantime) FROM bips")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var jail, ip sql.NullString
			var tob, bantime sql.NullInt64
			var tt, bt string
			if err := rows.Scan(&jail, &ip, &tob, &bantime, &tt, &bt); err != nil {
				t.Fatal(err)
			}
			a, ok := parseNaiveIP(ip)
			if !ok || !jail.Valid || (tt != "integer" && tt != "real") || tob.Int64 < 0 || (bt != "integer" && bt != "real") {
				continue
			}
			if bantime.Int64 <= -1 || tob.Int64+bantime.Int64 > now {
				banned[[2]any{jail.String, a}] = true
			}
		}
		rows.Close()
	}
	for k := range banned {
		out[fmt.Sprintf("fail2ban_banned_ips{country=%s,jail=%s}", country(k[1].(netip.Addr)), k[0])]++
	}
	return out
}

// naiveBanEvent is one distinct ban event as the naive recomputation sees it.
type naiveBanEvent struct {
	jail string
	ip   netip.Addr
	tob  int64
}

func parseNaiveIP(ip sql.NullString) (netip.Addr, bool) {
	if !ip.Valid {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSpace(ip.String))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// bansEvents reads the distinct countable ban events of d's bans table with
// plain SQL.
func bansEvents(t testing.TB, d *f2bDB) map[naiveBanEvent]bool {
	t.Helper()
	events := map[naiveBanEvent]bool{}
	rows, err := d.db.Query("SELECT jail, CAST(ip AS TEXT), CAST(timeofban AS INTEGER), typeof(timeofban) FROM bans")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var jail sql.NullString
		var ip sql.NullString
		var tob sql.NullInt64
		var typ string
		if err := rows.Scan(&jail, &ip, &tob, &typ); err != nil {
			t.Fatal(err)
		}
		a, ok := parseNaiveIP(ip)
		if !ok || !jail.Valid || (typ != "integer" && typ != "real") || tob.Int64 < 0 {
			continue
		}
		events[naiveBanEvent{jail.String, a, tob.Int64}] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return events
}

// heldIPs are the distinct IPs of d's countable bans and bips rows.
func heldIPs(t testing.TB, d *f2bDB) map[netip.Addr]bool {
	t.Helper()
	out := map[netip.Addr]bool{}
	for ev := range bansEvents(t, d) {
		out[ev.ip] = true
	}
	if d.schema == 2 {
		return out
	}
	rows, err := d.db.Query("SELECT jail, CAST(ip AS TEXT), typeof(timeofban), CAST(timeofban AS INTEGER), typeof(bantime) FROM bips")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var jail, ip sql.NullString
		var tt, bt string
		var tob int64
		if err := rows.Scan(&jail, &ip, &tt, &tob, &bt); err != nil {
			t.Fatal(err)
		}
		a, ok := parseNaiveIP(ip)
		if ok && jail.Valid && (tt == "integer" || tt == "real") && tob >= 0 && (bt == "integer" || bt == "real") {
			out[a] = true
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// withHistory replaces the windows and the horizon of a naive recomputation
// with those of history, the full history of ban events.
func withHistory(naive map[string]float64, history map[naiveBanEvent]bool, now int64, windows []Window, countryOf func(netip.Addr) string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range naive {
		if !strings.HasPrefix(k, "fail2ban_recent_bans{") && !strings.HasPrefix(k, "fail2ban_oldest_ban_timestamp_seconds{") {
			out[k] = v
		}
	}
	var oldest int64 = -1
	for e := range history {
		c := normalizeCountry(countryOf(e.ip))
		if c == "" {
			c = UnknownCountry
		}
		for _, w := range windows {
			if e.tob >= now-int64(w.Length/time.Second) {
				out[fmt.Sprintf("fail2ban_recent_bans{country=%s,jail=%s,window=%s}", c, e.jail, w.Label)]++
			}
		}
		if oldest < 0 || e.tob < oldest {
			oldest = e.tob
		}
	}
	if oldest >= 0 {
		out["fail2ban_oldest_ban_timestamp_seconds{}"] = float64(oldest)
	}
	return out
}

// openAppDB opens a fresh app database, closed when the test ends.
func openAppDB(t testing.TB) *appdb.DB {
	t.Helper()
	db, err := appdb.Open(context.Background(), filepath.Join(t.TempDir(), "bangui.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// openArchive opens the ban archive on db with the test's clock. Tests call
// Flush where the exporter's Run would write.
func openArchive(t testing.TB, db *appdb.DB, clk *clock) *archive.Store {
	t.Helper()
	s, err := archive.Open(context.Background(), db, archive.Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func windowsOf(t testing.TB, labels ...string) []Window {
	t.Helper()
	w, err := ParseWindows(labels)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// unprivilegedChildEnv marks the copy of the test binary that
// runUnprivileged starts as nobody.
const unprivilegedChildEnv = "BANGUI_TEST_UNPRIVILEGED_CHILD"

// runUnprivileged makes the rest of the calling test run where file
// permission bits bind. It returns false when the caller should go on in this
// process (not root: the bits bind already). As root, where they do not, it
// re-runs this very test in a copy of the test binary as nobody (65534),
// fails the test when that run fails, and returns true: the caller must
// return.
func runUnprivileged(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return false
	}
	if os.Getenv(unprivilegedChildEnv) == "1" {
		t.Fatal("the unprivileged child still runs as root")
	}
	const nobody = 65534
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary lives in go's 0700 build directory: copy it where
	// nobody may run it, and give nobody a temporary directory of its own.
	// t.TempDir's parent is 0700: use directories directly under /tmp.
	binDir, err := os.MkdirTemp("", "bangui-unpriv-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(binDir) })
	tmpDir, err := os.MkdirTemp("", "bangui-unpriv-tmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(tmpDir) })
	bin := filepath.Join(binDir, "collector.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{binDir, tmpDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(tmpDir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run", strings.Join(parts, "/"), "-test.count=1", "-test.v")
	cmd.Dir = tmpDir
	cmd.Env = append(os.Environ(), unprivilegedChildEnv+"=1", "TMPDIR="+tmpDir, "HOME="+tmpDir, "GOCOVERDIR=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s as nobody: %v\n%s", t.Name(), err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("%s as nobody did not pass:\n%s", t.Name(), out)
	}
	t.Logf("ran as nobody (uid %d) in a copy of the test binary, where permission bits bind", nobody)
	return true
}
