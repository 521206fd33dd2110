// Package testkit holds the helpers that tests across bangui_exporter share:
// a goroutine-safe log buffer, a polling Eventually, and probes that count
// the app database's commits. It is imported only by _test.go files and by
// other test helpers; production code never depends on it.
package testkit

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

// LogBuffer collects log output written from many goroutines (an
// exporter's slog handler, a child process's stdout/stderr). The zero value
// is ready to use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p; it never fails.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a text slog.Logger writing records of level and above into b.
func (b *LogBuffer) Logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: level}))
}

// Take returns the non-empty lines written since the last Take and forgets
// them.
func (b *LogBuffer) Take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.buf.String())
	b.buf.Reset()
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Count returns how many times substr occurs in what was written so far.
func (b *LogBuffer) Count(substr string) int {
	return strings.Count(b.String(), substr)
}

// PollInterval is how often Eventually checks its condition.
const PollInterval = 10 * time.Millisecond

// Eventually polls cond every PollInterval until it returns nil, and fails
// the test with cond's last error when timeout passes first. A condition
// that needs no explanation returns a plain error such as
// errors.New("not yet").
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("condition not met within %v: %v", timeout, err)
	}
}

// EventuallyFor is Eventually with a description of what is awaited in
// the failure message ("timed out after 1m0s waiting for what: err").
func EventuallyFor(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
}

// EventuallyTrue is Eventually for a boolean condition described by what.
func EventuallyTrue(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, timeout, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("waiting for %s", what)
	})
}

// Poll is Eventually without a test: it returns nil as soon as cond does,
// or cond's last error once timeout has passed. Benchmarks and helpers that
// must not fail a test from another goroutine use it.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(PollInterval)
	}
}

// CommitCounter counts the commits of an app database's single writer
// connection with SQLite's commit hook: every COMMIT, explicit or implicit.
type CommitCounter struct{ n atomic.Int64 }

// CountCommits registers a commit hook on db's writer connection.
func CountCommits(t testing.TB, db *appdb.DB) *CommitCounter {
	t.Helper()
	cc := &CommitCounter{}
	conn, err := db.Writer.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		h, ok := dc.(sqlite.HookRegisterer)
		if !ok {
			return fmt.Errorf("driver connection %T has no commit hook", dc)
		}
		h.RegisterCommitHook(func() int32 { cc.n.Add(1); return 0 })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// Load returns the number of commits counted so far.
func (c *CommitCounter) Load() int64 { return c.n.Load() }

// DataVersion pins one reader connection of an app database and reports
// PRAGMA data_version, which changes whenever another connection committed
// a write.
type DataVersion struct{ conn *sql.Conn }

// PinDataVersion pins a reader connection of db until the test ends.
func PinDataVersion(t testing.TB, db *appdb.DB) *DataVersion {
	t.Helper()
	conn, err := db.Reader.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &DataVersion{conn: conn}
}

// Get returns the current data_version.
func (d *DataVersion) Get(t testing.TB) int64 {
	t.Helper()
	var v int64
	if err := d.conn.QueryRowContext(context.Background(), "PRAGMA data_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
