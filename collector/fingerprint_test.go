package collector

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestFingerprintEqualsSQLite: the engine's fingerprints of rows (rowMix,
// addFP) equal those SQLite computes over the same rows with
// source.fingerprints, for every kind of value a column can hold. A change
// to one formula without the other fails here.
func TestFingerprintEqualsSQLite(t *testing.T) {
	type ban struct {
		jail, ip           string
		timeOfBan, bantime int64
	}
	cases := []struct {
		name string
		bans []ban
	}{
		{"one ban", []ban{{"sshd", "192.0.2.1", 1_790_000_000, 600}}},
		{"permanent and negative bantimes", []ban{{"sshd", "192.0.2.1", 1_790_000_000, -1}, {"nginx", "192.0.2.2", 1_790_000_001, -2}}},
		{"IPv6 and long jail names", []ban{{"nginx-http-auth", "2001:db8::1", 1_790_000_000, 3600}, {"recidive", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1_790_000_002, 604800}}},
		{"non-ASCII jail", []ban{{"sshd-ünïcode", "192.0.2.3", 1_790_000_000, 600}}},
		{"timeofban and bantime beyond the modulus", []ban{{"sshd", "192.0.2.4", 4_000_000_000, 1 << 40}}},
		{"duplicate rows", []ban{{"sshd", "192.0.2.5", 1_790_000_000, 600}, {"sshd", "192.0.2.5", 1_790_000_000, 600}}},
	}
	for _, schema := range []int{4, 2} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("schema%d/%s", schema, tc.name), func(t *testing.T) {
				d := newF2BDB(t, schema)
				for _, b := range tc.bans {
					d.addJail(b.jail, true)
					d.ban(b.jail, b.ip, b.timeOfBan, b.bantime)
				}
				ctx := context.Background()
				src, err := openSource(ctx, d.path)
				if err != nil {
					t.Fatal(err)
				}
				defer src.close()
				tables := []string{"bans"}
				if schema == 4 {
					tables = append(tables, "bips")
				}
				for _, table := range tables {
					rows, err := src.readRange(ctx, table, 0, 1<<40)
					if err != nil {
						t.Fatal(err)
					}
					if len(rows) == 0 {
						t.Fatalf("no rows in %s", table)
					}
					ours := map[int64]fingerprint{}
					for i := range rows {
						addFP(ours, rows[i].Rowid, rowMix(&rows[i]), 1)
					}
					theirs, err := src.fingerprints(ctx, table, 0, 1<<40)
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(theirs, ours); diff != "" {
						t.Fatalf("%s: engine's fingerprints differ from SQLite's (-sqlite +engine):\n%s", table, diff)
					}
				}
			})
		}
	}
}

// TestAddFPRemovesWhatItAdded: taking out every row added leaves no bucket,
// and rows of different buckets never share one.
func TestAddFPRemovesWhatItAdded(t *testing.T) {
	cases := []struct {
		name    string
		rowids  []int64
		buckets int
	}{
		{"one row", []int64{1}, 1},
		{"one bucket", []int64{1, 2, 1<<bucketShift - 1}, 1},
		{"bucket boundary", []int64{1<<bucketShift - 1, 1 << bucketShift}, 2},
		{"far apart", []int64{5, 10 << bucketShift, 99 << bucketShift}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := map[int64]fingerprint{}
			for i, id := range tc.rowids {
				addFP(m, id, int32(i+7), 1)
			}
			if len(m) != tc.buckets {
				t.Fatalf("%d buckets, want %d: %v", len(m), tc.buckets, m)
			}
			for i, id := range tc.rowids {
				addFP(m, id, int32(i+7), -1)
			}
			if len(m) != 0 {
				t.Fatalf("buckets left after taking every row out: %v", m)
			}
		})
	}
}

// TestSpellingMixInvertsRowMix: the part of a bips row's mix that spellingMix
// recovers is the spelling part rowMix put in, so a replaced bips row with
// the same spelling is recognised.
func TestSpellingMixInvertsRowMix(t *testing.T) {
	cases := []struct {
		name string
		row  sourceRow
	}{
		{"IPv4", testRow(1, "sshd", "192.0.2.1", 1_790_000_000, 600)},
		{"IPv6", testRow(2, "nginx-http-auth", "2001:db8::1", 1_790_000_000, 3600)},
		{"permanent", testRow(3, "recidive", "192.0.2.2", 1_790_000_000, -1)},
		{"large values", testRow(4, "sshd", "192.0.2.3", 4_000_000_000, 1<<40)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, 4)
			e.appendBips([]sourceRow{tc.row}, tc.row.TimeOfBan)
			if got, want := e.spellingMix(0), spellingPart(tc.row.IPLen, tc.row.JailLen); got != want {
				t.Fatalf("spellingMix = %d, want %d", got, want)
			}
		})
	}
}
