package collector

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLeanReadEqualsExpressions: the fast read (stored columns decoded in
// Go, leanColumns) gives exactly the rows rowColumns' SQL expressions give,
// for every kind of value a column can hold — NULL, integers, reals, text
// that looks like a number, blobs, non-ASCII text and text with a NUL — in
// tables with and without declared types. Rows of the usual shape take the
// fast path; the others make their chunk fall back to the expressions.
func TestLeanReadEqualsExpressions(t *testing.T) {
	jails := []any{"sshd", nil, int64(42), 4.5, []byte("sshd"), "sshd-ünïcode", "a\x00b", "", "nginx-http-auth"}
	ips := []any{"192.0.2.1", nil, "2001:db8::1", int64(3232235777), []byte{192, 0, 2, 1}, "１９２.0.2.1", "192.0.2.9\x00junk", " 192.0.2.7 ", ""}
	times := []any{int64(1_790_000_000), nil, 1_790_000_000.7, "1790000000", "17x", []byte("1"), int64(-5), int64(1) << 40, int64(math.MaxInt64), int64(4_000_000_000)}
	bantimes := []any{int64(600), nil, int64(-1), 3.9, "600", []byte{}, int64(1) << 40, int64(-2)}
	bancounts := []any{int64(1), nil, 2.5, "3", []byte("x"), int64(0), int64(7)}
	const rows = 211
	value := func(vs []any, i, step int) any { return vs[(i*step)%len(vs)] }

	cases := []struct {
		name   string
		schema int
		typed  bool
	}{
		{"schema 4, declared types", 4, true},
		{"schema 4, no declared types", 4, false},
		{"schema 2, declared types", 2, true},
		{"schema 2, no declared types", 2, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fail2ban.sqlite3")
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			text, integer := "TEXT", "INTEGER"
			if !tc.typed {
				text, integer = "", ""
			}
			ddl := fmt.Sprintf("CREATE TABLE fail2banDb(version INTEGER); INSERT INTO fail2banDb VALUES(%d);"+
				"CREATE TABLE jails(name TEXT, enabled INTEGER);", tc.schema)
			tables := []string{"bans"}
			if tc.schema == 4 {
				ddl += fmt.Sprintf("CREATE TABLE bans(jail %[1]s, ip %[1]s, timeofban %[2]s, bantime %[2]s, bancount %[2]s, data);"+
					"CREATE TABLE bips(ip %[1]s, jail %[1]s, timeofban %[2]s, bantime %[2]s, bancount %[2]s, data);", text, integer)
				tables = append(tables, "bips")
			} else {
				ddl += fmt.Sprintf("CREATE TABLE bans(jail %s, ip %s, timeofban %s, data);", text, text, integer)
			}
			if _, err := db.Exec(ddl); err != nil {
				t.Fatal(err)
			}
			for i := range rows {
				// One plain row in three, so that plain rows follow odd ones.
				row := []any{value(jails, i, 1), value(ips, i, 2), value(times, i, 3), value(bantimes, i, 5), value(bancounts, i, 7)}
				if i%3 == 0 {
					row = []any{"sshd", fmt.Sprintf("192.0.2.%d", i%250), int64(1_790_000_000 + i), int64(600), int64(1)}
				}
				var q string
				switch tc.schema {
				case 2:
					q, row = "INSERT INTO bans(jail, ip, timeofban) VALUES(?, ?, ?)", row[:3]
				default:
					q = "INSERT INTO bans(jail, ip, timeofban, bantime, bancount) VALUES(?, ?, ?, ?, ?)"
					if _, err := db.Exec("INSERT INTO bips(jail, ip, timeofban, bantime, bancount) VALUES(?, ?, ?, ?, ?)", row...); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := db.Exec(q, row...); err != nil {
					t.Fatal(err)
				}
			}

			ctx := context.Background()
			src, err := openSource(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer src.close()
			for _, table := range tables {
				full := "SELECT " + src.rowColumns(table) + " FROM " + table + " WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
				want, err := src.scanRows(ctx, nil, table, full, 0, math.MaxInt64)
				if err != nil {
					t.Fatal(err)
				}
				if len(want) != rows {
					t.Fatalf("%s: %d rows, want %d", table, len(want), rows)
				}
				got, err := src.readRange(ctx, table, 0, math.MaxInt64)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%s: the whole table read fast differs from the expressions (-expressions +fast):\n%s", table, diff)
				}
				lean := "SELECT " + src.leanColumns(table) + " FROM " + table + " WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
				fast, odd := 0, 0
				for _, w := range want {
					got, err := src.readAfter(ctx, nil, table, w.Rowid-1, 1)
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff([]sourceRow{w}, got); diff != "" {
						t.Fatalf("%s: row %d read fast differs from the expressions (-expressions +fast):\n%s", table, w.Rowid, diff)
					}
					_, isOdd, err := src.scanLean(ctx, nil, table, lean, w.Rowid, w.Rowid)
					if err != nil {
						t.Fatal(err)
					}
					if isOdd {
						odd++
					} else {
						fast++
					}
				}
				// Every plain row takes the fast path; the odd ones exist.
				if fast < rows/3 || odd == 0 {
					t.Fatalf("%s: %d rows decoded fast, %d fell back: the test does not cover both paths", table, fast, odd)
				}
			}
		})
	}
}
