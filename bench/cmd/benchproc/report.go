package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
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
		// ExporterEnv is what the harness added to the exporter's
		// environment (e.g. GOMEMLIMIT).
		ExporterEnv []string
		Countries   bool
		MMDB        string
		HistoryEnd  time.Time
		SocketBans  int
	}
	Results []sizeResult
	// Socket is the socket-exporter comparison (nil when skipped).
	Socket *socketResult
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
	r.Config.ExporterEnv, r.Config.Countries, r.Config.HistoryEnd, r.Config.SocketBans = cfg.exporterEnv, cfg.countries, cfg.now, cfg.socketBans
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

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// size renders a byte count: KiB below 1 MiB, else MiB.
func size(b int64) string {
	if b < 1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
	return mib(b)
}

func ratio(base, x time.Duration) string {
	if x <= 0 || base <= 0 {
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

// configLabel says how the exporter ran: countries, archive, environment.
func (r *report) configLabel() string {
	var parts []string
	if r.Config.Countries {
		parts = append(parts, "countries on (the mmdb alone: "+filepath.Base(r.Config.MMDB)+")")
	} else {
		parts = append(parts, "countries off (`--geo.providers=none`, every country ZZ)")
	}
	if slices.Contains(r.Config.ExporterArgs, "--no-storage.archive") {
		parts = append(parts, "archive off")
	} else {
		parts = append(parts, "archive on")
	}
	for _, e := range r.Config.ExporterEnv {
		parts = append(parts, "`"+e+"`")
	}
	return strings.Join(parts, ", ")
}

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("## Whole-process benchmark (%s)\n\n", r.Date.Format("2006-01-02 15:04 MST"))
	p("Machine: %s, CPU %s (%d logical CPUs seen by Go); %s; sqlite3 %s; commit %s.\n\n", r.Machine, r.CPUModel, r.CPUs, r.GoVersion, r.SQLite3, r.Commit)
	p("Exporter: %s. Configuration: **%s**; flags added by the harness: `%s`.\n\n", r.ExporterBuild, r.configLabel(), strings.Join(r.Config.ExporterArgs, " "))
	p("Command: `%s`\n\n", r.Command)
	p("Each size: a synthetic fail2ban database (f2bgen, seed %d: ~23.5 %% distinct IPs per row, ~49 %% bips rows, 6 jails, 30 days, some permanent), "+
		"the exporter started on a copy with empty storage; ready = the end of the first `/metrics` with `fail2ban_up 1`; "+
		"%d timed scrapes with the database unchanged, plain and %d with `Accept-Encoding: gzip` (as Prometheus asks), alternating, after %d warm-up; "+
		"%d rounds of %d bans written fail2ban-style (one transaction per ban: INSERT bans + INSERT OR REPLACE bips) by a writer beside the running exporter, "+
		"each followed by one timed scrape (which must take in the whole round); then %d more rounds written while scraping (gzip) every 50 ms (\"during writes\"); "+
		"peak RSS (`VmHWM`) of that first start; then a restart on the same storage (archive and geo cache populated). "+
		"Baselines, same database, same run: the naive sqlite3 CLI re-aggregation (`SELECT jail, ip, count(DISTINCT timeofban) FROM bans WHERE timeofban >= now-W GROUP BY jail, ip` "+
		"for W in %s plus fail2ban's currently-banned rule on bips, end to end, rows to a pipe) and the naive per-IP geo exporter "+
		"(one Go process: per scrape it reads the banned (jail, ip) of bips and the ban events of the longest window from the database, looks every distinct IP up in the mmdb "+
		"with maxminddb-golang decoding geoip2's whole Country record, aggregates the same metrics per jail and country and renders them); p50 of %d runs each.\n\n",
		r.Config.Seed, r.Config.Scrapes, r.Config.Scrapes, r.Config.Warmup, r.Config.Rounds, r.Config.BansPerRound, r.Config.ConcurrentRounds, strings.Join(r.Config.Windows, ", "), r.Config.NaiveRuns)

	p("| bans rows | DB size | ready: first start / restart | countries resolved | scrape p50 / p95 / p99 (unchanged) | gzip p50 / p95 / p99 | after %d bans p50 / p99 | peak RSS: first start / restart | app DB on disk | series | exposition / gzip |\n", r.Config.BansPerRound)
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Results {
		u := s.Unchanged
		p("| %s | %s | %s / %s | %s | %s / %s / %s | %s / %s / %s | %s / %s | %s / %s | %s | %d | %s / %s |\n", rowsLabel(s.Rows), size(s.DBBytes),
			ms(s.FirstMetrics), ms(s.RestartFirstMetrics), ms(s.CountriesResolved),
			ms(u.P50), ms(u.P95), ms(u.P99), ms(u.GzipP50), ms(u.GzipP95), ms(u.GzipP99),
			ms(s.AfterBansP50), ms(s.AfterBansP99), mib(s.PeakRSSBytes), mib(s.RestartPeakRSSBytes), size(s.RestartAppDBBytes),
			u.Series, size(int64(u.PlainBytes)), size(int64(u.GzBytes)))
	}

	p("\nPeers, measured in this run on the same databases (speedup = the peer's p50 / the exporter's p50):\n\n")
	p("| bans rows | exporter scrape p50 (unchanged / after %d bans) | naive sqlite3 re-aggregation p50 | speedup unchanged / after bans | naive per-IP geo exporter p50 | speedup unchanged / after bans | per-IP geo: mmdb lookups per scrape, series, peak RSS |\n", r.Config.BansPerRound)
	p("|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Results {
		p("| %s | %s / %s | %s | %s / %s | %s | %s / %s | %d, %d, %s |\n", rowsLabel(s.Rows), ms(s.Unchanged.P50), ms(s.AfterBansP50),
			ms(s.NaiveP50), ratio(s.NaiveP50, s.Unchanged.P50), ratio(s.NaiveP50, s.AfterBansP50),
			ms(s.NaiveGeoP50), ratio(s.NaiveGeoP50, s.Unchanged.P50), ratio(s.NaiveGeoP50, s.AfterBansP50),
			s.NaiveGeoLookups, s.NaiveGeoSeries, mib(s.NaiveGeoPeakRSSBytes))
	}

	p("\nCost curve (growth between consecutive sizes: (RSS(n₂) − RSS(n₁)) / (n₂ − n₁) bans rows):\n\n")
	p("| bans rows | peak RSS first start | bytes/row growth | peak RSS restart | bytes/row growth | app DB on disk | app DB bytes/row | ready first start / restart |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, s := range r.Results {
		growth, growthR := "–", "–"
		if i > 0 {
			prev := r.Results[i-1]
			if d := s.Rows - prev.Rows; d > 0 {
				growth = fmt.Sprintf("%.0f", float64(s.PeakRSSBytes-prev.PeakRSSBytes)/float64(d))
				growthR = fmt.Sprintf("%.0f", float64(s.RestartPeakRSSBytes-prev.RestartPeakRSSBytes)/float64(d))
			}
		}
		p("| %s | %s | %s | %s | %s | %s | %.0f | %s / %s |\n", rowsLabel(s.Rows), mib(s.PeakRSSBytes), growth, mib(s.RestartPeakRSSBytes), growthR,
			size(s.RestartAppDBBytes), float64(s.RestartAppDBBytes)/float64(max(s.Rows, 1)), ms(s.FirstMetrics), ms(s.RestartFirstMetrics))
	}

	p("\nCountries (on the unchanged database; the per-IP geo baseline looks every IP up in the same mmdb):\n\n")
	p("| bans rows | distinct IPs | countries exposed | banned IPs exposed as ZZ | per-IP geo: IPs without a country | series compared with the per-IP geo baseline | differing |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Results {
		p("| %s | %d | %d | %.0f | %d of %d | %d | %d |\n", rowsLabel(s.Rows), s.DistinctIPs, s.Countries, s.BannedZZ,
			s.NaiveGeoUnresolved, s.NaiveGeoLookups, s.CountrySeries, s.CountrySeriesDiffer)
	}

	p("\nDetails:\n\n")
	p("| bans rows | bips rows | distinct IPs | startup: /-/ready | shutdown | scrapes during writes p50 / p99 (n) | fail2ban write tx p50 / max (idle reader) | fail2ban write tx p50 / max (while scraped) | writer bans/s | fail2ban_bans_total after all rounds and geo (want) | naive min | naive output rows | app DB after first run |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Results {
		total := "absent"
		if s.BansTotalPresent {
			total = fmt.Sprintf("%.0f", s.BansTotalAfterRounds)
		}
		p("| %s | %d | %d | %s | %s | %s / %s (%d) | %s / %s | %s / %s | %.0f | %s (%d) | %s | %d | %s |\n", rowsLabel(s.Rows), s.BipsRows, s.DistinctIPs,
			ms(s.Ready), ms(s.Shutdown), ms(s.DuringWritesP50), ms(s.DuringWritesP99), s.DuringWritesScrapes,
			ms(s.WriterBanTxP50), ms(s.WriterBanTxMax), ms(s.ConcurrentBanTxP50), ms(s.ConcurrentBanTxMax), s.WriterBansPerSecond, total, s.BansTotalAfterRoundsWant,
			ms(s.NaiveMin), s.NaiveRowsOut, size(s.AppDBBytes))
	}
	for _, s := range r.Results {
		if r.Config.Countries && s.BansTotalPresent && s.BansTotalAfterRounds < float64(s.BansTotalAfterRoundsWant) {
			p("\n%s rows: `fail2ban_bans_total` is %.0f of the %d bans written: the exporter holds a new ban back (up to two minutes) "+
				"until its country is final, and an IP the mmdb does not know is not final before that time is up.\n",
				rowsLabel(s.Rows), s.BansTotalAfterRounds, s.BansTotalAfterRoundsWant)
		}
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
		"(fail2ban's currently-banned rule on bips; distinct (jail, ip, timeofban) ban events per window) and the sums of both naive baselines' output. " +
		"Exact duplicate bans rows (fail2ban issue 1844) are one ban event for all of them; plain `count(*)` would count them again:\n\n")
	for _, s := range r.Results {
		p("- %s rows: %d duplicate bans rows.\n", rowsLabel(s.Rows), s.DuplicateRows)
	}
	p("\n| bans rows | metric | exporter | SQL | naive sqlite3 GROUP BY | naive per-IP geo | all agree |\n|---:|---|---:|---:|---:|---:|---|\n")
	for _, s := range r.Results {
		for _, c := range s.Checks {
			agree := "yes"
			if !c.agree() {
				agree = fmt.Sprintf("**no** (exporter %+.0f vs SQL, naive %+d vs SQL", c.Exporter-float64(c.SQL), c.Naive-c.SQL)
				if c.NaiveGeo >= 0 {
					agree += fmt.Sprintf(", per-IP geo %+d vs SQL", c.NaiveGeo-c.SQL)
				}
				agree += ")"
			}
			geo := "–"
			if c.NaiveGeo >= 0 {
				geo = fmt.Sprint(c.NaiveGeo)
			}
			p("| %s | `%s` | %.0f | %d | %d | %s | %s |\n", rowsLabel(s.Rows), c.What, c.Exporter, c.SQL, c.Naive, geo, agree)
		}
	}
	r.socketMarkdown(p)
	r.targetsMarkdown(p)
	return b.String()
}

func (r *report) socketMarkdown(p func(string, ...any)) {
	s := r.Socket
	if s == nil {
		return
	}
	p("\nSocket exporters, same run: a real sandboxed fail2ban-server (Debian's, noop actions) with %d banned IPs (%s; banned over the socket with `set JAIL banip` in bulk in %s). "+
		"Baseline: what socket exporters do per scrape — a new connection, `ping`, `status`, then `status JAIL` (with the full banned-IP list) for each of its jails, `version`, replies decoded; "+
		"bangui_exporter on the same fail2ban (its database read-only and its socket), %s, after its countries were resolved. p50 / p95 / p99 of %d scrapes each:\n\n",
		s.BannedIPs, perJail(s.PerJail), ms(s.Setup), r.configLabel(), s.Scrapes)
	p("| banned IPs | socket `status JAIL` baseline | IPs listed per scrape | bangui_exporter scrape | gzip | speedup (p50) | bangui_exporter: ready, peak RSS, series, fail2ban_banned_ips |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|\n")
	p("| %d | %s / %s / %s | %d | %s / %s / %s | %s / %s / %s | %s | %s, %s, %d, %.0f |\n", s.BannedIPs,
		ms(s.BaselineP50), ms(s.BaselineP95), ms(s.BaselineP99), s.IPsPerScrape,
		ms(s.Scrape.P50), ms(s.Scrape.P95), ms(s.Scrape.P99), ms(s.Scrape.GzipP50), ms(s.Scrape.GzipP95), ms(s.Scrape.GzipP99),
		ratio(s.BaselineP50, s.Scrape.P50), ms(s.Ready), mib(s.PeakRSSBytes), s.Scrape.Series, s.BannedIPsMetric)
}

func perJail(m map[string]int) string {
	var parts []string
	for _, j := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", j, m[j]))
	}
	return strings.Join(parts, ", ")
}

// targetsMarkdown checks the performance targets (BENCHMARKS.md) at 1M and 10M rows.
func (r *report) targetsMarkdown(p func(string, ...any)) {
	var prev *sizeResult
	for i := range r.Results {
		s := &r.Results[i]
		switch s.Rows {
		case 1_000_000:
			u := s.Unchanged
			p("\nTargets at 1M rows (they are set for countries on, archive on — this run: %s): "+
				"scrape p50 unchanged ≤ 3 ms: %s (%s); p99 ≤ 10 ms: %s (%s); gzip p50 ≤ 1.5× plain: %s (%s vs %s); "+
				"after 1,000 bans p50 ≤ 20 ms: %s (%s); peak RSS ≤ 150 MiB: first start %s (%s), restart %s (%s); "+
				"ready ≤ 3 s: first start %s (%s), restart %s (%s).\n",
				r.configLabel(),
				verdict(u.P50 <= 3*time.Millisecond), ms(u.P50), verdict(u.P99 <= 10*time.Millisecond), ms(u.P99),
				verdict(u.P50 > 0 && u.GzipP50*2 <= u.P50*3), ms(u.GzipP50), ms(u.P50),
				verdict(s.AfterBansP50 <= 20*time.Millisecond), ms(s.AfterBansP50),
				verdict(s.PeakRSSBytes <= 150<<20), mib(s.PeakRSSBytes), verdict(s.RestartPeakRSSBytes <= 150<<20), mib(s.RestartPeakRSSBytes),
				verdict(s.FirstMetrics <= 3*time.Second), ms(s.FirstMetrics), verdict(s.RestartFirstMetrics <= 3*time.Second), ms(s.RestartFirstMetrics))
		case 10_000_000:
			p("\nTargets at 10M rows: ready ≤ 30 s: first start %s (%s), restart %s (%s); scrape p50 unchanged ≤ 5 ms: %s (%s)",
				verdict(s.FirstMetrics <= 30*time.Second), ms(s.FirstMetrics), verdict(s.RestartFirstMetrics <= 30*time.Second), ms(s.RestartFirstMetrics),
				verdict(s.Unchanged.P50 <= 5*time.Millisecond), ms(s.Unchanged.P50))
			if prev != nil && s.Rows > prev.Rows {
				g := float64(s.PeakRSSBytes-prev.PeakRSSBytes) / float64(s.Rows-prev.Rows)
				gr := float64(s.RestartPeakRSSBytes-prev.RestartPeakRSSBytes) / float64(s.Rows-prev.Rows)
				p("; RSS growth per additional row ≤ 100 bytes (from %s rows): first start %s (%.0f), restart %s (%.0f)",
					rowsLabel(prev.Rows), verdict(g <= 100), g, verdict(gr <= 100), gr)
			}
			p(".\n")
		}
		prev = s
	}
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
