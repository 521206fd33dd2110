package main

import (
	"log/slog"
	"slices"

	"github.com/bangui/bangui_exporter/geo"
)

// discoverMMDB returns the country database to open: --geo.mmdb when given
// (an explicit --geo.mmdb= turns the mmdb provider off), else the first one
// found at the standard paths (geo.StandardMMDBPaths), else "".
func discoverMMDB(given string, isSet bool, logger *slog.Logger) string {
	if given != "" || isSet {
		if given == "" {
			logger.Info("--geo.mmdb is empty: the local database provider is off")
		}
		return given
	}
	path, skipped := geo.DiscoverMMDB(geo.StandardMMDBPaths())
	for _, s := range skipped {
		logger.Warn("country database at a standard path not used", "reason", s)
	}
	if path == "" {
		logger.Info("no --geo.mmdb given and no country database at the standard paths: the local database provider is off",
			"searched", geo.StandardMMDBPaths())
		return ""
	}
	logger.Info("no --geo.mmdb given: using the country database found at a standard path", "path", path)
	return path
}

// noteNetworkCountries says clearly, in the log and on the landing page,
// when countries can only come from ip-api over the network.
func (e *exporter) noteNetworkCountries(logger *slog.Logger, providers []geo.Provider) {
	isMMDB := func(p geo.Provider) bool { _, ok := p.(*geo.MMDB); return ok }
	if slices.ContainsFunc(providers, isMMDB) || !slices.ContainsFunc(providers, func(p geo.Provider) bool { return p.Name() == "ipapi" }) {
		return
	}
	const msg = "Countries come from ip-api.com over the network: no local country database (--geo.mmdb, or GeoLite2-Country.mmdb / GeoIP2-Country.mmdb in /var/lib/GeoIP or /usr/share/GeoIP). Every banned IP is sent to ip-api.com; install a MaxMind-format database (e.g. with geoipupdate) to keep them local."
	logger.Warn(msg)
	e.landingNotes = append(e.landingNotes, msg)
}
