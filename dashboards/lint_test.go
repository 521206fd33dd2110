package dashboards

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// lintRule is one of the checks grafana's dashboard-linter enforces (plus
// a few of ours), run on the decoded JSON of a dashboard.
type lintRule struct {
	name  string
	check func(d map[string]any) []string
}

var uidPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,40}$`)

// rangeRE finds range and subquery durations: [5m], [$window:10m].
var rangeRE = regexp.MustCompile(`\[[^\]]*\]`)

// builtinVariables are Grafana's own variables, which always have a value.
var builtinVariables = map[string]bool{"__rate_interval": true, "__range": true, "__interval": true, "__range_s": true, "__interval_ms": true}

// deprecatedPanelTypes are Angular or removed panel types Grafana
// converts or refuses.
var deprecatedPanelTypes = map[string]bool{
	"graph": true, "singlestat": true, "table-old": true, "grafana-worldmap-panel": true,
	"grafana-piechart-panel": true, "grafana-singlestat-panel": true, "flant-statusmap-panel": true,
}

var allowedPanelTypes = map[string]bool{
	"row": true, "geomap": true, "stat": true, "table": true, "timeseries": true, "bargauge": true, "text": true,
}

const datasourceUID = "${" + DatasourceVariable + "}"

// counterFuncs are the functions a counter may be queried through.
var counterFuncs = map[string]bool{"rate": true, "irate": true, "increase": true}

// counterUseAllowed: a counter goes through rate, irate or increase over a
// range; NewEvents' correction for new series may also take its last
// value (last_over_time over a range) and test its presence a range ago
// (unless COUNTER offset RANGE).
func counterUseAllowed(s Selector) bool {
	switch {
	case counterFuncs[s.Func] && s.Range != "":
		return true
	case s.Func == "last_over_time" && s.Range != "":
		return true
	case s.Func == "" && s.After == "unless" && s.Offset != "" && s.Range == "":
		return true
	}
	return false
}

func str(v any) string { s, _ := v.(string); return s }

func variables(d map[string]any) []map[string]any {
	templating, _ := d["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	var out []map[string]any
	for _, v := range list {
		if m, ok := v.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func variable(d map[string]any, name string) map[string]any {
	for _, v := range variables(d) {
		if v["name"] == name {
			return v
		}
	}
	return nil
}

func targetsOf(p map[string]any) []map[string]any {
	list, _ := p["targets"].([]any)
	var out []map[string]any
	for _, t := range list {
		if m, ok := t.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func dsUID(v any) string {
	m, _ := v.(map[string]any)
	return str(m["uid"])
}

// allExprs returns every PromQL expression of the dashboard with where it
// is: panel targets and label_values() variable queries.
func allExprs(d map[string]any) (where []string, exprs []string, problems []string) {
	for _, v := range variables(d) {
		if v["type"] != "query" {
			continue
		}
		sel, _, _, err := ParseVariableQuery(str(v["query"]), str(v["regex"]))
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		where = append(where, "variable "+str(v["name"]))
		exprs = append(exprs, sel)
	}
	for _, p := range panelsOf(d) {
		for _, t := range targetsOf(p) {
			where = append(where, fmt.Sprintf("panel %q target %s", str(p["title"]), str(t["refId"])))
			exprs = append(exprs, str(t["expr"]))
		}
	}
	return where, exprs, problems
}

var lintRules = []lintRule{
	{"uid set and at most 40 characters", func(d map[string]any) []string {
		if uid := str(d["uid"]); !uidPattern.MatchString(uid) {
			return []string{fmt.Sprintf("uid %q is empty, longer than 40 characters or has odd characters", uid)}
		}
		return nil
	}},
	{"datasource variable of type prometheus", func(d map[string]any) []string {
		v := variable(d, DatasourceVariable)
		if v == nil || v["type"] != "datasource" || v["query"] != "prometheus" {
			return []string{"no datasource variable named " + DatasourceVariable + " of type prometheus"}
		}
		return nil
	}},
	{"every panel, target and query variable uses ${datasource}", func(d map[string]any) []string {
		var problems []string
		for _, p := range panelsOf(d) {
			if p["type"] == "row" {
				if p["datasource"] != nil && dsUID(p["datasource"]) != datasourceUID {
					problems = append(problems, fmt.Sprintf("row %q has datasource %v", str(p["title"]), p["datasource"]))
				}
				continue
			}
			if dsUID(p["datasource"]) != datasourceUID {
				problems = append(problems, fmt.Sprintf("panel %q has datasource %v", str(p["title"]), p["datasource"]))
			}
			for _, t := range targetsOf(p) {
				if dsUID(t["datasource"]) != datasourceUID {
					problems = append(problems, fmt.Sprintf("panel %q target %s has datasource %v", str(p["title"]), str(t["refId"]), t["datasource"]))
				}
			}
		}
		for _, v := range variables(d) {
			if v["type"] == "query" && dsUID(v["datasource"]) != datasourceUID {
				problems = append(problems, fmt.Sprintf("variable %s has datasource %v", str(v["name"]), v["datasource"]))
			}
		}
		return problems
	}},
	{"unique panel ids", func(d map[string]any) []string {
		var problems []string
		seen := map[float64]string{}
		for _, p := range panelsOf(d) {
			id, ok := p["id"].(float64)
			if !ok || id <= 0 {
				problems = append(problems, fmt.Sprintf("panel %q has no id", str(p["title"])))
				continue
			}
			if other, dup := seen[id]; dup {
				problems = append(problems, fmt.Sprintf("panels %q and %q share id %v", other, str(p["title"]), id))
			}
			seen[id] = str(p["title"])
		}
		return problems
	}},
	{"every target has a unique refId", func(d map[string]any) []string {
		var problems []string
		for _, p := range panelsOf(d) {
			seen := map[string]bool{}
			for _, t := range targetsOf(p) {
				ref := str(t["refId"])
				if ref == "" || seen[ref] {
					problems = append(problems, fmt.Sprintf("panel %q has a target with a missing or repeated refId %q", str(p["title"]), ref))
				}
				seen[ref] = true
			}
			if p["type"] != "row" && p["type"] != "text" && len(targetsOf(p)) == 0 {
				problems = append(problems, fmt.Sprintf("panel %q has no target", str(p["title"])))
			}
		}
		return problems
	}},
	{"job and instance variables present (multi, All = .+)", func(d map[string]any) []string {
		var problems []string
		for _, name := range []string{"job", "instance"} {
			v := variable(d, name)
			if v == nil {
				problems = append(problems, "no variable "+name)
				continue
			}
			if v["multi"] != true || v["includeAll"] != true || v["allValue"] != ".+" || v["refresh"] != float64(2) {
				problems = append(problems, fmt.Sprintf("variable %s must be multi-value with All = .+ and refresh on time range change", name))
			}
		}
		return problems
	}},
	{"every selector filters by job and instance", func(d map[string]any) []string {
		var problems []string
		where, exprs, parseProblems := allExprs(d)
		problems = append(problems, parseProblems...)
		for i, expr := range exprs {
			if strings.HasPrefix(where[i], "variable job") {
				continue // the job variable lists every job
			}
			sels, err := Selectors(expr)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", where[i], err))
				continue
			}
			if len(sels) == 0 {
				problems = append(problems, fmt.Sprintf("%s: no metric in %q", where[i], expr))
			}
			for _, s := range sels {
				wantInstance := !strings.HasPrefix(where[i], "variable instance")
				if !strings.Contains(expr, `job=~"$job"`) || !slices.Contains(s.Labels, "job") ||
					(wantInstance && !slices.Contains(s.Labels, "instance")) {
					problems = append(problems, fmt.Sprintf("%s: selector of %s does not filter by job and instance", where[i], s.Metric))
				}
			}
		}
		return problems
	}},
	{"every defined variable is used", func(d map[string]any) []string {
		data, _ := json.Marshal(d["panels"])
		var vars strings.Builder
		for _, v := range variables(d) {
			q, _ := json.Marshal(v["query"])
			vars.Write(q)
		}
		used := string(data) + vars.String()
		var problems []string
		for _, v := range variables(d) {
			name := str(v["name"])
			if !strings.Contains(used, "$"+name) && !strings.Contains(used, "${"+name+"}") {
				problems = append(problems, "variable "+name+" is never used")
			}
		}
		return problems
	}},
	{"no deprecated panel types", func(d map[string]any) []string {
		var problems []string
		for _, p := range panelsOf(d) {
			t := str(p["type"])
			if deprecatedPanelTypes[t] || !allowedPanelTypes[t] {
				problems = append(problems, fmt.Sprintf("panel %q has deprecated or unexpected type %q", str(p["title"]), t))
			}
		}
		return problems
	}},
	{"titles and descriptions", func(d map[string]any) []string {
		var problems []string
		if str(d["title"]) == "" || str(d["description"]) == "" {
			problems = append(problems, "dashboard lacks a title or description")
		}
		if tags, _ := d["tags"].([]any); len(tags) == 0 {
			problems = append(problems, "dashboard has no tags")
		}
		for _, p := range panelsOf(d) {
			if str(p["title"]) == "" {
				problems = append(problems, fmt.Sprintf("panel %v has no title", p["id"]))
			}
			if p["type"] != "row" && len(str(p["description"])) < 20 {
				problems = append(problems, fmt.Sprintf("panel %q has no real description", str(p["title"])))
			}
		}
		for _, v := range variables(d) {
			if str(v["description"]) == "" {
				problems = append(problems, "variable "+str(v["name"])+" has no description")
			}
		}
		return problems
	}},
	{"units set on every data panel", func(d map[string]any) []string {
		var problems []string
		for _, p := range panelsOf(d) {
			if p["type"] == "row" {
				continue
			}
			fc, _ := p["fieldConfig"].(map[string]any)
			defaults, _ := fc["defaults"].(map[string]any)
			if str(defaults["unit"]) == "" {
				problems = append(problems, fmt.Sprintf("panel %q has no unit", str(p["title"])))
			}
		}
		return problems
	}},
	{"panels fit the 24-column grid", func(d map[string]any) []string {
		var problems []string
		for _, p := range panelsOf(d) {
			g, _ := p["gridPos"].(map[string]any)
			x, _ := g["x"].(float64)
			w, _ := g["w"].(float64)
			h, _ := g["h"].(float64)
			if w <= 0 || h <= 0 || x+w > 24 {
				problems = append(problems, fmt.Sprintf("panel %q has gridPos %v", str(p["title"]), g))
			}
		}
		return problems
	}},
	{"counters only through rate, irate or increase over a range", func(d map[string]any) []string {
		var problems []string
		where, exprs, _ := allExprs(d)
		for i, expr := range exprs {
			if strings.HasPrefix(where[i], "variable ") {
				continue // label_values() lists labels of any series
			}
			sels, err := Selectors(expr)
			if err != nil {
				continue // reported by another rule
			}
			for _, s := range sels {
				m, ok := LookupMetric(s.Metric)
				if ok && m.Type == Counter && !counterUseAllowed(s) {
					problems = append(problems, fmt.Sprintf("%s: counter %s used without rate/irate/increase over a range", where[i], s.Metric))
				}
			}
		}
		return problems
	}},
	{"rate ranges use $__rate_interval (or $__range for totals)", func(d map[string]any) []string {
		var problems []string
		where, exprs, _ := allExprs(d)
		for i, expr := range exprs {
			sels, err := Selectors(expr)
			if err != nil {
				continue
			}
			for _, s := range sels {
				if counterFuncs[s.Func] && s.Range != "$__rate_interval" && s.Range != "$__range" {
					problems = append(problems, fmt.Sprintf("%s: %s(%s[%s]) should use $__rate_interval", where[i], s.Func, s.Metric, s.Range))
				}
			}
		}
		return problems
	}},
	{"query variables refresh when the time range changes", func(d map[string]any) []string {
		var problems []string
		for _, v := range variables(d) {
			if v["type"] == "query" && v["refresh"] != float64(2) {
				problems = append(problems, "variable "+str(v["name"])+" does not refresh on time range change")
			}
		}
		return problems
	}},
	{"panels do not overlap", func(d map[string]any) []string {
		type box struct {
			title      string
			x, y, w, h float64
		}
		var boxes []box
		for _, p := range panelsOf(d) {
			g, _ := p["gridPos"].(map[string]any)
			x, _ := g["x"].(float64)
			y, _ := g["y"].(float64)
			w, _ := g["w"].(float64)
			h, _ := g["h"].(float64)
			boxes = append(boxes, box{str(p["title"]), x, y, w, h})
		}
		var problems []string
		for i, a := range boxes {
			for _, b := range boxes[i+1:] {
				if a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h {
					problems = append(problems, fmt.Sprintf("panels %q and %q overlap", a.title, b.title))
				}
			}
		}
		return problems
	}},
	{"dashboard is not editable (provisioned dashboards are changed in code)", func(d map[string]any) []string {
		if d["editable"] != false {
			return []string{fmt.Sprintf("editable is %v, want false", d["editable"])}
		}
		return nil
	}},
	{"variables in range durations are never empty", func(d map[string]any) []string {
		// A variable inside [...] that comes out empty breaks the query
		// ("vector(time())[:10m]"). Grafana's built-ins always have a value,
		// custom and constant variables have a current value; a query
		// variable must fall back to a default when its query finds nothing.
		var problems []string
		where, exprs, _ := allExprs(d)
		for i, expr := range exprs {
			for _, r := range rangeRE.FindAllString(expr, -1) {
				for _, m := range variableRE.FindAllStringSubmatch(r, -1) {
					name := m[1] + m[2] + m[3]
					if builtinVariables[name] {
						continue
					}
					v := variable(d, name)
					switch {
					case v == nil:
						problems = append(problems, fmt.Sprintf("%s: %s uses undefined variable %s", where[i], r, name))
					case v["type"] == "custom" || v["type"] == "constant":
					case v["type"] == "query" && strings.HasPrefix(str(v["query"]), "query_result(") && strings.Contains(str(v["query"]), " or on () "):
					default:
						problems = append(problems, fmt.Sprintf("%s: %s uses variable %s, which is empty when its query finds nothing", where[i], r, name))
					}
				}
			}
		}
		return problems
	}},
	{"map markers leave unknown country (ZZ) out of their scale", func(d map[string]any) []string {
		var problems []string
		for _, p := range panelsOf(d) {
			if p["type"] != "geomap" {
				continue
			}
			for _, t := range targetsOf(p) {
				if sels, err := Selectors(str(t["expr"])); err != nil || len(sels) == 0 {
					problems = append(problems, fmt.Sprintf("geomap %q: cannot parse %q", str(p["title"]), str(t["expr"])))
				}
				if !strings.Contains(str(t["expr"]), `country!="`+unknownCountry+`"`) {
					problems = append(problems, fmt.Sprintf("geomap %q target %s counts ZZ in its scale", str(p["title"]), str(t["refId"])))
				}
			}
		}
		return problems
	}},
	{"every metric in a query is in the metric contract, with its labels", func(d map[string]any) []string {
		var problems []string
		where, exprs, parseProblems := allExprs(d)
		problems = append(problems, parseProblems...)
		for i, expr := range exprs {
			sels, err := Selectors(expr)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", where[i], err))
				continue
			}
			for _, s := range sels {
				m, ok := LookupMetric(s.Metric)
				if !ok {
					problems = append(problems, fmt.Sprintf("%s: metric %s is not in the contract", where[i], s.Metric))
					continue
				}
				for _, l := range s.Labels {
					if l != "job" && l != "instance" && !slices.Contains(m.Labels, l) {
						problems = append(problems, fmt.Sprintf("%s: %s has no label %s", where[i], s.Metric, l))
					}
				}
			}
		}
		return problems
	}},
}

func TestLintGeneratedDashboards(t *testing.T) {
	files := committed(t)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	uids := map[string]string{}
	for _, name := range names {
		d := decodeMap(t, files[name])
		if other, dup := uids[str(d["uid"])]; dup {
			t.Errorf("%s and %s share uid %s", other, name, str(d["uid"]))
		}
		uids[str(d["uid"])] = name
		for _, rule := range lintRules {
			t.Run(name+"/"+rule.name, func(t *testing.T) {
				for _, p := range rule.check(d) {
					t.Error(p)
				}
			})
		}
	}
}

// TestLintRulesCatchProblems breaks a good dashboard in one way per rule
// and expects that rule to complain, so no rule passes by accident.
func TestLintRulesCatchProblems(t *testing.T) {
	good := committed(t)["bangui-overview.json"]
	firstData := func(d map[string]any) map[string]any {
		for _, p := range panelsOf(d) {
			if p["type"] != "row" {
				return p
			}
		}
		t.Fatal("no data panel")
		return nil
	}
	firstTarget := func(d map[string]any) map[string]any { return targetsOf(firstData(d))[0] }
	tests := []struct {
		rule   string
		mutate func(d map[string]any)
	}{
		{"uid set and at most 40 characters", func(d map[string]any) { d["uid"] = strings.Repeat("x", 41) }},
		{"uid set and at most 40 characters", func(d map[string]any) { delete(d, "uid") }},
		{"datasource variable of type prometheus", func(d map[string]any) { variable(d, "datasource")["query"] = "loki" }},
		{"every panel, target and query variable uses ${datasource}", func(d map[string]any) {
			firstData(d)["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
		}},
		{"every panel, target and query variable uses ${datasource}", func(d map[string]any) {
			firstTarget(d)["datasource"] = map[string]any{"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
		}},
		{"unique panel ids", func(d map[string]any) { panelsOf(d)[2]["id"] = panelsOf(d)[1]["id"] }},
		{"every target has a unique refId", func(d map[string]any) { firstTarget(d)["refId"] = "" }},
		{"job and instance variables present (multi, All = .+)", func(d map[string]any) { variable(d, "instance")["allValue"] = ".*" }},
		{"every selector filters by job and instance", func(d map[string]any) { firstTarget(d)["expr"] = "min(fail2ban_up)" }},
		{"every defined variable is used", func(d map[string]any) {
			list := d["templating"].(map[string]any)["list"].([]any)
			d["templating"].(map[string]any)["list"] = append(list, map[string]any{"name": "unused", "type": "custom", "query": "a,b", "description": "x"})
		}},
		{"no deprecated panel types", func(d map[string]any) { firstData(d)["type"] = "graph" }},
		{"no deprecated panel types", func(d map[string]any) { firstData(d)["type"] = "grafana-worldmap-panel" }},
		{"titles and descriptions", func(d map[string]any) { delete(firstData(d), "description") }},
		{"units set on every data panel", func(d map[string]any) {
			delete(firstData(d)["fieldConfig"].(map[string]any)["defaults"].(map[string]any), "unit")
		}},
		{"panels fit the 24-column grid", func(d map[string]any) { firstData(d)["gridPos"].(map[string]any)["x"] = float64(22) }},
		{"panels do not overlap", func(d map[string]any) {
			firstData(d)["gridPos"].(map[string]any)["y"] = panelsOf(d)[0]["gridPos"].(map[string]any)["y"]
		}},
		{"every metric in a query is in the metric contract, with its labels", func(d map[string]any) {
			firstTarget(d)["expr"] = `min(fail2ban_upp{job=~"$job",instance=~"$instance"})`
		}},
		{"counters only through rate, irate or increase over a range", func(d map[string]any) {
			firstTarget(d)["expr"] = `sum(fail2ban_bans_total{job=~"$job",instance=~"$instance"})`
		}},
		{"counters only through rate, irate or increase over a range", func(d map[string]any) {
			firstTarget(d)["expr"] = `sum(delta(fail2ban_bans_total{job=~"$job",instance=~"$instance"}[5m]))`
		}},
		{"counters only through rate, irate or increase over a range", func(d map[string]any) {
			firstTarget(d)["expr"] = `sum(fail2ban_bans_total{job=~"$job",instance=~"$instance"} offset 1h)`
		}},
		{"rate ranges use $__rate_interval (or $__range for totals)", func(d map[string]any) {
			firstTarget(d)["expr"] = `sum(rate(fail2ban_bans_total{job=~"$job",instance=~"$instance"}[5m]))`
		}},
		{"query variables refresh when the time range changes", func(d map[string]any) { variable(d, "jail")["refresh"] = float64(1) }},
		{"every metric in a query is in the metric contract, with its labels", func(d map[string]any) {
			firstTarget(d)["expr"] = `min(fail2ban_up{job=~"$job",instance=~"$instance",jail=~"$jail"})`
		}},
		{"dashboard is not editable (provisioned dashboards are changed in code)", func(d map[string]any) { d["editable"] = true }},
		{"dashboard is not editable (provisioned dashboards are changed in code)", func(d map[string]any) { delete(d, "editable") }},
		{"variables in range durations are never empty", func(d map[string]any) {
			firstTarget(d)["expr"] = `scalar(min_over_time(vector(time())[$jail:10m]))`
		}},
		{"variables in range durations are never empty", func(d map[string]any) {
			firstTarget(d)["expr"] = `scalar(min_over_time(vector(time())[${nosuch}:10m]))`
		}},
		{"map markers leave unknown country (ZZ) out of their scale", func(d map[string]any) { firstData(d)["type"] = "geomap" }},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			var rule *lintRule
			for i := range lintRules {
				if lintRules[i].name == tt.rule {
					rule = &lintRules[i]
				}
			}
			if rule == nil {
				t.Fatalf("no rule %q", tt.rule)
			}
			d := decodeMap(t, good)
			if problems := rule.check(d); len(problems) != 0 {
				t.Fatalf("rule complains about the good dashboard: %v", problems)
			}
			tt.mutate(d)
			if problems := rule.check(d); len(problems) == 0 {
				t.Fatal("rule did not notice the problem")
			}
		})
	}
}
