package f2bsandbox

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openDB opens the sandbox's fail2ban database strictly read-only.
func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	u := url.URL{Scheme: "file", Path: path, RawQuery: "mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// bipsCount counts the jail's rows in bips that fail2ban's own rule says are
// banned now.
func bipsCount(t *testing.T, db *sql.DB, jail string) int {
	t.Helper()
	var n int
	err := db.QueryRow(`SELECT count(*) FROM bips WHERE jail = ? AND (bantime <= -1 OR timeofban + bantime > ?)`, jail, time.Now().Unix()).Scan(&n)
	if err != nil {
		t.Fatalf("count bips of %s: %v", jail, err)
	}
	return n
}

// waitBips waits until the DB holds want currently-banned rows for jail
// (fail2ban writes a ban a few ms to ~1 s after it happens).
func waitBips(t *testing.T, db *sql.DB, jail string, want int) {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, func() error {
		if got := bipsCount(t, db, jail); got != want {
			return fmt.Errorf("jail %s: %d currently-banned rows in bips, want %d", jail, got, want)
		}
		return nil
	})
}

func mustBanned(ctx context.Context, t *testing.T, s *Sandbox, jail string, want int) {
	t.Helper()
	got, err := s.CurrentlyBanned(ctx, jail)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("jail %s: currently banned %d, want %d", jail, got, want)
	}
}

func TestSandboxLayout(t *testing.T) {
	s := StartT(t, Options{})
	if got, want := s.Jails(), []string{"sshd", "perm", "incr"}; !slices.Equal(got, want) {
		t.Fatalf("Jails() = %v, want %v", got, want)
	}
	for _, p := range []string{s.DBPath(), s.PIDFile(), s.ServerLog(), s.ConfigDir(), s.LogPath("sshd")} {
		if !strings.HasPrefix(p, s.Dir()+string(filepath.Separator)) {
			t.Errorf("%s lies outside the sandbox %s", p, s.Dir())
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%v", err)
		}
	}
	if fi, err := os.Stat(s.Socket()); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v (mode %v)", s.Socket(), err, fi)
	}
	ctx := testCtx(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ping"}, "pong"},
		{[]string{"get", "dbfile"}, s.DBPath()},
		{[]string{"get", "dbpurgeage"}, "86400"},
		{[]string{"get", "sshd", "bantime"}, "3600"},
		{[]string{"get", "perm", "bantime"}, "-1"},
		{[]string{"get", "incr", "bantime"}, "600"},
		{[]string{"get", "sshd", "maxretry"}, "1"},
		{[]string{"get", "sshd", "actions"}, "noop"},
		{[]string{"status"}, "Number of jail:\t3"},
	}
	for _, tt := range tests {
		out, err := s.Client(ctx, tt.args...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, tt.want) {
			t.Errorf("%v: %q does not contain %q", tt.args, out, tt.want)
		}
	}
}

func TestSandboxBans(t *testing.T) {
	s := StartT(t, Options{DBPurgeAge: "2d"})
	ctx := testCtx(t)
	db := openDB(t, s.DBPath())
	ips := SampleIPs(12)
	tests := []struct {
		name string
		jail string
		ban  func(ctx context.Context, jail string, ips ...string) error
		ips  []string
	}{
		{"log lines, normal bantime", "sshd", s.Fail, ips[0:4]},
		{"log lines, permanent", "perm", s.Fail, ips[4:6]},
		{"log lines, bantime.increment", "incr", s.Fail, ips[6:8]},
		{"banip, normal bantime", "sshd", s.BanIP, ips[8:10]},
		{"banip, permanent", "perm", s.BanIP, ips[10:12]},
	}
	want := map[string]int{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.ban(ctx, tt.jail, tt.ips...); err != nil {
				t.Fatal(err)
			}
			want[tt.jail] += len(tt.ips)
			mustBanned(ctx, t, s, tt.jail, want[tt.jail])
			waitBips(t, db, tt.jail, want[tt.jail])
		})
	}
	// Permanent bans are stored with bantime -1.
	var perm int
	if err := db.QueryRow(`SELECT count(*) FROM bips WHERE jail = 'perm' AND bantime = -1`).Scan(&perm); err != nil {
		t.Fatal(err)
	}
	if perm != want["perm"] {
		t.Errorf("permanent rows in bips: %d, want %d", perm, want["perm"])
	}
	// Log-line bans record the log line in data, manual bans do not.
	var matches int
	if err := db.QueryRow(`SELECT count(*) FROM bans WHERE jail = 'sshd' AND CAST(data AS TEXT) LIKE '%Failed password%'`).Scan(&matches); err != nil {
		t.Fatal(err)
	}
	if matches != 4 {
		t.Errorf("sshd bans with a matched log line: %d, want 4", matches)
	}

	t.Run("unban", func(t *testing.T) {
		if err := s.UnbanIP(ctx, "sshd", ips[0], ips[8]); err != nil {
			t.Fatal(err)
		}
		want["sshd"] -= 2
		mustBanned(ctx, t, s, "sshd", want["sshd"])
		waitBips(t, db, "sshd", want["sshd"])
	})

	t.Run("restart keeps bans", func(t *testing.T) {
		var rowsBefore int
		if err := db.QueryRow(`SELECT count(*) FROM bans`).Scan(&rowsBefore); err != nil {
			t.Fatal(err)
		}
		if err := s.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		for _, jail := range s.Jails() {
			mustBanned(ctx, t, s, jail, want[jail])
			waitBips(t, db, jail, want[jail])
		}
		var rowsAfter int
		if err := db.QueryRow(`SELECT count(*) FROM bans`).Scan(&rowsAfter); err != nil {
			t.Fatal(err)
		}
		if rowsAfter != rowsBefore {
			t.Errorf("bans rows %d after restart, %d before", rowsAfter, rowsBefore)
		}
		// Old log lines are not read again after a restart.
		if err := s.Fail(ctx, "sshd", ips[0]); err != nil {
			t.Fatal(err)
		}
		want["sshd"]++
		mustBanned(ctx, t, s, "sshd", want["sshd"])
	})

	t.Run("stop", func(t *testing.T) {
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if s.Running() {
			t.Fatal("server still running after Stop")
		}
		if _, err := s.Client(ctx, "ping"); err == nil {
			t.Fatal("ping answered after Stop")
		}
		if err := s.Stop(ctx); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		var enabled int
		if err := db.QueryRow(`SELECT count(*) FROM jails WHERE enabled = 1`).Scan(&enabled); err != nil {
			t.Fatal(err)
		}
		if enabled != 0 {
			t.Errorf("%d jails enabled in the DB after stop, want 0", enabled)
		}
	})
}

func TestSandboxIncrement(t *testing.T) {
	s := StartT(t, Options{})
	ctx := testCtx(t)
	for jail, want := range map[string]bool{"incr": true, "sshd": false} {
		out, err := s.Client(ctx, "get", jail, "bantime.increment")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out) == "True"; got != want {
			t.Errorf("%s bantime.increment: %q, want on=%v", jail, out, want)
		}
	}
	db := openDB(t, s.DBPath())
	ip := SampleIPs(1)[0]
	if err := s.Fail(ctx, "incr", ip); err != nil {
		t.Fatal(err)
	}
	waitBips(t, db, "incr", 1)
	var bantime, bancount int
	if err := db.QueryRow(`SELECT bantime, bancount FROM bips WHERE jail = 'incr' AND ip = ?`, ip).Scan(&bantime, &bancount); err != nil {
		t.Fatal(err)
	}
	if bantime != 600 || bancount != 1 {
		t.Errorf("first ban: bantime %d bancount %d, want 600 and 1", bantime, bancount)
	}
}

func TestSandboxReloadJails(t *testing.T) {
	s := StartT(t, Options{ExtraJails: []Jail{{Name: "web", Bantime: "30m"}}})
	ctx := testCtx(t)
	if got := s.Jails(); !slices.Contains(got, "web") {
		t.Fatalf("Jails() = %v, want web among them", got)
	}
	if err := s.Fail(ctx, "web", SampleIPs(3)...); err != nil {
		t.Fatal(err)
	}
	if err := s.SetExtraJails(ctx, Jail{Name: "mail", Bantime: "2h"}); err != nil {
		t.Fatal(err)
	}
	out, err := s.Client(ctx, "status")
	if err != nil {
		t.Fatal(err)
	}
	if got := parseJailList(out); !sameJails(got, []string{"sshd", "perm", "incr", "mail"}) {
		t.Fatalf("jails after reload: %v", got)
	}
	if out, err := s.Client(ctx, "get", "mail", "bantime"); err != nil || !strings.Contains(out, "7200") {
		t.Fatalf("mail bantime: %q %v", out, err)
	}
	db := openDB(t, s.DBPath())
	var enabled int
	if err := db.QueryRow(`SELECT enabled FROM jails WHERE name = 'web'`).Scan(&enabled); err != nil {
		t.Fatal(err)
	}
	if enabled != 0 {
		t.Errorf("removed jail web still enabled in the DB")
	}
	if err := s.Fail(ctx, "web", "8.8.4.4"); err == nil {
		t.Errorf("Fail on a removed jail succeeded")
	}
}

func TestStartErrors(t *testing.T) {
	RequireFail2ban(t)
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no dir", Options{}, "Dir is required"},
		{"socket path too long", Options{Dir: long}, "longer than"},
		{"bad jail name", Options{Dir: t.TempDir(), ExtraJails: []Jail{{Name: "a b", Bantime: "1h"}}}, "invalid jail name"},
		{"duplicate jail", Options{Dir: t.TempDir(), ExtraJails: []Jail{{Name: "sshd", Bantime: "1h"}}}, "given twice"},
		{"empty bantime", Options{Dir: t.TempDir(), ExtraJails: []Jail{{Name: "x"}}}, "invalid bantime"},
		{"bad purge age", Options{Dir: shortDir(t), DBPurgeAge: "soon"}, "fail2ban-server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s, err := Start(ctx, tt.opts)
			if err == nil {
				_ = s.Stop(ctx)
				t.Fatalf("Start succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "f2b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func TestParseJailStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    JailStatus
		wantErr bool
	}{
		{
			name: "banned",
			in:   "Status for the jail: sshd\n|- Filter\n|  |- Currently failed:\t2\n|  |- Total failed:\t7\n|  `- File list:\t/x.log\n`- Actions\n   |- Currently banned:\t2\n   |- Total banned:\t3\n   `- Banned IP list:\t8.8.8.8 2001:4860:4860::8888\n",
			want: JailStatus{CurrentlyFailed: 2, TotalFailed: 7, CurrentlyBanned: 2, TotalBanned: 3, BannedIPs: []string{"8.8.8.8", "2001:4860:4860::8888"}},
		},
		{
			name: "empty list",
			in:   "Status for the jail: perm\n|- Filter\n|  |- Currently failed:\t0\n|  |- Total failed:\t0\n|  `- File list:\t/x.log\n`- Actions\n   |- Currently banned:\t0\n   |- Total banned:\t0\n   `- Banned IP list:\t\n",
			want: JailStatus{},
		},
		{name: "not a status", in: "Sorry but the jail 'x' does not exist\n", wantErr: true},
		{name: "bad number", in: "   |- Currently banned:\tmany\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseJailStatus(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got.CurrentlyFailed != tt.want.CurrentlyFailed || got.TotalFailed != tt.want.TotalFailed ||
				got.CurrentlyBanned != tt.want.CurrentlyBanned || got.TotalBanned != tt.want.TotalBanned ||
				!slices.Equal(got.BannedIPs, tt.want.BannedIPs) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSampleIPs(t *testing.T) {
	for _, n := range []int{0, 1, 22, 500, 5000} {
		ips := SampleIPs(n)
		if len(ips) != n {
			t.Fatalf("SampleIPs(%d) gave %d", n, len(ips))
		}
		seen := map[string]bool{}
		for _, s := range ips {
			a, err := netip.ParseAddr(s)
			if err != nil {
				t.Fatalf("%q: %v", s, err)
			}
			if !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() {
				t.Errorf("%s is not a public address", s)
			}
			if seen[s] {
				t.Errorf("%s twice", s)
			}
			seen[s] = true
		}
		if !slices.Equal(ips, SampleIPs(n)) {
			t.Errorf("SampleIPs(%d) is not deterministic", n)
		}
	}
}

// TestSandboxPurge: with PurgeInterval, fail2ban's own purge runs every
// interval and deletes the bans rows older than DBPurgeAge, permanent ones
// included, while bips keeps the bans that are still current.
func TestSandboxPurge(t *testing.T) {
	// dbpurgeage leaves room to count the rows before the purge even on a
	// loaded machine (with 3 s a slow ban was purged before it was counted).
	s := StartT(t, Options{DBPurgeAge: "10", PurgeInterval: 500 * time.Millisecond})
	ctx := testCtx(t)
	db := openDB(t, s.DBPath())
	ips := SampleIPs(5)
	if err := s.BanIP(ctx, "sshd", ips[:3]...); err != nil {
		t.Fatal(err)
	}
	if err := s.BanIP(ctx, "perm", ips[3:]...); err != nil {
		t.Fatal(err)
	}
	waitBips(t, db, "sshd", 3)
	waitBips(t, db, "perm", 2)
	bans := func() int {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM bans").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := bans(); n != 5 {
		t.Fatalf("%d bans rows before the purge, want 5", n)
	}
	if err := testkit.Poll(30*time.Second, func() error {
		if n := bans(); n != 0 {
			return fmt.Errorf("fail2ban did not purge: %d bans rows left (dbpurgeage 10 s, purge every 0.5 s)", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, s.serverOutput())
	}
	// bips rows of bans still running stay (timeofban + 3*bantime is in
	// the future; permanent rows are never purged).
	waitBips(t, db, "sshd", 3)
	waitBips(t, db, "perm", 2)
	mustBanned(ctx, t, s, "sshd", 3)
}
