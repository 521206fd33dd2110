package archive

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/bangui/bangui_exporter/internal/sqliteread"
)

// Load calls fn for every archived event with timeofban ≥ since, in order of
// (timeofban, jail, ip). It reads in chunks of LoadChunk events, each its own
// short read, and calls fn outside of any read, so a slow fn holds no
// transaction open. An error of fn stops Load and is returned.
func (s *Store) Load(ctx context.Context, since time.Time, fn func(Event) error) error {
	return s.load(ctx, since, true, fn)
}

// LoadKeys is Load without bantime and bancount (left 0): what the engine
// needs of an event, (jail, ip, timeofban), read at about two thirds of the
// cost, which at a restart with a million archived events is a part of the
// time until ready.
func (s *Store) LoadKeys(ctx context.Context, since time.Time, fn func(Event) error) error {
	return s.load(ctx, since, false, fn)
}

func (s *Store) load(ctx context.Context, since time.Time, full bool, fn func(Event) error) error {
	if err := s.loadJails(ctx); err != nil {
		return err
	}
	// A reader goroutine reads the next chunk while fn takes in the
	// current one: at startup the engine's indexing and SQLite's reading
	// overlap instead of taking turns.
	type loaded struct {
		chunk []Event
		err   error
	}
	ctx, cancel := context.WithCancel(ctx)
	chunks := make(chan loaded, 1)
	free := make(chan []Event, 2)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		defer close(chunks)
		// A connection of its own, without database/sql: a restart
		// loads a million events, and through database/sql the driver
		// costs more than SQLite's reading.
		conn, err := s.db.BulkReader(ctx)
		if err != nil {
			chunks <- loaded{err: fmt.Errorf("archive: load: %w", err)}
			return
		}
		defer conn.Close()
		var last *loadKey
		for {
			var buf []Event
			select {
			case buf = <-free:
			default:
				buf = make([]Event, 0, s.opts.LoadChunk)
			}
			chunk, next, err := s.loadChunk(ctx, conn, since, last, full, buf[:0])
			if err == nil && len(chunk) == 0 {
				return
			}
			select {
			case chunks <- loaded{chunk: chunk, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil || len(chunk) < s.opts.LoadChunk {
				return
			}
			last = next
		}
	}()
	for l := range chunks {
		if l.err != nil {
			return l.err
		}
		for i := range l.chunk {
			if err := fn(l.chunk[i]); err != nil {
				return err
			}
		}
		select {
		case free <- l.chunk:
		default:
		}
	}
	return ctx.Err()
}

// loadKey is the position of the last event of a loaded chunk.
type loadKey struct {
	timeOfBan, jail int64
	ip              []byte
}

// loadChunk reads the events after last (from since when last is nil), at
// most LoadChunk, into out, with their jail names; it returns the position
// of the last one.
func (s *Store) loadChunk(ctx context.Context, conn *sqliteread.Conn, since time.Time, last *loadKey, full bool, out []Event) ([]Event, *loadKey, error) {
	var (
		rows *sqliteread.Rows
		err  error
	)
	columns := "timeofban, jail, ip, bantime, bancount"
	if !full {
		columns = "timeofban, jail, ip, 0, 0"
	}
	if last == nil {
		rows, err = conn.Query(ctx, `SELECT `+columns+` FROM archive_events
			WHERE timeofban >= ? ORDER BY timeofban, jail, ip LIMIT ?`, since.Unix(), s.opts.LoadChunk)
	} else {
		rows, err = conn.Query(ctx, `SELECT `+columns+` FROM archive_events
			WHERE (timeofban, jail, ip) > (?, ?, ?) ORDER BY timeofban, jail, ip LIMIT ?`,
			last.timeOfBan, last.jail, last.ip, s.opts.LoadChunk)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("archive: load: %w", err)
	}
	defer rows.Close()
	ids := make([]int64, 0, s.opts.LoadChunk)
	var k loadKey
	for rows.Next() {
		e := Event{TimeOfBan: rows.Int64(0), Bantime: rows.Int64(3), Bancount: rows.Int64(4)}
		k.jail = rows.Int64(1)
		ip := rows.Blob(2)
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return nil, nil, fmt.Errorf("archive: load: event at %d has an IP of %d bytes", e.TimeOfBan, len(ip))
		}
		e.IP = a
		k.timeOfBan = e.TimeOfBan
		k.ip = append(k.ip[:0], ip...)
		out = append(out, e)
		ids = append(ids, k.jail)
	}
	if err := rows.Close(); err != nil {
		return nil, nil, fmt.Errorf("archive: load: %w", err)
	}
	if len(out) == 0 {
		return out, nil, nil
	}
	if err := s.nameJails(ctx, out, ids); err != nil {
		return nil, nil, err
	}
	return out, &k, nil
}

func (s *Store) nameJails(ctx context.Context, chunk []Event, ids []int64) error {
	for attempt := 0; ; attempt++ {
		missing := false
		s.jailsMu.Lock()
		for i := range chunk {
			name, ok := s.jailName[ids[i]]
			if !ok {
				missing = true
				break
			}
			chunk[i].Jail = name
		}
		s.jailsMu.Unlock()
		if !missing {
			return nil
		}
		if attempt > 0 {
			return errors.New("archive: load: event of an unknown jail id")
		}
		if err := s.loadJails(ctx); err != nil {
			return err
		}
	}
}
