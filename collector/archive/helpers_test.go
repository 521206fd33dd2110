package archive

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func closeQuietly(c io.Closer) { _ = c.Close() }

// openTestDB opens an app database in path (a fresh temporary one when path
// is empty).
func openTestDB(t testing.TB, path string) *appdb.DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "app.sqlite3")
	}
	db, err := appdb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeQuietly(db) })
	return db
}

// openTestStore opens a store on db with a test clock and small defaults.
func openTestStore(t testing.TB, db *appdb.DB, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Open(context.Background(), db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var testJails = []string{"sshd", "nginx-http-auth", "postfix", "dovecot", "recidive", "apache-auth"}

// genEvent is the i-th event of a deterministic history: four events per
// second from base, each of a different jail, so (timeofban, jail, ip) is
// unique per i; IPs repeat (every 1000th index reuses one), a few are IPv6.
func genEvent(base int64, i int) Event {
	h := uint32(i%1000) * 2654435761
	ip := netip.AddrFrom4([4]byte{byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h)})
	if i%10 == 3 {
		ip = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
	}
	return Event{
		Jail:      testJails[i%len(testJails)],
		IP:        ip,
		TimeOfBan: base + int64(i/4),
		Bantime:   int64(600 << (i % 3)),
		Bancount:  int64(1 + i%3),
	}
}

func genEvents(base int64, from, to int) []Event {
	out := make([]Event, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, genEvent(base, i))
	}
	return out
}

// eventKey identifies an event the way the archive does.
type eventKey struct {
	tob  int64
	jail string
	ip   netip.Addr
}

func keyOfEvent(e Event) eventKey {
	return eventKey{e.TimeOfBan, e.Jail, e.IP.Unmap().WithZone("")}
}

// dump reads every archived event straight from the database (not through
// Load), sorted by key.
func dump(t testing.TB, db *appdb.DB) []Event {
	t.Helper()
	rows, err := db.Reader.QueryContext(context.Background(), `SELECT e.timeofban, j.name, e.ip, e.bantime, e.bancount
		FROM archive_events e JOIN archive_jails j ON j.id = e.jail ORDER BY e.timeofban, j.name, e.ip`)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(rows)
	var out []Event
	for rows.Next() {
		var e Event
		var ip []byte
		if err := rows.Scan(&e.TimeOfBan, &e.Jail, &ip, &e.Bantime, &e.Bancount); err != nil {
			t.Fatal(err)
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			t.Fatalf("ip of %d bytes", len(ip))
		}
		e.IP = a
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sortEvents(out)
	return out
}

// distinct returns events without duplicate keys (the first of each), sorted
// like dump.
func distinct(events []Event) []Event {
	seen := map[eventKey]bool{}
	var out []Event
	for _, e := range events {
		k := keyOfEvent(e)
		if seen[k] {
			continue
		}
		seen[k] = true
		e.IP = k.ip
		out = append(out, e)
	}
	sortEvents(out)
	return out
}

func sortEvents(es []Event) {
	slices.SortFunc(es, func(a, b Event) int {
		if a.TimeOfBan != b.TimeOfBan {
			return int(a.TimeOfBan - b.TimeOfBan)
		}
		if a.Jail != b.Jail {
			if a.Jail < b.Jail {
				return -1
			}
			return 1
		}
		return a.IP.Compare(b.IP)
	})
}

func rowCount(t testing.TB, db *appdb.DB) int64 {
	t.Helper()
	var n int64
	if err := db.Reader.QueryRowContext(context.Background(), "SELECT count(*) FROM archive_events").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
