package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// ExporterInternals shows how bangui_exporter itself is doing: reads of
// fail2ban's database, the engine's memory, geo resolution and its cache
// flushes, ip-api.com's rate limit and the ban archive.
func (c Config) ExporterInternals() (Dashboard, error) {
	ids := &panelIDs{}
	perInstance := "{{instance}}"
	b := c.newDashboard("exporter-internals", "fail2ban / Exporter internals",
		"How bangui_exporter itself is doing: database reads, memory, geo resolution, cache flushes, ip-api.com rate limits and the ban archive.").
		Variables(c.commonVariables(false)).
		WithRow(dashboard.NewRowBuilder("Reading fail2ban's database").Id(ids.id())).
		WithPanel(timeseriesPanel(ids, "Read duration",
			"Duration of the exporter's last read of fail2ban's database (bangui_exporter_fail2ban_read_duration_seconds). Reads are incremental: usually milliseconds, longer at startup or after many new bans.",
			units.Seconds,
			rangeQuery(0, "max by (instance) ("+c.selector("bangui_exporter_fail2ban_read_duration_seconds")+")", perInstance)).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "Time since last successful read",
			"Seconds since the exporter last read fail2ban's database successfully (from bangui_exporter_fail2ban_last_read_success_timestamp_seconds). Grows while fail2ban_up is 0.",
			units.Seconds,
			rangeQuery(0, "time() - max by (instance) ("+c.selector("bangui_exporter_fail2ban_last_read_success_timestamp_seconds")+")", perInstance)).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "Read errors",
			"Failed reads of fail2ban's database per interval, by kind (bangui_exporter_fail2ban_read_errors_total).",
			units.Short,
			rangeQuery(0, "sum by (instance, kind) (increase("+c.selector("bangui_exporter_fail2ban_read_errors_total")+"[$__rate_interval]))", "{{instance}} {{kind}}")).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "Rows and IPs in memory",
			"Rows of fail2ban's database the engine holds in memory, by table (bangui_exporter_fail2ban_rows), and the distinct IPs among them (bangui_exporter_fail2ban_ips).",
			units.Short,
			rangeQuery(0, "sum by (instance, table) ("+c.selector("bangui_exporter_fail2ban_rows")+")", "{{instance}} {{table}} rows"),
			rangeQuery(1, "sum by (instance) ("+c.selector("bangui_exporter_fail2ban_ips")+")", "{{instance}} IPs")).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "Skipped rows and reconciliations",
			"Rows of fail2ban's database that cannot be counted, by table and reason (bangui_exporter_fail2ban_skipped_rows: NULL or invalid IPs, jails or times; logged, never a crash), and reconciliations per interval after fail2ban deleted or replaced rows (unban, purge; bangui_exporter_fail2ban_reconciliations_total).",
			units.Short,
			rangeQuery(0, "sum by (instance, table, reason) ("+c.selector("bangui_exporter_fail2ban_skipped_rows")+")", "{{instance}} skipped {{table}} {{reason}}"),
			rangeQuery(1, "sum by (instance, table) (increase("+c.selector("bangui_exporter_fail2ban_reconciliations_total")+"[$__rate_interval]))", "{{instance}} reconciled {{table}}")).
			Span(8)).
		WithRow(dashboard.NewRowBuilder("Geo resolution").Id(ids.id())).
		WithPanel(timeseriesPanel(ids, "Geo cache and pending IPs",
			"IPs in the geo cache by state (bangui_exporter_geo_cache_entries), IPs waiting for the background resolver (bangui_exporter_geo_pending_ips) and IPs per interval that found the resolver queue full (bangui_exporter_geo_queue_full_total; they wait in a backlog). A pending count that keeps growing means lookups cannot keep up (ip-api.com rate limit, no local database).",
			units.Short,
			rangeQuery(0, "sum by (instance, state) ("+c.selector("bangui_exporter_geo_cache_entries")+")", "{{instance}} {{state}}"),
			rangeQuery(1, "sum by (instance) ("+c.selector("bangui_exporter_geo_pending_ips")+")", "{{instance}} pending"),
			rangeQuery(2, "sum by (instance) (increase("+c.selector("bangui_exporter_geo_queue_full_total")+"[$__rate_interval]))", "{{instance}} queue full")).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "Lookups",
			"Lookups per second by provider (mmdb, ipapi, local) and result (bangui_exporter_geo_lookups_total).",
			units.Short,
			rangeQuery(0, "sum by (provider, result) (rate("+c.selector("bangui_exporter_geo_lookups_total")+"[$__rate_interval]))", "{{provider}} {{result}}")).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "ip-api.com requests",
			"Batch requests to ip-api.com per interval by HTTP status code (bangui_exporter_geo_ipapi_requests_total); 429 means rate-limited.",
			units.Short,
			rangeQuery(0, "sum by (code) (increase("+c.selector("bangui_exporter_geo_ipapi_requests_total")+"[$__rate_interval]))", "{{code}}")).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "ip-api.com rate limit remaining",
			"Requests left in ip-api.com's current window (bangui_exporter_geo_ipapi_rate_limit_remaining, from its X-Rl header; 15 per minute on the free endpoint).",
			units.Short,
			rangeQuery(0, "min by (instance) ("+c.selector("bangui_exporter_geo_ipapi_rate_limit_remaining")+")", perInstance)).
			Span(8)).
		WithPanel(statPanel(ids, "ip-api.com 429s in time range",
			"Answers 429 (Too Many Requests) from ip-api.com during the dashboard's time range. The exporter then waits as told by X-Ttl; persistent 429s slow resolution down.",
			"sum(increase("+c.selector("bangui_exporter_geo_ipapi_requests_total", `code="429"`)+"[$__range]))", units.Short).
			Decimals(0).NoValue("0").Thresholds(thresholdAt("green", 1, "orange")).Height(8).Span(8)).
		WithPanel(timeseriesPanel(ids, "Cache flushes",
			"Flushes of resolved IPs to the app database per interval (one transaction each), flush errors, and entries written (bangui_exporter_geo_flushes_total, _flush_errors_total, _flushed_entries_total).",
			units.Short,
			rangeQuery(0, "sum by (instance) (increase("+c.selector("bangui_exporter_geo_flushes_total")+"[$__rate_interval]))", "{{instance}} flushes"),
			rangeQuery(1, "sum by (instance) (increase("+c.selector("bangui_exporter_geo_flush_errors_total")+"[$__rate_interval]))", "{{instance}} errors"),
			rangeQuery(2, "sum by (instance) (increase("+c.selector("bangui_exporter_geo_flushed_entries_total")+"[$__rate_interval]))", "{{instance}} entries")).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "Time since last flush",
			"Seconds since the geo cache was last flushed successfully (bangui_exporter_geo_last_flush_timestamp_seconds). Flushes run every --geo.flush-interval (60s by default) when there is something to write.",
			units.Seconds,
			rangeQuery(0, "time() - max by (instance) ("+c.selector("bangui_exporter_geo_last_flush_timestamp_seconds")+")", perInstance)).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "MaxMind database age",
			"Age of the loaded MaxMind-format database (from bangui_exporter_geo_mmdb_build_timestamp_seconds). Countries of IP ranges drift: update it at least monthly.",
			units.Seconds,
			rangeQuery(0, "time() - max by (instance) ("+c.selector("bangui_exporter_geo_mmdb_build_timestamp_seconds")+")", perInstance)).
			Span(8)).
		WithRow(dashboard.NewRowBuilder("Ban archive").Id(ids.id())).
		WithPanel(timeseriesPanel(ids, "Archived events",
			"Ban events kept in the exporter's archive (bangui_exporter_archive_events), which keeps fail2ban_recent_bans complete past fail2ban's dbpurgeage, and events waiting in its queue to be written (bangui_exporter_archive_queue_events; written every 10 s in one transaction). No value with --no-storage.archive.",
			units.Short,
			rangeQuery(0, "sum by (instance) ("+c.selector("bangui_exporter_archive_events")+")", "{{instance}} archived"),
			rangeQuery(1, "sum by (instance) ("+c.selector("bangui_exporter_archive_queue_events")+")", "{{instance}} queued")).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "Archive horizon",
			"Age of the oldest archived ban event (from bangui_exporter_archive_oldest_event_timestamp_seconds): how far back the archive reaches. Windows of fail2ban_recent_bans up to this age are complete; it stops growing at --storage.retention (400d by default).",
			units.Seconds,
			rangeQuery(0, "time() - min by (instance) ("+c.selector("bangui_exporter_archive_oldest_event_timestamp_seconds")+" > 0)", perInstance)).
			Span(8)).
		WithPanel(timeseriesPanel(ids, "Archive ingest, pruning and drops",
			"Events written to the archive, failed ingest cycles (the events stay queued and are retried), events pruned past --storage.retention, and events not archived by reason (queue_full: lost from the archive unless still in fail2ban's database at the next start; expired; invalid) per interval (bangui_exporter_archive_ingested_events_total, _ingest_errors_total, _pruned_events_total, _dropped_events_total).",
			units.Short,
			rangeQuery(0, "sum by (instance) (increase("+c.selector("bangui_exporter_archive_ingested_events_total")+"[$__rate_interval]))", "{{instance}} written"),
			rangeQuery(1, "sum by (instance) (increase("+c.selector("bangui_exporter_archive_ingest_errors_total")+"[$__rate_interval]))", "{{instance}} failed cycles"),
			rangeQuery(2, "sum by (instance) (increase("+c.selector("bangui_exporter_archive_pruned_events_total")+"[$__rate_interval]))", "{{instance}} pruned"),
			rangeQuery(3, "sum by (instance, reason) (increase("+c.selector("bangui_exporter_archive_dropped_events_total")+"[$__rate_interval]))", "{{instance}} dropped {{reason}}")).
			Span(8)).
		WithRow(dashboard.NewRowBuilder("Build").Id(ids.id())).
		WithPanel(statPanel(ids, "fail2ban DB schema",
			"Schema version of fail2ban's database (bangui_exporter_fail2ban_schema_version): 4 for fail2ban 0.11 to 1.1, 2 for 0.9 and 0.10, 0 when unknown (then fail2ban_up is 0).",
			"min("+c.selector("bangui_exporter_fail2ban_schema_version")+")", units.NoUnit).
			Decimals(0).Thresholds(thresholdAt("red", 2, "green")).Height(6).Span(4)).
		WithPanel(table.NewPanelBuilder().
			Id(ids.id()).
			Title("Exporter versions").
			Description("bangui_exporter_build_info of every selected instance: version, revision and Go version.").
			Datasource(datasourceRef()).
			WithTarget(instantTable(0, "max by (instance, version, revision, goversion) ("+c.selector("bangui_exporter_build_info")+")")).
			Transformations([]dashboard.DataTransformerConfig{{
				Id:      "organize",
				Options: map[string]any{"excludeByName": map[string]any{"Time": true, "Value": true}},
			}}).
			Unit(units.NoUnit).
			Thresholds(thresholds("green")).
			ShowHeader(true).
			CellHeight(common.TableCellHeightSm).
			Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{"sum"}).CountRows(false)).
			Height(6).Span(20))
	return b.Build()
}
