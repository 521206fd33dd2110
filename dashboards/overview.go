package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// NewEvents is how many events a counter selector gained over rng, per
// series. The exporter's counters start a jail/country series with its
// first ban (a series at 0 for every possible country cannot exist), so a
// series that did not exist rng ago counts its last value (every event
// since it appeared: `last_over_time unless (series rng ago)`), the others
// their increase(). Unlike increase() + min_over_time() for new series,
// this gives the same answer on Prometheus and on VictoriaMetrics, whose
// increase() already counts a new series from 0.
func NewEvents(sel, rng string) string {
	return "((last_over_time(" + sel + "[" + rng + "]) unless " + sel + " offset " + rng +
		") or increase(" + sel + "[" + rng + "]))"
}

// upDown maps 1/0 to up/down.
func upDown() []dashboard.ValueMapping {
	return valueText([3]string{"0", "down", "red"}, [3]string{"1", "up", "green"})
}

// timeseriesPanel is a time series panel of range queries, legend as a table.
func timeseriesPanel(ids *panelIDs, title, description, unit string, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().
		Id(ids.id()).
		Title(title).
		Description(description).
		Datasource(datasourceRef()).
		Unit(unit).
		AxisSoftMin(0).
		Thresholds(thresholds("green")).
		ColorScheme(dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdPaletteClassic)).
		Legend(legend()).
		Tooltip(tooltip()).
		LineWidth(1).
		FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).
		Height(8).Span(12)
	for _, t := range targets {
		p.WithTarget(t)
	}
	return p
}

// Overview is the everyday dashboard: is fail2ban up, what is banned per
// jail, how fast bans come in per jail and per country, and what fail2ban's
// own server reports through its socket.
func (c Config) Overview() (Dashboard, error) {
	ids := &panelIDs{}
	bansIncrease := NewEvents(c.jailSelector("fail2ban_bans_total"), "$__rate_interval")
	b := c.newDashboard("overview", "fail2ban / Overview",
		"fail2ban at a glance, from bangui_exporter: database and server health, bans per jail and per country, failures and fail2ban's own counts.").
		Variables(c.commonVariables(true)).
		WithRow(dashboard.NewRowBuilder("Status").Id(ids.id())).
		WithPanel(statPanel(ids, "fail2ban DB readable",
			"fail2ban_up: 1 when the exporter's last read of fail2ban's database succeeded (lowest over the selected instances). Down means the file is missing, unreadable, locked too long, corrupt or of an unknown schema; the exporter's log says which.",
			"min("+c.selector("fail2ban_up")+")", units.NoUnit).
			Mappings(upDown()).Thresholds(thresholdAt("red", 1, "green"))).
		WithPanel(statPanel(ids, "fail2ban server",
			"fail2ban_server_up: 1 when fail2ban's socket answered the last scrape (lowest over the selected instances). No value when the socket part is off (--fail2ban.socket empty or not accessible).",
			"min("+c.selector("fail2ban_server_up")+")", units.NoUnit).
			Mappings(upDown()).Thresholds(thresholdAt("red", 1, "green")).NoValue("socket off")).
		WithPanel(statPanel(ids, "Enabled jails",
			"Jails marked enabled in fail2ban's database (fail2ban_jail_enabled), summed over the selected instances and jails.",
			"sum("+c.jailSelector("fail2ban_jail_enabled")+")", units.Short).
			Decimals(0).Thresholds(thresholdAt("red", 1, "green"))).
		WithPanel(statPanel(ids, "Banned now",
			"IPs banned right now (fail2ban_banned_ips), by fail2ban's own rule on its bips table. An IP banned in two jails counts twice.",
			"sum("+c.jailSelector("fail2ban_banned_ips")+")", units.Short).
			Decimals(0).Thresholds(thresholds("blue")).NoValue("0")).
		WithPanel(statPanel(ids, "Bans in time range",
			"Ban events that appeared in fail2ban's database during the dashboard's time range (increase of fail2ban_bans_total, counting the first ban of a jail/country pair too; the counter starts at 0 when the exporter starts).",
			"sum("+NewEvents(c.jailSelector("fail2ban_bans_total"), "$__range")+")", units.Short).
			Decimals(0).Thresholds(thresholds("blue")).NoValue("0")).
		WithPanel(statPanel(ids, "Countries banned now",
			"Distinct countries with at least one IP banned right now (ZZ, unknown, included).",
			"count(sum by (country) ("+c.jailSelector("fail2ban_banned_ips")+") > 0)", units.Short).
			Decimals(0).Thresholds(thresholds("blue")).NoValue("0")).
		WithRow(dashboard.NewRowBuilder("Bans").Id(ids.id())).
		WithPanel(timeseriesPanel(ids, "Banned now per jail",
			"IPs banned right now per jail (fail2ban_banned_ips summed over countries).",
			units.Short,
			rangeQuery(0, "sum by (jail) ("+c.jailSelector("fail2ban_banned_ips")+")", "{{jail}}"))).
		WithPanel(timeseriesPanel(ids, "New bans per jail",
			"Ban events per jail in each interval (increase of fail2ban_bans_total over $__rate_interval, counting the first ban of a jail/country pair too).",
			units.Short,
			rangeQuery(0, "sum by (jail) ("+bansIncrease+")", "{{jail}}"))).
		WithPanel(timeseriesPanel(ids, "New bans per country",
			"Ban events per country in each interval, top 10 countries of each interval (increase of fail2ban_bans_total).",
			units.Short,
			rangeQuery(0, "topk(10, sum by (country) ("+bansIncrease+"))", "{{country}}"))).
		WithPanel(timeseriesPanel(ids, "Top countries banned now",
			"The 10 countries with the most IPs banned at each point in time (fail2ban_banned_ips).",
			units.Short,
			rangeQuery(0, "topk(10, sum by (country) ("+c.jailSelector("fail2ban_banned_ips")+"))", "{{country}}"))).
		WithRow(dashboard.NewRowBuilder("fail2ban server (socket)").Id(ids.id())).
		WithPanel(timeseriesPanel(ids, "Failures per jail",
			"Failures (matched log lines) per second per jail, from fail2ban's own counter (fail2ban_jail_failed_total, read through its socket; it resets when fail2ban restarts, which rate() handles), and the failures fail2ban currently holds against IPs not yet banned (fail2ban_jail_failed_current). Empty when the socket part is off.",
			units.Short,
			rangeQuery(0, "sum by (jail) (rate("+c.jailSelector("fail2ban_jail_failed_total")+"[$__rate_interval]))", "{{jail}} failures/s"),
			rangeQuery(1, "sum by (jail) ("+c.jailSelector("fail2ban_jail_failed_current")+")", "{{jail}} failing now"))).
		WithPanel(timeseriesPanel(ids, "Banned now: fail2ban server vs database",
			"fail2ban's own count of currently banned IPs per jail (socket, fail2ban_jail_banned_current) beside the exporter's count from the database (fail2ban_banned_ips). They agree in steady state. They differ when fail2ban shortened restored bans at a restart (the DB keeps the old bantime), for jails that are stopped (the DB keeps their rows, the server reports none), and for a few seconds after a ban before fail2ban writes it.",
			units.Short,
			rangeQuery(0, "sum by (jail) ("+c.jailSelector("fail2ban_jail_banned_current")+")", "{{jail}} server"),
			rangeQuery(1, "sum by (jail) ("+c.jailSelector("fail2ban_banned_ips")+")", "{{jail}} database"))).
		WithPanel(timeseriesPanel(ids, "Database minus server",
			"Per jail: IPs the database counts as banned minus what fail2ban's server reports (fail2ban_banned_ips - fail2ban_jail_banned_current). 0 in steady state; see the panel on the left for why it can differ.",
			units.Short,
			rangeQuery(0, "sum by (jail) ("+c.jailSelector("fail2ban_banned_ips")+")\n- on (jail)\nsum by (jail) ("+c.jailSelector("fail2ban_jail_banned_current")+")", "{{jail}}"))).
		WithPanel(timeseriesPanel(ids, "Bans since fail2ban started",
			"fail2ban's \"Total banned\" per jail since the server started (fail2ban_jail_banned_total, socket), increase per interval.",
			units.Short,
			rangeQuery(0, "sum by (jail) (increase("+c.jailSelector("fail2ban_jail_banned_total")+"[$__rate_interval]))", "{{jail}}")))
	return b.Build()
}
