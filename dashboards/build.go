package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
)

// Dashboard is the SDK's classic (v1) dashboard. The SDK marks it
// deprecated in favour of its v2 schema, but the v1 JSON is what Grafana's
// file provisioning and grafana.com imports read, so it is used on purpose.
type Dashboard = dashboard.Dashboard //nolint:staticcheck // v1 on purpose, see above

// dashboardBuilder is the SDK's builder of classic dashboards.
type dashboardBuilder = dashboard.DashboardBuilder //nolint:staticcheck // v1 on purpose, see Dashboard

func newDashboardBuilder(title string) *dashboardBuilder {
	return dashboard.NewDashboardBuilder(title) //nolint:staticcheck // v1 on purpose, see Dashboard
}

// DatasourceVariable is the name of the datasource template variable that
// every panel and target refers to, so the JSON works both with file
// provisioning and with an import through Grafana's UI.
const DatasourceVariable = "datasource"

// DefaultDatasourceUID is the uid of the datasource that
// deploy/grafana/provisioning/ provisions ("Prometheus (bangui_exporter)").
// The datasource variable starts on it; where no datasource has that uid
// (an import into another Grafana), Grafana falls back to its default
// datasource.
const DefaultDatasourceUID = "bangui-prometheus"

// defaultDatasourceName is the name of that provisioned datasource, shown
// in the variable until Grafana resolved the uid.
const defaultDatasourceName = "Prometheus (bangui_exporter)"

// Definition is one generated dashboard: the file it is written to and the
// function that builds it.
type Definition struct {
	// File is the JSON file name inside dashboards/.
	File string
	// Build builds the dashboard.
	Build func() (Dashboard, error)
}

// All returns every dashboard of the default configuration (the committed
// files), in a stable order.
func All() []Definition { return DefaultConfig().All() }

// All returns every dashboard the project ships, in a stable order.
func (c Config) All() []Definition {
	return []Definition{
		{File: "bangui-world-map.json", Build: c.WorldMap},
		{File: "bangui-overview.json", Build: c.Overview},
		{File: "bangui-fleet.json", Build: c.Fleet},
		{File: "bangui-exporter-internals.json", Build: c.ExporterInternals},
	}
}

// Render marshals a dashboard the way the committed JSON is written:
// indented with two spaces, HTML characters not escaped, final newline.
func Render(d Dashboard) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("marshal dashboard %q: %w", deref(d.Title), err)
	}
	return buf.Bytes(), nil
}

// RenderAll builds and renders every dashboard of the default
// configuration, keyed by file name.
func RenderAll() (map[string][]byte, error) { return DefaultConfig().RenderAll() }

// RenderAll builds and renders every dashboard, keyed by file name.
func (c Config) RenderAll() (map[string][]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("mixin configuration: %w", err)
	}
	out := make(map[string][]byte)
	for _, def := range c.All() {
		d, err := def.Build()
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", def.File, err)
		}
		data, err := Render(d)
		if err != nil {
			return nil, err
		}
		out[def.File] = data
	}
	return out, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// datasourceRef is the reference every panel and target carries.
func datasourceRef() common.DataSourceRef {
	return common.DataSourceRef{Type: new("prometheus"), Uid: new("${" + DatasourceVariable + "}")}
}

// selector renders a PromQL series selector for metric limited to the
// configured selector and the dashboard's job and instance variables, plus
// extra matchers.
func (c Config) selector(metric string, extra ...string) string {
	matchers := append([]string{c.Selector, `job=~"$job"`, `instance=~"$instance"`}, extra...)
	return metric + "{" + strings.Join(matchers, ",") + "}"
}

// jailSelector is selector plus the jail variable.
func (c Config) jailSelector(metric string, extra ...string) string {
	return c.selector(metric, append([]string{`jail=~"$jail"`}, extra...)...)
}

// panelIDs hands out panel ids and query refIds, which the SDK does not
// assign by itself.
type panelIDs struct{ next uint32 }

func (p *panelIDs) id() uint32 {
	p.next++
	return p.next
}

// refID returns the refId of the i-th target of a panel: A, B, C, ...
func refID(i int) string { return string(rune('A' + i)) }

// rangeQuery is a time series query.
func rangeQuery(i int, expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasourceRef()).
		RefId(refID(i)).
		Expr(expr).
		LegendFormat(legend).
		Range()
}

// instantTable is an instant query in table format: rows of
// Time | labels... | Value.
func instantTable(i int, expr string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasourceRef()).
		RefId(refID(i)).
		Expr(expr).
		Instant().
		Format(prometheus.PromQueryFormatTable)
}

// instantValue is an instant query for a single value (stat panels).
func instantValue(i int, expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasourceRef()).
		RefId(refID(i)).
		Expr(expr).
		LegendFormat(legend).
		Instant()
}

// statPanel is a single-value stat of an instant query.
func statPanel(ids *panelIDs, title, description, expr, unit string) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Id(ids.id()).
		Title(title).
		Description(description).
		Datasource(datasourceRef()).
		WithTarget(instantValue(0, expr, title)).
		Unit(unit).
		ColorMode(common.BigValueColorModeValue).
		GraphMode(common.BigValueGraphModeNone).
		Orientation(common.VizOrientationAuto).
		TextMode(common.BigValueTextModeValue).
		ReduceOptions(lastValue()).
		Height(4).Span(4)
}

// thresholds is a single absolute color.
func thresholds(color string) *dashboard.ThresholdsConfigBuilder {
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).
		Steps([]dashboard.Threshold{{Color: color}})
}

// thresholdAt is base below value and above from value on.
func thresholdAt(base string, value float64, above string) *dashboard.ThresholdsConfigBuilder {
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).
		Steps([]dashboard.Threshold{{Color: base}, {Value: new(value), Color: above}})
}

// valueText maps exact values to display texts and colors ("1" → "up").
func valueText(pairs ...[3]string) []dashboard.ValueMapping {
	options := make(map[string]dashboard.ValueMappingResult, len(pairs))
	for i, p := range pairs {
		options[p[0]] = dashboard.ValueMappingResult{Text: new(p[1]), Color: new(p[2]), Index: new(int32(i))}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{Type: dashboard.MappingTypeValueToText, Options: options}}}
}

func legend() cog.Builder[common.VizLegendOptions] {
	return common.NewVizLegendOptionsBuilder().
		DisplayMode(common.LegendDisplayModeTable).
		Placement(common.LegendPlacementRight).
		ShowLegend(true).
		Calcs([]string{"lastNotNull", "max"})
}

func tooltip() cog.Builder[common.VizTooltipOptions] {
	return common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending)
}

func lastValue() cog.Builder[common.ReduceDataOptions] {
	return common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false)
}

// commonVariables are the datasource, job and instance variables every
// dashboard has; withJail adds the jail variable.
func (c Config) commonVariables(withJail bool) []cog.Builder[dashboard.VariableModel] {
	vars := []cog.Builder[dashboard.VariableModel]{
		dashboard.NewDatasourceVariableBuilder(DatasourceVariable).
			Label("Data source").
			Description("The Prometheus that scrapes bangui_exporter.").
			Type("prometheus").
			Current(dashboard.VariableOption{
				Selected: new(true),
				Text:     dashboard.StringOrArrayOfString{String: new(defaultDatasourceName)},
				Value:    dashboard.StringOrArrayOfString{String: new(DefaultDatasourceUID)},
			}),
		labelVariable("job", "Job", "The scrape job(s) of bangui_exporter.",
			"label_values("+c.sel("bangui_exporter_build_info")+", job)"),
		labelVariable("instance", "Instance", "The exporter instance(s), one per fail2ban host.",
			"label_values("+c.sel("bangui_exporter_build_info", `job=~"$job"`)+", instance)"),
	}
	if withJail {
		vars = append(vars, labelVariable("jail", "Jail", "fail2ban jail(s).",
			"label_values("+c.selector("fail2ban_jail_enabled")+", jail)"))
	}
	return vars
}

// labelVariable is a multi-value query variable with "All" meaning any
// value, refreshed when the time range changes.
func labelVariable(name, label, description, query string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Description(description).
		Datasource(datasourceRef()).
		Query(dashboard.StringOrMap{String: new(query)}).
		Definition(query).
		Multi(true).
		IncludeAll(true).
		AllValue(".+").
		Current(dashboard.VariableOption{
			Selected: new(true),
			Text:     dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
			Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
		}).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc)
}

// builtInAnnotation is Grafana's own "Annotations & Alerts" entry.
func builtInAnnotation() *dashboard.AnnotationQueryBuilder {
	return dashboard.NewAnnotationQueryBuilder().
		Name("Annotations & Alerts").
		Datasource(common.DataSourceRef{Type: new("grafana"), Uid: new("-- Grafana --")}).
		Enable(true).
		Hide(true).
		IconColor("rgba(0, 211, 255, 1)").
		Type("dashboard").
		BuiltIn(1)
}

// newDashboard sets what all dashboards share.
func (c Config) newDashboard(uid, title, description string) *dashboardBuilder {
	return newDashboardBuilder(title).
		Uid(c.uid(uid)).
		Description(description).
		Tags(c.Tags).
		Readonly().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Time("now-24h", "now").
		Refresh("1m").
		Timezone("browser").
		Annotation(builtInAnnotation()).
		Link(dashboard.NewDashboardLinkBuilder("bangui_exporter").
			Type(dashboard.DashboardLinkTypeDashboards).
			Tags(c.Tags[:1]).
			AsDropdown(true).
			IncludeVars(true).
			KeepTime(true).
			Icon("external link").
			Tooltip("Other bangui_exporter dashboards").
			TargetBlank(false))
}
