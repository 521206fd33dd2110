// Package dashboards builds bangui_exporter's Grafana dashboards as Go code
// with the Grafana foundation SDK and holds the metric contract that the
// dashboards, the alert rules and their tests check queries against.
//
// The generated JSON lives beside this file (dashboards/*.json) and is
// written by `go generate ./dashboards/...`.
package dashboards

import (
	"slices"
	"sort"
)

//go:generate go run ./gen -out ../mixin -dashboards-dir . -rules-file ../deploy/prometheus/rules/bangui_exporter.rules.yml

// MetricType is the Prometheus type of a metric family.
type MetricType string

// Metric types used by the exporter.
const (
	Gauge   MetricType = "gauge"
	Counter MetricType = "counter"
)

// Owner names the part of the exporter that exposes a metric.
type Owner string

// Parts of the exporter that own metrics.
const (
	OwnerCore   Owner = "core (collector/)"
	OwnerGeo    Owner = "geo (geo/)"
	OwnerSocket Owner = "socket (socket/)"
	// OwnerArchive is the ban archive (on by default; off with
	// --no-storage.archive).
	OwnerArchive Owner = "archive (collector/archive/)"
	// OwnerMaps is the top autonomous systems and places (banmap/): the
	// ASN series need an AS source (--geo.asn-mmdb or ip-api), the
	// location series a GeoLite2-City layout --geo.mmdb.
	OwnerMaps Owner = "banmap (banmap/)"
)

// Metric is one metric family of the contract: its name, type, the labels
// the exporter sets (target labels such as job and instance come from
// Prometheus) and which part of the exporter exposes it.
type Metric struct {
	Name   string
	Type   MetricType
	Labels []string
	Owner  Owner
	Help   string
}

// contract is the list of metric families the exporter promises. Names,
// types and labels are a promise to users: dashboards and alert rules may
// only use what is listed here, and README.md's metric table is generated
// from it (dashboards/readme_test.go checks the committed one).
var contract = []Metric{
	// The fail2ban database.
	{Name: "fail2ban_up", Type: Gauge, Owner: OwnerCore,
		Help: "1 when the last read of fail2ban's database succeeded, 0 otherwise."},
	{Name: "fail2ban_jail_enabled", Type: Gauge, Labels: []string{"jail"}, Owner: OwnerCore,
		Help: "1 when the jail is enabled in fail2ban's jails table, 0 otherwise."},
	{Name: "fail2ban_banned_ips", Type: Gauge, Labels: []string{"jail", "country"}, Owner: OwnerCore,
		Help: "IPs banned right now by fail2ban's rule on bips: bantime <= -1 OR timeofban + bantime > now."},
	{Name: "fail2ban_recent_bans", Type: Gauge, Labels: []string{"jail", "country", "window"}, Owner: OwnerCore,
		Help: "Ban events (distinct rows of bans, united with the exporter's ban archive when it is on) whose timeofban lies in the trailing window."},
	{Name: "fail2ban_bans_total", Type: Counter, Labels: []string{"jail", "country"}, Owner: OwnerCore,
		Help: "Ban events that appeared in fail2ban's database since the exporter started."},
	{Name: "fail2ban_oldest_ban_timestamp_seconds", Type: Gauge, Owner: OwnerCore,
		Help: "timeofban of the oldest ban event in fail2ban's bans table or, when it is on, the exporter's ban archive: the history horizon of the windows."},
	{Name: "bangui_exporter_build_info", Type: Gauge,
		Labels: []string{"branch", "goarch", "goos", "goversion", "revision", "tags", "version"}, Owner: OwnerCore,
		Help: "A metric with a constant '1' value labeled by version, revision, branch, goversion from which bangui_exporter was built, and the goos and goarch for the build."},
	{Name: "bangui_exporter_fail2ban_read_duration_seconds", Type: Gauge, Owner: OwnerCore,
		Help: "Duration of the last read of fail2ban's database (incremental refresh)."},
	{Name: "bangui_exporter_fail2ban_last_read_success_timestamp_seconds", Type: Gauge, Owner: OwnerCore,
		Help: "Time of the last successful read of fail2ban's database."},
	{Name: "bangui_exporter_fail2ban_read_errors_total", Type: Counter, Labels: []string{"kind"}, Owner: OwnerCore,
		Help: "Failed reads of fail2ban's database by kind of error."},
	{Name: "bangui_exporter_fail2ban_skipped_rows", Type: Gauge, Labels: []string{"table", "reason"}, Owner: OwnerCore,
		Help: "Rows of the fail2ban DB that cannot be counted, by table and reason."},
	{Name: "bangui_exporter_fail2ban_rows", Type: Gauge, Labels: []string{"table"}, Owner: OwnerCore,
		Help: "Rows of fail2ban's database held in memory."},
	{Name: "bangui_exporter_fail2ban_ips", Type: Gauge, Owner: OwnerCore,
		Help: "Distinct IPs held in memory."},
	{Name: "bangui_exporter_fail2ban_reconciliations_total", Type: Counter, Labels: []string{"table"}, Owner: OwnerCore,
		Help: "Reconciliations of a table after rows were deleted (unban, purge) or replaced."},
	{Name: "bangui_exporter_fail2ban_schema_version", Type: Gauge, Owner: OwnerCore,
		Help: "Schema version of fail2ban's database (2 or 4); 0 when unknown."},

	// Geo.
	{Name: "bangui_exporter_geo_cache_entries", Type: Gauge, Labels: []string{"state"}, Owner: OwnerGeo,
		Help: "IPs in the geo memory cache, by state: resolved (country known) or unresolved."},
	{Name: "bangui_exporter_geo_pending_ips", Type: Gauge, Owner: OwnerGeo,
		Help: "IPs queued for background resolution."},
	{Name: "bangui_exporter_geo_lookups_total", Type: Counter, Labels: []string{"provider", "result"}, Owner: OwnerGeo,
		Help: "IP lookups by provider (local = non-global address classified without a provider) and result (found, not_found, no_country, error)."},
	{Name: "bangui_exporter_geo_ipapi_requests_total", Type: Counter, Labels: []string{"code"}, Owner: OwnerGeo,
		Help: "Batch requests sent to ip-api by HTTP status code (\"error\" when no response arrived)."},
	{Name: "bangui_exporter_geo_ipapi_rate_limit_remaining", Type: Gauge, Owner: OwnerGeo,
		Help: "X-Rl of ip-api's last answer: requests left in the current window."},
	{Name: "bangui_exporter_geo_flushes_total", Type: Counter, Owner: OwnerGeo,
		Help: "Flushes of the geo cache that committed dirty entries to the app database (one transaction each)."},
	{Name: "bangui_exporter_geo_flush_errors_total", Type: Counter, Owner: OwnerGeo,
		Help: "Flushes of the geo cache that failed; their entries stay dirty and are written by the next flush."},
	{Name: "bangui_exporter_geo_flushed_entries_total", Type: Counter, Owner: OwnerGeo,
		Help: "Geo cache entries written to the app database."},
	{Name: "bangui_exporter_geo_last_flush_timestamp_seconds", Type: Gauge, Owner: OwnerGeo,
		Help: "Time of the last successful flush."},
	{Name: "bangui_exporter_geo_mmdb_build_timestamp_seconds", Type: Gauge, Owner: OwnerGeo,
		Help: "Build time of the MaxMind-format database in use (absent while none is loaded)."},
	{Name: "bangui_exporter_geo_mmdb_loaded", Type: Gauge, Owner: OwnerGeo,
		Help: "1 while a MaxMind-format database (--geo.mmdb) is loaded and answers lookups, 0 while none is (file missing or invalid since the start)."},
	{Name: "bangui_exporter_geo_mmdb_last_load_success_timestamp_seconds", Type: Gauge, Owner: OwnerGeo,
		Help: "Time of the last successful load of --geo.mmdb (absent before the first)."},
	{Name: "bangui_exporter_geo_mmdb_load_errors_total", Type: Counter, Owner: OwnerGeo,
		Help: "Failed loads of --geo.mmdb, counted once per problem: a missing file once until it appears, each invalid file once."},
	{Name: "bangui_exporter_geo_queue_full_total", Type: Counter, Owner: OwnerGeo,
		Help: "IPs that did not fit in a full resolver queue; they wait in the backlog and are queued when there is room."},

	// Top autonomous systems and places (banmap).
	{Name: "fail2ban_banned_ips_by_asn", Type: Gauge, Labels: []string{"jail", "asn", "as_org"}, Owner: OwnerMaps,
		Help: "IPs banned right now per jail and autonomous system: the --geo.asn.top systems with the most, asn=\"unknown\" for IPs no source knows an AS for, and asn=\"other\" for the rest, so a jail's series sum to its fail2ban_banned_ips. Recomputed in the background."},
	{Name: "fail2ban_banned_ips_by_location", Type: Gauge, Labels: []string{"country", "city", "latitude", "longitude"}, Owner: OwnerMaps,
		Help: "IPs banned right now (per jail, summed) at the --geo.city.top places with the most, from a GeoLite2-City layout --geo.mmdb, coordinates rounded to 0.1 degree; city=\"other\" counts the rest and IPs without coordinates. Recomputed in the background."},

	// The ban archive.
	{Name: "bangui_exporter_archive_events", Type: Gauge, Owner: OwnerArchive,
		Help: "Ban events in the archive."},
	{Name: "bangui_exporter_archive_oldest_event_timestamp_seconds", Type: Gauge, Owner: OwnerArchive,
		Help: "timeofban of the oldest archived ban event: the archive's horizon (0 while the archive is empty)."},
	{Name: "bangui_exporter_archive_queue_events", Type: Gauge, Owner: OwnerArchive,
		Help: "Ban events queued for the next ingest cycle (including a cycle in progress)."},
	{Name: "bangui_exporter_archive_ingested_events_total", Type: Counter, Owner: OwnerArchive,
		Help: "Ban events newly written to the archive (events already archived are ignored and not counted)."},
	{Name: "bangui_exporter_archive_ingest_cycles_total", Type: Counter, Owner: OwnerArchive,
		Help: "Ingest cycles that committed queued events to the archive (one transaction each)."},
	{Name: "bangui_exporter_archive_ingest_errors_total", Type: Counter, Owner: OwnerArchive,
		Help: "Ingest cycles that failed; their events stay queued and are written by the next cycle."},
	{Name: "bangui_exporter_archive_pruned_events_total", Type: Counter, Owner: OwnerArchive,
		Help: "Archived ban events deleted because they became older than the retention."},
	{Name: "bangui_exporter_archive_dropped_events_total", Type: Counter, Labels: []string{"reason"}, Owner: OwnerArchive,
		Help: "Ban events offered to the archive and not written, by reason: queue_full (the queue was at its bound; the engine offers them again), invalid (no jail or IP), expired (older than the retention)."},

	// fail2ban's socket.
	{Name: "fail2ban_server_up", Type: Gauge, Owner: OwnerSocket,
		Help: "1 when fail2ban's socket answered this scrape, 0 otherwise."},
	{Name: "fail2ban_version_info", Type: Gauge, Labels: []string{"version"}, Owner: OwnerSocket,
		Help: "fail2ban's version, from its socket; the value is always 1."},
	{Name: "fail2ban_jail_banned_current", Type: Gauge, Labels: []string{"jail"}, Owner: OwnerSocket,
		Help: "IPs fail2ban itself has banned in the jail right now (\"Currently banned\")."},
	{Name: "fail2ban_jail_failed_current", Type: Gauge, Labels: []string{"jail"}, Owner: OwnerSocket,
		Help: "Failures fail2ban currently counts in the jail, within findtime (\"Currently failed\")."},
	{Name: "fail2ban_jail_failed_total", Type: Counter, Labels: []string{"jail"}, Owner: OwnerSocket,
		Help: "Failures fail2ban matched in the jail since it started (\"Total failed\"); resets when fail2ban restarts."},
	{Name: "fail2ban_jail_banned_total", Type: Counter, Labels: []string{"jail"}, Owner: OwnerSocket,
		Help: "Bans in the jail since fail2ban started (\"Total banned\"); resets when fail2ban restarts."},
	{Name: "fail2ban_jail_bantime_seconds", Type: Gauge, Labels: []string{"jail"}, Owner: OwnerSocket,
		Help: "The jail's bantime; -1 means permanent. With bantime.increment this is the base ban time."},
	{Name: "fail2ban_jail_findtime_seconds", Type: Gauge, Labels: []string{"jail"}, Owner: OwnerSocket,
		Help: "The jail's findtime: the window in which maxretry failures lead to a ban."},
	{Name: "fail2ban_jail_maxretry", Type: Gauge, Labels: []string{"jail"}, Owner: OwnerSocket,
		Help: "The jail's maxretry: failures within findtime that lead to a ban."},
	{Name: "fail2ban_db_purge_age_seconds", Type: Gauge, Owner: OwnerSocket,
		Help: "fail2ban's dbpurgeage: ban history older than this is deleted from its database."},
}

// Contract returns a copy of the metric contract, sorted by name.
func Contract() []Metric {
	out := make([]Metric, len(contract))
	for i, m := range contract {
		m.Labels = slices.Clone(m.Labels)
		out[i] = m
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupMetric returns the contract entry of a metric family. It also
// accepts the series names Prometheus derives from families (none for
// gauges and counters, so only exact names match).
func LookupMetric(name string) (Metric, bool) {
	for _, m := range contract {
		if m.Name == name {
			m.Labels = slices.Clone(m.Labels)
			return m, true
		}
	}
	return Metric{}, false
}
