package main

import (
	"context"
	"log/slog"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/exporter-toolkit/web"
)

// adminFlags are the flags and commands of the admin API part.
type adminFlags struct{}

func addAdminFlags(*kingpin.Application) *adminFlags { return &adminFlags{} }

// runAdminCommand runs an admin subcommand (e.g. "admin set-password");
// handled is false when cmd is not one of them.
func runAdminCommand(string, *adminFlags, *coreFlags, *slog.Logger) (code int, handled bool) {
	return 0, false
}

// setupAdmin mounts the admin API under /api/ on e.mux.
func (e *exporter) setupAdmin(context.Context, *adminFlags, *coreFlags) error { return nil }

func adminLandingLinks(*adminFlags) []web.LandingLinks { return nil }
