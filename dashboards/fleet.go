package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// unitBansPerSecond is Grafana's custom unit "suffix:<text>".
const unitBansPerSecond = "suffix: bans/s"

// FleetBannedByInstance is the "Top attacked hosts" query: IPs banned now
// per host (the recording rule instance:fail2ban_banned_ips:sum holds the
// same numbers for every host).
func (c Config) FleetBannedByInstance() string {
	return "topk(10, sum by (instance) (" + c.selector("fail2ban_banned_ips") + "))"
}

// FleetRateByInstance is the ban rate per host (recorded, over 5m, as
// instance:fail2ban_bans:rate5m).
func (c Config) FleetRateByInstance() string {
	return "topk(10, sum by (instance) (rate(" + c.selector("fail2ban_bans_total") + "[$__rate_interval])))"
}

// Fleet is the dashboard of many fail2ban hosts: how many report, what the
// whole fleet bans, which hosts are attacked most, and from where.
func (c Config) Fleet() (Dashboard, error) {
	ids := &panelIDs{}
	perHostMerge := []dashboard.DataTransformerConfig{
		{Id: "merge", Options: map[string]any{}},
		{Id: "organize", Options: map[string]any{
			"excludeByName": map[string]any{"Time": true},
			"indexByName":   map[string]any{"instance": 0, "Value #A": 1, "Value #B": 2, "Value #C": 3, "Value #D": 4},
			"renameByName": map[string]any{"instance": "Host", "Value #A": "DB readable", "Value #B": "Banned now",
				"Value #C": "Bans in time range", "Value #D": "Enabled jails"},
		}},
	}
	b := c.newDashboard("fleet", "fail2ban / Fleet",
		"Many fail2ban hosts at once, from bangui_exporter: hosts reporting, bans of the whole fleet, the most attacked hosts and the countries bans come from.").
		Variables(c.commonVariables(false)).
		WithRow(dashboard.NewRowBuilder("Fleet").Id(ids.id())).
		WithPanel(statPanel(ids, "Hosts scraped",
			"Exporter instances with a bangui_exporter_build_info series: hosts Prometheus scrapes successfully.",
			"count("+c.selector("bangui_exporter_build_info")+")", units.Short).
			Decimals(0).Thresholds(thresholdAt("red", 1, "green")).NoValue("0")).
		WithPanel(statPanel(ids, "Hosts with a readable DB",
			"Hosts whose exporter read fail2ban's database at its last scrape (sum of fail2ban_up; recorded as job:fail2ban_up:sum).",
			"sum("+c.selector("fail2ban_up")+")", units.Short).
			Decimals(0).Thresholds(thresholdAt("red", 1, "green")).NoValue("0")).
		WithPanel(statPanel(ids, "Hosts with an unreadable DB",
			"Hosts whose exporter cannot read fail2ban's database (fail2ban_up = 0): their bans are missing from every number here.",
			"count("+c.selector("fail2ban_up")+" == 0)", units.Short).
			Decimals(0).Thresholds(thresholdAt("green", 1, "red")).NoValue("0")).
		WithPanel(statPanel(ids, "Banned now (fleet)",
			"IPs banned right now on all selected hosts (fail2ban_banned_ips; recorded as job:fail2ban_banned_ips:sum). An IP banned on two hosts, or in two jails, counts twice.",
			"sum("+c.selector("fail2ban_banned_ips")+")", units.Short).
			Decimals(0).Thresholds(thresholds("blue")).NoValue("0")).
		WithPanel(statPanel(ids, "Bans in time range (fleet)",
			"Ban events on all selected hosts during the dashboard's time range (increase of fail2ban_bans_total, counting the first ban of a jail/country pair too).",
			"sum("+NewEvents(c.selector("fail2ban_bans_total"), "$__range")+")", units.Short).
			Decimals(0).Thresholds(thresholds("blue")).NoValue("0")).
		WithPanel(statPanel(ids, "Country unknown (ZZ), fleet",
			"Share of the IPs banned now on all selected hosts whose country is not known (ZZ). Above the alert threshold for an hour, BanguiUnknownCountryShareHigh fires per host.",
			"sum("+c.selector("fail2ban_banned_ips", `country="`+unknownCountry+`"`)+") / sum("+c.selector("fail2ban_banned_ips")+")", units.PercentUnit).
			Decimals(1).Thresholds(thresholdAt("green", c.UnknownCountryShare, "orange"))).
		WithRow(dashboard.NewRowBuilder("Top attacked hosts").Id(ids.id())).
		WithPanel(bargauge.NewPanelBuilder().
			Id(ids.id()).
			Title("Top attacked hosts: banned now").
			Description("The 10 hosts with the most IPs banned right now (fail2ban_banned_ips summed per instance; recorded for every host as instance:fail2ban_banned_ips:sum).").
			Datasource(datasourceRef()).
			WithTarget(instantValue(0, c.FleetBannedByInstance(), "{{instance}}")).
			Unit(units.Short).
			Decimals(0).
			Min(0).
			Thresholds(thresholds("blue")).
			Orientation(common.VizOrientationHorizontal).
			DisplayMode(common.BarGaugeDisplayModeGradient).
			ValueMode(common.BarGaugeValueModeColor).
			NamePlacement(common.BarGaugeNamePlacementAuto).
			Sizing(common.BarGaugeSizingAuto).
			ShowUnfilled(true).
			ReduceOptions(lastValue()).
			Height(10).Span(12)).
		WithPanel(timeseriesPanel(ids, "Ban rate per host",
			"Bans per second of the 10 hosts banning fastest at each point in time (rate of fail2ban_bans_total per instance; recorded over 5m as instance:fail2ban_bans:rate5m). The first ban of a new jail/country pair is not in rate(): see the Hosts table for exact counts.",
			unitBansPerSecond,
			rangeQuery(0, c.FleetRateByInstance(), "{{instance}}")).
			Height(10).Span(12)).
		WithPanel(table.NewPanelBuilder().
			Id(ids.id()).
			Title("Hosts").
			Description("Every selected host: fail2ban database readable (1/0), IPs banned now, ban events in the dashboard's time range, enabled jails. Sort by a column to find the most attacked hosts.").
			Datasource(datasourceRef()).
			WithTarget(instantTable(0, "sum by (instance) ("+c.selector("fail2ban_up")+")")).
			WithTarget(instantTable(1, "sum by (instance) ("+c.selector("fail2ban_banned_ips")+")")).
			WithTarget(instantTable(2, "sum by (instance) ("+NewEvents(c.selector("fail2ban_bans_total"), "$__range")+")")).
			WithTarget(instantTable(3, "sum by (instance) ("+c.selector("fail2ban_jail_enabled")+")")).
			Transformations(perHostMerge).
			Unit(units.Short).
			Decimals(0).
			Thresholds(thresholds("green")).
			ShowHeader(true).
			CellHeight(common.TableCellHeightSm).
			SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("Banned now").Desc(true)}).
			Footer(common.NewTableFooterOptionsBuilder().
				Show(true).Reducer([]string{"sum"}).Fields([]string{"Banned now", "Bans in time range"}).CountRows(false).EnablePagination(false)).
			Height(12).Span(16)).
		WithPanel(table.NewPanelBuilder().
			Id(ids.id()).
			Title("Countries banned now (fleet)").
			Description("IPs banned right now on all selected hosts per country, largest first (recorded as job_country:fail2ban_banned_ips:sum); ZZ is unknown country.").
			Datasource(datasourceRef()).
			WithTarget(instantTable(0, "sort_desc(sum by (country) ("+c.selector("fail2ban_banned_ips")+"))")).
			Transformations([]dashboard.DataTransformerConfig{{
				Id: "organize",
				Options: map[string]any{
					"excludeByName": map[string]any{"Time": true},
					"indexByName":   map[string]any{"country": 0, "Value": 1},
					"renameByName":  map[string]any{"country": "Country", "Value": "Banned now"},
				},
			}}).
			Mappings(CountryNameMappings()).
			Unit(units.Short).
			Decimals(0).
			Thresholds(thresholds("green")).
			ShowHeader(true).
			CellHeight(common.TableCellHeightSm).
			Footer(common.NewTableFooterOptionsBuilder().
				Show(true).Reducer([]string{"sum"}).Fields([]string{"Banned now"}).CountRows(false).EnablePagination(false)).
			Height(12).Span(8))
	return b.Build()
}
