package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/promslog"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/internal/appdb"
)

// TestArchiveRetentionFlag: --storage.retention speaks the one duration
// dialect (Go durations, then Prometheus ones) and is validated once.
func TestArchiveRetentionFlag(t *testing.T) {
	windows, err := collector.ParseWindows([]string{"1h"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		retention string
		wantErr   string
	}{
		{"1.5h", ""},
		{"400d", ""},
		{"2y", ""},
		{"1d12h", ""},
		{"90m", ""},
		{"500ms", "shorter than the longest --bans.window"},
		{"0", "--storage.retention: must be positive"},
		{"-5h", "--storage.retention: must be positive"},
		{"1.5d", "--storage.retention: invalid duration"},
		{"forever", "--storage.retention: invalid duration"},
	}
	for _, tt := range tests {
		t.Run(tt.retention, func(t *testing.T) {
			app := kingpin.New("test", "")
			f := addArchiveFlags(app)
			if _, err := app.Parse([]string{"--storage.retention=" + tt.retention}); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			db, err := appdb.Open(ctx, filepath.Join(t.TempDir(), "app.sqlite3"))
			if err != nil {
				t.Fatal(err)
			}
			e := &exporter{logger: promslog.NewNopLogger(), registry: prometheus.NewRegistry(), appDB: db}
			e.atShutdown(phaseStorage, func(context.Context) error { return db.Close() })
			defer e.shutdown(promslog.NewNopLogger())
			store, err := e.setupArchive(ctx, f, windows)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || store == nil {
				t.Fatalf("setupArchive: %v %v", store, err)
			}
			e.start(ctx)
		})
	}
}

// TestShutdownPhases: shutdown steps run in phase order, whatever order the
// parts registered them in, each phase's background work stopped first.
func TestShutdownPhases(t *testing.T) {
	var l lifecycle
	var order []string
	step := func(name string) func(context.Context) error {
		return func(context.Context) error { order = append(order, name); return nil }
	}
	// Registered in the reverse of the wanted order, as main_*.go might.
	l.atShutdown(phaseStorage, step("storage"))
	l.atShutdown(phaseSocket, step("socket"))
	l.atShutdown(phaseGeo, step("geo flush"))
	l.atShutdown(phaseGeo, step("geo close"))
	l.goBackground(phaseArchive, func(ctx context.Context) { <-ctx.Done(); order = append(order, "archive run") })
	l.atShutdown(phaseEngine, step("engine"))
	l.goBackground(phaseWorkers, func(ctx context.Context) { <-ctx.Done(); order = append(order, "workers") })
	l.start(context.Background())
	l.stop(context.Background(), promslog.NewNopLogger())
	l.stop(context.Background(), promslog.NewNopLogger()) // a second stop does nothing
	want := "workers,engine,archive run,geo flush,geo close,socket,storage"
	if got := strings.Join(order, ","); got != want {
		t.Fatalf("shutdown order %s, want %s", got, want)
	}
}
