package archive

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// Benchmarks of the archive (BENCHMARKS.md, section Archive). Run with
//
//	go test -run '^$' -bench . -benchtime 1x ./collector/archive/
//
// Each iteration handles one full history (1M events by default; set
// BANGUI_ARCHIVE_BENCH_EVENTS to change it).

func benchEvents() int {
	if v := os.Getenv("BANGUI_ARCHIVE_BENCH_EVENTS"); v != "" {
		var n int
		if _, err := fmt.Sscan(v, &n); err == nil && n > 0 {
			return n
		}
	}
	return 1_000_000
}

// realisticHistory is n ban events over 30 days ending at now, in time
// order with small disorder, like rows of fail2ban's bans table: ~235,000
// distinct IPs per million events (some banned often), 6 jails, a few
// percent permanent, 1 in 20 IPv6.
func realisticHistory(n int, now time.Time) []Event {
	rng := rand.New(rand.NewPCG(42, 42))
	nIPs := max(1, n*235/1000)
	ips := make([]netip.Addr, nIPs)
	for i := range ips {
		if i%20 == 7 {
			var b [16]byte
			b[0], b[1] = 0x20, 0x01
			for j := 2; j < 16; j++ {
				b[j] = byte(rng.Uint32())
			}
			ips[i] = netip.AddrFrom16(b)
			continue
		}
		u := rng.Uint32()
		ips[i] = netip.AddrFrom4([4]byte{byte(u>>24) | 1, byte(u >> 16), byte(u >> 8), byte(u)})
	}
	span := int64(30 * 24 * 3600)
	start := now.Unix() - span
	out := make([]Event, n)
	for i := range out {
		// Zipf-like reuse: a third of the events go to 1% of the IPs.
		var ip netip.Addr
		if rng.IntN(3) == 0 {
			ip = ips[rng.IntN(max(1, nIPs/100))]
		} else {
			ip = ips[rng.IntN(nIPs)]
		}
		bantime := int64(600)
		if rng.IntN(30) == 0 {
			bantime = -1
		}
		out[i] = Event{
			Jail:      testJails[rng.IntN(len(testJails))],
			IP:        ip,
			TimeOfBan: start + int64(i)*span/int64(n) - rng.Int64N(60),
			Bantime:   bantime,
			Bancount:  1 + int64(rng.IntN(4)),
		}
	}
	return out
}

func benchDB(b *testing.B) (*appdb.DB, string) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "app.sqlite3")
	db, err := appdb.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeQuietly(db) })
	return db, path
}

// sizeOnDisk checkpoints the WAL into the database file and returns the
// file's size.
func sizeOnDisk(b *testing.B, db *appdb.DB, path string) int64 {
	b.Helper()
	if _, err := db.Writer.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	if wal, err := os.Stat(path + "-wal"); err == nil && wal.Size() > 0 {
		b.Fatalf("WAL not empty after checkpoint: %d bytes", wal.Size())
	}
	return st.Size()
}

// BenchmarkIngest: n events through Add and one Flush per cycle (one
// commit each), into a fresh archive; reports events/s, the archive's size
// on disk per million events and the commits made.
func BenchmarkIngest(b *testing.B) {
	n := benchEvents()
	events := realisticHistory(n, time.Now())
	for _, cycle := range []int{10_000, 50_000} {
		b.Run(fmt.Sprintf("cycle=%d", cycle), func(b *testing.B) {
			var rows, size int64
			var commits int64
			var elapsed time.Duration
			for b.Loop() {
				b.StopTimer()
				db, path := benchDB(b)
				s, err := Open(context.Background(), db, Options{MaxQueue: cycle})
				if err != nil {
					b.Fatal(err)
				}
				cc := testkit.CountCommits(b, db)
				b.StartTimer()
				start := time.Now()
				for i := 0; i < n; i += cycle {
					s.Add(events[i:min(i+cycle, n)]...)
					if err := s.Flush(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				elapsed += time.Since(start)
				b.StopTimer()
				rows, commits = s.Count(), cc.Load()
				size = sizeOnDisk(b, db, path)
				closeQuietly(db)
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(size)/float64(rows)*1e6/(1<<20), "MiB/1M-events")
			b.ReportMetric(float64(commits), "commits")
			b.ReportMetric(float64(rows), "rows")
		})
	}
}

// BenchmarkIngestBaseline: the naive way, one autocommitted INSERT per event
// (same table, same prepared statement, same writer connection), measured
// on the first 50,000 events of the same history; events/s extrapolates to
// the full history at that rate.
func BenchmarkIngestBaseline(b *testing.B) {
	n := min(50_000, benchEvents())
	events := realisticHistory(benchEvents(), time.Now())[:n]
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		db, _ := benchDB(b)
		if _, err := Open(context.Background(), db, Options{}); err != nil { // migrates
			b.Fatal(err)
		}
		ctx := context.Background()
		// Jail ids exist beforehand, as in a warm archive.
		jails := map[string]int64{}
		for _, j := range testJails {
			res, err := db.Writer.ExecContext(ctx, "INSERT INTO archive_jails(name) VALUES (?)", j)
			if err != nil {
				b.Fatal(err)
			}
			jails[j], _ = res.LastInsertId()
		}
		stmt, err := db.Writer.PrepareContext(ctx, insertSQL(1))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		var buf [16]byte
		for i := range events {
			e := &events[i]
			if _, err := stmt.ExecContext(ctx, e.TimeOfBan, jails[e.Jail], appendIP(buf[:0], e.IP), e.Bantime, e.Bancount); err != nil {
				b.Fatal(err)
			}
		}
		elapsed += time.Since(start)
		b.StopTimer()
		closeQuietly(stmt)
		closeQuietly(db)
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "events/s")
}

// BenchmarkLoad: Load of every event of a 1M-event archive (built before
// the timer starts, then the database reopened so no page is in the
// connection's cache).
func BenchmarkLoad(b *testing.B) {
	n := benchEvents()
	db, path := benchDB(b)
	s, err := Open(context.Background(), db, Options{MaxQueue: n})
	if err != nil {
		b.Fatal(err)
	}
	s.Add(realisticHistory(n, time.Now())...)
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	closeQuietly(db)
	var loaded int64
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		db, err := appdb.Open(context.Background(), path)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		s, err := Open(context.Background(), db, Options{})
		if err != nil {
			b.Fatal(err)
		}
		loaded = 0
		if err := s.Load(context.Background(), time.Time{}, func(Event) error { loaded++; return nil }); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		closeQuietly(db)
		b.StartTimer()
	}
	b.ReportMetric(float64(loaded), "events")
}

// schemaVariants are the layouts measured for size on disk: the chosen one
// and the alternatives it was chosen over.
var schemaVariants = []struct {
	name, ddl, insert string
	ipText            bool
}{
	{"chosen_without_rowid_int_jail_blob_ip", "", "", false},
	{"rowid_int_jail_blob_ip_unique_and_time_index", `
		CREATE TABLE j (id INTEGER PRIMARY KEY, name TEXT UNIQUE);
		CREATE TABLE e (id INTEGER PRIMARY KEY, jail INTEGER NOT NULL, ip BLOB NOT NULL, timeofban INTEGER NOT NULL,
			bantime INTEGER NOT NULL, bancount INTEGER NOT NULL, UNIQUE (jail, ip, timeofban));
		CREATE INDEX e_time ON e (timeofban);`,
		`INSERT OR IGNORE INTO e (jail, ip, timeofban, bantime, bancount) VALUES (?, ?, ?, ?, ?)`, false},
	{"rowid_text_jail_text_ip_unique_and_time_index", `
		CREATE TABLE e (jail TEXT NOT NULL, ip TEXT NOT NULL, timeofban INTEGER NOT NULL,
			bantime INTEGER NOT NULL, bancount INTEGER NOT NULL, UNIQUE (jail, ip, timeofban));
		CREATE INDEX e_time ON e (timeofban);`,
		`INSERT OR IGNORE INTO e (jail, ip, timeofban, bantime, bancount) VALUES (?, ?, ?, ?, ?)`, true},
}

// BenchmarkSize: size on disk per million events of each layout, written in
// one transaction (the time reported is that of the write).
func BenchmarkSize(b *testing.B) {
	n := benchEvents()
	events := realisticHistory(n, time.Now())
	for _, v := range schemaVariants {
		b.Run(v.name, func(b *testing.B) {
			var size, rows int64
			for b.Loop() {
				b.StopTimer()
				db, path := benchDB(b)
				ctx := context.Background()
				b.StartTimer()
				if v.ddl == "" {
					s, err := Open(ctx, db, Options{MaxQueue: n})
					if err != nil {
						b.Fatal(err)
					}
					s.Add(events...)
					if err := s.Flush(ctx); err != nil {
						b.Fatal(err)
					}
					rows = s.Count()
				} else {
					rows = writeVariant(b, db, v.ddl, v.insert, v.ipText, events)
				}
				b.StopTimer()
				size = sizeOnDisk(b, db, path)
				closeQuietly(db)
				b.StartTimer()
			}
			b.ReportMetric(float64(size)/float64(rows)*1e6/(1<<20), "MiB/1M-events")
			b.ReportMetric(float64(size)/float64(rows), "bytes/event")
		})
	}
}

func writeVariant(b *testing.B, db *appdb.DB, ddl, insert string, ipText bool, events []Event) int64 {
	b.Helper()
	ctx := context.Background()
	if _, err := db.Writer.ExecContext(ctx, ddl); err != nil {
		b.Fatal(err)
	}
	tx, err := db.Writer.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	jails := map[string]int64{}
	if !ipText {
		for i, j := range testJails {
			if _, err := tx.ExecContext(ctx, "INSERT INTO j(id, name) VALUES (?, ?)", i+1, j); err != nil {
				b.Fatal(err)
			}
			jails[j] = int64(i + 1)
		}
	}
	stmt, err := tx.PrepareContext(ctx, insert)
	if err != nil {
		b.Fatal(err)
	}
	var rows int64
	var buf [16]byte
	for i := range events {
		e := &events[i]
		var jail, ip any = jails[e.Jail], appendIP(buf[:0], e.IP)
		if ipText {
			jail, ip = e.Jail, e.IP.String()
		}
		res, err := stmt.ExecContext(ctx, jail, ip, e.TimeOfBan, e.Bantime, e.Bancount)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := res.RowsAffected()
		rows += n
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return rows
}

// BenchmarkPrune: a retention pass that deletes the older half of a
// 1M-event archive in batches of DefaultPruneBatch; reports the longest
// batch (how long one pruning transaction holds the writer).
func BenchmarkPrune(b *testing.B) {
	n := benchEvents()
	now := time.Now()
	events := realisticHistory(n, now)
	var longest time.Duration
	var pruned, batches int64
	for b.Loop() {
		b.StopTimer()
		db, _ := benchDB(b)
		ctx := context.Background()
		clock := now
		s, err := Open(ctx, db, Options{MaxQueue: n, Now: func() time.Time { return clock }})
		if err != nil {
			b.Fatal(err)
		}
		s.Add(events...)
		if err := s.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		// Half of the 30 days fall out of the retention.
		clock = now.Add(DefaultRetention - 15*24*time.Hour)
		b.StartTimer()
		pruned, batches, longest = 0, 0, 0
		for {
			start := time.Now()
			k, err := s.pruneBatch(ctx)
			if err != nil {
				b.Fatal(err)
			}
			longest = max(longest, time.Since(start))
			pruned += k
			if k == 0 {
				break
			}
			batches++
		}
		b.StopTimer()
		closeQuietly(db)
		b.StartTimer()
	}
	b.ReportMetric(float64(pruned), "pruned")
	b.ReportMetric(float64(batches), "batches")
	b.ReportMetric(float64(longest.Microseconds())/1000, "ms/longest-batch")
}

// BenchmarkAdd: the scrape-path cost of offering a refresh's new rows (1,000
// events per call) to the queue.
func BenchmarkAdd(b *testing.B) {
	db, _ := benchDB(b)
	s, err := Open(context.Background(), db, Options{MaxQueue: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	events := realisticHistory(1000, time.Now())
	calls := 0
	for b.Loop() {
		if calls%1000 == 0 { // keep the queue from growing without bound, off the clock
			b.StopTimer()
			s.mu.Lock()
			s.queue = s.queue[:0]
			s.mu.Unlock()
			b.StartTimer()
		}
		s.Add(events...)
		calls++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(calls*len(events)), "ns/event")
}
