package dashboards

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestSelectors(t *testing.T) {
	tests := []struct {
		expr    string
		want    []Selector
		wantErr bool
	}{
		{expr: "up", want: []Selector{{Metric: "up"}}},
		{expr: `fail2ban_up{job=~"$job",instance=~"$instance"}`,
			want: []Selector{{Metric: "fail2ban_up", Labels: []string{"job", "instance"}}}},
		{expr: `sum by (jail, country) (fail2ban_banned_ips{jail!="sshd"})`,
			want: []Selector{{Metric: "fail2ban_banned_ips", Labels: []string{"jail"}, After: "("}}},
		{expr: `sum without (country) (rate(fail2ban_bans_total[5m])) / on (jail) group_left (x) fail2ban_jail_enabled`,
			want: []Selector{{Metric: "fail2ban_bans_total", Func: "rate", Range: "5m", After: "("}, {Metric: "fail2ban_jail_enabled", After: ")"}}},
		{expr: `count(sum by (country) (a{b="x}{"}) > 0) and on() (vector($view) == 1)`,
			want: []Selector{{Metric: "a", Labels: []string{"b"}, After: "("}}},
		{expr: `min_over_time(vector(time())[$window:10m]) - b offset 1h30m @ start()`,
			want: []Selector{{Metric: "b", Offset: "1h30m", After: "-"}}},
		{expr: `max_over_time(x{a="1"}[$window:10m]) + increase(y{b=~"$b"}[$__rate_interval])`,
			want: []Selector{{Metric: "x", Labels: []string{"a"}, Func: "max_over_time", Range: "$window:10m", After: "("}, {Metric: "y", Labels: []string{"b"}, Func: "increase", Range: "$__rate_interval", After: "("}}},
		{expr: `sum by (x) (y)`, want: []Selector{{Metric: "y", After: "("}}},
		{expr: `(increase(c[1m]) + min_over_time(c[1m])) unless c{a="1"} offset 1m or d`,
			want: []Selector{{Metric: "c", Func: "increase", Range: "1m", After: "("}, {Metric: "c", Func: "min_over_time", Range: "1m", After: "("},
				{Metric: "c", Labels: []string{"a"}, Offset: "1m", After: "unless"}, {Metric: "d", After: "or"}}},
		{expr: `{__name__="fail2ban_up", job="x"}`, want: []Selector{{Metric: "fail2ban_up", Labels: []string{"job"}}}},
		{expr: `job:fail2ban_banned_ips:sum > bool 1e3 unless ignoring (country) c # comment naming d`,
			want: []Selector{{Metric: "job:fail2ban_banned_ips:sum"}, {Metric: "c", After: ")"}}},
		{expr: `topk(10, x) or -inf + nan * 0x1F`, want: []Selector{{Metric: "x", After: ","}}},
		{expr: `sum(rate({__name__="c"}[1m]))`, want: []Selector{{Metric: "c", Func: "rate", Range: "1m", After: "("}}},
		{expr: `increase(x{a="1"}[$__rate_interval]) / ${y} [[z]]`, want: []Selector{{Metric: "x", Labels: []string{"a"}, Func: "increase", Range: "$__rate_interval", After: "("}}},
		{expr: `label_replace(x, "dst", "$1", "src", "(.*)")`, want: []Selector{{Metric: "x", Func: "label_replace", After: "("}}},
		{expr: `sum(x`, wantErr: true},
		{expr: `x{a="1"`, wantErr: true},
		{expr: `x]`, wantErr: true},
		{expr: `x{a="1}`, wantErr: true},
		{expr: `x{a=1}`, wantErr: true},
		{expr: `x ; y`, wantErr: true},
		{expr: `{job="x"}`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := Selectors(tt.expr)
		if (err != nil) != tt.wantErr {
			t.Errorf("Selectors(%q) error = %v, want error %v", tt.expr, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Selectors(%q) = %+v, want %+v", tt.expr, got, tt.want)
		}
	}
}

func TestMetricNamesDeduplicates(t *testing.T) {
	got, err := MetricNames(`a + b - a{x="1"}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

func TestContractFollowsNamingRules(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range Contract() {
		if seen[m.Name] {
			t.Errorf("%s listed twice", m.Name)
		}
		seen[m.Name] = true
		if !metricNameRE.MatchString(m.Name) || strings.Contains(m.Name, ":") {
			t.Errorf("%s is not a valid exporter metric name", m.Name)
		}
		if !strings.HasPrefix(m.Name, "fail2ban_") && !strings.HasPrefix(m.Name, "bangui_exporter_") {
			t.Errorf("%s lacks the fail2ban_ or bangui_exporter_ prefix", m.Name)
		}
		switch m.Type {
		case Counter:
			if !strings.HasSuffix(m.Name, "_total") {
				t.Errorf("counter %s must end in _total", m.Name)
			}
		case Gauge:
			if strings.HasSuffix(m.Name, "_total") {
				t.Errorf("gauge %s must not end in _total", m.Name)
			}
		default:
			t.Errorf("%s has type %q", m.Name, m.Type)
		}
		if m.Owner == "" || m.Help == "" {
			t.Errorf("%s lacks an owner or help", m.Name)
		}
		for _, l := range m.Labels {
			if !labelNameRE.MatchString(l) || strings.HasPrefix(l, "__") {
				t.Errorf("%s: invalid label name %q", m.Name, l)
			}
			switch l {
			case "ip", "region", "job", "instance":
				t.Errorf("%s: label %q is forbidden (IPs are unbounded; region/job/instance clash with target labels)", m.Name, l)
			}
		}
	}
	for _, name := range []string{"fail2ban_up", "fail2ban_banned_ips", "fail2ban_recent_bans", "fail2ban_bans_total",
		"fail2ban_oldest_ban_timestamp_seconds", "fail2ban_server_up", "bangui_exporter_geo_pending_ips"} {
		if !seen[name] {
			t.Errorf("contract lacks %s", name)
		}
	}
}
