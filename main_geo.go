package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// geoFlags are the flags of the geo part (countries for banned IPs): the
// resolver's own, and each provider's (see main_geo_providers.go).
type geoFlags struct {
	providers     *string
	cacheSize     *int
	negativeTTL   *time.Duration
	flushInterval *time.Duration
	queueSize     *int
	// providerConfigs are the registry's providers with their flags, by name.
	providerConfigs map[string]geoProviderConfig
}

// geoPart is what the geo part shares with other parts (the admin API).
type geoPart struct {
	// resolver is nil when geo resolution is disabled (--geo.providers=none).
	resolver *geo.Resolver
}

func addGeoFlags(app *kingpin.Application) *geoFlags {
	names := geoProviderNames()
	f := &geoFlags{
		providers: app.Flag("geo.providers",
			fmt.Sprintf("Country providers in the order they are asked, comma-separated: %s; 'none' disables country resolution. A provider without its flag (%s) is left out.", strings.Join(names, ", "), geoProviderEnableFlags())).
			Default(strings.Join(names, ",")).String(),
		cacheSize: app.Flag("geo.cache-size",
			"Maximum IPs kept in the memory cache (and loaded from the app database at start); IPs currently banned are never evicted, and a start loads at least as many as were banned at the last flush. 0 means no bound.").
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
		providerConfigs: map[string]geoProviderConfig{},
	}
	for _, spec := range geoProviderRegistry() {
		f.providerConfigs[spec.name] = spec.addFlags(app)
	}
	return f
}

// parseGeoProviders validates --geo.providers against the registry; nil
// means disabled.
func parseGeoProviders(list string) ([]string, error) {
	list = strings.TrimSpace(list)
	if list == "none" || list == "" {
		return nil, nil
	}
	known := geoProviderNames()
	var names []string
	for n := range strings.SplitSeq(list, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "none":
			return nil, errors.New("'none' cannot be combined with providers")
		case !slices.Contains(known, n):
			return nil, fmt.Errorf("unknown provider %q (known: %s, none)", n, strings.Join(known, ", "))
		case slices.Contains(names, n):
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
		closers   []io.Closer // providers with resources (mmdb)
	)
	closeAll := func() error {
		var errs []error
		for _, c := range closers {
			errs = append(errs, c.Close())
		}
		return errors.Join(errs...)
	}
	for _, name := range names {
		p, err := f.providerConfigs[name].open(ctx, logger)
		if err != nil {
			_ = closeAll()
			return err
		}
		if p == nil {
			continue
		}
		if c, ok := p.(io.Closer); ok {
			closers = append(closers, c)
		}
		providers = append(providers, p)
	}
	e.noteNetworkCountries(logger, providers)
	if len(providers) == 0 {
		_ = closeAll()
		return fmt.Errorf("--geo.providers=%s: none of them is configured (set one of %s, or use --geo.providers=none)", *f.providers, geoProviderEnableFlags())
	}
	resolver, err := geo.New(ctx, geo.Options{
		DB:            e.appDB,
		Providers:     providers,
		Logger:        logger,
		CacheSize:     *f.cacheSize,
		NegativeTTL:   *f.negativeTTL,
		FlushInterval: *f.flushInterval,
		QueueSize:     *f.queueSize,
	})
	if err == nil {
		if rerr := e.registry.Register(resolver.Collector()); rerr != nil {
			err = fmt.Errorf("geo: register metrics: %w", rerr)
		}
	}
	if err != nil {
		_ = closeAll()
		return err
	}
	e.countries = resolver
	e.geo.resolver = resolver
	e.goBackground(phaseWorkers, resolver.Run)
	if resolver.HasReloader() {
		e.goBackground(phaseWorkers, func(ctx context.Context) { reloadOnSIGHUP(ctx, resolver, logger) })
	}
	// The final flush, then the providers close.
	e.atShutdown(phaseGeo, func(ctx context.Context) error {
		if err := resolver.Flush(ctx); err != nil {
			return fmt.Errorf("geo: final flush: %w", err)
		}
		return nil
	})
	e.atShutdown(phaseGeo, func(context.Context) error { return closeAll() })
	logger.Info("country resolution on", "providers", strings.Join(providerNames(providers), ","))
	return nil
}

// reloadOnSIGHUP reopens the providers' on-disk data (mmdb) on every SIGHUP
// until ctx is done.
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
