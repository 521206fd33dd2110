// Command benchproc is bangui_exporter's whole-process benchmark: for each
// database size it generates a realistic fail2ban database (cached), starts
// the real exporter binary on it and measures startup, scrape latency with
// the database unchanged and right after 1,000 bans written fail2ban-style by
// a concurrent writer, and peak RSS — beside the baseline measured in the
// same run: a naive full re-aggregation of the same database by the sqlite3
// CLI. It prints a markdown report.
//
//	go run ./bench/cmd/benchproc -sizes 10000,100000,1000000 -out bench/.data/results.md
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/model"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type config struct {
	sizes        []int
	dataDir      string
	repo         string
	exporter     string
	exporterArgs []string
	scrapes      int
	warmup       int
	rounds       int
	// concurrentRounds scrape while writing.
	concurrentRounds int
	bansPerRound     int
	naiveRuns        int
	seed             uint64
	windows          []time.Duration
	windowNames      []string
	readyTimeout     time.Duration
	outMarkdown      string
	outJSON          string
	label            string
	// countries runs the exporter with the mmdb as its only country
	// provider (as users run it: countries on); off: --geo.providers=none.
	countries bool
	// mmdb is the MaxMind-format country database of the exporter and of
	// the naive per-IP geo baseline.
	mmdb string
	// exporterEnv is added to the exporter's environment.
	exporterEnv []string
	// now, when set, is the end of the generated histories (else the
	// current hour), so cached databases serve a whole session.
	now time.Time
	// socketBans is the number of banned IPs of the socket comparison (0:
	// no socket comparison); socketScrapes its timed scrapes.
	socketBans    int
	socketScrapes int
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == naiveGeoSubcommand {
		if err := runNaiveGeoCommand(context.Background(), args[1:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "benchproc:", err)
			return 1
		}
		return 0
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := parseFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchproc:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := benchmark(ctx, logger, cfg)
	if err != nil {
		logger.Error("benchmark failed", "err", err)
		return 1
	}
	md := rep.markdown()
	fmt.Print(md)
	if cfg.outMarkdown != "" {
		if err := os.WriteFile(cfg.outMarkdown, []byte(md), 0o644); err != nil {
			logger.Error("write report", "err", err)
			return 1
		}
	}
	if cfg.outJSON != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(cfg.outJSON, append(b, '\n'), 0o644)
		}
		if err != nil {
			logger.Error("write JSON results", "err", err)
			return 1
		}
	}
	return 0
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("benchproc", flag.ContinueOnError)
	sizes := fs.String("sizes", "10000,100000,1000000", "comma-separated bans row counts")
	fs.StringVar(&cfg.dataDir, "data", "bench/.data", "directory for cached databases, working copies and the built binary")
	fs.StringVar(&cfg.repo, "repo", ".", "repository root to build the exporter from")
	fs.StringVar(&cfg.exporter, "exporter", "", "exporter binary to run (default: go build -o DATA/bangui_exporter REPO)")
	var extra stringList
	fs.Var(&extra, "exporter-arg", "extra exporter flag (repeatable)")
	fs.IntVar(&cfg.scrapes, "scrapes", 200, "timed scrapes with the database unchanged")
	fs.IntVar(&cfg.warmup, "warmup", 5, "untimed scrapes before the timed ones")
	fs.IntVar(&cfg.rounds, "rounds", 10, "rounds of new bans, each followed by one timed scrape")
	fs.IntVar(&cfg.concurrentRounds, "concurrent-rounds", 3, "rounds of new bans written while scraping every 50 ms")
	fs.IntVar(&cfg.bansPerRound, "bans", 1000, "bans written per round, one transaction each")
	fs.IntVar(&cfg.naiveRuns, "naive-runs", 5, "runs of the naive sqlite3 re-aggregation")
	fs.Uint64Var(&cfg.seed, "seed", 1, "generator seed")
	windows := fs.String("windows", "24h,7d,30d,365d", "windows of fail2ban_recent_bans (the exporter's --bans.window defaults)")
	fs.DurationVar(&cfg.readyTimeout, "ready-timeout", 5*time.Minute, "how long to wait for /-/ready")
	fs.StringVar(&cfg.outMarkdown, "out", "", "also write the markdown report here")
	fs.StringVar(&cfg.label, "label", "", "describe the exporter binary in the report (default: its embedded VCS stamp)")
	fs.StringVar(&cfg.outJSON, "json", "", "also write the raw results as JSON here")
	fs.BoolVar(&cfg.countries, "countries", true, "countries on: the exporter resolves countries with -mmdb only (never the network); -countries=false runs it with --geo.providers=none")
	fs.StringVar(&cfg.mmdb, "mmdb", "", "MaxMind-format country database for the exporter and the naive per-IP geo baseline (default: REPO/testdata/geoip/GeoLite2-Country.mmdb, fetched by scripts/fetch-geoip.sh)")
	var env stringList
	fs.Var(&env, "exporter-env", "extra environment variable of the exporter, NAME=VALUE (repeatable)")
	gomemlimit := fs.String("gomemlimit", "", "run the exporter with GOMEMLIMIT set to this (e.g. 100MiB): the small-host mode")
	nowFlag := fs.String("now", "", "end of the generated histories, RFC 3339 (default: the current hour); fix it to reuse cached databases across a long session")
	fs.IntVar(&cfg.socketBans, "socket-bans", 50000, "banned IPs of the socket comparison against a sandboxed fail2ban-server (0: skip it)")
	fs.IntVar(&cfg.socketScrapes, "socket-scrapes", 20, "timed scrapes of the socket comparison (socket baseline and exporter each)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.exporterArgs = extra
	cfg.exporterEnv = env
	for _, e := range env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return cfg, fmt.Errorf("-exporter-env: want NAME=VALUE, got %q", e)
		}
	}
	if *gomemlimit != "" {
		cfg.exporterEnv = append(cfg.exporterEnv, "GOMEMLIMIT="+*gomemlimit)
	}
	if *nowFlag != "" {
		t, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil {
			return cfg, fmt.Errorf("-now: %w", err)
		}
		cfg.now = t
	}
	if cfg.mmdb == "" {
		cfg.mmdb = filepath.Join(cfg.repo, "testdata", "geoip", "GeoLite2-Country.mmdb")
	}
	if p, err := filepath.Abs(cfg.mmdb); err == nil {
		cfg.mmdb = p
	}
	for s := range strings.SplitSeq(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return cfg, fmt.Errorf("-sizes: bad size %q", s)
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	for w := range strings.SplitSeq(*windows, ",") {
		d, err := model.ParseDuration(strings.TrimSpace(w))
		if err != nil {
			return cfg, fmt.Errorf("-windows: %w", err)
		}
		cfg.windows = append(cfg.windows, time.Duration(d))
		cfg.windowNames = append(cfg.windowNames, strings.TrimSpace(w))
	}
	if cfg.scrapes < 1 || cfg.rounds < 1 || cfg.naiveRuns < 0 || cfg.bansPerRound < 1 || cfg.socketBans < 0 || cfg.socketScrapes < 1 {
		return cfg, errors.New("-scrapes, -rounds, -bans and -socket-scrapes must be positive, -naive-runs and -socket-bans not negative")
	}
	return cfg, nil
}

// benchmark runs every size and collects the report.
func benchmark(ctx context.Context, logger *slog.Logger, cfg config) (*report, error) {
	if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	sqlite3, err := exec.LookPath("sqlite3")
	if err != nil {
		return nil, fmt.Errorf("the naive baseline needs the sqlite3 CLI: %w", err)
	}
	rep := newReport(ctx, cfg, sqlite3)
	binary := cfg.exporter
	if binary == "" {
		binary, err = filepath.Abs(filepath.Join(cfg.dataDir, "bangui_exporter"))
		if err != nil {
			return nil, err
		}
		logger.Info("building the exporter", "repo", cfg.repo, "out", binary)
		build := exec.CommandContext(ctx, "go", "build", "-o", binary, ".")
		build.Dir = cfg.repo
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build the exporter: %w\n%s", err, out)
		}
	}
	rep.Exporter = binary
	if cfg.exporter == "" {
		rep.ExporterBuild = worktreeStamp(ctx, cfg.repo)
	} else {
		rep.ExporterBuild = buildStamp(ctx, binary)
	}
	if cfg.label != "" {
		rep.ExporterBuild = cfg.label
	}
	_, mmdbErr := os.Stat(cfg.mmdb)
	if cfg.countries && mmdbErr != nil {
		return nil, fmt.Errorf("countries on (the default) need the country database: %w; run ./scripts/fetch-geoip.sh, pass -mmdb, or measure without countries with -countries=false", mmdbErr)
	}
	iso, err := isolationArgs(ctx, binary, cfg.exporterArgs, cfg.countries, cfg.mmdb)
	if err != nil {
		return nil, err
	}
	cfg.exporterArgs = append(cfg.exporterArgs, iso...)
	rep.Config.ExporterArgs = cfg.exporterArgs
	if mmdbErr != nil {
		logger.Warn("no country database: the naive per-IP geo baseline is skipped", "mmdb", cfg.mmdb)
		cfg.mmdb = ""
	}
	rep.Config.MMDB = cfg.mmdb
	for _, rows := range cfg.sizes {
		res, err := benchSize(ctx, logger, cfg, binary, sqlite3, rows)
		if err != nil {
			return nil, fmt.Errorf("%d rows: %w", rows, err)
		}
		rep.Results = append(rep.Results, res)
	}
	if cfg.socketBans > 0 {
		if _, err := exec.LookPath(f2bsandbox.ServerBinary); err != nil {
			return nil, fmt.Errorf("the socket comparison needs fail2ban-server (Debian's fail2ban package), or -socket-bans 0: %w", err)
		}
		if rep.Socket, err = benchSocket(ctx, logger, cfg, binary); err != nil {
			return nil, fmt.Errorf("socket comparison: %w", err)
		}
	}
	return rep, nil
}

// isolationArgs keeps the exporter to the benchmark's database unless the
// caller configured otherwise. Its geo part never reaches the network: with
// countries on it resolves with the mmdb alone (as a user with a GeoLite2
// file runs it), with countries off it runs with --geo.providers=none
// (every country "ZZ"). Its socket part is off, so a fail2ban running on the
// host never enters the measurement. Flags are only passed when the binary
// has them (baselines may be older builds); a binary that cannot resolve
// countries from an mmdb cannot be measured with countries on.
func isolationArgs(ctx context.Context, binary string, given []string, countries bool, mmdb string) ([]string, error) {
	givenPrefix := func(prefix string) bool {
		for _, a := range given {
			if strings.HasPrefix(a, prefix) {
				return true
			}
		}
		return false
	}
	out, _ := exec.CommandContext(ctx, binary, "--help").CombinedOutput()
	help := string(out)
	var args []string
	if !givenPrefix("--geo.") {
		switch {
		case countries && strings.Contains(help, "--geo.providers") && strings.Contains(help, "--geo.mmdb"):
			args = append(args, "--geo.providers=mmdb", "--geo.mmdb="+mmdb)
		case countries && strings.Contains(help, "--geo.mmdb"):
			args = append(args, "--geo.mmdb="+mmdb)
			if strings.Contains(help, "--geo.ipapi.url") {
				args = append(args, "--geo.ipapi.url=")
			}
		case countries:
			return nil, fmt.Errorf("%s has no --geo.mmdb flag: measure it with -countries=false", binary)
		case strings.Contains(help, "--geo.providers"):
			args = append(args, "--geo.providers=none")
		case strings.Contains(help, "--geo.ipapi.url"):
			args = append(args, "--geo.ipapi.url=")
		}
	}
	if !givenPrefix("--fail2ban.socket=") && !slices.Contains(given, "--fail2ban.socket") &&
		strings.Contains(help, "--fail2ban.socket") {
		args = append(args, "--fail2ban.socket=")
	}
	return args, nil
}
