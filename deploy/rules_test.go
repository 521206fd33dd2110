package deploy

import (
	"fmt"
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
var rulesTestFiles = []string{"bangui_exporter.rules.test.yml", "bangui_exporter.spike.test.yml", "bangui_exporter.mixin.test.yml"}

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

// runbookSection is one "## Name" section of docs/runbook.md.
var runbookSection = regexp.MustCompile(`(?m)^## ([A-Za-z0-9]+)\n`)

// runbookSections returns the body of every section of docs/runbook.md by
// its GitHub anchor (the heading in lower case).
func runbookSections(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	out := map[string]string{}
	locs := runbookSection.FindAllStringSubmatchIndex(text, -1)
	for i, loc := range locs {
		end := len(text)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		out[strings.ToLower(text[loc[2]:loc[3]])] = text[loc[1]:end]
	}
	return out
}

// checkRunbookURL: the alert links to its own section of docs/runbook.md,
// and that section says what the alert means, how to check and how to fix.
func checkRunbookURL(t *testing.T, alert, u string, sections map[string]string) {
	t.Helper()
	base := dashboards.DefaultConfig().RunbookURL
	anchor, ok := strings.CutPrefix(u, base+"#")
	if !ok || anchor != strings.ToLower(alert) {
		t.Errorf("alert %s: runbook_url %q, want %s#%s", alert, u, base, strings.ToLower(alert))
		return
	}
	body, ok := sections[anchor]
	if !ok {
		t.Errorf("alert %s: docs/runbook.md has no section ## %s", alert, alert)
		return
	}
	for _, part := range []string{"**Meaning**", "**Check**", "**Fix**"} {
		if !strings.Contains(body, part) {
			t.Errorf("alert %s: its runbook section lacks %s", alert, part)
		}
	}
}

func TestRulesFollowConventions(t *testing.T) {
	rf := loadRules(t)
	runbook := runbookSections(t)
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
					if !slices.Contains(s.Labels, "job") && !recorded[s.Metric] {
						t.Errorf("%s: %s does not carry the mixin's selector", name, s.Metric)
					}
					continue
				}
				m, ok := dashboards.LookupMetric(s.Metric)
				if !ok {
					t.Errorf("%s uses %s, which is not in the metric contract", name, s.Metric)
					continue
				}
				if !slices.Contains(s.Labels, "job") {
					t.Errorf("%s: %s does not carry the mixin's selector", name, s.Metric)
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
			for _, key := range []string{"summary", "description"} {
				if len(r.Annotations[key]) < 20 {
					t.Errorf("alert %s lacks a real %s annotation", r.Alert, key)
				}
			}
			checkRunbookURL(t, r.Alert, r.Annotations["runbook_url"], runbook)
			if r.For == "" {
				t.Errorf("alert %s has no for: duration; one bad scrape would page", r.Alert)
			}
		}
	}
	// The alerts the kit promises (README, docs/runbook.md).
	for _, want := range []string{"BanguiExporterDown", "Fail2banDatabaseUnreadable", "Fail2banNoJailEnabled",
		"Fail2banBanSpike", "Fail2banCountryBanSpike", "BanguiGeoBacklogGrowing", "BanguiGeoFlushFailing",
		"BanguiIpApiRateLimited", "Fail2banServerDown",
		// Issue 19.
		"BanguiExporterAbsent", "BanguiGeoDatabaseOutdated", "BanguiUnknownCountryShareHigh"} {
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
	"BanguiExporterDown":            `up`,
	"BanguiExporterAbsent":          `absent(no_such_metric{job="fail2ban"})`,
	"BanguiGeoDatabaseOutdated":     `bangui_exporter_geo_mmdb_build_timestamp_seconds`,
	"BanguiUnknownCountryShareHigh": `sum by (job, instance) (fail2ban_banned_ips)`,
	"Fail2banDatabaseUnreadable":    `fail2ban_up`,
	"Fail2banNoJailEnabled":         `fail2ban_up`,
	"Fail2banBanSpike":              `instance_jail:fail2ban_bans:rate5m`,
	"Fail2banCountryBanSpike":       `instance_country:fail2ban_bans:rate5m`,
	"BanguiGeoBacklogGrowing":       `bangui_exporter_geo_pending_ips`,
	"BanguiGeoFlushFailing":         `bangui_exporter_geo_flush_errors_total`,
	"BanguiIpApiRateLimited":        `sum by (job, instance) (bangui_exporter_geo_ipapi_requests_total)`,
	"Fail2banServerDown":            `fail2ban_server_up`,
	"BanguiArchiveIngestFailing":    `bangui_exporter_archive_ingest_errors_total`,
	"BanguiArchiveDroppingEvents":   `sum by (job, instance) (bangui_exporter_archive_dropped_events_total)`,
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

// TestRulesForAnotherSelector generates the rules for another job name, the
// way the documented command does, and runs the unit tests against them:
// with the tests' job renamed they pass, unchanged they fail (the rules
// really follow the selector; nothing is left hard-coded to fail2ban).
func TestRulesForAnotherSelector(t *testing.T) {
	requireTool(t, "promtool", "/usr/bin/promtool")
	cfg := dashboards.DefaultConfig()
	cfg.Selector = `job="f2b"`
	rules := cfg.CombinedRules()
	for _, rename := range []bool{true, false} {
		t.Run(fmt.Sprintf("tests renamed %v", rename), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "bangui_exporter.rules.yml"), rules, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, f := range rulesTestFiles {
				data, err := os.ReadFile(filepath.Join(deployDir(t), filepath.Dir(rulesFile), f))
				if err != nil {
					t.Fatal(err)
				}
				text := string(data)
				if rename {
					text = strings.NewReplacer(`job="fail2ban"`, `job="f2b"`, `job=\"fail2ban\"`, `job=\"f2b\"`, "job: fail2ban\n", "job: f2b\n", "(job fail2ban)", "(job f2b)").Replace(text)
				}
				if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := runPromtool(t, dir, append([]string{"test", "rules"}, rulesTestFiles...)...)
			if rename && err != nil {
				t.Fatalf("promtool test rules on the rules for job=\"f2b\": %v\n%s", err, out)
			}
			if !rename && err == nil {
				t.Fatalf("the tests of job fail2ban passed against rules generated for job f2b:\n%s", out)
			}
		})
	}
}
