package main

import (
	"context"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/bangui/bangui_exporter/socket"
)

// socketFlags are the flags of the fail2ban socket part.
type socketFlags struct {
	path    *string
	timeout *time.Duration
}

func addSocketFlags(app *kingpin.Application) *socketFlags {
	return &socketFlags{
		path: app.Flag("fail2ban.socket",
			"Path of fail2ban's socket, for fail2ban's own runtime counts and jail settings (fail2ban_server_up, fail2ban_jail_*); empty disables. A socket that is missing or not accessible is retried on every scrape.").
			Default(socket.DefaultPath).String(),
		timeout: app.Flag("fail2ban.socket-timeout",
			"Timeout of connect, write and read on fail2ban's socket, and of all socket commands of one scrape together.").
			Default(socket.DefaultTimeout.String()).Duration(),
	}
}

// setupSocket registers the socket collector and returns the fail2ban DB
// path to use: dbPath as given, or, when --fail2ban.db was not given, what
// the socket's "get dbfile" answers ("" when fail2ban keeps no database
// file, which turns the DB part off).
func (e *exporter) setupSocket(ctx context.Context, f *socketFlags, dbPath string, dbGiven bool) (string, error) {
	logger := e.logger.With("component", "socket")
	if *f.path == "" {
		logger.Info("fail2ban socket disabled (--fail2ban.socket is empty)")
		return dbPath, nil
	}
	client := socket.New(socket.Options{Path: *f.path, Timeout: *f.timeout})
	e.atShutdown(phaseSocket, func(context.Context) error { return client.Close() })
	sc := socket.NewCollector(client, socket.CollectorOptions{Logger: logger, Budget: *f.timeout})
	e.registry.MustRegister(sc)
	// The socket part of a scrape stays within Prometheus' scrape timeout.
	e.wrapMetrics = append(e.wrapMetrics, sc.ObserveScrapeTimeout)
	return socket.ResolveDBPath(ctx, client, logger, dbPath, dbGiven), nil
}
