package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/collector/archive"
	"github.com/bangui/bangui_exporter/internal/duration"
)

// archiveFlags are the flags of the ban archive.
type archiveFlags struct {
	enabled   *bool
	retention *string
}

func addArchiveFlags(app *kingpin.Application) *archiveFlags {
	return &archiveFlags{
		enabled: app.Flag("storage.archive",
			"Keep every ban event the exporter sees in an archive in the app database (--storage.path), so that fail2ban_recent_bans windows longer than fail2ban's dbpurgeage (1 day by default) stay complete; --no-storage.archive turns it off.").
			Default("true").Bool(),
		retention: app.Flag("storage.retention",
			"How long archived ban events are kept (e.g. 400d, 2y); at least the longest --bans.window.").
			Default("400d").String(),
	}
}

// setupArchive opens the ban archive on the app database, registers its
// metrics and its background work (ingest cycles, pruning), which starts
// with the rest and stops in phaseArchive, after the engine closed: its
// final flush writes the engine's last events. It returns nil when the
// archive is off.
func (e *exporter) setupArchive(ctx context.Context, f *archiveFlags, windows []collector.Window) (*archive.Store, error) {
	logger := e.logger.With("component", "archive")
	if !*f.enabled {
		logger.Info("ban archive off (--no-storage.archive): windows count only what fail2ban's database still holds (dbpurgeage)")
		return nil, nil
	}
	retention, err := duration.Parse(*f.retention)
	if err != nil {
		return nil, fmt.Errorf("--storage.retention: %w", err)
	}
	if retention <= 0 {
		return nil, errors.New("--storage.retention: must be positive")
	}
	if longest := collector.Longest(windows); retention < longest {
		return nil, fmt.Errorf("--storage.retention=%s is shorter than the longest --bans.window (%s): that window could not stay complete across restarts; raise --storage.retention or shorten the window",
			*f.retention, longest)
	}
	store, err := archive.Open(ctx, e.appDB, archive.Options{Retention: retention, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("ban archive: %w", err)
	}
	if err := e.registry.Register(store.Collector()); err != nil {
		return nil, fmt.Errorf("ban archive: register metrics: %w", err)
	}
	e.goBackground(phaseArchive, func(ctx context.Context) {
		// Run logs and returns only the final flush's error.
		_ = store.Run(ctx)
	})
	var horizon string
	if o := store.Oldest(); !o.IsZero() {
		horizon = o.UTC().Format(time.RFC3339)
	}
	logger.Info("ban archive on", "path", e.appDB.Path(), "retention", *f.retention, "events", store.Count(), "horizon", horizon)
	return store, nil
}
