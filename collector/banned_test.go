package collector

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestWalkBanned checks that the walk yields exactly the pairs
// fail2ban_banned_ips counts, with their country, timeofban, bantime and
// bancount, across chunk boundaries, for both schemas.
func TestWalkBanned(t *testing.T) {
	type want struct {
		country   string
		tob       int64
		bantime   int64
		bancount  int64
		wantCount int
	}
	const century = int64(100 * 365 * 86400) // beyond a bipsRow's int32 bantime
	tests := []struct {
		name   string
		schema int
		many   int   // extra banned IPs in jail "bulk" (crosses walkChunk)
		defBan int64 // --fail2ban.default-bantime in seconds
	}{
		{"schema 4", 4, 0, 600},
		{"schema 2", 2, 0, 600},
		{"schema 2, a default bantime of a century", 2, 0, century},
		{"schema 4, more than one chunk", 4, walkChunk + 17, 600},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newF2BDB(t, tc.schema)
			d.addJail("sshd", true)
			d.addJail("perm", true)
			clk := newClock(t0)
			countries := newTableCountries()
			countries.set("192.0.2.1", "DE")
			d.ban("sshd", "192.0.2.1", t0-100, 600)
			d.ban("sshd", "192.0.2.2", t0-50, 600)
			d.ban("sshd", "192.0.2.3", t0-10_000, 600) // expired
			d.ban("perm", "192.0.2.1", t0-30, -1)
			d.ban("perm", "2001:db8::1", t0-20, -1)
			// Two spellings of one address: two bips rows, one banned pair.
			d.ban("sshd", "::ffff:192.0.2.9", t0-5, 600)
			d.ban("sshd", "192.0.2.9", t0-6, 600)
			// Values wider than a bipsRow's fields: kept exact.
			d.ban("wide", "192.0.2.50", t0-40, 1<<40)
			d.ban("wide", "192.0.2.51", t0-41, -(1 << 40))
			if tc.schema == 4 {
				d.exec("UPDATE bips SET bancount = 3 WHERE ip = '192.0.2.2'")
				d.exec("UPDATE bips SET bancount = 100000 WHERE ip = '192.0.2.50'")
				d.exec("UPDATE bips SET bancount = -2 WHERE ip = '192.0.2.51'")
			}
			for i := range tc.many {
				d.ban("bulk", fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), t0-int64(i%500), 3600)
			}
			x := newFixtureExporter(t, d.path, clk, countries, Options{DefaultBantime: time.Duration(tc.defBan) * time.Second})
			// Before the first read there is nothing to walk.
			n := 0
			if err := x.WalkBanned(t.Context(), func(c []BannedIP) { n += len(c) }); err != nil || n != 0 {
				t.Fatalf("before the first read: %d pairs, %v", n, err)
			}
			if err := x.Refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			got := map[string]want{}
			perJail := map[string]float64{}
			chunks := 0
			err := x.WalkBanned(t.Context(), func(c []BannedIP) {
				chunks++
				if len(c) > walkChunk {
					t.Errorf("chunk of %d", len(c))
				}
				for _, b := range c {
					perJail[b.Jail]++
					if b.Jail == "bulk" {
						continue
					}
					k := b.Jail + " " + netip.AddrFrom16(b.IP).Unmap().String()
					w := got[k]
					got[k] = want{country: b.Country, tob: b.TimeOfBan, bantime: b.Bantime, bancount: b.Bancount, wantCount: w.wantCount + 1}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			bc1, bc3, bcWide, bcNeg := int64(1), int64(3), int64(100000), int64(-2)
			ban600, permBantime, wideBan, wideNeg := int64(600), int64(-1), int64(1<<40), -int64(1<<40)
			if tc.schema == 2 {
				bc1, bc3, bcWide, bcNeg = 0, 0, 0, 0
				// Schema 2 has no bantime: the default.
				ban600, permBantime, wideBan, wideNeg = tc.defBan, tc.defBan, tc.defBan, tc.defBan
			}
			expected := map[string]want{
				"sshd 192.0.2.1":   {"DE", t0 - 100, ban600, bc1, 1},
				"sshd 192.0.2.2":   {UnknownCountry, t0 - 50, ban600, bc3, 1},
				"perm 192.0.2.1":   {"DE", t0 - 30, permBantime, bc1, 1},
				"perm 2001:db8::1": {UnknownCountry, t0 - 20, permBantime, bc1, 1},
				"sshd 192.0.2.9":   {UnknownCountry, t0 - 5, ban600, bc1, 1},
				"wide 192.0.2.50":  {UnknownCountry, t0 - 40, wideBan, bcWide, 1},
				"wide 192.0.2.51":  {UnknownCountry, t0 - 41, wideNeg, bcNeg, 1},
			}
			if tc.schema == 2 && tc.defBan > 10_000 {
				expected["sshd 192.0.2.3"] = want{UnknownCountry, t0 - 10_000, tc.defBan, 0, 1} // not expired yet
			}
			if !maps.Equal(got, expected) {
				t.Errorf("walk:\n got %v\nwant %v", got, expected)
			}
			// The walk's pairs per jail are fail2ban_banned_ips per jail.
			banned := map[string]float64{}
			for k, v := range scrape(t, x) {
				if strings.HasPrefix(k, "fail2ban_banned_ips{") {
					// "fail2ban_banned_ips{country=DE,jail=sshd}"
					_, jail, _ := strings.Cut(strings.TrimSuffix(k, "}"), "jail=")
					jail, _, _ = strings.Cut(jail, ",")
					banned[jail] += v
				}
			}
			if !maps.Equal(perJail, banned) {
				t.Errorf("walk per jail %v, fail2ban_banned_ips per jail %v", perJail, banned)
			}
			if wantChunks := 1 + (len(expected)+tc.many)/walkChunk; tc.many > 0 && chunks < wantChunks {
				t.Errorf("%d chunks, want at least %d", chunks, wantChunks)
			}
			if tc.schema == 4 {
				// The wide values leave with their rows.
				d.exec("DELETE FROM bips WHERE jail = 'wide'")
				if err := x.Refresh(t.Context()); err != nil {
					t.Fatal(err)
				}
				x.mu.Lock()
				nb, nc := len(x.eng.wideBantimes), len(x.eng.wideBancounts)
				x.mu.Unlock()
				if nb != 0 || nc != 0 {
					t.Errorf("after the wide rows left bips: %d wide bantimes, %d wide bancounts, want none", nb, nc)
				}
			}
		})
	}
}

func TestWalkBannedStopsWithContext(t *testing.T) {
	d := newF2BDB(t, 4)
	d.ban("sshd", "192.0.2.1", t0-100, 600)
	x := newFixtureExporter(t, d.path, newClock(t0), newTableCountries(), Options{})
	if err := x.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := x.WalkBanned(ctx, func([]BannedIP) { t.Error("called after cancel") }); err == nil {
		t.Fatal("no error after cancel")
	}
}
