package dashboards

import (
	"fmt"
	"sort"

	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/geomap"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/units"
	"golang.org/x/text/language"
	"golang.org/x/text/language/display"
)

// Values of the world map's "view" variable. They are numbers so that the
// map query can pick its source with plain PromQL (vector($view) == 0).
const (
	ViewBannedNow    = "0"
	ViewRecentWindow = "1"
)

// unknownCountry is the country label of IPs whose country is not known.
const unknownCountry = "ZZ"

// byCountry is the map's query: IPs banned now per country, or ban events
// per country in the chosen window, depending on $view. extra matchers
// (e.g. country="ZZ") narrow both halves; grouping is "by (country)" or
// "" for a single total.
func (c Config) byCountry(grouping string, extra ...string) string {
	now := c.jailSelector("fail2ban_banned_ips", extra...)
	window := c.jailSelector("fail2ban_recent_bans", append([]string{`window="$window"`}, extra...)...)
	return fmt.Sprintf("(sum %s(%s) and on() (vector($view) == %s))\nor\n(sum %s(%s) and on() (vector($view) == %s))",
		grouping, now, ViewBannedNow, grouping, window, ViewRecentWindow)
}

// WorldMapQuery is the expression behind the world map: per country,
// without ZZ (unknown country), which the map cannot draw and which would
// otherwise set the scale of its markers' size and colour.
func (c Config) WorldMapQuery() string {
	return c.byCountry("by (country) ", `country!="`+unknownCountry+`"`)
}

// CountryTableQuery is the expression behind the country table: per
// country and host (instance), ZZ included.
func (c Config) CountryTableQuery() string {
	return "sort_desc(\n" + c.byCountry("by (country, instance) ") + "\n)"
}

// CityPointsQuery is the expression behind the map's city layer: banned
// IPs at the exporter's top places (fail2ban_banned_ips_by_location, only
// with a GeoLite2-City layout --geo.mmdb), without the "other" series that
// has no coordinates (nor ZZ, like the country layer), and only while Show is "Banned now" (places are not
// kept per window). No series (no City database): the layer draws nothing.
func (c Config) CityPointsQuery() string {
	return "sum by (country, city, latitude, longitude) (" +
		c.selector("fail2ban_banned_ips_by_location", `city!="other"`, `country!="`+unknownCountry+`"`) +
		")\nand on() (vector($view) == " + ViewBannedNow + ")"
}

// TopNetworksQuery is the expression behind "Top attacking networks": the
// 10 autonomous systems with the most IPs banned now in the selected jails
// (each jail's top --geo.asn.top summed; "other" and "unknown" left out).
func (c Config) TopNetworksQuery() string {
	return "topk(10, sum by (asn, as_org) (" +
		c.jailSelector("fail2ban_banned_ips_by_asn", `asn!~"other|unknown"`) + "))"
}

// WindowVariableQuery is the query of the world map's window variable: the
// window labels of fail2ban_recent_bans, or DefaultWindow while there are
// none (a fresh install), so that $window is never empty.
func (c Config) WindowVariableQuery() string {
	return "query_result(count by (window) (" + c.selector("fail2ban_recent_bans") +
		") or on () label_replace(vector(0), \"window\", \"" + c.DefaultWindow + "\", \"\", \"\"))"
}

// WorldMap is the world map dashboard: banned IPs (or ban events of a
// window) per country on a Geomap, with a country table beside it.
func (c Config) WorldMap() (Dashboard, error) {
	ids := &panelIDs{}
	vars := c.commonVariables(true)
	vars = append(vars,
		dashboard.NewCustomVariableBuilder("view").
			Label("Show").
			Description("Banned now: IPs fail2ban bans at this moment (fail2ban_banned_ips). Ban events in window: every ban event of the chosen window (fail2ban_recent_bans).").
			Values(dashboard.StringOrMap{String: new("Banned now : " + ViewBannedNow + ",Ban events in window : " + ViewRecentWindow)}).
			Current(dashboard.VariableOption{
				Selected: new(true),
				Text:     dashboard.StringOrArrayOfString{String: new("Banned now")},
				Value:    dashboard.StringOrArrayOfString{String: new(ViewBannedNow)},
			}).
			Options([]dashboard.VariableOption{
				{Selected: new(true), Text: dashboard.StringOrArrayOfString{String: new("Banned now")}, Value: dashboard.StringOrArrayOfString{String: new(ViewBannedNow)}},
				{Selected: new(false), Text: dashboard.StringOrArrayOfString{String: new("Ban events in window")}, Value: dashboard.StringOrArrayOfString{String: new(ViewRecentWindow)}},
			}),
		dashboard.NewQueryVariableBuilder("window").
			Label("Window").
			Description("Trailing window of fail2ban_recent_bans (the exporter's --bans.window values). Used when Show is \"Ban events in window\". "+c.DefaultWindow+" while the exporter exposes no window yet.").
			Datasource(datasourceRef()).
			Query(dashboard.StringOrMap{String: new(c.WindowVariableQuery())}).
			Definition(c.WindowVariableQuery()).
			Regex(`/window="([^"]+)"/`).
			Current(dashboard.VariableOption{
				Selected: new(true),
				Text:     dashboard.StringOrArrayOfString{String: new(c.DefaultWindow)},
				Value:    dashboard.StringOrArrayOfString{String: new(c.DefaultWindow)},
			}).
			Multi(false).
			IncludeAll(false).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortNaturalAsc),
	)

	b := c.newDashboard("world-map", "fail2ban / World map",
		"Banned IPs of fail2ban per country, from bangui_exporter: banned right now, or ban events in a trailing window.").
		Variables(vars).
		WithPanel(c.worldMapPanel(ids)).
		WithPanel(c.countryTable(ids)).
		WithPanel(c.topNetworksPanel(ids)).
		WithPanel(statPanel(ids, "Total",
			"Banned IPs right now, or ban events in the chosen window, summed over the selected jails and countries. An IP banned in two jails counts twice.",
			c.byCountry(""), units.Short).
			Decimals(0).NoValue("0").Thresholds(thresholds("blue")).Height(5).Span(6)).
		WithPanel(statPanel(ids, "Country unknown (ZZ)",
			"IPs (or ban events) whose country is not known, counted under country \"ZZ\". They cannot be drawn on the map. Reasons: geo resolution is off (--geo.providers none), the IP is not resolved yet (the background resolver is working through its queue; see bangui_exporter_geo_pending_ips), the local MaxMind database has no answer and ip-api.com is disabled or rate-limited, or the address is private or reserved.",
			c.byCountry("", `country="`+unknownCountry+`"`), units.Short).
			Decimals(0).NoValue("0").Thresholds(thresholdAt("green", 1, "orange")).Height(5).Span(6)).
		WithPanel(statPanel(ids, "History horizon",
			"How far back the exporter can count ban events: the age of the oldest ban it knows (fail2ban_oldest_ban_timestamp_seconds), beside fail2ban's dbpurgeage (fail2ban_db_purge_age_seconds, read through fail2ban's socket; absent when the socket part is off). fail2ban deletes ban history older than its dbpurgeage (1 day by default); the exporter's ban archive (on by default) keeps it, from the exporter's first run on.",
			"time() - min("+c.selector("fail2ban_oldest_ban_timestamp_seconds")+")", units.Seconds).
			WithTarget(instantValue(1, "min("+c.selector("fail2ban_db_purge_age_seconds")+")", "fail2ban dbpurgeage")).
			TextMode(common.BigValueTextModeValueAndName).
			Decimals(1).Thresholds(thresholds("blue")).Height(5).Span(6)).
		WithPanel(statPanel(ids, "History missing from window $window",
			"Warning for \"Ban events in window\": how much of the chosen window lies before the history horizon, where no ban events can be counted (0 = the window is complete). If this is not 0, the map shows fewer events than really happened in the window: with the exporter's ban archive (on by default) this shrinks to 0 as the archive's history grows past the window; without it (--no-storage.archive), raise fail2ban's dbpurgeage (fail2ban.local, [DEFAULT] dbpurgeage = 30d). The window start is computed to within 10 minutes.",
			c.WindowTruncationQuery(), units.Seconds).
			ColorMode(common.BigValueColorModeBackground).
			Decimals(1).Thresholds(thresholdAt("green", 900, "red")).Height(5).Span(6))
	return b.Build()
}

// WindowTruncationQuery is the horizon warning: seconds of the chosen
// window that lie before the newest instance's history horizon. The window
// start is time() minus the window, computed with a subquery because a
// PromQL duration cannot be turned into a number directly.
func (c Config) WindowTruncationQuery() string {
	return "clamp_min(max(" + c.selector("fail2ban_oldest_ban_timestamp_seconds") +
		") - scalar(min_over_time(vector(time())[$window:10m])), 0)"
}

func (c Config) worldMapPanel(ids *panelIDs) *geomap.PanelBuilder {
	layer := common.NewMapLayerOptionsBuilder().
		Type("markers").
		Name("Countries").
		Config(map[string]any{
			"showLegend": true,
			"style": map[string]any{
				"color":   map[string]any{"field": "Value #A", "fixed": "dark-green"},
				"opacity": 0.6,
				"size":    map[string]any{"field": "Value #A", "fixed": 5, "min": 4, "max": 30},
				"symbol":  map[string]any{"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
				"text":    map[string]any{"field": "country", "fixed": "", "mode": "field"},
				"textConfig": map[string]any{
					"fontSize": 10, "offsetX": 0, "offsetY": 0, "textAlign": "center", "textBaseline": "middle",
				},
			},
		}).
		Location(common.NewFrameGeometrySourceBuilder().
			Mode(common.FrameGeometrySourceModeLookup).
			Lookup("country").
			Gazetteer("public/gazetteer/countries.json")).
		FilterData(map[string]any{"id": "byRefId", "options": refID(0)}).
		Tooltip(true)
	cities := common.NewMapLayerOptionsBuilder().
		Type("markers").
		Name("Cities").
		Config(map[string]any{
			"showLegend": false,
			"style": map[string]any{
				"color":   map[string]any{"fixed": "dark-orange"},
				"opacity": 0.7,
				"size":    map[string]any{"field": "Value #B", "fixed": 3, "min": 2, "max": 15},
				"symbol":  map[string]any{"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
			},
		}).
		Location(common.NewFrameGeometrySourceBuilder().
			Mode(common.FrameGeometrySourceModeCoords).
			Latitude("latitude").
			Longitude("longitude")).
		FilterData(map[string]any{"id": "byRefId", "options": refID(1)}).
		Tooltip(true)
	return geomap.NewPanelBuilder().
		Id(ids.id()).
		Title("Bans per country").
		Description("One marker per country, sized and colored by the number of banned IPs (Show = Banned now) or of ban events in the chosen window; with a GeoLite2-City layout --geo.mmdb, a second layer (Cities) adds an orange point per place of the exporter's top --geo.city.top places (fail2ban_banned_ips_by_location, all jails, Show = Banned now only; no City database: no points). Countries come from bangui_exporter's geo resolution (ISO 3166-1 alpha-2 codes, looked up in Grafana's countries gazetteer). IPs of unknown country (ZZ) cannot be drawn and are left out of the markers' size and colour scale: see the table and the ZZ stat. Map tiles are loaded from the internet; offline, markers show on an empty background.").
		Datasource(datasourceRef()).
		WithTarget(instantTable(0, c.WorldMapQuery())).
		WithTarget(instantTable(1, c.CityPointsQuery())).
		// Label values are strings; the city layer's coordinates must be
		// numbers.
		Transformations([]dashboard.DataTransformerConfig{{
			Id: "convertFieldType",
			Options: map[string]any{
				"conversions": []any{
					map[string]any{"targetField": "latitude", "destinationType": "number"},
					map[string]any{"targetField": "longitude", "destinationType": "number"},
				},
				"fields": map[string]any{},
			},
		}}).
		Unit(units.Short).
		Decimals(0).
		ColorScheme(dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdContinuousGrYlRd)).
		Thresholds(thresholds("green")).
		View(geomap.NewMapViewConfigBuilder().Id("coords").Lat(25).Lon(10).Zoom(1)).
		Controls(geomap.NewControlsOptionsBuilder().
			ShowZoom(true).MouseWheelZoom(false).ShowAttribution(true).ShowScale(false).ShowDebug(false).ShowMeasure(false)).
		Basemap(common.NewMapLayerOptionsBuilder().Type("default").Name("Basemap").Config(map[string]any{})).
		Layers([]cog.Builder[common.MapLayerOptions]{layer, cities}).
		Tooltip(geomap.NewTooltipOptionsBuilder().Mode(geomap.TooltipModeDetails)).
		Height(14).Span(16)
}

// topNetworksPanel is the bar gauge of the top autonomous systems.
func (c Config) topNetworksPanel(ids *panelIDs) *bargauge.PanelBuilder {
	return bargauge.NewPanelBuilder().
		Id(ids.id()).
		Title("Top attacking networks").
		Description("The 10 autonomous systems (networks) with the most IPs banned right now in the selected jails, from fail2ban_banned_ips_by_asn: the exporter keeps the --geo.asn.top largest per jail (the rest is in asn=\"other\", IPs without a known AS in asn=\"unknown\", both left out here), so a network just below one jail's top is counted only in the jails where it is in it. ASNs come from --geo.asn-mmdb (a GeoLite2-ASN layout database) or ip-api's \"as\" field; without either the panel is empty. Always banned now, whatever Show says.").
		Datasource(datasourceRef()).
		WithTarget(instantValue(0, c.TopNetworksQuery(), "{{as_org}} ({{asn}})")).
		Unit(units.Short).
		Decimals(0).
		Min(0).
		NoValue("no AS data").
		Thresholds(thresholds("orange")).
		Orientation(common.VizOrientationHorizontal).
		DisplayMode(common.BarGaugeDisplayModeGradient).
		ValueMode(common.BarGaugeValueModeColor).
		NamePlacement(common.BarGaugeNamePlacementAuto).
		Sizing(common.BarGaugeSizingAuto).
		ShowUnfilled(true).
		ReduceOptions(lastValue()).
		Height(10).Span(24)
}

func (c Config) countryTable(ids *panelIDs) *table.PanelBuilder {
	return table.NewPanelBuilder().
		Id(ids.id()).
		Title("Countries").
		Description("The map's numbers per country and host (exporter instance) as a list, largest first, with country names; includes ZZ (unknown country) and codes the map cannot draw.").
		Datasource(datasourceRef()).
		WithTarget(instantTable(0, c.CountryTableQuery())).
		Transformations([]dashboard.DataTransformerConfig{{
			Id: "organize",
			Options: map[string]any{
				"excludeByName": map[string]any{"Time": true},
				"indexByName":   map[string]any{"country": 0, "instance": 1, "Value": 2},
				"renameByName":  map[string]any{"country": "Country", "instance": "Host", "Value": "Count"},
			},
		}}).
		Mappings(CountryNameMappings()).
		Unit(units.Short).
		Decimals(0).
		Thresholds(thresholds("green")).
		ShowHeader(true).
		CellHeight(common.TableCellHeightSm).
		SortBy([]cog.Builder[common.TableSortByFieldState]{
			common.NewTableSortByFieldStateBuilder().DisplayName("Count").Desc(true),
		}).
		Footer(common.NewTableFooterOptionsBuilder().
			Show(true).Reducer([]string{"sum"}).Fields([]string{"Count"}).CountRows(false).EnablePagination(false)).
		Height(14).Span(8)
}

// CountryNameMappings maps ISO 3166-1 alpha-2 codes to "Name (CODE)", with
// English names from CLDR, plus ZZ as unknown.
func CountryNameMappings() []dashboard.ValueMapping {
	names := countryNames()
	codes := make([]string, 0, len(names))
	for code := range names {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	options := make(map[string]dashboard.ValueMappingResult, len(codes))
	for i, code := range codes {
		options[code] = dashboard.ValueMappingResult{Text: new(names[code] + " (" + code + ")"), Index: new(int32(i))}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{Type: dashboard.MappingTypeValueToText, Options: options}}}
}

// countryNames returns the English name of every current ISO 3166-1
// alpha-2 country code CLDR knows, and ZZ.
func countryNames() map[string]string {
	names := map[string]string{unknownCountry: "Unknown"}
	regionNames := display.English.Regions()
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			code := string([]rune{a, b})
			region, err := language.ParseRegion(code)
			if err != nil || !region.IsCountry() {
				continue
			}
			// Skip deprecated codes that CLDR replaces (DD → DE).
			if canonical := region.Canonicalize(); canonical.String() != code {
				continue
			}
			if name := regionNames.Name(region); name != "" && name != code {
				names[code] = name
			}
		}
	}
	return names
}
