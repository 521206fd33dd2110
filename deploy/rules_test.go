package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/bangui/bangui_exporter/dashboards"
)

const rulesFile = "prometheus/rules/bangui_exporter.rules.yml"

// rulesTestFiles are the promtool unit tests of rulesFile, in its folder.
var rulesTestFiles = []string{"bangui_exporter.rules.test.yml", "bangui_exporter.spike.test.yml"}

type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []rule `yaml:"rules"`
}

type rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	decodeStrict(t, rulesFile, &rf)
	return rf
}

// ruleExprs returns every expression of the rules file by rule name (used by the
// end-to-end test too).
func ruleExprs(t *testing.T) map[string]string {
	out := map[string]string{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			out[r.Alert+r.Record] = r.Expr
		}
	}
	return out
}

func runPromtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	promtool := requireTool(t, "promtool", "/usr/bin/promtool")
	cmd := exec.CommandContext(t.Context(), promtool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPromtoolCheckRules(t *testing.T) {
	out, err := runPromtool(t, deployDir(t), "check", "rules", rulesFile)
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules did not report success:\n%s", out)
	}
}

func TestPromtoolTestRules(t *testing.T) {
	out, err := runPromtool(t, filepath.Join(deployDir(t), filepath.Dir(rulesFile)), append([]string{"test", "rules"}, rulesTestFiles...)...)
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules did not report success:\n%s", out)
	}
}

var camelCase = regexp.MustCompile(`^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+$`)

// recordName is level:metric:operations.
var recordName = regexp.MustCompile(`^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$`)

func TestRulesFollowConventions(t *testing.T) {
	rf := loadRules(t)
	recorded := map[string]bool{}
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				if !recordName.MatchString(r.Record) {
					t.Errorf("recording rule %s is not named level:metric:operations", r.Record)
				}
				recorded[r.Record] = true
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("rule %q must be either an alert or a recording rule", name)
			}
			sels, err := dashboards.Selectors(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			for _, s := range sels {
				if s.Metric == "up" || recorded[s.Metric] {
					continue
				}
				m, ok := dashboards.LookupMetric(s.Metric)
				if !ok {
					t.Errorf("%s uses %s, which is not in the metric contract", name, s.Metric)
					continue
				}
				for _, l := range s.Labels {
					if l != "job" && l != "instance" && !slices.Contains(m.Labels, l) {
						t.Errorf("%s: %s has no label %s", name, s.Metric, l)
					}
				}
				if m.Type == dashboards.Counter && (s.Range == "" || (s.Func != "rate" && s.Func != "irate" && s.Func != "increase")) {
					t.Errorf("%s uses counter %s without rate/irate/increase over a range", name, s.Metric)
				}
			}
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if !camelCase.MatchString(r.Alert) {
				t.Errorf("alert %s is not CamelCase", r.Alert)
			}
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("alert %s has severity %q, want warning or critical", r.Alert, sev)
			}
			for _, key := range []string{"summary", "description", "runbook"} {
				if len(r.Annotations[key]) < 20 {
					t.Errorf("alert %s lacks a real %s annotation", r.Alert, key)
				}
			}
			if r.For == "" {
				t.Errorf("alert %s has no for: duration; one bad scrape would page", r.Alert)
			}
		}
	}
	// The alerts the kit promises (README, docs/runbook.md).
	for _, want := range []string{"BanguiExporterDown", "Fail2banDatabaseUnreadable", "Fail2banNoJailEnabled",
		"Fail2banBanSpike", "Fail2banCountryBanSpike", "BanguiGeoBacklogGrowing", "BanguiGeoFlushFailing",
		"BanguiIpApiRateLimited", "Fail2banServerDown"} {
		if !alerts[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
	// Every alert has a unit test.
	var tests []byte
	for _, f := range rulesTestFiles {
		data, err := os.ReadFile(filepath.Join(deployDir(t), filepath.Dir(rulesFile), f))
		if err != nil {
			t.Fatal(err)
		}
		tests = append(tests, data...)
	}
	for a := range alerts {
		if !strings.Contains(string(tests), "alertname: "+a+"\n") {
			t.Errorf("alert %s has no promtool unit test", a)
		}
	}
}

// overFiring gives, per alert, an expression that fires for every series
// the alert looks at — including those the unit tests expect to stay
// silent.
var overFiring = map[string]string{
	"BanguiExporterDown":          `up{job="fail2ban"}`,
	"Fail2banDatabaseUnreadable":  `fail2ban_up`,
	"Fail2banNoJailEnabled":       `fail2ban_up`,
	"Fail2banBanSpike":            `instance_jail:fail2ban_bans:rate5m`,
	"Fail2banCountryBanSpike":     `instance_country:fail2ban_bans:rate5m`,
	"BanguiGeoBacklogGrowing":     `bangui_exporter_geo_pending_ips`,
	"BanguiGeoFlushFailing":       `bangui_exporter_geo_flush_errors_total`,
	"BanguiIpApiRateLimited":      `sum by (job, instance) (bangui_exporter_geo_ipapi_requests_total)`,
	"Fail2banServerDown":          `fail2ban_server_up`,
	"BanguiArchiveIngestFailing":  `bangui_exporter_archive_ingest_errors_total`,
	"BanguiArchiveDroppingEvents": `sum by (job, instance) (bangui_exporter_archive_dropped_events_total)`,
}

// TestAlertUnitTestsCanFail proves that the unit tests really show each
// alert firing and staying silent: an alert changed to never fire, or to
// fire for everything, must make `promtool test rules` fail.
func TestAlertUnitTestsCanFail(t *testing.T) {
	requireTool(t, "promtool", "/usr/bin/promtool")
	rf := loadRules(t)
	testData := map[string][]byte{}
	for _, f := range rulesTestFiles {
		data, err := os.ReadFile(filepath.Join(deployDir(t), filepath.Dir(rulesFile), f))
		if err != nil {
			t.Fatal(err)
		}
		testData[f] = data
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if _, ok := overFiring[r.Alert]; !ok {
				t.Errorf("alert %s has no over-firing variant in this test", r.Alert)
				continue
			}
			for _, variant := range []struct{ name, expr string }{
				{"never fires", "vector(0) == 1"},
				{"fires for everything", overFiring[r.Alert]},
			} {
				t.Run(r.Alert+"/"+variant.name, func(t *testing.T) {
					t.Parallel()
					mutated := mutateAlert(t, rf, r.Alert, variant.expr)
					dir := t.TempDir()
					if err := os.WriteFile(filepath.Join(dir, "bangui_exporter.rules.yml"), mutated, 0o644); err != nil {
						t.Fatal(err)
					}
					for name, data := range testData {
						if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
							t.Fatal(err)
						}
					}
					out, err := runPromtool(t, dir, append([]string{"test", "rules"}, rulesTestFiles...)...)
					if err == nil {
						t.Fatalf("promtool test rules passed with %s's expression replaced by %q:\n%s", r.Alert, variant.expr, out)
					}
					if !strings.Contains(out, r.Alert) {
						t.Fatalf("the failure does not name %s:\n%s", r.Alert, out)
					}
				})
			}
		}
	}
}

func mutateAlert(t *testing.T, rf ruleFile, alert, expr string) []byte {
	t.Helper()
	var copyRF ruleFile
	for _, g := range rf.Groups {
		ng := g
		ng.Rules = slices.Clone(g.Rules)
		for i := range ng.Rules {
			if ng.Rules[i].Alert == alert {
				ng.Rules[i].Expr = expr
			}
		}
		copyRF.Groups = append(copyRF.Groups, ng)
	}
	data, err := yaml.Marshal(copyRF)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
