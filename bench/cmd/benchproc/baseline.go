package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// naiveSQL is what a naive exporter runs on every scrape: the trailing
// window GROUP BY of bans for each window, and fail2ban's currently-banned
// rule over bips, at time now.
func naiveSQL(now time.Time, windows []time.Duration, schema int) string {
	var b strings.Builder
	n := now.Unix()
	for _, w := range windows {
		fmt.Fprintf(&b, "SELECT jail, ip, count(*) FROM bans WHERE timeofban >= %d GROUP BY jail, ip;\n", n-int64(w/time.Second))
	}
	if schema == 4 {
		fmt.Fprintf(&b, "SELECT jail, ip FROM bips WHERE bantime <= -1 OR timeofban + bantime > %d;\n", n)
	}
	return b.String()
}

// runNaive runs naiveSQL through the sqlite3 CLI on dbPath, read-only, and
// returns the wall time from process start to exit, output included (a
// naive exporter needs every row).
func runNaive(ctx context.Context, sqlite3, dbPath string, windows []time.Duration, schema int) (time.Duration, int, error) {
	script := naiveSQL(time.Now(), windows, schema)
	cmd := exec.CommandContext(ctx, sqlite3, "-readonly", "-batch", dbPath)
	cmd.Stdin = strings.NewReader(script)
	var out countingWriter
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite3 naive re-aggregation: %w: %s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		return 0, 0, fmt.Errorf("sqlite3 naive re-aggregation: %s", stderr.String())
	}
	return elapsed, out.lines, nil
}

// countingWriter discards output, counting lines.
type countingWriter struct{ lines int }

func (w *countingWriter) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\n' {
			w.lines++
		}
	}
	return len(p), nil
}
