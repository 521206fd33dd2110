package dashboards

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Config is the one configuration the monitoring mixin is generated from:
// the alert and recording rules and the dashboards all read it, so a
// different job name, threshold or runbook location is one regeneration
// (`go run ./dashboards/gen -selector 'job="node"' -out DIR`).
type Config struct {
	// Selector is the PromQL matcher list (without braces) that selects
	// bangui_exporter's series, e.g. `job="fail2ban"`. Every rule and every
	// dashboard query carries it.
	Selector string
	// RunbookURL is the address of docs/runbook.md; each alert's
	// runbook_url is RunbookURL + "#" + the alert's name in lower case.
	RunbookURL string
	// Tags are the dashboards' tags (the dashboards link to each other by
	// the first one).
	Tags []string
	// UIDPrefix starts every dashboard uid ("bangui" → "bangui-overview").
	UIDPrefix string

	// ExporterDownFor is how long a target must fail its scrapes before
	// BanguiExporterDown fires; ExporterAbsentFor the same for
	// BanguiExporterAbsent.
	ExporterDownFor, ExporterAbsentFor time.Duration
	// MMDBMaxAge is the age of the loaded MaxMind-format database above
	// which BanguiGeoDatabaseOutdated fires.
	MMDBMaxAge time.Duration
	// UnknownCountryShare is the share (0..1) of banned IPs of unknown
	// country (ZZ) above which BanguiUnknownCountryShareHigh fires, once
	// at least UnknownCountryMinBanned IPs are banned, for an hour.
	UnknownCountryShare     float64
	UnknownCountryMinBanned int
	// GeoBacklogPending is the number of IPs waiting for a country above
	// which a growing backlog alerts.
	GeoBacklogPending int
	// BanSpikeFactor and BanSpikeMinPer5m: a ban spike is a 5-minute rate
	// above BanSpikeFactor times the last day's average and above
	// BanSpikeMinPer5m bans in 5 minutes.
	BanSpikeFactor   int
	BanSpikeMinPer5m int
	// DefaultWindow is the world map's window when the exporter exposes no
	// fail2ban_recent_bans series yet (a fresh install).
	DefaultWindow string
}

// DefaultConfig is the configuration of the committed mixin: the job name
// of deploy/prometheus/prometheus.yml and the runbook in this repository.
func DefaultConfig() Config {
	return Config{
		Selector:                `job="fail2ban"`,
		RunbookURL:              "https://github.com/bangui/bangui_exporter/blob/main/docs/runbook.md",
		Tags:                    []string{"bangui_exporter", "fail2ban"},
		UIDPrefix:               "bangui",
		ExporterDownFor:         5 * time.Minute,
		ExporterAbsentFor:       15 * time.Minute,
		MMDBMaxAge:              45 * 24 * time.Hour,
		UnknownCountryShare:     0.5,
		UnknownCountryMinBanned: 20,
		GeoBacklogPending:       100,
		BanSpikeFactor:          4,
		BanSpikeMinPer5m:        20,
		DefaultWindow:           "24h",
	}
}

var (
	matcherRE  = regexp.MustCompile(`^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*$`)
	uidRE      = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,20}$`)
	durationRE = regexp.MustCompile(`^([0-9]+[smhdwy])+$`)
)

// Validate reports a configuration the generator cannot use.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Selector) == "" {
		errs = append(errs, errors.New(`selector is empty; use e.g. job="fail2ban" or job=~".+"`))
	}
	for m := range strings.SplitSeq(c.Selector, ",") {
		if strings.TrimSpace(c.Selector) != "" && !matcherRE.MatchString(m) {
			errs = append(errs, fmt.Errorf("selector: %q is not a label matcher such as job=\"fail2ban\"", m))
		}
	}
	if !strings.HasPrefix(c.RunbookURL, "http://") && !strings.HasPrefix(c.RunbookURL, "https://") {
		errs = append(errs, fmt.Errorf("runbook URL %q is not an http(s) address", c.RunbookURL))
	}
	if len(c.Tags) == 0 {
		errs = append(errs, errors.New("no dashboard tags"))
	}
	if !uidRE.MatchString(c.UIDPrefix) {
		errs = append(errs, fmt.Errorf("uid prefix %q: 1 to 20 of a-z A-Z 0-9 _ -", c.UIDPrefix))
	}
	for name, d := range map[string]time.Duration{"exporter down for": c.ExporterDownFor, "exporter absent for": c.ExporterAbsentFor, "mmdb max age": c.MMDBMaxAge} {
		if d < time.Minute || d%time.Minute != 0 {
			errs = append(errs, fmt.Errorf("%s %s: whole minutes, at least 1m", name, d))
		}
	}
	if c.UnknownCountryShare <= 0 || c.UnknownCountryShare >= 1 {
		errs = append(errs, fmt.Errorf("unknown-country share %v: must lie between 0 and 1", c.UnknownCountryShare))
	}
	if c.UnknownCountryMinBanned < 1 || c.GeoBacklogPending < 1 || c.BanSpikeFactor < 2 || c.BanSpikeMinPer5m < 1 {
		errs = append(errs, errors.New("thresholds: unknown-country minimum, geo backlog and spike minimum must be ≥ 1, spike factor ≥ 2"))
	}
	if !durationRE.MatchString(c.DefaultWindow) {
		errs = append(errs, fmt.Errorf("default window %q is not a duration such as 24h", c.DefaultWindow))
	}
	return errors.Join(errs...)
}

// promDuration renders d the way Prometheus writes durations (45d, 5m,
// 1h30m).
func promDuration(d time.Duration) string {
	var b strings.Builder
	rest := d
	for _, u := range []struct {
		unit string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := rest / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			rest -= n * u.d
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}

// humanDuration renders d for annotation texts: "5 minutes", "1 hour",
// "45 days".
func humanDuration(d time.Duration) string {
	for _, u := range []struct {
		name string
		d    time.Duration
	}{{"day", 24 * time.Hour}, {"hour", time.Hour}, {"minute", time.Minute}} {
		if d%u.d == 0 {
			n := int64(d / u.d)
			if n == 1 {
				return "1 " + u.name
			}
			return fmt.Sprintf("%d %ss", n, u.name)
		}
	}
	return promDuration(d)
}

// sel returns metric{<config selector>, extra...}.
func (c Config) sel(metric string, extra ...string) string {
	return metric + "{" + strings.Join(append([]string{c.Selector}, extra...), ",") + "}"
}

// uid is the uid of a dashboard: prefix-name.
func (c Config) uid(name string) string { return c.UIDPrefix + "-" + name }

// runbook is the runbook_url of an alert.
func (c Config) runbook(alert string) string {
	return c.RunbookURL + "#" + strings.ToLower(alert)
}
