package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/bangui/bangui_exporter/geo"
)

// geoProviderSpec is one country provider as main wires it: its name in
// --geo.providers and its flags. Adding a provider: implement geo.Provider
// in geo/ (see geo/provider.go), then add one spec to geoProviderRegistry.
type geoProviderSpec struct {
	// name in --geo.providers; the same as the provider's Name().
	name string
	// enableFlag is the flag without which the provider is left out.
	enableFlag string
	// addFlags registers the provider's flags and returns what builds the
	// provider from them once they are parsed.
	addFlags func(app *kingpin.Application) geoProviderConfig
}

// geoProviderConfig builds a provider from its parsed flags.
type geoProviderConfig interface {
	// open returns the provider, or nil when its flags leave it off (it
	// logs why). Errors are flag errors and stop the start.
	open(ctx context.Context, logger *slog.Logger) (geo.Provider, error)
}

// geoProviderRegistry lists the providers in their default order.
func geoProviderRegistry() []geoProviderSpec {
	return []geoProviderSpec{
		{name: "mmdb", enableFlag: "--geo.mmdb", addFlags: addMMDBFlags},
		{name: "ipapi", enableFlag: "--geo.ipapi.url", addFlags: addIPAPIFlags},
	}
}

// geoProviderNames are the registry's names in order.
func geoProviderNames() []string {
	var names []string
	for _, spec := range geoProviderRegistry() {
		names = append(names, spec.name)
	}
	return names
}

// geoProviderEnableFlags are the registry's enabling flags, for messages.
func geoProviderEnableFlags() string {
	var flags []string
	for _, spec := range geoProviderRegistry() {
		flags = append(flags, spec.enableFlag)
	}
	return strings.Join(flags, ", ")
}

// mmdbFlags are the flags of the local MaxMind-format database provider.
type mmdbFlags struct {
	path          *string
	pathGiven     bool // --geo.mmdb set by the user (even to ""): no discovery
	checkInterval *time.Duration
}

func addMMDBFlags(app *kingpin.Application) geoProviderConfig {
	f := &mmdbFlags{
		path: app.Flag("geo.mmdb",
			"Path of a MaxMind-format country database (GeoLite2/GeoIP2 Country or City, DB-IP lite, ip-location-db). A new file put in place by rename is picked up without restart (timer, or SIGHUP); a file missing at start is loaded when it appears.").
			Default("").String(),
		checkInterval: app.Flag("geo.mmdb.check-interval",
			"How often --geo.mmdb is checked for a new file; 0 disables the timer (SIGHUP still reloads).").
			Default(geo.DefaultCheckInterval.String()).Duration(),
	}
	app.GetFlag("geo.mmdb").IsSetByUser(&f.pathGiven)
	return f
}

func (f *mmdbFlags) open(_ context.Context, logger *slog.Logger) (geo.Provider, error) {
	path := discoverMMDB(*f.path, f.pathGiven, logger)
	if path == "" {
		return nil, nil
	}
	if *f.checkInterval < 0 {
		return nil, fmt.Errorf("--geo.mmdb.check-interval must not be negative, got %s", *f.checkInterval)
	}
	m, err := geo.NewMMDB(geo.MMDBOptions{Path: path, CheckInterval: *f.checkInterval, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("--geo.mmdb: %w", err)
	}
	return m, nil
}

// ipapiFlags are the flags of the ip-api provider.
type ipapiFlags struct {
	url     *string
	key     *string
	timeout *time.Duration
}

func addIPAPIFlags(app *kingpin.Application) geoProviderConfig {
	return &ipapiFlags{
		url: app.Flag("geo.ipapi.url",
			"ip-api batch endpoint; empty disables ip-api. The free endpoint is plain HTTP and receives every banned IP it is asked about.").
			Default(geo.DefaultIPAPIURL).String(),
		key: app.Flag("geo.ipapi.key",
			"ip-api pro key: switches to the pro endpoint over HTTPS (no free-tier rate limit). Prefer the environment variable to keep it out of the process list.").
			Envar("BANGUI_GEO_IPAPI_KEY").Default("").String(),
		timeout: app.Flag("geo.ipapi.timeout", "Timeout of one ip-api batch request.").
			Default("10s").Duration(),
	}
}

func (f *ipapiFlags) open(_ context.Context, logger *slog.Logger) (geo.Provider, error) {
	if *f.url == "" {
		logger.Info("--geo.ipapi.url is empty: ip-api is off")
		return nil, nil
	}
	if *f.timeout <= 0 {
		return nil, fmt.Errorf("--geo.ipapi.timeout must be positive, got %s", *f.timeout)
	}
	client := &http.Client{Timeout: *f.timeout}
	p, err := geo.NewIPAPI(geo.IPAPIOptions{URL: *f.url, Key: *f.key, Client: client, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("--geo.ipapi.url: %w", err)
	}
	if *f.key == "" && strings.HasPrefix(*f.url, "http://") {
		logger.Warn("ip-api's free endpoint is plain HTTP: the IPs it is asked about travel unencrypted to a third party; use --geo.mmdb first (the default order) or --geo.ipapi.url='' to keep them local",
			"url", p.Status().URL)
	}
	return p, nil
}
