// Command gen writes bangui_exporter's monitoring mixin from one
// configuration (dashboards.Config): the alert and recording rules and the
// Grafana dashboards. `go generate ./dashboards/...` runs it with the
// default configuration; for another job name:
//
//	go run ./dashboards/gen -selector 'job="node"' -out DIR
//
// writes DIR/prometheus_alerts.yaml, DIR/prometheus_rules.yaml and
// DIR/dashboards_out/*.json.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bangui/bangui_exporter/dashboards"
)

// options are the command line: the configuration and where to write.
type options struct {
	cfg dashboards.Config
	// out is the mixin directory; dashboardsDir and rulesFile optional
	// extra copies (dashboards/*.json, deploy/prometheus/rules/…).
	out, dashboardsDir, rulesFile string
}

func parse(args []string) (options, error) {
	o := options{cfg: dashboards.DefaultConfig()}
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "", "mixin directory to write prometheus_alerts.yaml, prometheus_rules.yaml and dashboards_out/ into (required)")
	fs.StringVar(&o.dashboardsDir, "dashboards-dir", "", "also write the dashboard JSON files flat into this directory")
	fs.StringVar(&o.rulesFile, "rules-file", "", "also write recording and alert rules as one rule file here")
	fs.StringVar(&o.cfg.Selector, "selector", o.cfg.Selector, "PromQL label matchers selecting bangui_exporter's series")
	fs.StringVar(&o.cfg.RunbookURL, "runbook-url", o.cfg.RunbookURL, "address of docs/runbook.md (alerts link to its sections)")
	fs.StringVar(&o.cfg.UIDPrefix, "uid-prefix", o.cfg.UIDPrefix, "prefix of the dashboards' uids")
	tags := fs.String("tags", strings.Join(o.cfg.Tags, ","), "dashboard tags, comma-separated (the first links the dashboards)")
	fs.DurationVar(&o.cfg.MMDBMaxAge, "mmdb-max-age", o.cfg.MMDBMaxAge, "age of the geo database above which BanguiGeoDatabaseOutdated fires")
	fs.Float64Var(&o.cfg.UnknownCountryShare, "unknown-country-share", o.cfg.UnknownCountryShare, "share of banned IPs of country ZZ above which BanguiUnknownCountryShareHigh fires")
	fs.IntVar(&o.cfg.UnknownCountryMinBanned, "unknown-country-min-banned", o.cfg.UnknownCountryMinBanned, "banned IPs a host needs before the ZZ share alerts")
	fs.DurationVar(&o.cfg.ExporterDownFor, "exporter-down-for", o.cfg.ExporterDownFor, "for: of BanguiExporterDown")
	fs.StringVar(&o.cfg.DefaultWindow, "default-window", o.cfg.DefaultWindow, "world map window while no fail2ban_recent_bans series exist")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.out == "" {
		return o, fmt.Errorf("-out is required")
	}
	o.cfg.Tags = strings.Split(*tags, ",")
	return o, o.cfg.Validate()
}

func main() {
	o, err := parse(os.Args[1:])
	if err == nil {
		err = run(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(2)
	}
}

func run(o options) error {
	files, err := o.cfg.Mixin()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(o.out, dashboards.MixinDashboardsDir), 0o755); err != nil {
		return fmt.Errorf("create the mixin directory: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := write(filepath.Join(o.out, filepath.FromSlash(name)), files[name]); err != nil {
			return err
		}
		if dir, base := filepath.Split(filepath.FromSlash(name)); o.dashboardsDir != "" && filepath.Clean(dir) == dashboards.MixinDashboardsDir {
			if err := write(filepath.Join(o.dashboardsDir, base), files[name]); err != nil {
				return err
			}
		}
	}
	if o.rulesFile != "" {
		return write(o.rulesFile, o.cfg.CombinedRules())
	}
	return nil
}

func write(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
