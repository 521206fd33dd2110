package main

import (
	"context"

	"github.com/alecthomas/kingpin/v2"
)

// socketFlags are the flags of the fail2ban socket part.
type socketFlags struct{}

func addSocketFlags(*kingpin.Application) *socketFlags { return &socketFlags{} }

// setupSocket registers the socket collector and returns the fail2ban DB
// path to use: dbPath as given, or, when --fail2ban.db was not given, what
// the socket's "get dbfile" answers.
func (e *exporter) setupSocket(_ context.Context, _ *socketFlags, dbPath string, _ bool) (string, error) {
	return dbPath, nil
}
