package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

type dbCounts struct {
	bips, distinctIPs int
	// duplicates are bans rows that repeat another row's (jail, ip,
	// timeofban): fail2ban issue 1844. The exporter counts one ban event
	// for all of them, so every SQL count here does too.
	duplicates int
}

// sqliteQuery runs one statement through the sqlite3 CLI, read-only, and
// returns its output lines.
func sqliteQuery(ctx context.Context, sqlite3, dbPath, query string) ([]string, error) {
	out, err := exec.CommandContext(ctx, sqlite3, "-readonly", "-batch", dbPath, query).Output()
	if err != nil {
		return nil, fmt.Errorf("sqlite3 %q: %w", query, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n"), nil
}

func countDB(ctx context.Context, sqlite3, dbPath string) (dbCounts, error) {
	lines, err := sqliteQuery(ctx, sqlite3, dbPath, "SELECT (SELECT count(*) FROM bips) || ' ' || (SELECT count(DISTINCT ip) FROM bans)"+
		" || ' ' || ((SELECT count(*) FROM bans) - (SELECT count(*) FROM (SELECT DISTINCT jail, ip, timeofban FROM bans)))")
	if err != nil {
		return dbCounts{}, err
	}
	var c dbCounts
	if _, err := fmt.Sscan(lines[0], &c.bips, &c.distinctIPs, &c.duplicates); err != nil {
		return c, fmt.Errorf("count database: %q: %w", lines[0], err)
	}
	return c, nil
}

type windowCounts struct {
	banned  int64
	windows []int64
}

// sqlCounts counts what the exporter should report at time at: fail2ban's
// currently-banned rule on bips and, per trailing window, the ban events in
// it: distinct (jail, ip, timeofban), as the exporter counts exact duplicate
// rows once.
func sqlCounts(ctx context.Context, sqlite3, dbPath string, at time.Time, windows []time.Duration) (windowCounts, error) {
	n := at.Unix()
	parts := []string{fmt.Sprintf("(SELECT count(*) FROM bips WHERE bantime <= -1 OR timeofban + bantime > %d)", n)}
	for _, w := range windows {
		parts = append(parts, fmt.Sprintf("(SELECT count(*) FROM (SELECT DISTINCT jail, ip, timeofban FROM bans WHERE timeofban >= %d))", n-int64(w/time.Second)))
	}
	lines, err := sqliteQuery(ctx, sqlite3, dbPath, "SELECT "+strings.Join(parts, " || ' ' || "))
	if err != nil {
		return windowCounts{}, err
	}
	f := strings.Fields(lines[0])
	if len(f) != 1+len(windows) {
		return windowCounts{}, fmt.Errorf("sql counts: unexpected output %q", lines[0])
	}
	var c windowCounts
	for i, s := range f {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return c, fmt.Errorf("sql counts: %q: %w", s, err)
		}
		if i == 0 {
			c.banned = v
		} else {
			c.windows = append(c.windows, v)
		}
	}
	return c, nil
}
