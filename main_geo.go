package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/geo"
)

// The resolver tells the engine which answers are final, so new bans of IPs
// with a final answer count in fail2ban_bans_total at once.
var _ collector.FinalCountryLookup = (*geo.Resolver)(nil)

// geoFlags are the flags of the geo part (countries for banned IPs).
type geoFlags struct {
	providers         *string
	mmdb              *string
	mmdbGiven         bool // --geo.mmdb set by the user (even to ""): no discovery
	mmdbCheckInterval *time.Duration
	ipapiURL          *string
	ipapiKey          *string
	ipapiTimeout      *time.Duration
	cacheSize         *int
	negativeTTL       *time.Duration
	flushInterval     *time.Duration
	queueSize         *int
}

// geoPart is what the geo part shares with other parts (the admin API).
type geoPart struct {
	// resolver is nil when geo resolution is disabled (--geo.providers=none).
	resolver *geo.Resolver
}

func addGeoFlags(app *kingpin.Application) *geoFlags {
	f := &geoFlags{
		providers: app.Flag("geo.providers",
			"Country providers in the order they are asked, comma-separated: mmdb, ipapi; 'none' disables country resolution. A provider without its flag (--geo.mmdb, --geo.ipapi.url) is left out.").
			Default("mmdb,ipapi").String(),
		mmdb: app.Flag("geo.mmdb",
			"Path of a MaxMind-format country database (GeoLite2/GeoIP2 Country or City, DB-IP lite, ip-location-db). A new file put in place by rename is picked up without restart (timer, or SIGHUP).").
			Default("").String(),
		mmdbCheckInterval: app.Flag("geo.mmdb.check-interval",
			"How often --geo.mmdb is checked for a new file; 0 disables the timer (SIGHUP still reloads).").
			Default(geo.DefaultCheckInterval.String()).Duration(),
		ipapiURL: app.Flag("geo.ipapi.url",
			"ip-api batch endpoint; empty disables ip-api. The free endpoint is plain HTTP and receives every banned IP it is asked about.").
			Default(geo.DefaultIPAPIURL).String(),
		ipapiKey: app.Flag("geo.ipapi.key",
			"ip-api pro key: switches to the pro endpoint over HTTPS (no free-tier rate limit). Prefer the environment variable to keep it out of the process list.").
			Envar("BANGUI_GEO_IPAPI_KEY").Default("").String(),
		ipapiTimeout: app.Flag("geo.ipapi.timeout", "Timeout of one ip-api batch request.").
			Default("10s").Duration(),
		cacheSize: app.Flag("geo.cache-size",
			"Maximum IPs kept in the memory cache (and loaded from the app database at start); IPs currently banned are never evicted. 0 means no bound.").
			Default(fmt.Sprint(geo.DefaultCacheSize)).Int(),
		negativeTTL: app.Flag("geo.negative-ttl",
			"How long an IP whose lookup failed is not retried; doubles with every further failure (up to 64x, at most 24h).").
			Default(geo.DefaultNegativeTTL.String()).Duration(),
		flushInterval: app.Flag("geo.flush-interval",
			"How often newly resolved IPs are written to the app database, in one transaction.").
			Default(geo.DefaultFlushInterval.String()).Duration(),
		queueSize: app.Flag("geo.queue-size",
			"Maximum IPs waiting for each provider; more wait in a backlog and are queued when there is room.").
			Default(fmt.Sprint(geo.DefaultQueueSize)).Int(),
	}
	app.GetFlag("geo.mmdb").IsSetByUser(&f.mmdbGiven)
	return f
}

// parseGeoProviders validates --geo.providers; nil means disabled.
func parseGeoProviders(list string) ([]string, error) {
	list = strings.TrimSpace(list)
	if list == "none" || list == "" {
		return nil, nil
	}
	var names []string
	for n := range strings.SplitSeq(list, ",") {
		n = strings.TrimSpace(n)
		switch n {
		case "mmdb", "ipapi":
		case "none":
			return nil, errors.New("'none' cannot be combined with providers")
		default:
			return nil, fmt.Errorf("unknown provider %q (known: mmdb, ipapi, none)", n)
		}
		if slices.Contains(names, n) {
			return nil, fmt.Errorf("provider %q given twice", n)
		}
		names = append(names, n)
	}
	return names, nil
}

// setupGeo wires country resolution in: it sets e.countries, registers geo's
// metrics and background work, and flushes the geo cache on shutdown.
func (e *exporter) setupGeo(ctx context.Context, f *geoFlags) error {
	names, err := parseGeoProviders(*f.providers)
	if err != nil {
		return fmt.Errorf("--geo.providers: %w", err)
	}
	logger := e.logger.With("component", "geo")
	if names == nil {
		logger.Info("country resolution disabled (--geo.providers=none): every IP counts under ZZ")
		return nil
	}
	var (
		providers []geo.Provider
		mmdb      *geo.MMDB
	)
	for _, name := range names {
		switch name {
		case "mmdb":
			path := discoverMMDB(f, logger)
			if path == "" {
				continue
			}
			mmdb, err = geo.OpenMMDB(path, logger, nil)
			if err != nil {
				return fmt.Errorf("--geo.mmdb: %w", err)
			}
			m := mmdb
			e.onShutdown = append(e.onShutdown, func(context.Context) error { return m.Close() })
			providers = append(providers, mmdb)
		case "ipapi":
			if *f.ipapiURL == "" {
				logger.Info("--geo.ipapi.url is empty: ip-api is off")
				continue
			}
			client := &http.Client{Timeout: *f.ipapiTimeout}
			p, err := geo.NewIPAPI(geo.IPAPIOptions{URL: *f.ipapiURL, Key: *f.ipapiKey, Client: client, Logger: logger})
			if err != nil {
				return fmt.Errorf("--geo.ipapi.url: %w", err)
			}
			if *f.ipapiKey == "" && strings.HasPrefix(*f.ipapiURL, "http://") {
				logger.Warn("ip-api's free endpoint is plain HTTP: the IPs it is asked about travel unencrypted to a third party; use --geo.mmdb first (the default order) or --geo.ipapi.url='' to keep them local",
					"url", p.Status().URL)
			}
			providers = append(providers, p)
		}
	}
	e.noteNetworkCountries(logger, mmdb != nil, providers)
	if len(providers) == 0 {
		return fmt.Errorf("--geo.providers=%s: none of them is configured (set --geo.mmdb or --geo.ipapi.url, or use --geo.providers=none)", *f.providers)
	}
	resolver, err := geo.New(ctx, geo.Options{
		DB:            e.appDB,
		Providers:     providers,
		Logger:        logger,
		CacheSize:     *f.cacheSize,
		NegativeTTL:   *f.negativeTTL,
		FlushInterval: *f.flushInterval,
		QueueSize:     *f.queueSize,
		CheckInterval: *f.mmdbCheckInterval,
	})
	if err != nil {
		return fmt.Errorf("geo: %w", err)
	}
	if err := e.registry.Register(resolver.Collector()); err != nil {
		return fmt.Errorf("geo: register metrics: %w", err)
	}
	e.countries = resolver
	e.geo.resolver = resolver
	e.background = append(e.background, resolver.Run)
	if mmdb != nil {
		e.background = append(e.background, func(ctx context.Context) { reloadOnSIGHUP(ctx, resolver, logger) })
	}
	// Runs after the background work stopped and before the app database
	// closes (onShutdown runs in reverse order).
	e.onShutdown = append(e.onShutdown, func(ctx context.Context) error {
		if err := resolver.Flush(ctx); err != nil {
			return fmt.Errorf("geo: final flush: %w", err)
		}
		return nil
	})
	logger.Info("country resolution on", "providers", strings.Join(providerNames(providers), ","))
	return nil
}

// reloadOnSIGHUP reopens the mmdb on every SIGHUP until ctx is done.
func reloadOnSIGHUP(ctx context.Context, resolver *geo.Resolver, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			logger.Info("SIGHUP: reloading the geo database")
			if err := resolver.Reload(); err != nil {
				logger.Error("geo database reload failed; the previous one stays in use", "err", err)
			}
		}
	}
}

func providerNames(ps []geo.Provider) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name()
	}
	return out
}
