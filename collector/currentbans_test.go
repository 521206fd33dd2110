package collector

import (
	"net/netip"
	"testing"
)

// bannedPairs is fail2ban_banned_ips summed over every series.
func bannedPairs(e *engine) int { return sumCounts(e.bannedNow) }

// TestBipsRowsBannedAndExpiring: a bips row counts as banned while
// fail2ban's rule holds (bantime <= -1 or timeofban + bantime > now), leaves
// fail2ban_banned_ips when it expires, and a pair counts once however many
// bips rows it has.
func TestBipsRowsBannedAndExpiring(t *testing.T) {
	const now = 1_790_000_000
	cases := []struct {
		name  string
		rows  []sourceRow
		later int64 // seconds after now when checked
		want  int
	}{
		{"banned", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, 600)}, 0, 1},
		{"expired before the read", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-600, 600)}, 0, 0},
		{"expires at timeofban + bantime", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, 600)}, 540, 0},
		{"one second before its expiry", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, 600)}, 539, 1},
		{"permanent", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, -1)}, 1 << 30, 1},
		{"two jails are two pairs", []sourceRow{testRow(1, "sshd", "192.0.2.1", now, 600), testRow(2, "nginx", "192.0.2.1", now, 600)}, 0, 2},
		{"two spellings of one pair count once", []sourceRow{testRow(1, "sshd", "192.0.2.1", now, 600), testRow(2, "sshd", "::ffff:192.0.2.1", now, 600)}, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, 4)
			e.appendBips(tc.rows, now)
			e.advance(now + tc.later)
			if got := bannedPairs(e); got != tc.want {
				t.Fatalf("banned pairs %d, want %d", got, tc.want)
			}
		})
	}
}

// TestBipsRowReplacesOlderRowOfItsPair: fail2ban writes bips with INSERT OR
// REPLACE: a new row of a pair spelled the same way replaces the pair's
// older row at once; another spelling of the same address is another row.
func TestBipsRowReplacesOlderRowOfItsPair(t *testing.T) {
	const now = 1_790_000_000
	cases := []struct {
		name     string
		second   sourceRow
		liveRows int
		banned   int // pairs
	}{
		{"same spelling replaces", testRow(2, "sshd", "192.0.2.1", now, 3600), 1, 1},
		{"another spelling stays, the same pair", testRow(2, "sshd", "::ffff:192.0.2.1", now, 3600), 2, 1},
		{"another jail stays, another pair", testRow(2, "nginx", "192.0.2.1", now, 3600), 2, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, 4)
			e.appendBips([]sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, 600)}, now)
			e.appendBips([]sourceRow{tc.second}, now)
			if e.liveBipsRows != tc.liveRows {
				t.Fatalf("%d live bips rows, want %d", e.liveBipsRows, tc.liveRows)
			}
			if got := bannedPairs(e); got != tc.banned {
				t.Fatalf("banned pairs %d, want %d", got, tc.banned)
			}
			// The first row expires after 540 s; the second one, of
			// 3600 s, keeps its pair banned.
			e.advance(now + 1200)
			if got := bannedPairs(e); got != 1 {
				t.Fatalf("banned pairs %d after the first row's expiry, want 1", got)
			}
		})
	}
}

// TestSchema2DerivesLatestBan: schema 2 has no bips; a pair is banned while
// its latest bans row plus the default bantime (10 minutes here) lies in the
// future, and deleting that row falls back on the pair's earlier ban.
func TestSchema2DerivesLatestBan(t *testing.T) {
	const now = 1_790_000_000
	cases := []struct {
		name    string
		bans    []sourceRow
		deleted int64 // rowid of a bans row deleted, 0 for none
		banned  int
		derived int // live derived bips rows
	}{
		{"recent ban", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, 0)}, 0, 1, 1},
		{"old ban", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-3600, 0)}, 0, 0, 1},
		{"latest ban wins", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-3600, 0), testRow(2, "sshd", "192.0.2.1", now-60, 0)}, 0, 1, 1},
		{"earlier ban after the latest is deleted", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-3600, 0), testRow(2, "sshd", "192.0.2.1", now-60, 0)}, 2, 0, 1},
		{"two pairs", []sourceRow{testRow(1, "sshd", "192.0.2.1", now-60, 0), testRow(2, "sshd", "192.0.2.2", now-60, 0)}, 0, 2, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, 2)
			for i := range tc.bans {
				tc.bans[i].HasBantime = false
			}
			e.appendBans(tc.bans, now)
			if tc.deleted != 0 {
				e.replaceBansRange(tc.deleted, tc.deleted, nil, now)
			}
			if got := bannedPairs(e); got != tc.banned {
				t.Fatalf("banned pairs %d, want %d", got, tc.banned)
			}
			if e.liveBipsRows != tc.derived {
				t.Fatalf("%d derived bips rows, want %d", e.liveBipsRows, tc.derived)
			}
		})
	}
}

// TestSetBannedCountsPairsOnce: setBanned keeps one count per (ip, jail)
// pair in its series however many of the pair's bips rows are banned.
func TestSetBannedCountsPairsOnce(t *testing.T) {
	e := newTestEngine(t, 4)
	ip := e.internIP(netip.MustParseAddr("192.0.2.1"))
	jail := e.jail("sshd")
	a := bipsRow{rowid: 1, ip: ip, jail: jail}
	b := bipsRow{rowid: 2, ip: ip, jail: jail}
	steps := []struct {
		row    *bipsRow
		banned bool
		want   int
	}{
		{&a, true, 1},
		{&b, true, 1},
		{&a, true, 1}, // no change
		{&a, false, 1},
		{&b, false, 0},
		{&b, false, 0}, // no change
	}
	for i, s := range steps {
		e.setBanned(s.row, s.banned)
		if got := bannedPairs(e); got != s.want {
			t.Fatalf("step %d: banned pairs %d, want %d", i, got, s.want)
		}
	}
}
