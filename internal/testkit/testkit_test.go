package testkit

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

func TestLogBuffer(t *testing.T) {
	var b LogBuffer
	log := b.Logger(slog.LevelInfo)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				log.Info("line")
				log.Debug("hidden")
			}
		})
	}
	wg.Wait()
	if n := b.Count("msg=line"); n != 80 {
		t.Fatalf("Count = %d, want 80", n)
	}
	if n := len(b.Take()); n != 80 {
		t.Fatalf("Take returned %d lines, want 80", n)
	}
	if lines := b.Take(); lines != nil {
		t.Fatalf("second Take = %q, want nil", lines)
	}
}

func TestPoll(t *testing.T) {
	tests := []struct {
		name    string
		after   int // cond succeeds from this call on; <0 never
		timeout time.Duration
		wantErr bool
	}{
		{"at once", 0, time.Second, false},
		{"after a few polls", 3, time.Second, false},
		{"never", -1, 50 * time.Millisecond, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := Poll(tc.timeout, func() error {
				calls++
				if tc.after >= 0 && calls > tc.after {
					return nil
				}
				return errors.New("not yet")
			})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Poll = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestCommitCounterAndDataVersion(t *testing.T) {
	ctx := context.Background()
	db, err := appdb.Open(ctx, filepath.Join(t.TempDir(), "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	cc := CountCommits(t, db)
	dv := PinDataVersion(t, db)
	v0 := dv.Get(t)
	if _, err := db.Writer.ExecContext(ctx, "CREATE TABLE t (x)"); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Writer.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (?)", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := cc.Load(); got != 2 {
		t.Fatalf("commits = %d, want 2 (CREATE, one transaction)", got)
	}
	if v1 := dv.Get(t); v1 == v0 {
		t.Fatalf("data_version unchanged (%d) after writes", v1)
	}
}
