package dashboards

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Rule is one Prometheus recording or alert rule of the mixin.
type Rule struct {
	Record      string
	Alert       string
	Expr        string
	For         string
	Labels      map[string]string
	Annotations map[string]string
}

// RuleGroup is a group of rules evaluated together.
type RuleGroup struct {
	Name     string
	Interval string
	Rules    []Rule
}

// Names of the recording rules the alerts and the fleet views use.
const (
	RecInstanceJailBanned    = "instance_jail:fail2ban_banned_ips:sum"
	RecInstanceCountryBanned = "instance_country:fail2ban_banned_ips:sum"
	RecInstanceCountryWindow = "instance_country_window:fail2ban_recent_bans:sum"
	RecInstanceJailRate      = "instance_jail:fail2ban_bans:rate5m"
	RecInstanceCountryRate   = "instance_country:fail2ban_bans:rate5m"
	RecInstanceBanned        = "instance:fail2ban_banned_ips:sum"
	RecInstanceRate          = "instance:fail2ban_bans:rate5m"
	RecJobBanned             = "job:fail2ban_banned_ips:sum"
	RecJobCountryBanned      = "job_country:fail2ban_banned_ips:sum"
	RecJobCountryWindow      = "job_country_window:fail2ban_recent_bans:sum"
	RecJobRate               = "job:fail2ban_bans:rate5m"
	RecJobUp                 = "job:fail2ban_up:sum"
)

// RecordingRules are the recording rules: per instance (jail or country
// summed away) for the spike alerts, and per job (the fleet: every
// instance summed) for the fleet-level panels of a large fleet.
func (c Config) RecordingRules() RuleGroup {
	banned := c.sel("fail2ban_banned_ips")
	rate := "rate(" + c.sel("fail2ban_bans_total") + "[5m])"
	return RuleGroup{Name: "bangui_exporter.recording", Interval: "1m", Rules: []Rule{
		{Record: RecInstanceJailBanned, Expr: "sum without (country) (" + banned + ")"},
		{Record: RecInstanceCountryBanned, Expr: "sum without (jail) (" + banned + ")"},
		{Record: RecInstanceCountryWindow, Expr: "sum without (jail) (" + c.sel("fail2ban_recent_bans") + ")"},
		{Record: RecInstanceJailRate, Expr: "sum without (country) (" + rate + ")"},
		{Record: RecInstanceCountryRate, Expr: "sum without (jail) (" + rate + ")"},
		// Top attacked hosts.
		{Record: RecInstanceBanned, Expr: "sum by (job, instance) (" + banned + ")"},
		{Record: RecInstanceRate, Expr: "sum by (job, instance) (" + rate + ")"},
		// The fleet: every instance of a job summed.
		{Record: RecJobBanned, Expr: "sum by (job) (" + banned + ")"},
		{Record: RecJobRate, Expr: "sum by (job) (" + rate + ")"},
		{Record: RecJobCountryBanned, Expr: "sum by (job, country) (" + banned + ")"},
		{Record: RecJobCountryWindow, Expr: "sum by (job, country, window) (" + c.sel("fail2ban_recent_bans") + ")"},
		{Record: RecJobUp, Expr: "sum by (job) (" + c.sel("fail2ban_up") + ")"},
	}}
}

func alert(name, expr, forDuration, severity, summary, description string) Rule {
	return Rule{Alert: name, Expr: expr, For: forDuration, Labels: map[string]string{"severity": severity},
		Annotations: map[string]string{"summary": summary, "description": description}}
}

// AlertRules are the alerts; each links to its section of docs/runbook.md.
func (c Config) AlertRules() RuleGroup {
	spikeMin := strconv.Itoa(c.BanSpikeMinPer5m) + " / 300"
	factor := strconv.Itoa(c.BanSpikeFactor)
	zz := `country!="` + unknownCountry + `"`
	rules := []Rule{
		alert("BanguiExporterDown", c.sel("up")+" == 0", promDuration(c.ExporterDownFor), "critical",
			"bangui_exporter on {{ $labels.instance }} cannot be scraped",
			"Prometheus has failed to scrape bangui_exporter on {{ $labels.instance }} (job {{ $labels.job }}) for "+humanDuration(c.ExporterDownFor)+": no fail2ban metrics arrive from this host."),
		alert("BanguiExporterAbsent", "absent("+c.sel("bangui_exporter_build_info")+")", promDuration(c.ExporterAbsentFor), "critical",
			"No bangui_exporter series match "+c.Selector,
			"Prometheus has no series of bangui_exporter matching {"+c.Selector+"} for "+humanDuration(c.ExporterAbsentFor)+": every exporter is gone from service discovery, or the rules were generated for another job name than the scrape configuration uses, and then no other bangui_exporter alert can fire."),
		alert("Fail2banDatabaseUnreadable", c.sel("fail2ban_up")+" == 0", "5m", "critical",
			"bangui_exporter on {{ $labels.instance }} cannot read fail2ban's database",
			"fail2ban_up has been 0 on {{ $labels.instance }} for 5 minutes: ban counts are stale or missing."),
		alert("Fail2banNoJailEnabled", "("+c.sel("fail2ban_up")+" == 1) unless on (job, instance) ("+c.sel("fail2ban_jail_enabled")+" == 1)", "10m", "warning",
			"fail2ban on {{ $labels.instance }} has no enabled jail",
			"fail2ban's database on {{ $labels.instance }} is readable but no jail is enabled: fail2ban is stopped or protects nothing."),
		alert("Fail2banBanSpike",
			RecInstanceJailRate+" > "+factor+" * avg_over_time("+RecInstanceJailRate+"[1d])\nand "+RecInstanceJailRate+" > "+spikeMin, "10m", "warning",
			"Ban spike in jail {{ $labels.jail }} on {{ $labels.instance }}",
			"Jail {{ $labels.jail }} on {{ $labels.instance }} bans IPs more than "+factor+" times as fast as its average of the last day (and over "+strconv.Itoa(c.BanSpikeMinPer5m)+" bans in 5 minutes), for 10 minutes."),
		alert("Fail2banCountryBanSpike",
			RecInstanceCountryRate+"{"+zz+"} > "+factor+" * avg_over_time("+RecInstanceCountryRate+"{"+zz+"}[1d])\nand "+RecInstanceCountryRate+"{"+zz+"} > "+spikeMin, "10m", "warning",
			"Ban spike from country {{ $labels.country }} on {{ $labels.instance }}",
			"IPs of country {{ $labels.country }} are banned on {{ $labels.instance }} more than "+factor+" times as fast as that country's average of the last day (and over "+strconv.Itoa(c.BanSpikeMinPer5m)+" bans in 5 minutes), for 10 minutes."),
		alert("BanguiGeoBacklogGrowing",
			c.sel("bangui_exporter_geo_pending_ips")+" > "+strconv.Itoa(c.GeoBacklogPending)+" and deriv("+c.sel("bangui_exporter_geo_pending_ips")+"[30m]) > 0", "30m", "warning",
			"Geo resolution on {{ $labels.instance }} falls behind",
			"{{ $value | humanize }} IPs on {{ $labels.instance }} wait for a country (over "+strconv.Itoa(c.GeoBacklogPending)+") and the queue has been growing for 30 minutes; they count as country ZZ meanwhile."),
		alert("BanguiGeoFlushFailing", "increase("+c.sel("bangui_exporter_geo_flush_errors_total")+"[15m]) > 0", "15m", "warning",
			"bangui_exporter on {{ $labels.instance }} cannot save its geo cache",
			"Flushes of resolved countries to the exporter's database on {{ $labels.instance }} have failed for 15 minutes. Nothing is lost while the exporter runs (entries stay dirty and are retried), but a restart would resolve them again."),
		alert("BanguiIpApiRateLimited",
			"(\n  sum by (job, instance) (increase("+c.sel("bangui_exporter_geo_ipapi_requests_total", `code="429"`)+"[15m])) > 0\n)\nor on (job, instance)\n(\n"+
				"  max by (job, instance) (max_over_time("+c.sel("bangui_exporter_geo_ipapi_rate_limit_remaining")+"[10m])) == 0\n  and on (job, instance)\n"+
				"  min by (job, instance) (min_over_time("+c.sel("bangui_exporter_geo_pending_ips")+"[10m])) > 0\n)", "30m", "warning",
			"ip-api.com rate-limits bangui_exporter on {{ $labels.instance }}",
			"ip-api.com's free quota has been exhausted for {{ $labels.instance }} throughout the last 30 minutes (429 answers, or no request left in its rate-limit window while IPs wait for a country); countries of new IPs are resolved slowly."),
		alert("BanguiGeoDatabaseOutdated",
			"time() - "+c.sel("bangui_exporter_geo_mmdb_build_timestamp_seconds")+" > "+strconv.FormatInt(int64(c.MMDBMaxAge.Seconds()), 10), "1h", "warning",
			"The geo database of bangui_exporter on {{ $labels.instance }} is outdated",
			"The MaxMind-format database loaded on {{ $labels.instance }} was built {{ $value | humanizeDuration }} ago, more than "+humanDuration(c.MMDBMaxAge)+": countries of IP ranges that changed hands since are wrong."),
		alert("BanguiUnknownCountryShareHigh",
			"sum by (job, instance) ("+c.sel("fail2ban_banned_ips", `country="`+unknownCountry+`"`)+")\n/ sum by (job, instance) ("+c.sel("fail2ban_banned_ips")+") > "+strconv.FormatFloat(c.UnknownCountryShare, 'f', -1, 64)+
				"\nand on (job, instance)\nsum by (job, instance) ("+c.sel("fail2ban_banned_ips")+") >= "+strconv.Itoa(c.UnknownCountryMinBanned), "1h", "warning",
			"Most banned IPs on {{ $labels.instance }} have no country",
			"{{ $value | humanizePercentage }} of the IPs banned on {{ $labels.instance }} have been of unknown country (ZZ) for an hour (threshold "+strconv.FormatFloat(c.UnknownCountryShare*100, 'f', -1, 64)+" %): the world map and the country alerts miss them."),
		alert("BanguiArchiveIngestFailing", "increase("+c.sel("bangui_exporter_archive_ingest_errors_total")+"[15m]) > 0", "15m", "warning",
			"bangui_exporter on {{ $labels.instance }} cannot write its ban archive",
			"Ingest cycles of the ban archive on {{ $labels.instance }} have failed for 15 minutes. New ban events wait in the archive's queue (bounded at 200,000) and are retried; once the queue is full they are dropped from the archive, and windows longer than fail2ban's dbpurgeage lose them after fail2ban purges its rows."),
		alert("BanguiArchiveDroppingEvents",
			"sum by (job, instance) (increase("+c.sel("bangui_exporter_archive_dropped_events_total", `reason="queue_full"`)+"[30m])) > 0", "1m", "warning",
			"bangui_exporter on {{ $labels.instance }} dropped ban events from its archive",
			"{{ $value | humanize }} ban events on {{ $labels.instance }} found the archive's queue full in the last 30 minutes and were not archived. Those still in fail2ban's database are offered again at the exporter's next start; those fail2ban purges before then are missing from long windows of fail2ban_recent_bans."),
		alert("Fail2banServerDown", c.sel("fail2ban_server_up")+" == 0 and on (job, instance) "+c.sel("up")+" == 1", "5m", "critical",
			"fail2ban's server on {{ $labels.instance }} does not answer",
			"bangui_exporter on {{ $labels.instance }} is up but fail2ban's socket has not answered for 5 minutes: fail2ban is stopped or hung, and nothing is being banned."),
	}
	for i := range rules {
		rules[i].Annotations["runbook_url"] = c.runbook(rules[i].Alert)
	}
	return RuleGroup{Name: "bangui_exporter.alerts", Rules: rules}
}

// RenderRules writes rule groups as a Prometheus rule file, with a comment
// header. Strings are written in YAML's double-quoted style (JSON
// escapes), multi-line expressions as literal blocks.
func RenderRules(header string, groups ...RuleGroup) []byte {
	var b strings.Builder
	for line := range strings.SplitSeq(strings.TrimRight(header, "\n"), "\n") {
		b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
	}
	b.WriteString("groups:\n")
	for gi, g := range groups {
		if gi > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "  - name: %s\n", quote(g.Name))
		if g.Interval != "" {
			fmt.Fprintf(&b, "    interval: %s\n", g.Interval)
		}
		b.WriteString("    rules:\n")
		for ri, r := range g.Rules {
			if ri > 0 && r.Alert != "" {
				b.WriteString("\n")
			}
			if r.Record != "" {
				fmt.Fprintf(&b, "      - record: %s\n", r.Record)
			} else {
				fmt.Fprintf(&b, "      - alert: %s\n", r.Alert)
			}
			if strings.Contains(r.Expr, "\n") {
				b.WriteString("        expr: |\n")
				for line := range strings.SplitSeq(r.Expr, "\n") {
					b.WriteString(strings.TrimRight("          "+line, " ") + "\n")
				}
			} else {
				fmt.Fprintf(&b, "        expr: %s\n", singleQuote(r.Expr))
			}
			if r.For != "" {
				fmt.Fprintf(&b, "        for: %s\n", r.For)
			}
			writeMap(&b, "labels", r.Labels)
			writeMap(&b, "annotations", r.Annotations)
		}
	}
	return []byte(b.String())
}

func writeMap(b *strings.Builder, name string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(b, "        %s:\n", name)
	for _, k := range keys {
		fmt.Fprintf(b, "          %s: %s\n", k, quote(m[k]))
	}
}

// quote is a YAML double-quoted scalar (a JSON string is one).
func quote(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// singleQuote is a YAML single-quoted scalar: no escapes, ' doubled.
func singleQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
