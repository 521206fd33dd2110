package main

import (
	"context"
	"fmt"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/collector/archive"
)

// archiveFlags are the flags of the ban archive (issue 6).
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

// archiveStopTimeout bounds waiting for the archive's final flush (which
// bounds itself at archive.DefaultFlushTimeout).
const archiveStopTimeout = archive.DefaultFlushTimeout + 5*time.Second

// setupArchive opens the ban archive on the app database, registers its
// metrics and starts its background work (ingest cycles, pruning) at once,
// before the engine's startup read, which needs it running. It returns nil
// when the archive is off. The archive stops after the engine: its final
// flush writes the engine's last events, then the app database closes (the
// caller appends the engine's Close to onShutdown later, so it runs first).
func (e *exporter) setupArchive(ctx context.Context, f *archiveFlags, windows []collector.Window) (*archive.Store, error) {
	logger := e.logger.With("component", "archive")
	if !*f.enabled {
		logger.Info("ban archive off (--no-storage.archive): windows count only what fail2ban's database still holds (dbpurgeage)")
		return nil, nil
	}
	retention, err := collector.ParseDuration(*f.retention)
	if err != nil {
		return nil, fmt.Errorf("--storage.retention: %w", err)
	}
	if retention <= 0 {
		return nil, fmt.Errorf("--storage.retention: must be positive")
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
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Run logs and returns only the final flush's error.
		_ = store.Run(runCtx)
	}()
	e.onShutdown = append(e.onShutdown, func(ctx context.Context) error {
		cancel()
		ctx, stop := context.WithTimeout(ctx, archiveStopTimeout)
		defer stop()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("ban archive: final flush did not finish: %w", ctx.Err())
		}
	})
	var horizon string
	if o := store.Oldest(); !o.IsZero() {
		horizon = o.UTC().Format(time.RFC3339)
	}
	logger.Info("ban archive on", "path", e.appDB.Path(), "retention", *f.retention, "events", store.Count(), "horizon", horizon)
	return store, nil
}
