package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
)

// sizeResult is everything measured for one database size.
type sizeResult struct {
	Rows        int
	BipsRows    int
	DistinctIPs int
	// DuplicateRows repeat another bans row's (jail, ip, timeofban).
	DuplicateRows int
	DBBytes       int64
	// Generated is how long generating the database took (0 when cached).
	Generated time.Duration

	// Cold start: empty storage. FirstMetrics is "ready" as the performance targets
	// count it: the end of the first /metrics with fail2ban_up 1.
	Ready        time.Duration
	FirstMetrics time.Duration
	// CountriesResolved is the time from start until the exporter's geo
	// part had nothing pending and the series per country stopped changing
	// (countries on only).
	CountriesResolved time.Duration
	// Restart with the storage of the first run.
	RestartReady        time.Duration
	RestartFirstMetrics time.Duration
	Shutdown            time.Duration

	// Unchanged holds the timed scrapes of the unchanged database, plain
	// and with Accept-Encoding: gzip, with the exposition's size.
	Unchanged scrapeStats
	// Countries is the number of distinct countries (ZZ not counted) in the
	// exporter's fail2ban_banned_ips and fail2ban_recent_bans; BannedZZ
	// the banned IPs it exposes without a country.
	Countries int
	BannedZZ  float64
	// CountrySeries compares the exporter's fail2ban_banned_ips and
	// fail2ban_recent_bans series by (jail, country[, window]) with the
	// naive per-IP geo baseline's, on the unchanged database at the same
	// second: how many series were compared and how many differ.
	CountrySeries, CountrySeriesDiffer int
	// AppDBBytes is the exporter's app database (with -wal) on disk after
	// the first run stopped; RestartAppDBBytes after the restart stopped.
	AppDBBytes, RestartAppDBBytes int64

	Rounds                   int
	BansPerRound             int
	AfterBansP50             time.Duration
	AfterBansP99             time.Duration
	DuringWritesScrapes      int
	DuringWritesP50          time.Duration
	DuringWritesP99          time.Duration
	ConcurrentRounds         int
	WriterBanTxP50           time.Duration
	WriterBanTxMax           time.Duration
	ConcurrentBanTxP50       time.Duration
	ConcurrentBanTxMax       time.Duration
	BansTotalPresent         bool
	WriterBansPerSecond      float64
	BansTotalAfterRounds     float64
	BansTotalAfterRoundsWant int

	// PeakRSSBytes is VmHWM of the first start (empty storage: with the
	// archive on it archives every row) after all rounds; RestartPeakRSSBytes
	// that of the restart on the same storage, right after its first scrape.
	PeakRSSBytes        int64
	RestartPeakRSSBytes int64
	// ExporterCounters are the exporter's own counters after all rounds.
	ExporterCounters map[string]float64

	NaiveRuns    int
	NaiveP50     time.Duration
	NaiveMin     time.Duration
	NaiveRowsOut int

	// The naive per-IP geo baseline (one process, NaiveRuns scrapes).
	NaiveGeoP50, NaiveGeoMin time.Duration
	NaiveGeoLookups          int
	NaiveGeoUnresolved       int
	NaiveGeoCountries        int
	NaiveGeoSeries           int
	NaiveGeoBytes            int
	NaiveGeoPeakRSSBytes     int64

	// Checks compare the exporter's sums with SQL counts and with the naive
	// re-aggregation's output on the unchanged database, all taken at the
	// same second.
	Checks []check
}

type check struct {
	What     string
	Exporter float64
	SQL      int64
	// Naive is the sum of the naive sqlite3 GROUP BY output.
	Naive int64
	// NaiveGeo is the naive per-IP geo baseline's sum; -1 when it did not
	// run (no country database).
	NaiveGeo int64
}

// agree reports whether the exporter, the SQL count and the naive
// re-aggregations give the same number.
func (c check) agree() bool {
	return c.Exporter == float64(c.SQL) && c.SQL == c.Naive && (c.NaiveGeo < 0 || c.NaiveGeo == c.SQL)
}

// prepareDB returns a fresh working copy of the cached database of rows.
func prepareDB(ctx context.Context, logger *slog.Logger, cfg config, rows int, workDir string) (string, f2bgen.Spec, time.Duration, error) {
	// The history ends at the current hour, so a cached file serves a whole
	// hour of runs; older files of this size are removed.
	end := cfg.now
	if end.IsZero() {
		end = time.Now().Truncate(time.Hour)
	}
	spec := f2bgen.DefaultSpec(rows, end)
	spec.Seed = cfg.seed
	cacheDir := filepath.Join(cfg.dataDir, "cache")
	key, err := f2bgen.CacheKey(spec)
	if err != nil {
		return "", spec, 0, err
	}
	var generated time.Duration
	cached := filepath.Join(cacheDir, key)
	if _, err := os.Stat(cached); err != nil {
		old, _ := filepath.Glob(filepath.Join(cacheDir, fmt.Sprintf("f2b-v%d-%d-rows-*.sqlite3", 4, rows)))
		for _, o := range old {
			_ = os.Remove(o)
		}
		logger.Info("generating the fail2ban database", "rows", rows)
		start := time.Now()
		if cached, err = f2bgen.Cached(ctx, cacheDir, spec); err != nil {
			return "", spec, 0, err
		}
		generated = time.Since(start)
	}
	if err := os.RemoveAll(workDir); err != nil {
		return "", spec, 0, err
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return "", spec, 0, err
	}
	dbPath := filepath.Join(workDir, "fail2ban.sqlite3")
	if err := f2bgen.CopyFile(dbPath, cached); err != nil {
		return "", spec, 0, err
	}
	return dbPath, spec, generated, nil
}

func benchSize(ctx context.Context, logger *slog.Logger, cfg config, binary, sqlite3 string, rows int) (sizeResult, error) {
	res := sizeResult{Rows: rows, Rounds: cfg.rounds, ConcurrentRounds: cfg.concurrentRounds, BansPerRound: cfg.bansPerRound, NaiveRuns: cfg.naiveRuns}
	workDir, err := filepath.Abs(filepath.Join(cfg.dataDir, fmt.Sprintf("run-%d", rows)))
	if err != nil {
		return res, err
	}
	dbPath, spec, generated, err := prepareDB(ctx, logger, cfg, rows, workDir)
	if err != nil {
		return res, err
	}
	res.Generated = generated
	if fi, err := os.Stat(dbPath); err == nil {
		res.DBBytes = fi.Size()
	}
	if st, err := countDB(ctx, sqlite3, dbPath); err == nil {
		res.BipsRows, res.DistinctIPs, res.DuplicateRows = st.bips, st.distinctIPs, st.duplicates
	} else {
		return res, err
	}
	storage := filepath.Join(workDir, "storage", "bangui.sqlite3")

	logger.Info("cold start", "rows", rows)
	p, err := startExporter(binary, dbPath, storage, workDir, cfg.exporterArgs, cfg.exporterEnv)
	if err != nil {
		return res, err
	}
	defer func() { _, _ = p.stop() }()
	if res.Ready, err = p.waitReady(ctx, cfg.readyTimeout); err != nil {
		return res, err
	}
	body, _, err := p.scrape(ctx, false)
	if err != nil {
		return res, err
	}
	res.FirstMetrics = time.Since(p.started)
	sums, err := sumMetrics(bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	if sums.Up != 1 {
		return res, fmt.Errorf("fail2ban_up is %v after the first scrape; log:\n%s", sums.Up, p.logTail())
	}
	if cfg.countries {
		logger.Info("waiting for countries", "rows", rows)
		if res.CountriesResolved, err = p.waitCountries(ctx, cfg.readyTimeout); err != nil {
			return res, err
		}
	}

	// Exporter sums against SQL counts and the naive baselines' sums, the
	// database unchanged, all at the same second.
	if err := checkAgainstBaselines(ctx, cfg, p, sqlite3, dbPath, &res); err != nil {
		return res, err
	}

	logger.Info("scrapes, database unchanged", "rows", rows, "scrapes", cfg.scrapes)
	if res.Unchanged, err = timeScrapes(ctx, p, cfg.warmup, cfg.scrapes); err != nil {
		return res, err
	}

	logger.Info("rounds of new bans", "rows", rows, "rounds", cfg.rounds, "bans", cfg.bansPerRound)
	if err := newBanRounds(ctx, cfg, p, dbPath, spec, &res); err != nil {
		return res, err
	}
	if res.PeakRSSBytes, err = p.peakRSS(); err != nil {
		return res, err
	}
	if res.Shutdown, err = p.stop(); err != nil {
		return res, err
	}
	res.AppDBBytes = fileSizes(storage, storage+"-wal")

	logger.Info("restart with warm storage", "rows", rows)
	p2, err := startExporter(binary, dbPath, storage, workDir, cfg.exporterArgs, cfg.exporterEnv)
	if err != nil {
		return res, err
	}
	defer func() { _, _ = p2.stop() }()
	if res.RestartReady, err = p2.waitReady(ctx, cfg.readyTimeout); err != nil {
		return res, err
	}
	if body, _, err = p2.scrape(ctx, false); err != nil {
		return res, err
	}
	res.RestartFirstMetrics = time.Since(p2.started)
	if sums, err := sumMetrics(bytes.NewReader(body)); err != nil {
		return res, fmt.Errorf("restart: %w", err)
	} else if sums.Up != 1 {
		return res, fmt.Errorf("restart: fail2ban_up is %v after the first scrape; log:\n%s", sums.Up, p2.logTail())
	}
	if res.RestartPeakRSSBytes, err = p2.peakRSS(); err != nil {
		return res, err
	}
	if _, err := p2.stop(); err != nil {
		return res, err
	}
	res.RestartAppDBBytes = fileSizes(storage, storage+"-wal")

	if cfg.naiveRuns > 0 {
		logger.Info("naive baselines", "rows", rows, "runs", cfg.naiveRuns)
		naive := make([]time.Duration, 0, cfg.naiveRuns)
		for range cfg.naiveRuns {
			nr, err := runNaive(ctx, sqlite3, dbPath, time.Now(), cfg.windows, 4)
			if err != nil {
				return res, err
			}
			naive = append(naive, nr.elapsed)
			res.NaiveRowsOut = nr.rows
		}
		res.NaiveP50, res.NaiveMin = percentile(naive, 50), slices.Min(naive)
		if cfg.mmdb != "" {
			run, err := runNaiveGeo(ctx, dbPath, cfg.mmdb, time.Time{}, cfg.windowNames, cfg.naiveRuns)
			if err != nil {
				return res, err
			}
			res.NaiveGeoP50, res.NaiveGeoMin = percentile(run.Durations, 50), slices.Min(run.Durations)
			res.NaiveGeoLookups, res.NaiveGeoUnresolved, res.NaiveGeoCountries = run.Lookups, run.Unresolved, run.countries()
			res.NaiveGeoSeries, res.NaiveGeoBytes, res.NaiveGeoPeakRSSBytes = run.Series, run.Bytes, run.PeakRSSBytes
		}
	}
	return res, nil
}

// checkAgainstBaselines compares, on the unchanged database and at the
// same second, the exporter's sums with SQL counts, with the naive sqlite3
// re-aggregation's sums and with the naive per-IP geo baseline (sums, and
// series by country when countries are on).
func checkAgainstBaselines(ctx context.Context, cfg config, p *exporterProc, sqlite3, dbPath string, res *sizeResult) error {
	checkAt := time.Now()
	body, _, err := p.scrape(ctx, false)
	if err != nil {
		return err
	}
	sums, err := sumMetrics(bytes.NewReader(body))
	if err != nil {
		return err
	}
	res.BannedZZ = sums.BannedZZ
	res.Countries = countriesIn(sums.ByCountry)
	counts, err := sqlCounts(ctx, sqlite3, dbPath, checkAt, cfg.windows)
	if err != nil {
		return err
	}
	naiveAt, err := runNaive(ctx, sqlite3, dbPath, checkAt, cfg.windows, 4)
	if err != nil {
		return err
	}
	geoBanned, geoWindows := int64(-1), slices.Repeat([]int64{-1}, len(cfg.windows))
	if cfg.mmdb != "" {
		run, err := runNaiveGeo(ctx, dbPath, cfg.mmdb, checkAt, cfg.windowNames, 1)
		if err != nil {
			return err
		}
		geoBanned, geoWindows = run.sums(cfg.windowNames)
		if cfg.countries {
			res.CountrySeries, res.CountrySeriesDiffer = compareSeries(sums.ByCountry, run)
		}
	}
	res.Checks = append(res.Checks, check{What: "fail2ban_banned_ips (sum)", Exporter: sums.BannedIPs, SQL: counts.banned, Naive: naiveAt.banned, NaiveGeo: geoBanned})
	for i, name := range cfg.windowNames {
		res.Checks = append(res.Checks, check{What: fmt.Sprintf("fail2ban_recent_bans{window=%q} (sum)", name), Exporter: sums.RecentBans[name],
			SQL: counts.windows[i], Naive: naiveAt.windows[i], NaiveGeo: geoWindows[i]})
	}
	return nil
}

// compareSeries counts the (jail, country[, window]) series of the exporter
// and of the naive per-IP geo baseline, and those whose values differ
// (present in one only, or another value).
func compareSeries(exporter map[string]float64, geo naiveGeoRun) (compared, differ int) {
	want := map[string]float64{}
	for k, v := range geo.Banned {
		want[k] = float64(v)
	}
	for k, v := range geo.Recent {
		want[k] = float64(v)
	}
	keys := map[string]bool{}
	for k, v := range exporter {
		if v != 0 {
			keys[k] = true
		}
	}
	for k := range want {
		keys[k] = true
	}
	for k := range keys {
		compared++
		if exporter[k] != want[k] {
			differ++
		}
	}
	return compared, differ
}

// countriesIn counts the distinct countries (ZZ not counted) of series keyed
// "jail|country[|window]".
func countriesIn(byCountry map[string]float64) int {
	set := map[string]bool{}
	for k, v := range byCountry {
		if f := strings.Split(k, "|"); len(f) >= 2 && v != 0 && f[1] != "ZZ" {
			set[f[1]] = true
		}
	}
	return len(set)
}

// fileSizes sums the sizes of the files that exist.
func fileSizes(paths ...string) int64 {
	var n int64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// newBanRounds writes rounds of bans fail2ban-style (one transaction per
// ban) from a writer running beside the exporter. Plain rounds write without
// scraping and then time the first scrape, which must take in the whole
// round; concurrent rounds scrape every 50 ms while writing, to time scrapes
// during writes and fail2ban's write transactions while it is being read.
func newBanRounds(ctx context.Context, cfg config, p *exporterProc, dbPath string, spec f2bgen.Spec, res *sizeResult) error {
	w, err := f2bgen.OpenWriter(ctx, dbPath, f2bgen.WriterOptions{Seed: cfg.seed + 1000, Jails: spec.Jails})
	if err != nil {
		return err
	}
	defer func() { _ = w.Close() }()
	written := 0
	var after, during, banTx, concurrentTx []time.Duration
	var writeTime time.Duration
	writeRound := func(txs *[]time.Duration) error {
		start := time.Now()
		for range cfg.bansPerRound {
			b, err := w.NextBan(ctx, time.Now())
			if err != nil {
				return err
			}
			t0 := time.Now()
			if err := w.AddBan(ctx, b); err != nil {
				return err
			}
			*txs = append(*txs, time.Since(t0))
			written++
		}
		writeTime += time.Since(start)
		return nil
	}
	checkTotal := func(body []byte) error {
		sums, err := sumMetrics(strings.NewReader(string(body)))
		if err != nil {
			return err
		}
		res.BansTotalPresent = sums.BansTotalPresent
		res.ExporterCounters = sums.Counters
		res.BansTotalAfterRounds = sums.BansTotal
		res.BansTotalAfterRoundsWant = written
		return nil
	}
	for round := 1; round <= cfg.rounds; round++ {
		if err := writeRound(&banTx); err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
		body, d, err := p.scrape(ctx, false)
		if err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
		after = append(after, d)
		if err := checkTotal(body); err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	for round := 1; round <= cfg.concurrentRounds; round++ {
		roundCtx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var scrapeErr error
		wg.Go(func() {
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-roundCtx.Done():
					return
				case <-t.C:
				}
				// A scrape that began during the writes runs to its end.
				_, d, err := p.scrape(ctx, true)
				mu.Lock()
				if err != nil {
					scrapeErr = err
				} else {
					during = append(during, d)
				}
				mu.Unlock()
			}
		})
		werr := writeRound(&concurrentTx)
		cancel()
		wg.Wait()
		if werr != nil {
			return fmt.Errorf("concurrent round %d: %w", round, werr)
		}
		if scrapeErr != nil {
			return fmt.Errorf("concurrent round %d: scrape during writes: %w", round, scrapeErr)
		}
	}
	// fail2ban_bans_total holds a new ban back until its country is known
	// (up to two minutes): with countries on, let geo resolve the new IPs
	// before reading the counter.
	if cfg.countries {
		if _, err := p.waitCountries(ctx, cfg.readyTimeout); err != nil {
			return err
		}
	}
	body, _, err := p.scrape(ctx, false)
	if err != nil {
		return err
	}
	if err := checkTotal(body); err != nil {
		return err
	}
	res.AfterBansP50, res.AfterBansP99 = percentile(after, 50), percentile(after, 99)
	res.DuringWritesScrapes = len(during)
	res.DuringWritesP50, res.DuringWritesP99 = percentile(during, 50), percentile(during, 99)
	res.WriterBanTxP50, res.WriterBanTxMax = percentile(banTx, 50), percentile(banTx, 100)
	res.ConcurrentBanTxP50, res.ConcurrentBanTxMax = percentile(concurrentTx, 50), percentile(concurrentTx, 100)
	res.WriterBansPerSecond = float64(written) / writeTime.Seconds()
	return nil
}
