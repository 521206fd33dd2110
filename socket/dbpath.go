package socket

import (
	"context"
	"log/slog"
)

// ResolveDBPath picks fail2ban's database path. When the user gave one
// (given), it is used as is. Otherwise the socket is asked ("get dbfile"):
// its answer wins; when fail2ban runs without a database file (None or
// ":memory:") the result is "" — the database part is off — with a log line
// saying why; when the socket does not answer, fallback (the default path)
// is kept.
func ResolveDBPath(ctx context.Context, client *Client, logger *slog.Logger, fallback string, given bool) string {
	if given {
		return fallback
	}
	askCtx, cancel := context.WithTimeout(ctx, client.Timeout())
	defer cancel()
	file, ok, err := client.DBFile(askCtx)
	switch {
	case err != nil:
		logger.Info("fail2ban's socket did not tell its database file; using the default --fail2ban.db", "path", fallback, "err", err)
		return fallback
	case !ok:
		logger.Warn("fail2ban runs without a database (dbfile = None): the database metrics are off; the socket metrics stay on")
		return ""
	case file == ":memory:":
		logger.Warn("fail2ban keeps its database in memory (dbfile = :memory:), which no other process can read: the database metrics are off; the socket metrics stay on")
		return ""
	}
	logger.Info("using fail2ban's database file as its socket reports it", "path", file)
	return file
}
