package main

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/bangui/bangui_exporter/banmap"
	"github.com/bangui/bangui_exporter/geo"
)

// mapsFlags are the flags of the top autonomous systems and places
// (banmap) and of the ASN database.
type mapsFlags struct {
	asnMMDB  *string
	asnTop   *int
	cityTop  *int
	interval *time.Duration
}

func addMapsFlags(app *kingpin.Application) *mapsFlags {
	return &mapsFlags{
		asnMMDB: app.Flag("geo.asn-mmdb",
			"Path of a MaxMind-format ASN database (GeoLite2-ASN layout: autonomous_system_number, autonomous_system_organization) for fail2ban_banned_ips_by_asn and the admin API's list; ip-api's \"as\" field is used for IPs it does not know. A new file put in place by rename is picked up (checked every minute).").
			Default("").String(),
		asnTop: app.Flag("geo.asn.top",
			"Autonomous systems per jail in fail2ban_banned_ips_by_asn; the rest is summed in asn=\"other\".").
			Default(fmt.Sprint(banmap.DefaultASNTop)).Int(),
		cityTop: app.Flag("geo.city.top",
			"Places in fail2ban_banned_ips_by_location (when --geo.mmdb is a GeoLite2-City layout database); the rest is summed in city=\"other\".").
			Default(fmt.Sprint(banmap.DefaultCityTop)).Int(),
		// Hidden: for tests that cannot wait a minute for new bans.
		interval: app.Flag("geo.top.interval", "How often the top autonomous systems and places and the admin API's list of banned IPs are recomputed.").
			Default(banmap.DefaultInterval.String()).Hidden().Duration(),
	}
}

// setupMaps wires banmap: its collector, its background loop, and, with the
// admin API on, GET /api/bans and /api/bans/by-country behind the admin
// session.
func (e *exporter) setupMaps(_ context.Context, f *mapsFlags, src mapsSource) error {
	logger := e.logger.With("component", "banmap")
	var sources []banmap.ASLookup
	if *f.asnMMDB != "" {
		asn, err := geo.NewMMDB(geo.MMDBOptions{Path: *f.asnMMDB, CheckInterval: geo.DefaultCheckInterval, Logger: logger})
		if err != nil {
			return fmt.Errorf("--geo.asn-mmdb: %w", err)
		}
		e.atShutdown(phaseGeo, func(context.Context) error { return asn.Close() })
		e.goBackground(phaseWorkers, func(ctx context.Context) { reloadEvery(ctx, asn, geo.DefaultCheckInterval) })
		sources = append(sources, asn)
	}
	var places banmap.PlaceLookup
	if r := e.geo.resolver; r != nil {
		for _, p := range r.Providers() {
			switch p := p.(type) {
			case *geo.MMDB:
				places = p
			case *geo.IPAPI:
				sources = append(sources, banmap.ASFunc(func(ip netip.Addr) (geo.AS, bool) { return r.CachedAS(ip) }))
			}
		}
	}
	maps, err := banmap.New(banmap.Options{
		Source:   src,
		AS:       sources,
		Places:   places,
		ASNTop:   *f.asnTop,
		CityTop:  *f.cityTop,
		Interval: *f.interval,
		List:     e.admin != nil,
		Ready:    src.Ready,
		Logger:   logger,
	})
	if err != nil {
		return err
	}
	if err := e.registry.Register(maps); err != nil {
		return fmt.Errorf("banmap: register metrics: %w", err)
	}
	e.goBackground(phaseWorkers, maps.Run)
	if e.admin != nil {
		e.mux.Handle(banmap.PathBans, e.admin.RequireSession(http.HandlerFunc(maps.ServeBans)))
		e.mux.Handle(banmap.PathBansByCountry, e.admin.RequireSession(http.HandlerFunc(maps.ServeByCountry)))
	}
	return nil
}

// mapsSource is what banmap reads: the engine's banned pairs, once the
// first read of fail2ban's database is done (collector.Exporter).
type mapsSource interface {
	banmap.Source
	Ready() bool
}

// reloadEvery checks m's file for a new version every interval until ctx
// ends; the provider logs its own problems.
func reloadEvery(ctx context.Context, m *geo.MMDB, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = m.Reload(false)
		}
	}
}
