package collector

// The protocol that keeps the engine equal to fail2ban's database: readNew
// reads the rows above the engine's high-water marks in chunks; settle, in
// one short read transaction (readTails), takes in the rows committed
// meanwhile and compares each table's shape with the engine's (consistent);
// a table that lost or changed rows is reconciled bucket by bucket through
// the fingerprints (reconcile).

import (
	"context"
	"fmt"
	"maps"
)

// readNew reads the rows of table above the engine's high-water mark in
// chunks, each chunk its own short read. Reading the next chunk overlaps
// with applying the previous one.
func (ex *Exporter) readNew(ctx context.Context, table string, now int64) error {
	high := ex.eng.high(table)
	type chunk struct {
		rows []sourceRow
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	chunks := make(chan chunk, 1)
	// Applied chunks' buffers go back to the reader: an initial load of a
	// million rows reuses three buffers instead of growing one per chunk.
	free := make(chan []sourceRow, 3)
	readerDone := make(chan struct{})
	// The reader must be finished with the connection before anyone else
	// uses it.
	defer func() { cancel(); <-readerDone }()
	go func() {
		defer close(readerDone)
		defer close(chunks)
		after := high
		for {
			var buf []sourceRow
			select {
			case buf = <-free:
			default:
			}
			rows, err := ex.src.readAfter(ctx, buf, table, after, ex.opts.ChunkSize)
			select {
			case chunks <- chunk{rows: rows, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil || len(rows) < ex.opts.ChunkSize {
				return
			}
			after = rows[len(rows)-1].Rowid
		}
	}()
	for c := range chunks {
		if c.err != nil {
			return c.err
		}
		ex.apply(table, c.rows, now)
		select {
		case free <- c.rows:
		default:
		}
	}
	return ctx.Err()
}

// settleAttempts bounds how often settle goes back to chunked reads when
// fail2ban keeps writing more than a chunk between two of its reads.
const settleAttempts = 3

// settle ends a refresh: in one short read transaction it takes in the rows
// committed since readNew and reads each table's shape (row count, highest
// rowid, fingerprint of the top bucket). The engine and the shapes then
// describe the same state of the database, so a ban committed while the
// exporter reads is never mistaken for a deletion. A table whose shape
// differs from the engine's lost or changed rows (unban, purge, reused
// rowids) and is reconciled.
//
// A light settle (a scrape's, while RunVerify runs) reads the rowid bounds without counting
// the rows: it takes in the new rows and finds a changed top bucket or a
// purge of the oldest rows at once, but a deletion below the top bucket
// only at the next full settle, which RunVerify runs in the background.
// A light settle that finds the shapes differ settles fully.
func (ex *Exporter) settle(ctx context.Context, now int64) error {
	tables := []string{"bans"}
	if ex.src.schema == 4 {
		tables = append(tables, "bips")
	}
	light := ex.settleLight && ex.loaded && ex.verifying.Load()
	for attempt := 1; ; attempt++ {
		if ex.testHookBeforeSettle != nil {
			ex.testHookBeforeSettle()
		}
		tails, more, err := ex.readTails(ctx, tables, light)
		if err != nil {
			return err
		}
		for i, t := range tables {
			ex.apply(t, tails[i].rows, now)
		}
		if more {
			if attempt == settleAttempts {
				// fail2ban writes faster than one chunk per read: the
				// engine holds a consistent prefix; the next refresh
				// goes on from there.
				return nil
			}
			for _, t := range tables {
				if err := ex.readNew(ctx, t, now); err != nil {
					return err
				}
			}
			continue
		}
		for i, t := range tables {
			if ex.consistent(t, &tails[i]) {
				continue
			}
			if light {
				// Count, and reconcile with what the count says.
				light = false
				attempt = 0
				break
			}
			if err := ex.reconcile(ctx, t, tails[i].shape, now); err != nil {
				return err
			}
		}
		if attempt == 0 {
			continue
		}
		// After a light settle the engine may still hold rows deleted
		// below the top bucket, until the next full settle.
		ex.unverified = light
		return nil
	}
}

// tailRead is what settle reads of one table in its transaction.
type tailRead struct {
	rows  []sourceRow // rows above the engine's high-water mark
	shape tableShape
	topFP fingerprint // of the bucket of shape.max
}

// readTails reads, in one read transaction on the pinned connection, the
// new rows (at most one chunk) and the shape of each table. more reports
// that a table had a full chunk of new rows, so its shape may lie beyond
// what was read. The transaction holds a SHARED lock for a few
// milliseconds: a row count through the smallest index, two rowid lookups,
// one bucket's fingerprint.
func (ex *Exporter) readTails(ctx context.Context, tables []string, light bool) (tails []tailRead, more bool, err error) {
	conn := ex.src.conn
	if err := conn.Exec(ctx, "BEGIN"); err != nil {
		return nil, false, fmt.Errorf("begin read: %w", err)
	}
	// A read transaction: ROLLBACK ends it as COMMIT would, and is safe
	// after an error that already ended it.
	defer func() { _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK") }()
	tails = make([]tailRead, len(tables))
	for i, t := range tables {
		tr := &tails[i]
		if tr.rows, err = ex.src.readAfter(ctx, nil, t, ex.eng.high(t), ex.opts.ChunkSize); err != nil {
			return nil, false, err
		}
		more = more || len(tr.rows) >= ex.opts.ChunkSize
		if light {
			tr.shape, err = readBounds(ctx, conn, t)
		} else {
			tr.shape, err = readShape(ctx, conn, t)
		}
		if err != nil {
			return nil, false, err
		}
		if tr.shape.count != 0 { // -1: not counted (a light settle)
			top := bucketOf(tr.shape.max)
			fps, err := ex.src.fingerprints(ctx, t, top<<bucketShift, (top+1)<<bucketShift-1)
			if err != nil {
				return nil, false, err
			}
			tr.topFP = fps[top]
		}
	}
	return tails, more, nil
}

// apply adds rows read above the engine's high-water mark of table.
func (ex *Exporter) apply(table string, rows []sourceRow, now int64) {
	if len(rows) == 0 {
		return
	}
	if table == "bans" {
		ex.eng.appendBans(rows, now)
	} else {
		ex.eng.appendBips(rows, now)
	}
}

// consistent reports whether the engine holds what tr says table holds.
// Without a row count (a light settle), the lowest rowid stands in for it:
// fail2ban's purge deletes the oldest rows.
func (ex *Exporter) consistent(table string, tr *tailRead) bool {
	count, high, fps := ex.eng.tableState(table)
	if tr.shape.count < 0 {
		if count == 0 || tr.shape.min != ex.eng.low(table) {
			return false
		}
	} else if tr.shape.count != count {
		return false
	}
	if tr.shape.max != high {
		return false
	}
	return count == 0 || fps[bucketOf(high)] == tr.topFP
}

// reconcile compares the fingerprints of every bucket of table with the
// engine's and rereads the buckets that differ.
func (ex *Exporter) reconcile(ctx context.Context, table string, sh tableShape, now int64) error {
	ex.reconciles[table]++
	eng := ex.eng
	_, _, ours := eng.tableState(table)
	// Ranges of rowids per fingerprint query: each is its own short read.
	span := int64(ex.opts.ChunkSize)
	span = max(span>>bucketShift, 1) << bucketShift
	theirs := map[int64]fingerprint{}
	if sh.count > 0 {
		for lo := (sh.min >> bucketShift) << bucketShift; lo <= sh.max; lo += span {
			fps, err := ex.src.fingerprints(ctx, table, lo, lo+span-1)
			if err != nil {
				return err
			}
			maps.Copy(theirs, fps)
		}
	}
	var differ []int64
	for b, f := range theirs {
		if ours[b] != f {
			differ = append(differ, b)
		}
	}
	for b := range ours {
		if _, ok := theirs[b]; !ok {
			differ = append(differ, b)
		}
	}
	for _, b := range differ {
		lo, hi := b<<bucketShift, (b+1)<<bucketShift-1
		var rows []sourceRow
		if _, ok := theirs[b]; ok {
			var err error
			if rows, err = ex.src.readRange(ctx, table, lo, hi); err != nil {
				return err
			}
		}
		if table == "bans" {
			eng.replaceBansRange(lo, hi, rows, now)
		} else {
			eng.replaceBipsRange(lo, hi, rows, now)
		}
	}
	ex.logger.Debug("reconciled fail2ban table", "table", table, "buckets", len(differ))
	return nil
}
