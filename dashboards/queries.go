package dashboards

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Query is one PromQL expression of a generated dashboard: a panel target
// or the query of a template variable.
type Query struct {
	Dashboard string // dashboard uid
	Panel     string // panel title, or "variable NAME"
	PanelType string // panel type ("geomap", "table", ...), "" for variables
	RefID     string
	Expr      string
	Instant   bool
	Format    string
	// Variable is set for template variables: the label whose values the
	// variable lists, and Expr is the series selector of label_values().
	VariableLabel string
	// VariableQueryResult is set for a query_result(EXPR) variable: Expr is
	// a PromQL query and the variable lists the values of VariableLabel
	// in its result.
	VariableQueryResult bool
}

// panelJSON is the part of a panel the queries live in.
type panelJSON struct {
	Type    string      `json:"type"`
	Title   string      `json:"title"`
	Targets []targetRaw `json:"targets"`
	Panels  []panelJSON `json:"panels"`
}

type targetRaw struct {
	RefID   string `json:"refId"`
	Expr    string `json:"expr"`
	Instant bool   `json:"instant"`
	Format  string `json:"format"`
}

type dashboardJSON struct {
	UID        string      `json:"uid"`
	Panels     []panelJSON `json:"panels"`
	Templating struct {
		List []struct {
			Type  string `json:"type"`
			Name  string `json:"name"`
			Query any    `json:"query"`
			Regex string `json:"regex"`
		} `json:"list"`
	} `json:"templating"`
}

var (
	labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	queryResultRE = regexp.MustCompile(`^\s*query_result\(\s*(.*)\s*\)\s*$`)
	// labelRegexRE is a variable regex that captures one label's value
	// from a query_result() line: /label="([^"]+)"/.
	labelRegexRE = regexp.MustCompile(`^/([a-zA-Z_][a-zA-Z0-9_]*)="\(\[\^"\]\+\)"/$`)
)

// ParseVariableQuery splits a Grafana Prometheus variable query: either
// label_values(selector, label), or query_result(expr) with a regex that
// captures one label's value from each result line.
func ParseVariableQuery(query, regex string) (expr, label string, queryResult bool, err error) {
	if m := queryResultRE.FindStringSubmatch(query); m != nil {
		r := labelRegexRE.FindStringSubmatch(regex)
		if r == nil {
			return "", "", false, fmt.Errorf("query_result variable %q needs a regex like /label=\"([^\"]+)\"/, has %q", query, regex)
		}
		return m[1], r[1], true, nil
	}
	sel, label, err := ParseLabelValues(query)
	return sel, label, false, err
}

// ParseLabelValues splits a Grafana label_values(selector, label) variable
// query into the selector and the label.
func ParseLabelValues(query string) (selector, label string, err error) {
	m := labelValuesRE.FindStringSubmatch(query)
	if m == nil {
		return "", "", fmt.Errorf("variable query %q is not label_values(selector, label)", query)
	}
	return m[1], m[2], nil
}

// QueriesOf returns every PromQL expression of one dashboard's JSON: panel
// targets (rows included) and label_values() variable queries.
func QueriesOf(data []byte) ([]Query, error) {
	var d dashboardJSON
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("decode dashboard: %w", err)
	}
	var out []Query
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, ok := v.Query.(string)
		if !ok {
			if m, isMap := v.Query.(map[string]any); isMap {
				q, _ = m["query"].(string)
			}
		}
		sel, label, result, err := ParseVariableQuery(q, v.Regex)
		if err != nil {
			return nil, fmt.Errorf("dashboard %s variable %s: %w", d.UID, v.Name, err)
		}
		out = append(out, Query{Dashboard: d.UID, Panel: "variable " + v.Name, Expr: sel, VariableLabel: label, VariableQueryResult: result, Instant: true})
	}
	var walk func(panels []panelJSON)
	walk = func(panels []panelJSON) {
		for _, p := range panels {
			for _, t := range p.Targets {
				out = append(out, Query{
					Dashboard: d.UID, Panel: p.Title, PanelType: p.Type, RefID: t.RefID,
					Expr: t.Expr, Instant: t.Instant, Format: t.Format,
				})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out, nil
}

// AllQueries returns the queries of every dashboard of the default
// configuration.
func AllQueries() ([]Query, error) { return DefaultConfig().AllQueries() }

// AllQueries returns the queries of every generated dashboard.
func (c Config) AllQueries() ([]Query, error) {
	files, err := c.RenderAll()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []Query
	for _, name := range names {
		qs, err := QueriesOf(files[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, qs...)
	}
	return out, nil
}

var variableRE = regexp.MustCompile(`\$\{([a-zA-Z0-9_]+)(?::[^}]*)?\}|\[\[([a-zA-Z0-9_]+)(?::[^\]]*)?\]\]|\$([a-zA-Z0-9_]+)`)

// Substitute replaces Grafana variables ($name, ${name}, ${name:fmt},
// [[name]]) in expr by values. Every variable must have a value; the
// result is plain PromQL. A name is always matched whole, so
// $__rate_interval is never taken for $__rate.
func Substitute(expr string, values map[string]string) (string, error) {
	var missing []string
	out := variableRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := variableRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for variable(s) %s in %q", strings.Join(missing, ", "), expr)
	}
	return out, nil
}
