// Command bangui_exporter exports fail2ban's bans per jail and per country as
// Prometheus metrics, read strictly read-only from fail2ban's own database.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/sessionauth"
)

const exporterName = "bangui_exporter"

// coreFlags are the flags of the exporter itself; optional parts add theirs
// in main_*.go.
type coreFlags struct {
	toolkit     *web.FlagConfig
	metricsPath *string
	maxRequests *int
	storagePath *string
	fail2banDB  *string
	// fail2banDBGiven is true when --fail2ban.db was set by the user (the
	// socket may supply the path otherwise).
	fail2banDBGiven bool
	defaultBantime  *time.Duration
	windows         *[]string
	chunkSize       *int
	integrityCheck  *time.Duration
	watchInterval   *time.Duration
	enablePprof     *bool

	// maxConnections is --web.max-connections (main_server.go).
	maxConnections *int
}

func addCoreFlags(app *kingpin.Application) *coreFlags {
	f := &coreFlags{
		toolkit:     kingpinflag.AddFlags(app, ":9635"),
		metricsPath: app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String(),
		maxRequests: app.Flag("web.max-requests", "Maximum number of parallel scrape requests. Use 0 to disable.").Default("40").Int(),
		storagePath: app.Flag("storage.path", "Path of the exporter's own SQLite database (ban archive, geo cache, admin sessions); created with its directory when missing.").
			Default("/var/lib/bangui_exporter/bangui.sqlite3").String(),
		fail2banDB: app.Flag("fail2ban.db", "Path of fail2ban's SQLite database, opened read-only. When not given and fail2ban's socket answers, the path fail2ban reports (get dbfile).").
			Default(collector.DefaultDBPath).String(),
		defaultBantime: app.Flag("fail2ban.default-bantime", "Ban time assumed for schema-2 databases (fail2ban 0.9-0.10), which do not record it.").
			Default("10m").Duration(),
		windows: app.Flag("bans.window", "Trailing window for fail2ban_recent_bans; repeatable. A Go duration (36h, 1.5h) or a Prometheus one (7d, 1w, 1y, 1d12h), whole seconds.").
			Default("24h", "7d", "30d", "365d").Strings(),
		chunkSize: app.Flag("fail2ban.read-chunk", "Rows read per read transaction; keeps each lock on fail2ban's database short.").
			Default("20000").Int(),
		integrityCheck: app.Flag("fail2ban.integrity-check-interval",
			"How often every page of fail2ban's database is read in the background (short chunks, about 5% of a core while it runs) to find damage the incremental reader would not see; a damaged page sets fail2ban_up to 0. 0 turns it off.").
			Default("5m").Duration(),
		watchInterval: app.Flag("fail2ban.watch-interval",
			"How often the exporter looks for fail2ban's new bans between scrapes (one cheap query; rows are read only when fail2ban wrote), so that a scrape finds them read. 0 leaves all reading to scrapes.").
			Default(collector.DefaultWatchInterval.String()).Duration(),
		enablePprof: addPprofFlag(app),
	}
	app.GetFlag("fail2ban.db").IsSetByUser(&f.fail2banDBGiven)
	f.maxConnections = addServerFlags(app)
	return f
}

// exporter holds what the parts share while the process runs.
type exporter struct {
	logger   *slog.Logger
	registry *prometheus.Registry
	mux      *http.ServeMux
	appDB    *appdb.DB
	// countries is what the engine asks for countries; geo replaces it.
	countries collector.CountryLookup
	// lifecycle starts the parts' background work and stops everything in
	// the phase order below.
	lifecycle
	// wrapMetrics wrap the metrics handler (outermost last), e.g. to see
	// Prometheus' scrape timeout header.
	wrapMetrics []func(http.Handler) http.Handler
	// geo is what the geo part shares with later parts (the admin API).
	geo geoPart
	// admin is the admin API, nil when it is off (banmap mounts its list
	// behind its sessions).
	admin *sessionauth.Service
	// landingNotes are shown on the landing page (e.g. where countries
	// come from).
	landingNotes []string
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	app := kingpin.New(exporterName, "Prometheus exporter for fail2ban: bans per jail and per country, read-only from fail2ban's database.")
	promslogConfig := &promslog.Config{}
	promslogflag.AddFlags(app, promslogConfig)
	setVersionInfo()
	app.Version(version.Print(exporterName))
	app.HelpFlag.Short('h')

	serveCmd := app.Command("serve", "Run the exporter (the default command).").Default()
	flags := addCoreFlags(app)
	// Optional parts register their flags and commands here.
	geoFlags := addGeoFlags(app)
	adminFlags := addAdminFlags(app)
	socketFlags := addSocketFlags(app)
	archiveFlags := addArchiveFlags(app)
	mapsFlags := addMapsFlags(app)
	healthcheck := addHealthcheckCommand(app)

	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", exporterName, err)
		return 2
	}
	logger := promslog.New(promslogConfig)

	switch cmd {
	case serveCmd.FullCommand():
		applyGCDefault(os.Getenv)
	case healthcheck.cmd.FullCommand():
		return runHealthcheck(healthcheck, flags.toolkit, os.Stdout, os.Stderr)
	default:
		if code, handled := runAdminCommand(cmd, adminFlags, flags, logger); handled {
			return code
		}
		fmt.Fprintf(os.Stderr, "%s: unknown command %q\n", exporterName, cmd)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, logger, flags, geoFlags, adminFlags, socketFlags, archiveFlags, mapsFlags); err != nil {
		logger.Error("exporter stopped with an error", "err", err)
		return 1
	}
	return 0
}

// phase is a step of the shutdown. Every part registers its background work
// (goBackground) and its shutdown steps (atShutdown) under a phase; after the
// HTTP server has finished its in-flight requests, the phases run in this
// order, each one's background work stopped and waited for before its steps:
const (
	// phaseWorkers: the startup read, the geo resolver and SIGHUP handling
	// stop first; nothing asks for new work after this.
	phaseWorkers phase = iota
	// phaseEngine: the engine closes fail2ban's database and hands its last
	// ban events to the archive.
	phaseEngine
	// phaseArchive: the archive's Run stops; its final flush writes those
	// last events.
	phaseArchive
	// phaseGeo: geo's final flush writes resolved IPs; providers close.
	phaseGeo
	// phaseSocket: the fail2ban socket client closes.
	phaseSocket
	// phaseStorage: the app database closes, after everything that writes it.
	phaseStorage
	numPhases
)

type phase int

func serve(ctx context.Context, logger *slog.Logger, flags *coreFlags, geoFlags *geoFlags, adminFlags *adminFlags, socketFlags *socketFlags, archiveFlags *archiveFlags, mapsFlags *mapsFlags) error {
	logger.Info("starting "+exporterName, "version", version.Info(), "build_context", version.BuildContext())

	windows, err := collector.ParseWindows(*flags.windows)
	if err != nil {
		return fmt.Errorf("--bans.window: %w", err)
	}

	e := &exporter{
		logger:    logger,
		registry:  prometheus.NewRegistry(),
		mux:       http.NewServeMux(),
		countries: collector.NoCountries{},
	}
	// Stops whatever was started when a setup step fails; after a normal
	// shutdown it does nothing.
	defer e.shutdown(logger)
	e.registry.MustRegister(versioncollector.NewCollector(exporterName))
	registerRuntimeCollectors(e.registry)

	db, err := appdb.Open(ctx, *flags.storagePath)
	if err != nil {
		return fmt.Errorf("open storage (--storage.path): %w", err)
	}
	e.appDB = db
	e.atShutdown(phaseStorage, func(context.Context) error { return db.Close() })
	store, err := e.setupArchive(ctx, archiveFlags, windows)
	if err != nil {
		return err
	}

	dbPath := *flags.fail2banDB
	// Optional parts wire themselves in; the socket may supply the DB path.
	if dbPath, err = e.setupSocket(ctx, socketFlags, dbPath, flags.fail2banDBGiven); err != nil {
		return err
	}
	if err := e.setupGeo(ctx, geoFlags); err != nil {
		return err
	}

	f2b := collector.NewExporter(collector.Options{
		DBPath:         dbPath,
		DefaultBantime: *flags.defaultBantime,
		Windows:        windows,
		ChunkSize:      *flags.chunkSize,
		Logger:         logger,
		Archive:        store,

		IntegrityCheckInterval: *flags.integrityCheck,
		WatchInterval:          *flags.watchInterval,
	}, e.countries)
	e.atShutdown(phaseEngine, func(context.Context) error { return f2b.Close() })
	// The /metrics handler writes f2b's large families from its cache
	// (main_metrics.go); the registry holds the rest of f2b's metrics.
	e.registry.MustRegister(f2b.Uncached())

	if err := e.setupAdmin(ctx, adminFlags, flags); err != nil {
		return err
	}
	if err := e.setupMaps(ctx, mapsFlags, f2b); err != nil {
		return err
	}

	metricsHandler, err := newMetricsHandler(e.registry, f2b, *flags.maxRequests, slog.NewLogLogger(logger.Handler(), slog.LevelError))
	if err != nil {
		return err
	}
	for _, wrap := range e.wrapMetrics {
		metricsHandler = wrap(metricsHandler)
	}
	e.mux.Handle(*flags.metricsPath, metricsHandler)
	e.mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "Healthy\n")
	})
	e.mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !f2b.Ready() {
			http.Error(w, "Not ready: fail2ban's database has not been read successfully yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "Ready\n")
	})
	if *flags.enablePprof {
		registerPprof(e.mux)
	}
	if *flags.metricsPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "bangui_exporter",
			Description: "Prometheus exporter for fail2ban: bans per jail and per country",
			Version:     version.Info(),
			Links:       e.landingLinks(*flags.metricsPath, adminFlags),
			Profiling:   landingProfiling(*flags.enablePprof),
			ExtraHTML:   landingNotesHTML(e.landingNotes),
		})
		if err != nil {
			return fmt.Errorf("landing page: %w", err)
		}
		e.mux.Handle("/", landing)
	}

	// Read the database once at start so /-/ready turns true without
	// waiting for the first scrape.
	e.goBackground(phaseWorkers, f2b.Warm)
	e.goBackground(phaseWorkers, f2b.RunIntegrityCheck)
	// Countries geo learns move between scrapes, not in one.
	e.goBackground(phaseWorkers, f2b.RunCountryRefresh)
	// Scrapes do not count fail2ban's rows; this does, after them.
	e.goBackground(phaseWorkers, f2b.RunVerify)
	// New bans are read as fail2ban writes them, not when scraped.
	e.goBackground(phaseWorkers, f2b.RunWatch)
	e.start(ctx)

	server := newHTTPServer(e.mux, "/api/", logger)
	serveErr := make(chan error, 1)
	go func() { serveErr <- listenAndServe(server, flags.toolkit, *flags.maxConnections, logger) }()

	select {
	case err := <-serveErr:
		e.shutdown(logger)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil {
		logger.Error("http server shutdown", "err", err)
	}
	e.shutdown(logger)
	return nil
}

// shutdownTimeout bounds the whole shutdown after the HTTP server stopped;
// the archive's final flush bounds itself at archive.DefaultFlushTimeout.
const shutdownTimeout = 30 * time.Second

// shutdown stops the parts in phase order (once).
func (e *exporter) shutdown(logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	e.stop(ctx, logger)
}

func (e *exporter) landingLinks(metricsPath string, adminFlags *adminFlags) []web.LandingLinks {
	links := []web.LandingLinks{
		{Address: metricsPath, Text: "Metrics"},
		{Address: "/-/healthy", Text: "Health"},
		{Address: "/-/ready", Text: "Readiness (first successful read of fail2ban's database)"},
	}
	return append(links, adminLandingLinks(adminFlags)...)
}
