package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// naiveSQL is what a naive exporter runs on every scrape: for each window
// the ban events per (jail, ip) whose timeofban lies in it, and fail2ban's
// currently-banned rule over bips, at time now. Ban events are counted as
// the exporter counts them: exact duplicate rows (same jail, ip and
// timeofban, fail2ban issue 1844) once, hence count(DISTINCT timeofban).
// A marker line ('#window i', '#banned') precedes each result so that the
// output can be summed and compared with the exporter's.
func naiveSQL(now time.Time, windows []time.Duration, schema int) string {
	var b strings.Builder
	n := now.Unix()
	for i, w := range windows {
		fmt.Fprintf(&b, "SELECT '#window %d';\n", i)
		fmt.Fprintf(&b, "SELECT jail, ip, count(DISTINCT timeofban) FROM bans WHERE timeofban >= %d GROUP BY jail, ip;\n", n-int64(w/time.Second))
	}
	if schema == 4 {
		b.WriteString("SELECT '#banned';\n")
		fmt.Fprintf(&b, "SELECT jail, ip FROM bips WHERE bantime <= -1 OR timeofban + bantime > %d;\n", n)
	}
	return b.String()
}

// naiveResult is what the naive re-aggregation found: the sums a naive
// exporter would expose.
type naiveResult struct {
	elapsed time.Duration
	// rows is the number of result rows (markers not counted).
	rows int
	// windows are the ban events per window, summed over (jail, ip).
	windows []int64
	// banned is the number of (jail, ip) pairs banned now.
	banned int64
}

// runNaive runs naiveSQL at time now through the sqlite3 CLI on dbPath,
// read-only, and returns the wall time from process start to exit, output
// included (a naive exporter needs every row), and the output's sums.
func runNaive(ctx context.Context, sqlite3, dbPath string, now time.Time, windows []time.Duration, schema int) (naiveResult, error) {
	script := naiveSQL(now, windows, schema)
	cmd := exec.CommandContext(ctx, sqlite3, "-readonly", "-batch", dbPath)
	cmd.Stdin = strings.NewReader(script)
	out := &summingWriter{windows: make([]int64, len(windows)), section: -2}
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = out, &stderr
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return naiveResult{}, fmt.Errorf("sqlite3 naive re-aggregation: %w: %s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		return naiveResult{}, fmt.Errorf("sqlite3 naive re-aggregation: %s", stderr.String())
	}
	if out.err == nil && len(out.partial) > 0 {
		out.line(out.partial)
	}
	if out.err != nil {
		return naiveResult{}, fmt.Errorf("sqlite3 naive re-aggregation output: %w", out.err)
	}
	return naiveResult{elapsed: elapsed, rows: out.rows, windows: out.windows, banned: out.banned}, nil
}

// summingWriter parses the naive output as it streams: it counts result
// rows and sums the last column of each window's rows.
type summingWriter struct {
	partial []byte
	section int // -2 before the first marker, -1 banned, else the window
	rows    int
	windows []int64
	banned  int64
	err     error
}

func (w *summingWriter) Write(p []byte) (int, error) {
	n := len(p)
	for w.err == nil {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			break
		}
		if len(w.partial) > 0 {
			w.line(append(w.partial, p[:i]...))
			w.partial = w.partial[:0]
		} else {
			w.line(p[:i])
		}
		p = p[i+1:]
	}
	return n, nil
}

func (w *summingWriter) line(l []byte) {
	if rest, ok := bytes.CutPrefix(l, []byte("#window ")); ok {
		i, err := strconv.Atoi(string(rest))
		if err != nil || i < 0 || i >= len(w.windows) {
			w.err = fmt.Errorf("bad marker %q", l)
		}
		w.section = i
		return
	}
	if bytes.Equal(l, []byte("#banned")) {
		w.section = -1
		return
	}
	w.rows++
	switch {
	case w.section == -1:
		w.banned++
	case w.section >= 0:
		f := l[bytes.LastIndexByte(l, '|')+1:]
		v, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			w.err = fmt.Errorf("bad row %q: %w", l, err)
			return
		}
		w.windows[w.section] += v
	default:
		w.err = fmt.Errorf("row %q before any marker", l)
	}
}
