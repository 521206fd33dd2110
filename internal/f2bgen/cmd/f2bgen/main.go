// Command f2bgen writes a synthetic fail2ban database: realistic bans over
// 30 days in exactly the schema fail2ban creates, reproducible by seed.
//
//	f2bgen -out /tmp/fail2ban.sqlite3 -rows 1000000 -seed 1 -schema 4 -now 2026-11-28T12:00:00Z
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("f2bgen", flag.ContinueOnError)
	out := fs.String("out", "", "path of the database to write (must not exist)")
	rows := fs.Int("rows", 100_000, "rows in the bans table")
	seed := fs.Uint64("seed", 1, "seed; the same flags give the same database")
	schema := fs.Int("schema", 4, "fail2ban schema version: 4 (fail2ban 0.11-1.1) or 2 (0.9-0.10)")
	nowFlag := fs.String("now", "", "end of the history, RFC 3339 (default: the current time, whole seconds)")
	matches := fs.Int("matches", 1, "log lines stored per ban in data")
	indexesFirst := fs.Bool("indexes-first", false, "create indexes before loading, in fail2ban's exact order (slower)")
	asJSON := fs.Bool("json", false, "print the statistics as JSON")
	specFile := fs.String("spec", "", "read the whole f2bgen.Spec as JSON from this file (other generation flags are ignored)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" {
		fmt.Fprintln(os.Stderr, "f2bgen: -out is required")
		return 2
	}
	now := time.Now()
	if *nowFlag != "" {
		var err error
		if now, err = time.Parse(time.RFC3339, *nowFlag); err != nil {
			fmt.Fprintf(os.Stderr, "f2bgen: -now: %v\n", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	spec := f2bgen.Spec{Rows: *rows, Seed: *seed, Schema: *schema, Now: now, MatchesPerBan: *matches, IndexesFirst: *indexesFirst}
	if *specFile != "" {
		b, err := os.ReadFile(*specFile)
		if err == nil {
			spec = f2bgen.Spec{}
			err = json.Unmarshal(b, &spec)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "f2bgen: -spec: %v\n", err)
			return 2
		}
	}
	st, err := f2bgen.Generate(ctx, *out, spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fmt.Printf("%s: schema %d, %d bans rows, %d bips rows, %d distinct IPs (%d IPv6), %d permanent, %d duplicates, %d currently banned, %.1f MB, %s\n",
		*out, st.Schema, st.BanRows, st.BipsRows, st.DistinctIPs, st.IPv6, st.PermanentRows, st.DuplicateRows,
		st.CurrentlyBanned, float64(st.FileBytes)/1e6, st.Elapsed.Round(time.Millisecond))
	for _, j := range st.Jails {
		fmt.Printf("  %-16s bans %8d  bips %8d  banned now %6d\n", j.Name, j.BanRows, j.BipsRows, j.CurrentlyBanned)
	}
	return 0
}
