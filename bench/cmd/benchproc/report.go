package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report is one benchmark run.
type report struct {
	Date      time.Time
	Command   string
	Machine   string
	CPUModel  string
	CPUs      int
	GoVersion string
	SQLite3   string
	Commit    string
	Exporter  string
	// ExporterBuild is the VCS stamp Go embedded in the binary (or -label).
	ExporterBuild string
	Config        struct {
		Scrapes, Warmup, Rounds, BansPerRound, NaiveRuns int
		ConcurrentRounds                                 int
		Seed                                             uint64
		Windows                                          []string
		ExporterArgs                                     []string
	}
	Results []sizeResult
}

func newReport(ctx context.Context, cfg config, sqlite3 string) *report {
	r := &report{
		Date:      time.Now().UTC().Truncate(time.Second),
		Command:   strings.Join(append([]string{"go run ./bench/cmd/benchproc"}, os.Args[1:]...), " "),
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
		CPUModel:  cpuModel(),
	}
	r.Config.Scrapes, r.Config.Warmup, r.Config.Rounds = cfg.scrapes, cfg.warmup, cfg.rounds
	r.Config.ConcurrentRounds = cfg.concurrentRounds
	r.Config.BansPerRound, r.Config.NaiveRuns, r.Config.Seed = cfg.bansPerRound, cfg.naiveRuns, cfg.seed
	r.Config.Windows, r.Config.ExporterArgs = cfg.windowNames, cfg.exporterArgs
	if out, err := exec.CommandContext(ctx, "nproc").Output(); err == nil {
		r.Machine = "nproc " + strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, "uname", "-srm").Output(); err == nil {
		r.Machine += ", " + strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, sqlite3, "--version").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) > 0 {
			r.SQLite3 = f[0]
		}
	}
	git := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD")
	git.Dir = cfg.repo
	if out, err := git.Output(); err == nil {
		r.Commit = strings.TrimSpace(string(out))
	}
	return r
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "–"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d < 10*time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }

func ratio(base, x time.Duration) string {
	if x <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f×", float64(base)/float64(x))
}

func rowsLabel(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("## Whole-process benchmark (%s)\n\n", r.Date.Format("2006-01-02 15:04 MST"))
	p("Machine: %s, CPU %s (%d logical CPUs seen by Go); %s; sqlite3 %s; commit %s.\n\n", r.Machine, r.CPUModel, r.CPUs, r.GoVersion, r.SQLite3, r.Commit)
	p("Exporter: %s.\n\n", r.ExporterBuild)
	p("Command: `%s`\n\n", r.Command)
	p("Each size: a synthetic fail2ban database (f2bgen, seed %d: ~23.5 %% distinct IPs per row, ~49 %% bips rows, 6 jails, 30 days, some permanent), "+
		"the exporter started on a copy with empty storage; %d timed scrapes (after %d warm-up) with the database unchanged; "+
		"%d rounds of %d bans written fail2ban-style (one transaction per ban: INSERT bans + INSERT OR REPLACE bips) by a writer beside the running exporter, "+
		"each followed by one timed scrape (which must take in the whole round); then %d more rounds written while scraping every 50 ms (\"during writes\"). "+
		"Naive baseline, same database, same run: the sqlite3 CLI running `SELECT jail, ip, count(DISTINCT timeofban) FROM bans WHERE timeofban >= now-W GROUP BY jail, ip` "+
		"for W in %s plus fail2ban's currently-banned rule on bips, end to end (process start to exit, rows written to a pipe), p50 of %d runs.\n\n",
		r.Config.Seed, r.Config.Scrapes, r.Config.Warmup, r.Config.Rounds, r.Config.BansPerRound, r.Config.ConcurrentRounds, strings.Join(r.Config.Windows, ", "), r.Config.NaiveRuns)

	p("| bans rows | DB size | startup: ready | startup: first /metrics | scrape p50 / p99 (unchanged) | scrape p50 / p99 (after %d bans) | peak RSS: first start / restart | naive re-aggregation p50 | speedup unchanged | speedup after bans |\n", r.Config.BansPerRound)
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Results {
		p("| %s | %s | %s | %s | %s / %s | %s / %s | %s | %s | %s | %s |\n", rowsLabel(s.Rows), mb(s.DBBytes), ms(s.Ready), ms(s.FirstMetrics),
			ms(s.ScrapeP50), ms(s.ScrapeP99), ms(s.AfterBansP50), ms(s.AfterBansP99), mb(s.PeakRSSBytes)+" / "+mb(s.RestartPeakRSSBytes), ms(s.NaiveP50),
			ratio(s.NaiveP50, s.ScrapeP50), ratio(s.NaiveP50, s.AfterBansP50))
	}
	p("\nDetails:\n\n")
	p("| bans rows | bips rows | distinct IPs | restart (warm storage): ready / first /metrics | shutdown | scrapes during writes p50 / p99 (n) | fail2ban write tx p50 / max (idle reader) | fail2ban write tx p50 / max (while scraped) | writer bans/s | fail2ban_bans_total after all rounds (want) | naive min | naive output rows | series |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Results {
		total := "absent"
		if s.BansTotalPresent {
			total = fmt.Sprintf("%.0f", s.BansTotalAfterRounds)
		}
		p("| %s | %d | %d | %s / %s | %s | %s / %s (%d) | %s / %s | %s / %s | %.0f | %s (%d) | %s | %d | %d |\n", rowsLabel(s.Rows), s.BipsRows, s.DistinctIPs,
			ms(s.RestartReady), ms(s.RestartFirstMetrics), ms(s.Shutdown), ms(s.DuringWritesP50), ms(s.DuringWritesP99), s.DuringWritesScrapes,
			ms(s.WriterBanTxP50), ms(s.WriterBanTxMax), ms(s.ConcurrentBanTxP50), ms(s.ConcurrentBanTxMax), s.WriterBansPerSecond, total, s.BansTotalAfterRoundsWant,
			ms(s.NaiveMin), s.NaiveRowsOut, s.Series)
	}
	for _, s := range r.Results {
		if len(s.ExporterCounters) == 0 {
			continue
		}
		names := slices.Sorted(maps.Keys(s.ExporterCounters))
		var parts []string
		for _, n := range names {
			if v := s.ExporterCounters[n]; v != 0 {
				parts = append(parts, fmt.Sprintf("`%s` %.0f", n, v))
			}
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		p("\nExporter counters after all rounds, %s rows (non-zero, summed over labels): %s.\n", rowsLabel(s.Rows), strings.Join(parts, ", "))
	}
	p("\nCorrectness checks on the unchanged database, taken in the same second: the exporter's sums, SQL counts " +
		"(fail2ban's currently-banned rule on bips; distinct (jail, ip, timeofban) ban events per window) and the sums of the naive re-aggregation's output. " +
		"Exact duplicate bans rows (fail2ban issue 1844) are one ban event for all three; plain `count(*)` would count them again:\n\n")
	for _, s := range r.Results {
		p("- %s rows: %d duplicate bans rows.\n", rowsLabel(s.Rows), s.DuplicateRows)
	}
	p("\n| bans rows | metric | exporter | SQL | naive sqlite3 GROUP BY | all agree |\n|---:|---|---:|---:|---:|---|\n")
	for _, s := range r.Results {
		for _, c := range s.Checks {
			agree := "yes"
			if !c.agree() {
				agree = fmt.Sprintf("**no** (exporter %+.0f vs SQL, naive %+d vs SQL)", c.Exporter-float64(c.SQL), c.Naive-c.SQL)
			}
			p("| %s | `%s` | %.0f | %d | %d | %s |\n", rowsLabel(s.Rows), c.What, c.Exporter, c.SQL, c.Naive, agree)
		}
	}
	for _, s := range r.Results {
		if s.Rows != 1_000_000 {
			continue
		}
		p("\nTargets at 1M rows (issue 2 §6): scrape p50 unchanged ≤ 20 ms: %s (%s); after 1,000 bans ≤ 100 ms: %s (%s); "+
			"≥ 50× faster than naive: %s (%s); peak RSS ≤ 200 MB: first start %s (%s), restart %s (%s); startup ≤ 5 s: %s (%s).\n",
			verdict(s.ScrapeP50 <= 20*time.Millisecond), ms(s.ScrapeP50),
			verdict(s.AfterBansP50 <= 100*time.Millisecond), ms(s.AfterBansP50),
			verdict(s.ScrapeP50 > 0 && s.NaiveP50 >= 50*s.ScrapeP50), ratio(s.NaiveP50, s.ScrapeP50),
			verdict(s.PeakRSSBytes <= 200<<20), mb(s.PeakRSSBytes),
			verdict(s.RestartPeakRSSBytes <= 200<<20), mb(s.RestartPeakRSSBytes),
			verdict(s.FirstMetrics <= 5*time.Second), ms(s.FirstMetrics))
	}
	return b.String()
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// buildStamp describes which source a Go binary was built from, from the
// VCS settings `go version -m` shows.
func buildStamp(ctx context.Context, binary string) string {
	out, err := exec.CommandContext(ctx, "go", "version", "-m", binary).Output()
	if err != nil {
		return "build info unavailable"
	}
	settings := map[string]string{}
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "build" {
			if k, v, ok := strings.Cut(f[1], "="); ok {
				settings[k] = v
			}
		}
	}
	rev := settings["vcs.revision"]
	if rev == "" {
		return "built without VCS information"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	stamp := "built from commit " + rev
	if settings["vcs.modified"] == "true" {
		stamp += " plus uncommitted changes in the working tree"
	}
	return stamp
}

// worktreeStamp describes the working tree the harness built the exporter
// from: its commit and whether tracked files had uncommitted changes.
func worktreeStamp(ctx context.Context, repo string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = repo
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	rev, err := git("rev-parse", "--short=12", "HEAD")
	if err != nil {
		return "built by the harness from " + repo + " (not a git checkout)"
	}
	stamp := "built by the harness (go build) from the working tree at commit " + rev
	status, err := git("status", "--porcelain", "--untracked-files=no")
	switch {
	case err != nil:
		stamp += " (working tree state unknown)"
	case status != "":
		stamp += fmt.Sprintf(" plus uncommitted changes to %d tracked files", len(strings.Split(status, "\n")))
	default:
		stamp += " (clean)"
	}
	return stamp
}
