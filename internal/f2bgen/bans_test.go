package f2bgen

import (
	"bytes"
	"testing"
)

// TestBansEqualsDatabase: Bans returns exactly the rows of the file, in
// rowid order.
func TestBansEqualsDatabase(t *testing.T) {
	spec := Spec{Rows: 2000, Seed: 17, Now: testNow}
	path, _ := generate(t, spec)
	for _, withData := range []bool{true, false} {
		bans, err := Bans(spec, withData)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := openRO(t, path).Query("SELECT jail, ip, timeofban, bantime, bancount, data FROM bans ORDER BY rowid")
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for rows.Next() {
			var b Ban
			var tob int64
			if err := rows.Scan(&b.Jail, &b.IP, &tob, &b.BanTime, &b.BanCount, &b.Data); err != nil {
				t.Fatal(err)
			}
			if i >= len(bans) {
				t.Fatalf("database has more than %d rows", len(bans))
			}
			g := bans[i]
			if g.Jail != b.Jail || g.IP != b.IP || g.TimeOfBan.Unix() != tob || g.BanTime != b.BanTime || g.BanCount != b.BanCount ||
				(withData && !bytes.Equal(g.Data, b.Data)) || (!withData && g.Data != nil) {
				t.Fatalf("row %d: Bans gives %+v, the database %+v (timeofban %d)", i+1, g, b, tob)
			}
			i++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		_ = rows.Close()
		if i != len(bans) {
			t.Fatalf("database has %d rows, Bans %d", i, len(bans))
		}
	}
}
