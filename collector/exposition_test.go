package collector

import (
	"bytes"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// metricMeta is the HELP and TYPE of every metric the collector exposes:
// names, types and meaning are a contract.
var metricMeta = map[string][2]string{
	"fail2ban_up":                                                  {"gauge", "1 when the last read of fail2ban's database succeeded, 0 otherwise."},
	"fail2ban_jail_enabled":                                        {"gauge", "1 when the jail is enabled in fail2ban's jails table, 0 otherwise."},
	"fail2ban_banned_ips":                                          {"gauge", "IPs banned right now by fail2ban's rule on bips: bantime <= -1 OR timeofban + bantime > now."},
	"fail2ban_recent_bans":                                         {"gauge", "Ban events (distinct rows of bans, united with the exporter's ban archive when it is on) whose timeofban lies in the trailing window."},
	"fail2ban_bans_total":                                          {"counter", "Ban events that appeared in fail2ban's database since the exporter started."},
	"fail2ban_oldest_ban_timestamp_seconds":                        {"gauge", "timeofban of the oldest ban event in fail2ban's bans table or, when it is on, the exporter's ban archive: the history horizon of the windows."},
	"bangui_exporter_fail2ban_read_errors_total":                   {"counter", "Failed reads of fail2ban's database by kind of error."},
	"bangui_exporter_fail2ban_skipped_rows":                        {"gauge", "Rows of fail2ban's database that cannot be counted (NULL or invalid ip, jail, timeofban or bantime)."},
	"bangui_exporter_fail2ban_rows":                                {"gauge", "Rows of fail2ban's database held in memory."},
	"bangui_exporter_fail2ban_ips":                                 {"gauge", "Distinct IPs held in memory."},
	"bangui_exporter_fail2ban_schema_version":                      {"gauge", "Schema version of fail2ban's database (2 or 4); 0 when unknown."},
	"bangui_exporter_fail2ban_reconciliations_total":               {"counter", "Reconciliations of a table after rows were deleted (unban, purge) or replaced."},
	"bangui_exporter_fail2ban_read_duration_seconds":               {"gauge", "Duration of the last read of fail2ban's database (incremental refresh)."},
	"bangui_exporter_fail2ban_last_read_success_timestamp_seconds": {"gauge", "Time of the last successful read of fail2ban's database."},
}

// dataMetrics are the metrics whose values come from fail2ban's data.
var dataMetrics = []string{
	"fail2ban_up", "fail2ban_jail_enabled", "fail2ban_banned_ips", "fail2ban_recent_bans",
	"fail2ban_bans_total", "fail2ban_oldest_ban_timestamp_seconds",
	"bangui_exporter_fail2ban_skipped_rows", "bangui_exporter_fail2ban_rows",
	"bangui_exporter_fail2ban_ips", "bangui_exporter_fail2ban_schema_version",
}

// exposition turns sample lines ("name{labels} value") into exposition text
// with the HELP and TYPE of each metric, grouped by metric.
func exposition(t testing.TB, samples string) string {
	t.Helper()
	byName := map[string][]string{}
	for line := range strings.SplitSeq(samples, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if _, ok := metricMeta[name]; !ok {
			t.Fatalf("expected sample of unknown metric %q", name)
		}
		byName[name] = append(byName[name], sortLabels(line))
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		m := metricMeta[n]
		b.WriteString("# HELP " + n + " " + m[1] + "\n# TYPE " + n + " " + m[0] + "\n")
		for _, l := range byName[n] {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// sortLabels puts the labels of a sample line in the order the text format
// renders them (by name), so expectations can be written in the contract's
// order (jail, country, window). Label values must not hold ',' or '}'.
func sortLabels(line string) string {
	open, end := strings.IndexByte(line, '{'), strings.IndexByte(line, '}')
	if open < 0 || end < open {
		return line
	}
	pairs := strings.Split(line[open+1:end], ",")
	sort.Strings(pairs)
	return line[:open+1] + strings.Join(pairs, ",") + line[end:]
}

// expectExposition scrapes x once and compares the named metrics with
// samples; a metric named but absent from samples must be absent.
func expectExposition(t testing.TB, x prometheus.Collector, samples string, names ...string) {
	t.Helper()
	if len(names) == 0 {
		names = dataMetrics
	}
	if err := testutil.CollectAndCompare(x, strings.NewReader(exposition(t, samples)), names...); err != nil {
		t.Fatal(err)
	}
}

// banRow writes one ban as fail2ban does (bans + bips in one transaction)
// with the given data column value (BLOB, TEXT, NULL or garbage).
func (d *f2bDB) banRow(jail, ip string, tob, bantime int64, data any) {
	d.t.Helper()
	tx, err := d.db.Begin()
	if err != nil {
		d.t.Fatal(err)
	}
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

const (
	t0  = int64(1_790_000_000) // the fake clock's start
	day = int64(86400)
)

// allWindows are the windows of the exposition tests: BanGUI's map ranges
// plus one short window.
func allWindows(t testing.TB) []Window { return windowsOf(t, "1h", "24h", "7d", "30d", "365d") }

// v4Fixture is a schema-4 database with every edge case the engine handles: data as
// BLOB, TEXT, NULL and garbage; bantime -1 and -2; expired bans; an exact
// duplicate row; NULL and invalid ips; invalid timeofban and bantime; a
// disabled jail with an old ban.
func v4Fixture(t testing.TB) *f2bDB {
	t.Helper()
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	d.addJail("nginx", true)
	d.addJail("postfix", false)
	blob := []byte(`{"matches": [["2026-11-28 10:00:00", "sshd[1]: Failed password"]], "failures": 1}`)
	// An older event of 198.51.100.1 first: bips then keeps the latest.
	d.banRow("sshd", "198.51.100.1", t0-3*3600, 600, blob)
	d.banRow("sshd", "198.51.100.1", t0-100, 600, blob)                                               // banned
	d.exec("INSERT INTO bans SELECT * FROM bans WHERE ip = '198.51.100.1' AND timeofban = ?", t0-100) // exact duplicate (fail2ban writes some bans twice)
	d.banRow("sshd", "198.51.100.2", t0-1000, 600, blob)                                              // expired
	d.banRow("sshd", "2001:db8::1", t0-50, -1, `{"matches": [], "failures": 0}`)                      // permanent, data as TEXT
	d.banRow("nginx", "203.0.113.5", t0-2*day, -1, []byte{0xff, 0x00, 'x'})                           // permanent, 2 days old, data not JSON
	d.banRow("nginx", "203.0.113.6", t0-10, -2, nil)                                                  // bantime -2 (unknown): banned by fail2ban's rule, data NULL
	d.banRow("postfix", "192.0.2.7", t0-40*day, 3600, "not json")                                     // 40 days old, disabled jail
	// Rows that cannot be counted.
	d.exec("INSERT INTO bans(jail, ip, timeofban, bantime, data) VALUES('sshd', NULL, ?, 600, NULL)", t0-5)
	d.exec("INSERT INTO bans(jail, ip, timeofban, bantime, data) VALUES('sshd', 'not-an-ip', ?, 600, '{}')", t0-5)
	d.exec("INSERT INTO bans(jail, ip, timeofban, bantime, data) VALUES('sshd', '198.51.100.1', 'yesterday', 600, '{}')")
	d.exec("INSERT INTO bips(ip, jail, timeofban, bantime, data) VALUES('not-an-ip', 'sshd', ?, 600, NULL)", t0-5)
	d.exec("INSERT INTO bips(ip, jail, timeofban, bantime, data) VALUES('198.51.100.9', 'sshd', ?, 'forever', NULL)", t0-5)
	return d
}

func fixtureCountries() *tableCountries {
	c := newTableCountries()
	c.set("198.51.100.1", "DE")
	c.set("198.51.100.2", "DE")
	c.set("198.51.100.3", "DE")
	c.set("2001:db8::1", "US")
	c.set("203.0.113.5", "fr") // geo may answer lower case
	return c
}

const v4Expected = `
fail2ban_up 1
fail2ban_jail_enabled{jail="sshd"} 1
fail2ban_jail_enabled{jail="nginx"} 1
fail2ban_jail_enabled{jail="postfix"} 0
fail2ban_banned_ips{jail="sshd",country="DE"} 1
fail2ban_banned_ips{jail="sshd",country="US"} 1
fail2ban_banned_ips{jail="nginx",country="FR"} 1
fail2ban_banned_ips{jail="nginx",country="ZZ"} 1
fail2ban_recent_bans{jail="sshd",country="DE",window="1h"} 2
fail2ban_recent_bans{jail="sshd",country="US",window="1h"} 1
fail2ban_recent_bans{jail="nginx",country="ZZ",window="1h"} 1
fail2ban_recent_bans{jail="sshd",country="DE",window="24h"} 3
fail2ban_recent_bans{jail="sshd",country="US",window="24h"} 1
fail2ban_recent_bans{jail="nginx",country="ZZ",window="24h"} 1
fail2ban_recent_bans{jail="sshd",country="DE",window="7d"} 3
fail2ban_recent_bans{jail="sshd",country="US",window="7d"} 1
fail2ban_recent_bans{jail="nginx",country="ZZ",window="7d"} 1
fail2ban_recent_bans{jail="nginx",country="FR",window="7d"} 1
fail2ban_recent_bans{jail="sshd",country="DE",window="30d"} 3
fail2ban_recent_bans{jail="sshd",country="US",window="30d"} 1
fail2ban_recent_bans{jail="nginx",country="ZZ",window="30d"} 1
fail2ban_recent_bans{jail="nginx",country="FR",window="30d"} 1
fail2ban_recent_bans{jail="sshd",country="DE",window="365d"} 3
fail2ban_recent_bans{jail="sshd",country="US",window="365d"} 1
fail2ban_recent_bans{jail="nginx",country="ZZ",window="365d"} 1
fail2ban_recent_bans{jail="nginx",country="FR",window="365d"} 1
fail2ban_recent_bans{jail="postfix",country="ZZ",window="365d"} 1
fail2ban_oldest_ban_timestamp_seconds 1.786544e+09
bangui_exporter_fail2ban_skipped_rows{table="bans",reason="null_ip"} 1
bangui_exporter_fail2ban_skipped_rows{table="bans",reason="invalid_ip"} 1
bangui_exporter_fail2ban_skipped_rows{table="bans",reason="invalid_timeofban"} 1
bangui_exporter_fail2ban_skipped_rows{table="bips",reason="invalid_ip"} 1
bangui_exporter_fail2ban_skipped_rows{table="bips",reason="invalid_bantime"} 1
bangui_exporter_fail2ban_rows{table="bans"} 11
bangui_exporter_fail2ban_rows{table="bips"} 8
bangui_exporter_fail2ban_ips 6
bangui_exporter_fail2ban_schema_version 4
`

func newFixtureExporter(t testing.TB, path string, clk *clock, countries CountryLookup, opts Options) *Exporter {
	t.Helper()
	opts.DBPath = path
	opts.Now = clk.Now
	if opts.Windows == nil {
		opts.Windows = allWindows(t)
	}
	x := NewExporter(opts, countries)
	t.Cleanup(func() { _ = x.Close() })
	return x
}

// TestExpositionSchemaV4 compares the full exposition of a schema-4
// database holding every edge case, at start and after every kind of
// change fail2ban makes.
func TestExpositionSchemaV4(t *testing.T) {
	d := v4Fixture(t)
	clk := newClock(t0)
	countries := fixtureCountries()
	x := newFixtureExporter(t, d.path, clk, countries, Options{})

	// At start: bans_total is 0 (no series: nothing appeared yet).
	expectExposition(t, x, v4Expected)

	// A scrape without changes and without time passing shows the same.
	expectExposition(t, x, v4Expected)

	// Time passes (45 minutes): 198.51.100.1's ban (tob t0-100, 600 s)
	// expires, the 1h window loses 198.51.100.2 (t0-1000); the permanent
	// bans and bantime -2 stay.
	clk.Add(45 * time.Minute)
	expectExposition(t, x, `
fail2ban_banned_ips{jail="sshd",country="US"} 1
fail2ban_banned_ips{jail="nginx",country="FR"} 1
fail2ban_banned_ips{jail="nginx",country="ZZ"} 1
fail2ban_recent_bans{jail="sshd",country="DE",window="1h"} 1
fail2ban_recent_bans{jail="sshd",country="US",window="1h"} 1
fail2ban_recent_bans{jail="nginx",country="ZZ",window="1h"} 1
`+recentBeyond1h, "fail2ban_banned_ips", "fail2ban_recent_bans")
}

// recentBeyond1h are v4Expected's recent_bans of the windows longer than 1h.
var recentBeyond1h = func() string {
	var b strings.Builder
	for l := range strings.SplitSeq(v4Expected, "\n") {
		if strings.HasPrefix(l, "fail2ban_recent_bans{") && !strings.Contains(l, `window="1h"`) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}()

// TestBansTotal: fail2ban_bans_total is 0 at start whatever the history,
// grows with every new ban event (duplicates of one event count once) and
// never goes down when fail2ban unbans or purges.
func TestBansTotal(t *testing.T) {
	d := v4Fixture(t)
	clk := newClock(t0)
	countries := fixtureCountries()
	x := newFixtureExporter(t, d.path, clk, countries, Options{})
	total := func() map[string]float64 { return only(scrape(t, x), "fail2ban_bans_total") }
	if got := total(); len(got) != 0 {
		t.Fatalf("bans_total at start = %v, want nothing counted", got)
	}

	clk.Add(time.Minute)
	now := clk.Now().Unix()
	d.ban("sshd", "198.51.100.3", now, 600)                                                   // DE
	d.ban("sshd", "198.51.100.1", now, 600)                                                   // DE, again
	d.ban("nginx", "203.0.113.5", now-30, -1)                                                 // FR, permanent
	d.exec("INSERT INTO bans SELECT * FROM bans WHERE rowid = (SELECT max(rowid) FROM bans)") // a duplicate row: the same event
	d.ban("nginx", "203.0.113.77", now, 600)                                                  // no country yet
	want := map[string]float64{
		"fail2ban_bans_total{country=DE,jail=sshd}":  2,
		"fail2ban_bans_total{country=FR,jail=nginx}": 1,
	}
	// A ban with a known country counts in the scrape that reads it.
	assertSamples(t, "after 3 new bans", total(), want)

	// An IP without a country is counted under ZZ once geo had its chance
	// (two minutes).
	clk.Add(3 * time.Minute)
	want["fail2ban_bans_total{country=ZZ,jail=nginx}"] = 1
	assertSamples(t, "after geo's grace period", total(), want)

	// Unban, purge of everything, a jail left without bans: the counter
	// stays.
	d.unban("sshd", "198.51.100.3")
	assertSamples(t, "after unban", total(), want)
	d.purge(clk.Now().Unix(), 0)
	d.exec("DELETE FROM bans")
	d.exec("DELETE FROM bips")
	assertSamples(t, "after purge", total(), want)
	s := scrape(t, x)
	if n := len(only(s, "fail2ban_banned_ips", "fail2ban_recent_bans")); n != 0 {
		t.Fatalf("after deleting every ban: %d banned/recent series left, want none (no stale series)", n)
	}
	if _, ok := s["fail2ban_oldest_ban_timestamp_seconds{}"]; ok {
		t.Fatalf("oldest ban timestamp exposed for an empty bans table")
	}

	// New bans after the purge reuse rowids: still counted.
	clk.Add(time.Minute)
	d.ban("sshd", "198.51.100.2", clk.Now().Unix(), 600)
	want["fail2ban_bans_total{country=DE,jail=sshd}"] = 3
	assertSamples(t, "after a ban into the emptied table", total(), want)

	// A restart of the exporter starts from 0 again: the counter counts
	// what appeared since the exporter started.
	x2 := newFixtureExporter(t, d.path, clk, countries, Options{})
	if got := only(scrape(t, x2), "fail2ban_bans_total"); len(got) != 0 {
		t.Fatalf("a new exporter counts %v at start, want nothing", got)
	}
}

func assertSamples(t testing.TB, what string, got, want map[string]float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
}

// TestSeriesDisappear: a jail/country whose last ban ended or was deleted
// has no series any more (no stale zeros), while jail_enabled stays.
func TestSeriesDisappear(t *testing.T) {
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	d.addJail("nginx", true)
	d.ban("sshd", "198.51.100.1", t0-10, 600)
	d.ban("nginx", "203.0.113.5", t0-10, 600)
	d.ban("nginx", "2001:db8::5", t0-10, 60)
	clk := newClock(t0)
	x := newFixtureExporter(t, d.path, clk, NoCountries{}, Options{Windows: windowsOf(t, "1h")})
	names := []string{"fail2ban_banned_ips", "fail2ban_recent_bans", "fail2ban_jail_enabled"}
	expectExposition(t, x, `
fail2ban_jail_enabled{jail="sshd"} 1
fail2ban_jail_enabled{jail="nginx"} 1
fail2ban_banned_ips{jail="sshd",country="ZZ"} 1
fail2ban_banned_ips{jail="nginx",country="ZZ"} 2
fail2ban_recent_bans{jail="sshd",country="ZZ",window="1h"} 1
fail2ban_recent_bans{jail="nginx",country="ZZ",window="1h"} 2
`, names...)
	// 2001:db8::5's ban (60 s) ends; sshd's only IP is unbanned.
	clk.Add(2 * time.Minute)
	d.unban("sshd", "198.51.100.1")
	expectExposition(t, x, `
fail2ban_jail_enabled{jail="sshd"} 1
fail2ban_jail_enabled{jail="nginx"} 1
fail2ban_banned_ips{jail="nginx",country="ZZ"} 1
fail2ban_recent_bans{jail="nginx",country="ZZ",window="1h"} 2
`, names...)
	// The rest leaves the window and expires; fail2ban stops (all jails 0).
	clk.Add(2 * time.Hour)
	d.exec("UPDATE jails SET enabled = 0")
	expectExposition(t, x, `
fail2ban_jail_enabled{jail="sshd"} 0
fail2ban_jail_enabled{jail="nginx"} 0
`, names...)
}

// TestExpositionSchemaV2: fail2ban 0.9/0.10's database has no bantime and
// no bips; an IP is banned while its latest ban plus the default bantime
// (Options.DefaultBantime, 10m when unset) lies in the future.
func TestExpositionSchemaV2(t *testing.T) {
	build := func(t *testing.T) *f2bDB {
		d := newF2BDB(t, 2)
		d.addJail("sshd", true)
		d.addJail("old", false)
		d.banRow("sshd", "198.51.100.1", t0-300, 0, []byte(`{"failures": 1}`))
		d.exec("INSERT INTO bans SELECT * FROM bans WHERE ip = '198.51.100.1'") // exact duplicate
		d.banRow("sshd", "198.51.100.2", t0-5000, 0, "{}")
		d.banRow("sshd", "198.51.100.2", t0-700, 0, "{}")
		d.banRow("sshd", "198.51.100.3", t0-3000, 0, nil)
		d.banRow("sshd", "198.51.100.3", t0-200, 0, []byte{0xff})
		d.banRow("old", "203.0.113.9", t0-3*day, 0, "{}")
		d.exec("INSERT INTO bans(jail, ip, timeofban, data) VALUES('sshd', NULL, ?, NULL)", t0)
		d.exec("INSERT INTO bans(jail, ip, timeofban, data) VALUES('sshd', 'localhost', ?, NULL)", t0)
		return d
	}
	common := `
fail2ban_up 1
fail2ban_jail_enabled{jail="sshd"} 1
fail2ban_jail_enabled{jail="old"} 0
fail2ban_recent_bans{jail="sshd",country="ZZ",window="1h"} 4
fail2ban_recent_bans{jail="sshd",country="ZZ",window="24h"} 5
fail2ban_recent_bans{jail="sshd",country="ZZ",window="7d"} 5
fail2ban_recent_bans{jail="old",country="ZZ",window="7d"} 1
fail2ban_recent_bans{jail="sshd",country="ZZ",window="30d"} 5
fail2ban_recent_bans{jail="old",country="ZZ",window="30d"} 1
fail2ban_recent_bans{jail="sshd",country="ZZ",window="365d"} 5
fail2ban_recent_bans{jail="old",country="ZZ",window="365d"} 1
fail2ban_oldest_ban_timestamp_seconds 1.7897408e+09
bangui_exporter_fail2ban_skipped_rows{table="bans",reason="null_ip"} 1
bangui_exporter_fail2ban_skipped_rows{table="bans",reason="invalid_ip"} 1
bangui_exporter_fail2ban_rows{table="bans"} 9
bangui_exporter_fail2ban_rows{table="bips"} 0
bangui_exporter_fail2ban_ips 4
bangui_exporter_fail2ban_schema_version 2
`
	tests := []struct {
		name           string
		defaultBantime time.Duration
		banned         string
	}{
		// .1 (t0-300) and .3 (latest t0-200) are within 10 minutes; .2's
		// latest ban (t0-700) is not.
		{"default 10m", 0, `fail2ban_banned_ips{jail="sshd",country="ZZ"} 2`},
		{"10m given", 10 * time.Minute, `fail2ban_banned_ips{jail="sshd",country="ZZ"} 2`},
		{"1h", time.Hour, `fail2ban_banned_ips{jail="sshd",country="ZZ"} 3`},
		{"1m", time.Minute, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := build(t)
			x := newFixtureExporter(t, d.path, newClock(t0), NoCountries{}, Options{DefaultBantime: tt.defaultBantime})
			expectExposition(t, x, common+tt.banned)
		})
	}
}

// TestExpositionUnknownSchema: a database of another schema version, or
// no fail2ban database at all, gives fail2ban_up 0, schema_version 0, a
// read error of kind "schema" and no data series.
func TestExpositionUnknownSchema(t *testing.T) {
	tests := []struct {
		name  string
		setup func(d *f2bDB)
	}{
		{"version 5", func(d *f2bDB) { d.exec("UPDATE fail2banDb SET version = 5") }},
		{"version 3", func(d *f2bDB) { d.exec("UPDATE fail2banDb SET version = 3") }},
		{"version NULL", func(d *f2bDB) { d.exec("UPDATE fail2banDb SET version = NULL") }},
		{"no version row", func(d *f2bDB) { d.exec("DELETE FROM fail2banDb") }},
		{"no fail2banDb table", func(d *f2bDB) { d.exec("DROP TABLE fail2banDb") }},
		{"version 4 without bips", func(d *f2bDB) { d.exec("DROP TABLE bips") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newF2BDB(t, 4)
			d.addJail("sshd", true)
			d.ban("sshd", "198.51.100.1", t0, 600)
			tt.setup(d)
			x := newFixtureExporter(t, d.path, newClock(t0), NoCountries{}, Options{})
			expectExposition(t, x, `
fail2ban_up 0
bangui_exporter_fail2ban_schema_version 0
`)
			expectExposition(t, x, `
bangui_exporter_fail2ban_read_errors_total{kind="missing"} 0
bangui_exporter_fail2ban_read_errors_total{kind="permission"} 0
bangui_exporter_fail2ban_read_errors_total{kind="locked"} 0
bangui_exporter_fail2ban_read_errors_total{kind="corrupt"} 0
bangui_exporter_fail2ban_read_errors_total{kind="schema"} 2
bangui_exporter_fail2ban_read_errors_total{kind="other"} 0
`, "bangui_exporter_fail2ban_read_errors_total")
			if x.Ready() {
				t.Fatal("Ready() with an unknown schema")
			}
		})
	}
}

// TestLint: the exposition passes client_golang's linter and promtool's.
func TestLint(t *testing.T) {
	d := v4Fixture(t)
	clk := newClock(t0)
	x := newFixtureExporter(t, d.path, clk, fixtureCountries(), Options{Windows: windowsOf(t, "24h", "7d", "30d", "365d")})
	// Every family present: a new ban counted in bans_total, and a read
	// error counted.
	scrape(t, x)
	d.ban("sshd", "198.51.100.3", t0, 600)
	scrape(t, x)
	scrape(t, x)
	if _, ok := scrape(t, x)[`fail2ban_bans_total{country=DE,jail=sshd}`]; !ok {
		t.Fatal("no fail2ban_bans_total sample to lint")
	}

	problems, err := testutil.CollectAndLint(x)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	text := expositionText(t, x)
	for name := range metricMeta {
		if !strings.Contains(text, "# TYPE "+name+" ") {
			t.Errorf("metric %s missing from the exposition to lint", name)
		}
	}
	promtool := requireTool(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("promtool check metrics: %v\n%s\n--- exposition:\n%s", err, out, text)
	}
}

// TestPromtoolCatchesProblems makes sure the promtool check above can fail:
// a counter without _total is reported.
func TestPromtoolCatchesProblems(t *testing.T) {
	promtool := requireTool(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader("# HELP bad_counter A counter.\n# TYPE bad_counter counter\nbad_counter 1\n")
	out, err := cmd.CombinedOutput()
	if err == nil && len(bytes.TrimSpace(out)) == 0 {
		t.Fatal("promtool found nothing wrong with a counter named without _total")
	}
}

// expositionText gathers x into the text format Prometheus scrapes.
func expositionText(t testing.TB, x prometheus.Collector) string {
	t.Helper()
	mfs := gather(t, x)
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// requireTool returns the path of an external tool, skipping the test when
// it is missing, or failing it when BANGUI_CI=1.
func requireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("%s not found but BANGUI_CI=1: apt-get install -y %s (%v)", name, debianPackage, err)
		}
		t.Skipf("%s not found (apt-get install -y %s; with BANGUI_CI=1 this fails): %v", name, debianPackage, err)
	}
	return p
}

// TestPurgeKeepsPermanentBans: fail2ban's hourly purge empties bans of old
// rows, permanent ones included, but keeps permanent bips rows: they stay
// banned while the windows and the history horizon lose them.
func TestPurgeKeepsPermanentBans(t *testing.T) {
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	d.ban("sshd", "198.51.100.1", t0-3*day, -1)
	d.ban("sshd", "198.51.100.2", t0-3*day, 600)
	d.ban("sshd", "198.51.100.3", t0-60, 600)
	clk := newClock(t0)
	x := newFixtureExporter(t, d.path, clk, NoCountries{}, Options{Windows: windowsOf(t, "7d")})
	names := []string{"fail2ban_banned_ips", "fail2ban_recent_bans", "fail2ban_oldest_ban_timestamp_seconds"}
	expectExposition(t, x, `
fail2ban_banned_ips{jail="sshd",country="ZZ"} 2
fail2ban_recent_bans{jail="sshd",country="ZZ",window="7d"} 3
fail2ban_oldest_ban_timestamp_seconds 1.7897408e+09
`, names...)
	d.purge(t0, day)
	expectExposition(t, x, `
fail2ban_banned_ips{jail="sshd",country="ZZ"} 2
fail2ban_recent_bans{jail="sshd",country="ZZ",window="7d"} 1
fail2ban_oldest_ban_timestamp_seconds 1.78999994e+09
`, names...)
}
