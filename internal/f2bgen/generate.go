package f2bgen

import (
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Stats describes a generated database; every number is what the file holds.
type Stats struct {
	Schema int
	// BanRows is the number of rows in bans; BipsRows in bips (0 for schema 2).
	BanRows  int
	BipsRows int
	// DistinctIPs over all rows, of which IPv6.
	DistinctIPs int
	IPv6        int
	// PermanentRows are bans rows with bantime -1 (schema 4).
	PermanentRows int
	// DuplicateRows are exact copies of another bans row.
	DuplicateRows int
	// ManualRows are bans made by `fail2ban-client set JAIL banip`.
	ManualRows int
	// CurrentlyBanned counts bips rows banned at Now by fail2ban's rule
	// (bantime <= -1 OR timeofban + bantime > now); 0 for schema 2.
	CurrentlyBanned int
	// OldestBan and NewestBan are the extreme timeofban values.
	OldestBan, NewestBan time.Time
	// Jails holds per-jail numbers in Spec.Jails order.
	Jails []JailStats
	// Now is the spec's end of history.
	Now time.Time
	// FileBytes is the size of the file; Elapsed the time Generate took.
	FileBytes int64
	Elapsed   time.Duration
}

// JailStats are one jail's numbers.
type JailStats struct {
	Name            string
	BanRows         int
	BipsRows        int
	CurrentlyBanned int
}

func (m *model) stats() Stats {
	spec := m.spec
	st := Stats{Schema: spec.Schema, BanRows: len(m.events), DistinctIPs: len(m.ips), Now: spec.Now}
	st.Jails = make([]JailStats, len(spec.Jails))
	for i, j := range spec.Jails {
		st.Jails[i].Name = j.Name
	}
	for _, a := range m.ips {
		if a.Is6() {
			st.IPv6++
		}
	}
	oldest, newest := int64(1<<62), int64(-1<<62)
	for i := range m.events {
		ev := &m.events[i]
		st.Jails[m.pairs[ev.pair].jail].BanRows++
		if ev.bantime == Permanent {
			st.PermanentRows++
		}
		if ev.duplicate {
			st.DuplicateRows++
		}
		if ev.manual {
			st.ManualRows++
		}
		oldest, newest = min(oldest, ev.timeofban), max(newest, ev.timeofban)
	}
	st.OldestBan, st.NewestBan = time.Unix(oldest, 0).UTC(), time.Unix(newest, 0).UTC()
	if spec.Schema == 2 {
		st.PermanentRows = 0
		return st
	}
	now := spec.Now.Unix()
	st.BipsRows = len(m.pairs)
	for p, last := range m.lastEvent {
		js := &st.Jails[m.pairs[p].jail]
		js.BipsRows++
		ev := &m.events[last]
		if ev.bantime <= -1 || ev.timeofban+ev.bantime > now {
			js.CurrentlyBanned++
			st.CurrentlyBanned++
		}
	}
	return st
}

// Generate writes a new fail2ban database for spec at path and returns what
// it holds. The file must not exist yet; it is written under a temporary
// name and renamed into place, so a crash never leaves a partial database at
// path.
func Generate(ctx context.Context, path string, spec Spec) (Stats, error) {
	started := time.Now()
	spec, err := spec.withDefaults()
	if err != nil {
		return Stats{}, err
	}
	if _, err := os.Lstat(path); err == nil {
		return Stats{}, fmt.Errorf("f2bgen: %s already exists", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return Stats{}, fmt.Errorf("f2bgen: %w", err)
	}
	m, err := buildModel(spec)
	if err != nil {
		return Stats{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return Stats{}, fmt.Errorf("f2bgen: create temporary file: %w", err)
	}
	tmpPath := tmp.Name()
	_ = tmp.Close()
	// SQLite creates the file afresh; the deferred Remove is a no-op after
	// the rename.
	defer func() { _ = os.Remove(tmpPath) }()
	if err := os.Remove(tmpPath); err != nil {
		return Stats{}, fmt.Errorf("f2bgen: %w", err)
	}
	if err := m.write(ctx, tmpPath); err != nil {
		return Stats{}, err
	}
	// fail2ban creates its database 0600 (root only).
	if err := os.Chmod(tmpPath, 0o600); err != nil {
		return Stats{}, fmt.Errorf("f2bgen: %w", err)
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return Stats{}, fmt.Errorf("f2bgen: move database into place: %w", err)
	}
	st := m.stats()
	if fi, err := os.Stat(path); err == nil {
		st.FileBytes = fi.Size()
	}
	st.Elapsed = time.Since(started)
	return st, nil
}

// rowsPerInsert is how many rows one INSERT statement carries: fewer calls
// through the driver make loading several times faster.
const rowsPerInsert = 64

// write loads the model into a new SQLite file.
func (m *model) write(ctx context.Context, path string) (err error) {
	// Bulk load without a journal: the file is private until renamed.
	dsn := "file:" + path + "?_pragma=journal_mode(OFF)&_pragma=synchronous(OFF)" +
		"&_pragma=cache_size(-65536)&_pragma=locking_mode(EXCLUSIVE)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("f2bgen: open %s: %w", path, err)
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("f2bgen: close %s: %w", path, cerr)
		}
	}()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("f2bgen: open %s: %w", path, err)
	}
	defer func() { _ = conn.Close() }()

	spec := m.spec
	schema := schemaFor(spec.Schema)
	var late []string
	for _, obj := range schema {
		if obj.lateIndex && !spec.IndexesFirst {
			late = append(late, obj.sql)
			continue
		}
		if _, err := conn.ExecContext(ctx, obj.sql); err != nil {
			return fmt.Errorf("f2bgen: create schema: %w", err)
		}
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("f2bgen: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, "INSERT INTO fail2banDb(version) VALUES(?)", spec.Schema); err != nil {
		return fmt.Errorf("f2bgen: insert version: %w", err)
	}
	for _, j := range spec.Jails {
		if _, err := tx.ExecContext(ctx, "INSERT INTO jails(name, enabled) VALUES(?, ?)", j.Name, boolInt(j.Enabled)); err != nil {
			return fmt.Errorf("f2bgen: insert jail %q: %w", j.Name, err)
		}
		firstLine := md5.Sum([]byte(j.Name + j.LogPath))
		if _, err := tx.ExecContext(ctx, "INSERT INTO logs(jail, path, firstlinemd5, lastfilepos) VALUES(?, ?, ?, ?)",
			j.Name, j.LogPath, hex.EncodeToString(firstLine[:]), 1024+int64(len(m.events))*97); err != nil {
			return fmt.Errorf("f2bgen: insert log of jail %q: %w", j.Name, err)
		}
	}
	if err := m.insertRows(ctx, tx, "bans", len(m.events), func(i int) *event { return &m.events[i] }); err != nil {
		return err
	}
	if spec.Schema == 4 {
		// bips holds each pair's last inserted row, in the order of those rows.
		order := make([]int32, len(m.lastEvent))
		copy(order, m.lastEvent)
		sortInt32(order)
		if err := m.insertRows(ctx, tx, "bips", len(order), func(i int) *event { return &m.events[order[i]] }); err != nil {
			return err
		}
	}
	for _, stmt := range late {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("f2bgen: create index: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("f2bgen: commit: %w", err)
	}
	return nil
}

// rowBatch is rowsPerInsert rows' bound arguments, built off the writing
// goroutine.
type rowBatch struct {
	args []any
	rows int
}

// insertRows writes n rows of table; row(i) is the event of the i-th row.
// A producer goroutine encodes batches while this one executes them.
func (m *model) insertRows(ctx context.Context, tx *sql.Tx, table string, n int, row func(int) *event) error {
	cols := m.columns(table)
	stmtFor := func(rows int) string {
		one := "(" + strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + ")"
		return "INSERT INTO " + table + "(" + strings.Join(cols, ", ") + ") VALUES" +
			strings.TrimSuffix(strings.Repeat(one+",", rows), ",")
	}
	full, err := tx.PrepareContext(ctx, stmtFor(rowsPerInsert))
	if err != nil {
		return fmt.Errorf("f2bgen: prepare %s insert: %w", table, err)
	}
	defer func() { _ = full.Close() }()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan rowBatch, 8)
	go func() {
		defer close(batches)
		var data []byte
		for lo := 0; lo < n; lo += rowsPerInsert {
			hi := min(lo+rowsPerInsert, n)
			b := rowBatch{args: make([]any, 0, (hi-lo)*len(cols)), rows: hi - lo}
			for i := lo; i < hi; i++ {
				ev := row(i)
				pr := m.pairs[ev.pair]
				jail := &m.spec.Jails[pr.jail]
				ip := m.ipText[pr.ip]
				data = appendBanData(data[:0], &m.spec, jail, ip, m.ips[pr.ip].Is6(), ev)
				blob := append([]byte(nil), data...)
				switch {
				case table == "bips":
					b.args = append(b.args, ip, jail.Name, ev.timeofban, ev.bantime, ev.bancount, blob)
				case m.spec.Schema == 2:
					b.args = append(b.args, jail.Name, ip, ev.timeofban, blob)
				default:
					b.args = append(b.args, jail.Name, ip, ev.timeofban, ev.bantime, ev.bancount, blob)
				}
			}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	for b := range batches {
		if b.rows == rowsPerInsert {
			_, err = full.ExecContext(ctx, b.args...)
		} else {
			_, err = tx.ExecContext(ctx, stmtFor(b.rows), b.args...)
		}
		if err != nil {
			return fmt.Errorf("f2bgen: insert into %s: %w", table, err)
		}
	}
	return ctx.Err()
}

func (m *model) columns(table string) []string {
	switch {
	case table == "bips":
		return []string{"ip", "jail", "timeofban", "bantime", "bancount", "data"}
	case m.spec.Schema == 2:
		return []string{"jail", "ip", "timeofban", "data"}
	default:
		return []string{"jail", "ip", "timeofban", "bantime", "bancount", "data"}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
