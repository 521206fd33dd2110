package main

import (
	"context"

	"github.com/alecthomas/kingpin/v2"
)

// geoFlags are the flags of the geo part (countries for banned IPs).
type geoFlags struct{}

// geoPart is what the geo part shares with other parts (the admin API).
type geoPart struct{}

func addGeoFlags(*kingpin.Application) *geoFlags { return &geoFlags{} }

// setupGeo wires country resolution in: it sets e.countries, registers geo's
// metrics and background work, and flushes the geo cache on shutdown.
func (e *exporter) setupGeo(context.Context, *geoFlags) error { return nil }
