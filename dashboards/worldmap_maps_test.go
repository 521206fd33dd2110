package dashboards

import (
	"reflect"
	"strings"
	"testing"
)

// TestWorldMapCitiesAndNetworks checks the issue-20 panels of the world
// map: the geomap's second layer (cities by coordinates, fed by query B
// only, sized by its value) and the "Top attacking networks" bar gauge.
func TestWorldMapCitiesAndNetworks(t *testing.T) {
	d := decodeMap(t, committed(t)["bangui-world-map.json"])
	var geomap, bars map[string]any
	for _, p := range panelsOf(d) {
		switch {
		case p["type"] == "geomap":
			geomap = p
		case p["type"] == "bargauge" && p["title"] == "Top attacking networks":
			bars = p
		}
	}
	if geomap == nil || bars == nil {
		t.Fatalf("geomap %v, bar gauge %v", geomap != nil, bars != nil)
	}
	targets := targetsOf(geomap)
	if len(targets) != 2 || str(targets[1]["refId"]) != "B" || !strings.Contains(str(targets[1]["expr"]), "fail2ban_banned_ips_by_location") ||
		!strings.Contains(str(targets[1]["expr"]), `city!="other"`) || !strings.Contains(str(targets[1]["expr"]), "$view") {
		t.Fatalf("geomap targets %v", targets)
	}
	layers := geomap["options"].(map[string]any)["layers"].([]any)
	if len(layers) != 2 {
		t.Fatalf("%d layers", len(layers))
	}
	for i, want := range []struct {
		ref, value string
		location   map[string]any
	}{
		{"A", "Value #A", map[string]any{"mode": "lookup", "lookup": "country", "gazetteer": "public/gazetteer/countries.json"}},
		{"B", "Value #B", map[string]any{"mode": "coords", "latitude": "latitude", "longitude": "longitude"}},
	} {
		l := layers[i].(map[string]any)
		if !reflect.DeepEqual(l["location"], want.location) {
			t.Errorf("layer %d location %v, want %v", i, l["location"], want.location)
		}
		if f := l["filterData"].(map[string]any); f["id"] != "byRefId" || f["options"] != want.ref {
			t.Errorf("layer %d filter %v, want query %s", i, f, want.ref)
		}
		size := l["config"].(map[string]any)["style"].(map[string]any)["size"].(map[string]any)
		if size["field"] != want.value {
			t.Errorf("layer %d sized by %v, want %s", i, size["field"], want.value)
		}
	}
	bt := targetsOf(bars)
	if len(bt) != 1 || !strings.Contains(str(bt[0]["expr"]), "fail2ban_banned_ips_by_asn") || !strings.Contains(str(bt[0]["expr"]), `asn!~"other|unknown"`) ||
		!strings.Contains(str(bt[0]["expr"]), `jail=~"$jail"`) || bt[0]["instant"] != true {
		t.Errorf("bar gauge target %v", bt)
	}
}
