package collector

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// integrityChunkRows is how many b-tree entries one step of the integrity
// check reads: one statement, so one short read transaction of a few
// milliseconds, like every other chunked read of fail2ban's database.
const integrityChunkRows = 4096

// integrityCheck walks every b-tree of fail2ban's database — each table
// with all its columns (overflow pages included) and each index — in chunks
// of at most integrityChunkRows entries, each chunk its own read
// transaction. SQLite checks every page it loads, so a corrupted page
// anywhere in the file is found within one pass, not only in the rows the
// incremental reader happens to touch (it only reads new rows; old pages
// are never read again).
//
// It never writes, never holds a read transaction longer than one chunk,
// and keeps its own read-only connection, so the reader's pinned connection
// and fail2ban's writer are never held up by it.
type integrityCheck struct {
	path string
	db   *sql.DB
	dev  uint64
	ino  uint64
	// trees are the b-trees of the current pass; tree is the one being
	// read and after the key of its last entry read (nil: from its start).
	trees []btree
	tree  int
	after []any
	// entries counts the entries read in the current pass; passEntries is
	// the count of the last complete pass.
	entries     int64
	passEntries int64
}

// btree is one table or index of fail2ban's database, as the integrity
// check reads it.
type btree struct {
	name  string // index or table name
	table string
	// keys are the columns an index is ordered by, rowid last; empty for a
	// table (read in rowid order).
	keys []string
	// unreadable is set for an index whose key is an expression: it is not
	// read in chunks (a corrupted page in it is still found by SQLite's
	// own use of the index).
	unreadable bool
}

func newIntegrityCheck(path string) *integrityCheck { return &integrityCheck{path: path} }

// close ends the current pass and releases the connection.
func (c *integrityCheck) close() {
	if c.db != nil {
		_ = c.db.Close()
		c.db = nil
	}
	c.trees, c.tree, c.after, c.entries = nil, 0, nil, 0
}

// step reads the next chunk. It returns done when the chunk completed a
// pass over every b-tree (the next step starts a new pass), and the error
// of the chunk otherwise (classify it with classifyError: a damaged page is
// kindCorrupt, a lock held by fail2ban's writer kindLocked). After an error
// the next step starts a new pass. passEntries is set when done: how many
// entries the pass read.
func (c *integrityCheck) step(ctx context.Context) (done bool, err error) {
	defer func() {
		if done {
			c.passEntries = c.entries
		}
		if err != nil || done {
			c.close()
		}
	}()
	if c.db == nil {
		if err := c.begin(ctx); err != nil {
			return false, err
		}
	} else {
		// A replaced file is a new database: start its pass afresh.
		dev, ino, err := fileID(c.path)
		if err != nil {
			return false, fmt.Errorf("integrity check: %w", err)
		}
		if dev != c.dev || ino != c.ino {
			c.close()
			return false, c.begin(ctx)
		}
	}
	for c.tree < len(c.trees) && c.trees[c.tree].unreadable {
		c.tree++
	}
	if c.tree == len(c.trees) {
		return true, nil
	}
	t := c.trees[c.tree]
	n, last, err := c.readChunk(ctx, t)
	if err != nil {
		return false, fmt.Errorf("integrity check of %s in %s: %w", t.name, c.path, err)
	}
	c.entries += int64(n)
	if n < integrityChunkRows {
		c.tree, c.after = c.tree+1, nil
		for c.tree < len(c.trees) && c.trees[c.tree].unreadable {
			c.tree++
		}
		return c.tree == len(c.trees), nil
	}
	c.after = last
	return false, nil
}

// begin opens the database and lists its b-trees for a new pass.
func (c *integrityCheck) begin(ctx context.Context) error {
	dev, ino, err := fileID(c.path)
	if err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	// A small page cache: a pass reads each page once, in order.
	db, err := sql.Open("sqlite", readOnlyURI(c.path)+"&_pragma=cache_size(-256)")
	if err != nil {
		return fmt.Errorf("integrity check: open %s: %w", c.path, err)
	}
	db.SetMaxOpenConns(1)
	c.db, c.dev, c.ino = db, dev, ino
	trees, err := listBtrees(ctx, db)
	if err != nil {
		return fmt.Errorf("integrity check of %s: %w", c.path, err)
	}
	c.trees, c.tree, c.after, c.entries = trees, 0, nil, 0
	return nil
}

// listBtrees returns every table and index of the database with a b-tree
// of its own (views and virtual tables have none).
func listBtrees(ctx context.Context, db *sql.DB) ([]btree, error) {
	rs, err := db.QueryContext(ctx,
		"SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master WHERE type IN ('table', 'index') AND rootpage > 0 ORDER BY rootpage")
	if err != nil {
		return nil, fmt.Errorf("list tables and indexes: %w", err)
	}
	var trees []btree
	for rs.Next() {
		var typ, name, table, ddl string
		if err := rs.Scan(&typ, &name, &table, &ddl); err != nil {
			_ = rs.Close()
			return nil, fmt.Errorf("list tables and indexes: %w", err)
		}
		t := btree{name: name, table: table}
		switch {
		case typ == "index":
			t.keys = []string{} // filled below
		case strings.Contains(strings.ToUpper(ddl), "WITHOUT ROWID"):
			// Not in fail2ban's schema; it has no rowid to page by.
			t.unreadable = true
		}
		trees = append(trees, t)
	}
	if err := rs.Close(); err != nil {
		return nil, fmt.Errorf("list tables and indexes: %w", err)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("list tables and indexes: %w", err)
	}
	for i := range trees {
		if trees[i].keys == nil {
			continue
		}
		keys, ok, err := indexKeys(ctx, db, trees[i].name)
		if err != nil {
			return nil, err
		}
		trees[i].keys, trees[i].unreadable = keys, !ok
	}
	return trees, nil
}

// indexKeys returns the columns index is ordered by, rowid last; ok is
// false when a key is an expression.
func indexKeys(ctx context.Context, db *sql.DB, index string) (keys []string, ok bool, err error) {
	rs, err := db.QueryContext(ctx, "SELECT cid, coalesce(name, '') FROM pragma_index_info(?) ORDER BY seqno", index)
	if err != nil {
		return nil, false, fmt.Errorf("columns of index %s: %w", index, err)
	}
	defer rs.Close()
	for rs.Next() {
		var cid int
		var name string
		if err := rs.Scan(&cid, &name); err != nil {
			return nil, false, fmt.Errorf("columns of index %s: %w", index, err)
		}
		if cid < 0 || name == "" {
			return nil, false, nil
		}
		keys = append(keys, quoteIdent(name))
	}
	if err := rs.Err(); err != nil {
		return nil, false, fmt.Errorf("columns of index %s: %w", index, err)
	}
	return append(keys, "rowid"), true, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// readChunk reads the next at most integrityChunkRows entries of t after
// c.after, every column of them, and returns how many it read and the key of
// the last one.
func (c *integrityCheck) readChunk(ctx context.Context, t btree) (int, []any, error) {
	var q string
	args := c.after
	if len(t.keys) == 0 {
		// A table: rowid order, every column, so that overflow pages are
		// read too.
		q = "SELECT rowid, * FROM " + quoteIdent(t.table)
		if args != nil {
			q += " WHERE rowid > ?"
		}
		q += " ORDER BY rowid LIMIT ?"
	} else {
		// An index: its own order, only its keys, so that SQLite reads the
		// index b-tree (a covering scan) and not the table.
		cols := strings.Join(t.keys, ", ")
		q = "SELECT " + cols + " FROM " + quoteIdent(t.table) + " INDEXED BY " + quoteIdent(t.name)
		if args != nil {
			q += " WHERE (" + cols + ") > (" + strings.TrimSuffix(strings.Repeat("?, ", len(t.keys)), ", ") + ")"
		}
		q += " ORDER BY " + cols + " LIMIT ?"
	}
	rs, err := c.db.QueryContext(ctx, q, append(args, integrityChunkRows)...)
	if err != nil {
		return 0, nil, err
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		return 0, nil, err
	}
	keyCols := 1
	if len(t.keys) > 0 {
		keyCols = len(t.keys)
	}
	// The key columns keep their types (the next chunk's WHERE compares
	// them); the other columns are only read, into reused buffers.
	vals := make([]any, keyCols)
	raw := make([]sql.RawBytes, len(cols)-keyCols)
	ptrs := make([]any, len(cols))
	for i := range ptrs {
		if i < keyCols {
			ptrs[i] = &vals[i]
		} else {
			ptrs[i] = &raw[i-keyCols]
		}
	}
	n := 0
	for rs.Next() {
		if err := rs.Scan(ptrs...); err != nil {
			return n, nil, err
		}
		n++
	}
	if err := rs.Err(); err != nil {
		return n, nil, err
	}
	if n == 0 {
		return 0, nil, nil
	}
	last := slices.Clone(vals)
	for _, v := range last {
		if v == nil {
			// A NULL key compares as unknown: no row value is greater than
			// it, so the rest of this index cannot be read in order. The
			// chunk counts as the last one of this b-tree.
			return 0, nil, nil
		}
	}
	return n, last, nil
}

// integrityPace is how long the integrity check rests after a chunk, as a
// multiple of the chunk's own duration: 19 keeps it at about 5 % of one
// core while it runs.
const integrityPace = 19

// integrityRetry is how long the check waits before it reads a database
// that failed it again (at most the interval): recovery is noticed within
// this plus one pass.
const integrityRetry = 10 * time.Second

// RunIntegrityCheck reads every page of fail2ban's database in the
// background, one pass every opts.IntegrityCheckInterval, until ctx ends
// (see integrityCheck). A damaged page turns fail2ban_up to 0 with
// bangui_exporter_fail2ban_read_errors_total{kind="corrupt"} and one log
// line, and the exporter serves no counts from the file until a later pass
// reads it whole again; then it reads it afresh. fail2ban's lock (kindLocked)
// or a missing file only postpone the pass: the reader reports those.
func (ex *Exporter) RunIntegrityCheck(ctx context.Context) {
	interval := ex.opts.IntegrityCheckInterval
	if interval <= 0 || ex.opts.DBPath == "" {
		return
	}
	retry := min(integrityRetry, interval)
	check := newIntegrityCheck(ex.opts.DBPath)
	defer check.close()
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	// The first pass starts after the startup read, not beside it.
	if !wait(min(interval, time.Minute)) {
		return
	}
	for {
		start := time.Now()
		done, err := check.step(ctx)
		cost := time.Since(start)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && classifyError(err) == kindCorrupt:
			ex.setIntegrityErr(ctx, &readError{kind: kindCorrupt, err: err})
			if !wait(retry) {
				return
			}
		case err != nil:
			// Locked by fail2ban, missing, replaced mid-pass: the reader
			// reports these itself; try the pass again later.
			ex.logger.Debug("integrity check postponed", "err", err)
			if !wait(retry) {
				return
			}
		case done:
			ex.logger.Debug("integrity check passed", "path", ex.opts.DBPath, "entries", check.passEntries)
			ex.setIntegrityErr(ctx, nil)
			if !wait(interval) {
				return
			}
		default:
			if !wait(max(time.Duration(ex.integrityPace)*cost, time.Millisecond)) {
				return
			}
		}
	}
}

// setIntegrityErr records the outcome of an integrity pass; a change is
// applied at once by a refresh (one log line, fail2ban_up, a full reread
// after recovery).
func (ex *Exporter) setIntegrityErr(ctx context.Context, err error) {
	ex.mu.Lock()
	changed := (err == nil) != (ex.integrityErr == nil)
	ex.integrityErr = err
	ex.mu.Unlock()
	if changed {
		_ = ex.Refresh(ctx)
	}
}
