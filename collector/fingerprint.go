package collector

// The fingerprint of a rowid bucket, computed twice: by the engine as rows
// come and go (rowMix, fingerprint.add, addFP) and by SQLite over the rows
// the table holds (source.fingerprints, below). Both must compute the same
// sums: a change to one is a change to the other.

import (
	"context"
	"fmt"
)

// fingerprint sums what identifies the rows of one rowid bucket. SQLite
// computes the same sums with the query in source.fingerprints, so a bucket
// whose rows changed in any way the engine cares about shows a different
// fingerprint.
type fingerprint struct {
	Count    int64
	RowidSum int64
	MixSum   int64
}

// fingerprintModulus keeps the sums of one bucket far from overflowing.
const fingerprintModulus = 1000003

// rowMix is the part of a row's fingerprint beyond its rowid: it changes
// when timeofban, bantime, the ip's or the jail's spelling change.
func rowMix(r *sourceRow) int32 {
	return int32(r.TimeOfBan%fingerprintModulus + 3*(r.Bantime%fingerprintModulus) + spellingPart(r.IPLen, r.JailLen))
}

// spellingPart is the part of a row's mix that comes from the lengths of
// its ip and jail columns.
func spellingPart(ipLen, jailLen int64) int64 { return 5*ipLen + 7*jailLen }

// spellingMix is the part of the mix of the bips row at idx that comes from the
// spellings of its ip and jail.
func (e *engine) spellingMix(idx int) int64 {
	rec := &e.bipsRows[idx]
	return int64(rec.mix) - int64(rec.timeOfBan)%fingerprintModulus - 3*(e.bantimeOf(rec)%fingerprintModulus)
}

func (f *fingerprint) add(rowid int64, mix int32, sign int64) {
	f.Count += sign
	f.RowidSum += sign * rowid
	f.MixSum += sign * int64(mix)
}

// bucketShift groups rowids into buckets of 2048 for reconciliation. A
// light settle (every scrape while RunVerify runs) sums the top bucket in
// SQL: 1 ms for a full bucket of 2048 bips rows, where buckets of 8192
// cost up to 6 ms of every scrape after new bans. The engine keeps a
// fingerprint per bucket: about 500 at a million rows.
const bucketShift = 11

func bucketOf(rowid int64) int64 { return rowid >> bucketShift }

// addFP adds (sign 1) or takes out (sign -1) a row of rowid and mix in the
// fingerprints m of a table.
func addFP(m map[int64]fingerprint, rowid int64, mix int32, sign int64) {
	b := bucketOf(rowid)
	fp := m[b]
	fp.add(rowid, mix, sign)
	if fp.Count == 0 {
		delete(m, b)
	} else {
		m[b] = fp
	}
}

// fingerprints computes the fingerprint of every non-empty bucket with
// rowids in [lo, hi], as engine fingerprints do.
func (s *source) fingerprints(ctx context.Context, table string, lo, hi int64) (map[int64]fingerprint, error) {
	bantime := "coalesce(CAST(bantime AS INTEGER), 0)"
	if table == "bans" && s.schema == 2 {
		bantime = "0"
	}
	// The same sums as fingerprint.add and rowMix.
	q := fmt.Sprintf("SELECT rowid >> %[1]d, count(*), sum(rowid), "+
		"sum(coalesce(CAST(timeofban AS INTEGER), 0) %% %[2]d + 3 * (%[3]s %% %[2]d) + 5 * coalesce(length(ip), 0) + 7 * coalesce(length(jail), 0)) "+
		"FROM %[4]s WHERE rowid BETWEEN ? AND ? GROUP BY 1",
		bucketShift, fingerprintModulus, bantime, table)
	rs, err := s.conn.Query(ctx, q, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("fingerprint %s: %w", table, err)
	}
	defer rs.Close()
	out := map[int64]fingerprint{}
	for rs.Next() {
		out[rs.Int64(0)] = fingerprint{Count: rs.Int64(1), RowidSum: rs.Int64(2), MixSum: rs.Int64(3)}
	}
	if err := rs.Close(); err != nil {
		return nil, fmt.Errorf("fingerprint %s: %w", table, err)
	}
	return out, nil
}
