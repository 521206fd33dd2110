package dashboards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// committed reads the committed dashboard JSON files.
func committed(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = data
	}
	return out
}

func TestCommittedJSONIsGenerated(t *testing.T) {
	generated, err := RenderAll()
	if err != nil {
		t.Fatalf("build dashboards: %v", err)
	}
	files := committed(t)
	for name, want := range generated {
		got, ok := files[name]
		if !ok {
			t.Errorf("%s is not committed; run go generate ./dashboards/...", name)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generator's output; run go generate ./dashboards/... and commit", name)
		}
	}
	for name := range files {
		if _, ok := generated[name]; !ok {
			t.Errorf("%s is committed but no generator writes it", name)
		}
	}
}

// strictDecode decodes dashboard JSON with the SDK's strict decoder, which
// rejects unknown fields and wrong types. Quirks handled here: the decoder
// returns a non-nil but empty error value on success; it rejects
// __inputs/__requires, which are stripped first; and PanelOrRowPanel takes
// that empty error value of a panel for a failure and drops the decoded
// panel, so panels are decoded one by one with the panel types' own strict
// decoders and put back.
func strictDecode(data []byte) (Dashboard, error) {
	plugins.RegisterDefaultPlugins()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Dashboard{}, err
	}
	delete(raw, "__inputs")
	delete(raw, "__requires")
	stripped, err := json.Marshal(raw)
	if err != nil {
		return Dashboard{}, err
	}
	var d Dashboard
	if err := realError(d.UnmarshalJSONStrict(stripped)); err != nil {
		return d, err
	}
	var panels []json.RawMessage
	if raw["panels"] != nil {
		if err := json.Unmarshal(raw["panels"], &panels); err != nil {
			return d, err
		}
	}
	d.Panels = nil
	for i, rawPanel := range panels {
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(rawPanel, &head); err != nil {
			return d, err
		}
		if head.Type == "row" {
			var row dashboard.RowPanel
			if err := realError(row.UnmarshalJSONStrict(rawPanel)); err != nil {
				return d, fmt.Errorf("panels[%d]: %w", i, err)
			}
			if row.Panels == nil {
				// The strict decoder turns an empty list into nil.
				row.Panels = []dashboard.Panel{}
			}
			d.Panels = append(d.Panels, dashboard.PanelOrRowPanel{RowPanel: &row})
			continue
		}
		var panel dashboard.Panel
		if err := realError(panel.UnmarshalJSONStrict(rawPanel)); err != nil {
			return d, fmt.Errorf("panels[%d]: %w", i, err)
		}
		options, err := strictPanelOptions(head.Type, rawPanel)
		if err != nil {
			return d, fmt.Errorf("panels[%d] options: %w", i, err)
		}
		panel.Options = options
		targets, err := strictTargets(rawPanel)
		if err != nil {
			return d, fmt.Errorf("panels[%d] targets: %w", i, err)
		}
		panel.Targets = targets
		d.Panels = append(d.Panels, dashboard.PanelOrRowPanel{Panel: &panel})
	}
	return d, nil
}

// strictTargets decodes a panel's targets strictly (the same quirk drops
// them in Panel.UnmarshalJSONStrict).
func strictTargets(rawPanel []byte) ([]variants.Dataquery, error) {
	var withTargets struct {
		Targets []json.RawMessage `json:"targets"`
	}
	if err := json.Unmarshal(rawPanel, &withTargets); err != nil {
		return nil, err
	}
	runtime := cog.NewRuntime()
	var out []variants.Dataquery
	for i, raw := range withTargets.Targets {
		if _, err := runtime.StrictUnmarshalDataquery(raw, ""); realError(err) != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		q, err := runtime.UnmarshalDataquery(raw, "")
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		if _, unknown := q.(variants.UnknownDataquery); unknown {
			return nil, fmt.Errorf("[%d]: not a query of a datasource type the SDK knows", i)
		}
		out = append(out, q)
	}
	return out, nil
}

// strictPanelOptions decodes a panel's options strictly with the panel
// type's own types. Panel.UnmarshalJSONStrict checks them but drops the
// value (the same empty-error quirk), so the options are decoded again
// once the strict check passed.
func strictPanelOptions(panelType string, rawPanel []byte) (any, error) {
	var withOptions struct {
		Options json.RawMessage `json:"options"`
	}
	if err := json.Unmarshal(rawPanel, &withOptions); err != nil {
		return nil, err
	}
	if withOptions.Options == nil {
		return nil, nil
	}
	variant, found := cog.NewRuntime().ConfigForPanelcfgVariant(panelType)
	if !found || variant.StrictOptionsUnmarshaler == nil {
		return nil, fmt.Errorf("the SDK knows no options of panel type %q", panelType)
	}
	if _, err := variant.StrictOptionsUnmarshaler(withOptions.Options); realError(err) != nil {
		return nil, err
	}
	return variant.OptionsUnmarshaler(withOptions.Options)
}

// realError turns the SDK's empty cog.BuildErrors into nil.
func realError(err error) error {
	var buildErrs cog.BuildErrors
	if errors.As(err, &buildErrs) && len(buildErrs) == 0 {
		return nil
	}
	return err
}

func TestStrictDecodeWithSDKTypes(t *testing.T) {
	for name, data := range committed(t) {
		t.Run(name, func(t *testing.T) {
			d, err := strictDecode(data)
			if err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			if err := d.Validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
			// What was decoded renders to the same JSON: nothing was lost.
			again, err := Render(d)
			if err != nil {
				t.Fatal(err)
			}
			var a, b any
			if err := json.Unmarshal(data, &a); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(again, &b); err != nil {
				t.Fatal(err)
			}
			if diff := firstDifference("", a, b); diff != "" {
				t.Errorf("decoding and re-encoding changed the dashboard at %s", diff)
			}
		})
	}
}

func TestStrictDecodeRejectsBadInput(t *testing.T) {
	good := committed(t)["bangui-world-map.json"]
	tests := []struct {
		name   string
		mutate func(d map[string]any)
	}{
		{"unknown top-level field", func(d map[string]any) { d["bogus"] = 1 }},
		{"wrong type of title", func(d map[string]any) { d["title"] = 42 }},
		{"unknown panel field", func(d map[string]any) { panelsOf(d)[0]["bogus"] = true }},
		{"wrong type of gridPos", func(d map[string]any) { panelsOf(d)[0]["gridPos"] = "big" }},
		{"unknown target field", func(d map[string]any) {
			panelsOf(d)[0]["targets"].([]any)[0].(map[string]any)["exprr"] = "up"
		}},
		{"target of an unknown datasource type", func(d map[string]any) {
			panelsOf(d)[0]["targets"].([]any)[0].(map[string]any)["datasource"] = map[string]any{"type": "nosuch", "uid": "x"}
		}},
		{"unknown geomap option", func(d map[string]any) {
			panelsOf(d)[0]["options"].(map[string]any)["bogus"] = 1
		}},
		{"geomap zoom as a string", func(d map[string]any) {
			panelsOf(d)[0]["options"].(map[string]any)["view"].(map[string]any)["zoom"] = "far"
		}},
		{"unknown variable field", func(d map[string]any) {
			d["templating"].(map[string]any)["list"].([]any)[0].(map[string]any)["bogus"] = 1
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decodeMap(t, good)
			tt.mutate(d)
			data, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := strictDecode(data); err == nil {
				t.Fatal("strict decoding accepted a broken dashboard")
			}
		})
	}
}

func decodeMap(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func panelsOf(d map[string]any) []map[string]any {
	var out []map[string]any
	var walk func(list any)
	walk = func(list any) {
		items, _ := list.([]any)
		for _, item := range items {
			p, ok := item.(map[string]any)
			if !ok {
				continue
			}
			out = append(out, p)
			walk(p["panels"])
		}
	}
	walk(d["panels"])
	return out
}

func TestWorldMapPanel(t *testing.T) {
	d := decodeMap(t, committed(t)["bangui-world-map.json"])
	var geomaps []map[string]any
	for _, p := range panelsOf(d) {
		if p["type"] == "geomap" {
			geomaps = append(geomaps, p)
		}
	}
	if len(geomaps) != 1 {
		t.Fatalf("want one geomap panel, got %d", len(geomaps))
	}
	p := geomaps[0]
	target := p["targets"].([]any)[0].(map[string]any)
	if target["instant"] != true || target["format"] != "table" {
		t.Errorf("map query must be instant in table format, got instant=%v format=%v", target["instant"], target["format"])
	}
	layer := p["options"].(map[string]any)["layers"].([]any)[0].(map[string]any)
	loc := layer["location"].(map[string]any)
	want := map[string]any{"mode": "lookup", "lookup": "country", "gazetteer": "public/gazetteer/countries.json"}
	if !reflect.DeepEqual(loc, want) {
		t.Errorf("layer location = %v, want %v", loc, want)
	}
	expr := target["expr"].(string)
	for _, needle := range []string{"fail2ban_banned_ips", "fail2ban_recent_bans", `window="$window"`, "$view", "by (country)"} {
		if !strings.Contains(expr, needle) {
			t.Errorf("map query lacks %s: %s", needle, expr)
		}
	}
	// ZZ cannot be drawn and must not set the markers' scale: both halves
	// of the map query leave it out.
	if n := strings.Count(expr, `country!="ZZ"`); n != 2 {
		t.Errorf("map query excludes ZZ %d times, want in both halves: %s", n, expr)
	}
	// The table and the unknown stat still show ZZ; the table has a host column.
	for _, p := range panelsOf(d) {
		e := ""
		if ts, _ := p["targets"].([]any); len(ts) > 0 {
			e, _ = ts[0].(map[string]any)["expr"].(string)
		}
		switch p["title"] {
		case "Countries":
			if strings.Contains(e, `country!="ZZ"`) || !strings.Contains(e, "by (country, instance)") {
				t.Errorf("country table must include ZZ and a host (instance) column: %s", e)
			}
		case "Country unknown (ZZ)":
			if !strings.Contains(e, `country="ZZ"`) {
				t.Errorf("unknown stat must count ZZ: %s", e)
			}
		}
	}
	vars := map[string]map[string]any{}
	for _, v := range d["templating"].(map[string]any)["list"].([]any) {
		vm := v.(map[string]any)
		vars[vm["name"].(string)] = vm
	}
	// The window variable lists the window labels of fail2ban_recent_bans,
	// and the default window while there is none (a fresh install), so
	// $window is never empty.
	q, _ := vars["window"]["query"].(string)
	expr, label, result, err := ParseVariableQuery(q, str(vars["window"]["regex"]))
	if err != nil || !result || label != "window" || !strings.Contains(expr, "fail2ban_recent_bans") ||
		!strings.Contains(expr, `or on () label_replace(vector(0), "window", "`+DefaultConfig().DefaultWindow+`"`) {
		t.Errorf("window variable must list the windows of fail2ban_recent_bans with a default, got %q (%v)", q, err)
	}
	if vars["view"]["type"] != "custom" {
		t.Errorf("view variable must be a custom switch, got %v", vars["view"]["type"])
	}
}

func TestCountryNames(t *testing.T) {
	names := countryNames()
	for code, want := range map[string]string{"DE": "Germany", "US": "United States", "CN": "China", "BR": "Brazil", "ZZ": "Unknown", "SS": "South Sudan"} {
		if got := names[code]; got != want {
			t.Errorf("country %s = %q, want %q", code, got, want)
		}
	}
	for _, deprecated := range []string{"DD", "SU", "YU"} {
		if _, ok := names[deprecated]; ok {
			t.Errorf("deprecated code %s must not be mapped", deprecated)
		}
	}
	if len(names) < 240 || len(names) > 260 {
		t.Errorf("%d country names; ISO 3166-1 has 249 codes", len(names))
	}
}

func TestSubstitute(t *testing.T) {
	values := map[string]string{"job": "fail2ban", "instance": "127.0.0.1:9635", "__rate_interval": "1m", "__range": "1h", "datasource": "P"}
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{`x{job=~"$job"}`, `x{job=~"fail2ban"}`, false},
		{`x{job=~"${job}",instance=~"[[instance]]"}`, `x{job=~"fail2ban",instance=~"127.0.0.1:9635"}`, false},
		{`rate(x[$__rate_interval]) + y[$__range]`, `rate(x[1m]) + y[1h]`, false},
		{`x{job=~"${job:regex}"}`, `x{job=~"fail2ban"}`, false},
		{`x{jail=~"$jail"}`, "", true},
	}
	for _, tt := range tests {
		got, err := Substitute(tt.in, values)
		if (err != nil) != tt.wantErr {
			t.Errorf("Substitute(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("Substitute(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestQueriesOfFindsEveryTarget(t *testing.T) {
	files := committed(t)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		d := decodeMap(t, files[name])
		targets := 0
		for _, p := range panelsOf(d) {
			ts, _ := p["targets"].([]any)
			targets += len(ts)
		}
		qs, err := QueriesOf(files[name])
		if err != nil {
			t.Fatal(err)
		}
		panelQueries := 0
		for _, q := range qs {
			if q.VariableLabel == "" {
				panelQueries++
			}
		}
		if panelQueries != targets || targets == 0 {
			t.Errorf("%s: QueriesOf found %d panel queries, the JSON has %d targets", name, panelQueries, targets)
		}
	}
}

// firstDifference returns the path of the first difference between two
// decoded JSON values, or "".
func firstDifference(path string, a, b any) string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			return path
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			if d := firstDifference(path+"."+k, av[k], bv[k]); d != "" {
				return d
			}
		}
		return ""
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return path
		}
		for i := range av {
			if d := firstDifference(path+"["+strconv.Itoa(i)+"]", av[i], bv[i]); d != "" {
				return d
			}
		}
		return ""
	default:
		if !reflect.DeepEqual(a, b) {
			return path
		}
		return ""
	}
}
