package collector

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// t0 of the window tests: every timeofban is relative to it.
const windowsNow = 1_790_000_000

// TestMergeBanEvents: ban events merged in batches, in any order, with
// duplicates within a batch and across batches, end up once each in time
// order, counting their rows, and each counts once in every window it lies
// in.
func TestMergeBanEvents(t *testing.T) {
	type ban struct {
		jail, ip string
		ago      int64 // seconds before windowsNow
	}
	type want struct {
		ago   int64
		ip    string
		count uint32
	}
	cases := []struct {
		name    string
		batches [][]ban
		want    []want
		hour    int // ban events in the 1h window
		day     int // in the 1d window
	}{
		{
			name:    "one batch out of order",
			batches: [][]ban{{{"sshd", "192.0.2.3", 30}, {"sshd", "192.0.2.1", 7200}, {"sshd", "192.0.2.2", 60}}},
			want:    []want{{7200, "192.0.2.1", 1}, {60, "192.0.2.2", 1}, {30, "192.0.2.3", 1}},
			hour:    2, day: 3,
		},
		{
			name:    "duplicates in a batch fold",
			batches: [][]ban{{{"sshd", "192.0.2.1", 60}, {"sshd", "192.0.2.1", 60}, {"sshd", "192.0.2.1", 60}}},
			want:    []want{{60, "192.0.2.1", 3}},
			hour:    1, day: 1,
		},
		{
			name:    "a later batch older than the stored events",
			batches: [][]ban{{{"sshd", "192.0.2.1", 60}, {"sshd", "192.0.2.2", 30}}, {{"sshd", "192.0.2.3", 90_000}, {"sshd", "192.0.2.4", 45}}},
			want:    []want{{90_000, "192.0.2.3", 1}, {60, "192.0.2.1", 1}, {45, "192.0.2.4", 1}, {30, "192.0.2.2", 1}},
			hour:    3, day: 3,
		},
		{
			name:    "a later batch repeats a stored event",
			batches: [][]ban{{{"sshd", "192.0.2.1", 60}}, {{"sshd", "192.0.2.1", 60}, {"sshd", "192.0.2.2", 10}}},
			want:    []want{{60, "192.0.2.1", 2}, {10, "192.0.2.2", 1}},
			hour:    2, day: 2,
		},
		{
			name:    "same time, jail and IP order ties",
			batches: [][]ban{{{"sshd", "192.0.2.2", 60}}, {{"sshd", "192.0.2.1", 60}, {"nginx", "192.0.2.2", 60}}},
			want:    []want{{60, "192.0.2.2", 1}, {60, "192.0.2.1", 1}, {60, "192.0.2.2", 1}},
			hour:    3, day: 3,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, 4)
			rowid := int64(0)
			for _, batch := range tc.batches {
				var rows []sourceRow
				for _, b := range batch {
					rowid++
					rows = append(rows, testRow(rowid, b.jail, b.ip, windowsNow-b.ago, 600))
				}
				e.appendBans(rows, windowsNow)
			}
			if !slices.IsSortedFunc(e.banEvents, func(a, b banEvent) int { return compareBanEvents(&a, &b) }) {
				t.Fatal("banEvents not in order")
			}
			var got []want
			for _, ev := range e.banEvents {
				got = append(got, want{ago: windowsNow - int64(ev.timeOfBan), ip: e.ips[ev.ip].key.addr().String(), count: ev.count})
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Fatalf("banEvents (-want +got):\n%s", diff)
			}
			if h, d := sumCounts(e.windowCount[0]), sumCounts(e.windowCount[1]); h != tc.hour || d != tc.day {
				t.Fatalf("windows count %d (1h) and %d (1d), want %d and %d", h, d, tc.hour, tc.day)
			}
		})
	}
}

func sumCounts(m map[seriesKey]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestSearchBanEvent: the galloping search finds every stored ban event and
// the insertion point of a missing one, whatever position its previous
// search left the hint at.
func TestSearchBanEvent(t *testing.T) {
	e := newTestEngine(t, 4)
	for i := range 100 {
		e.banEvents = append(e.banEvents, banEvent{timeOfBan: uint32(1000 + 10*i), jail: uint16(i % 3), ip: uint32(i)})
	}
	cases := []struct {
		name  string
		key   banEvent
		index int
		found bool
	}{
		{"first", e.banEvents[0], 0, true},
		{"last", e.banEvents[99], 99, true},
		{"middle", e.banEvents[57], 57, true},
		{"before all", banEvent{timeOfBan: 1}, 0, false},
		{"after all", banEvent{timeOfBan: 1 << 30}, 100, false},
		{"between two", banEvent{timeOfBan: 1005}, 1, false},
		{"same time, other jail", banEvent{timeOfBan: 1000 + 10*40, jail: 2, ip: 40}, 41, false},
	}
	for _, hint := range []int{0, 1, 50, 98, 99, 100, 500} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("hint%d/%s", hint, tc.name), func(t *testing.T) {
				e.searchHint = hint
				i, found := e.searchBanEvent(&tc.key)
				if i != tc.index || found != tc.found {
					t.Fatalf("searchBanEvent = %d, %v; want %d, %v", i, found, tc.index, tc.found)
				}
			})
		}
	}
}

// TestWindowsAdvance: as the clock moves, ban events leave the 1h window
// and then the 1d window, and the cursors follow.
func TestWindowsAdvance(t *testing.T) {
	cases := []struct {
		name      string
		later     int64 // seconds after windowsNow
		hour, day int
	}{
		{"now", 0, 2, 3},
		{"still inside at the edge", 1800, 2, 3},
		{"one leaves the hour", 1801, 1, 3},
		{"all leave the hour", 3600, 0, 3},
		{"one leaves the day", 86400 - 7200 + 1, 0, 2},
		{"all leave the day", 2 * 86400, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, 4)
			e.appendBans([]sourceRow{
				testRow(1, "sshd", "192.0.2.1", windowsNow-7200, 600),
				testRow(2, "sshd", "192.0.2.2", windowsNow-1800, 600),
				testRow(3, "sshd", "192.0.2.3", windowsNow-60, 600),
			}, windowsNow)
			e.advance(windowsNow + tc.later)
			if h, d := sumCounts(e.windowCount[0]), sumCounts(e.windowCount[1]); h != tc.hour || d != tc.day {
				t.Fatalf("windows count %d (1h) and %d (1d), want %d and %d", h, d, tc.hour, tc.day)
			}
			for w, c := range e.cursors {
				if want := 3 - []int{tc.hour, tc.day}[w]; c != want {
					t.Fatalf("cursor of window %d at %d, want %d", w, c, want)
				}
			}
		})
	}
}

// TestRemoveBansRowLeavesWindows: a deleted bans row leaves the windows once
// its ban event has no row left; with the archive on it stays as kept
// history.
func TestRemoveBansRowLeavesWindows(t *testing.T) {
	cases := []struct {
		name      string
		keep      bool
		duplicate bool // a second row of the same ban event stays
		hour      int
	}{
		{"archive off", false, false, 0},
		{"archive off, a duplicate stays", false, true, 1},
		{"archive on: kept", true, false, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, 4)
			if tc.keep {
				e.keepHistory()
			}
			rows := []sourceRow{testRow(1, "sshd", "192.0.2.1", windowsNow-60, 600)}
			if tc.duplicate {
				rows = append(rows, testRow(2, "sshd", "192.0.2.1", windowsNow-60, 600))
			}
			e.appendBans(rows, windowsNow)
			e.replaceBansRange(1, 1, nil, windowsNow)
			if h := sumCounts(e.windowCount[0]); h != tc.hour {
				t.Fatalf("1h window counts %d, want %d", h, tc.hour)
			}
		})
	}
}
