package collector

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestInitialLoadIsPresized checks that a complete read allocates the
// engine's large tables once, from the tables' row counts, instead of
// growing them by append (which copies them while doubling and leaves up to
// twice the room they need).
func TestInitialLoadIsPresized(t *testing.T) {
	d := newF2BDB(t, 4)
	d.addJail("sshd", true)
	now := int64(1_800_000_000)
	// 3000 bans over 250 IPs; bips keeps each IP's last row.
	d.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2999)
		INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data)
		SELECT 'sshd', '198.51.100.' || (i % 250) || '', ?1 - i, 600, 1, '{}' FROM n`, now)
	d.exec(`INSERT OR REPLACE INTO bips(ip, jail, timeofban, bantime, bancount, data)
		SELECT ip, jail, timeofban, bantime, bancount, data FROM bans ORDER BY rowid`)
	x := NewExporter(Options{DBPath: d.path, Windows: windowsOf(t, "24h"), ChunkSize: 100,
		Now: func() time.Time { return time.Unix(now, 0) }}, NoCountries{})
	defer x.Close()
	if err := x.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := x.eng
	if len(e.bansRows) != 3000 || e.liveBipsRows != 250 {
		t.Fatalf("read %d bans rows and %d bips rows, want 3000 and 250", len(e.bansRows), e.liveBipsRows)
	}
	room := func(n int) int { return n + n/16 + 1024 }
	if cap(e.bansRows) != room(3000) || cap(e.banEvents) != room(3000) || cap(e.bipsRows) != room(250) {
		t.Errorf("capacities events %d, banEvents %d, records %d; want %d, %d, %d",
			cap(e.bansRows), cap(e.banEvents), cap(e.bipsRows), room(3000), room(3000), room(250))
	}
}

// TestIPKeyRoundTrip: the 16-byte key of a parsed IP gives the same address
// back, and an IPv4 address and the IPv6 address with the same low bytes
// are different keys.
func TestIPKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"203.0.113.7", "::ffff:203.0.113.7", "2001:db8::1", "::1", "fe80::1%eth0", " 198.51.100.1 "} {
		a, ok := parseIP(s)
		if !ok {
			t.Fatalf("parseIP(%q) failed", s)
		}
		if got := keyOf(a).addr(); got != a {
			t.Errorf("%q: key gives %v back, want %v", s, got, a)
		}
	}
	v4, _ := parseIP("1.2.3.4")
	v6, _ := parseIP("::102:304")
	if keyOf(v4) == keyOf(v6) {
		t.Error("1.2.3.4 and ::102:304 share a key")
	}
	mapped, _ := parseIP("::ffff:1.2.3.4")
	if keyOf(mapped) != keyOf(v4) || !keyOf(mapped).addr().Is4() {
		t.Error("an IPv4-mapped address is not the IPv4 address")
	}
	if keyOf(netip.MustParseAddr("2001:db8::1")).addr().Is4() {
		t.Error("an IPv6 address came back as IPv4")
	}
}
