package deploy

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// unitExecArgs returns the unit's ExecStart as systemd runs it from the
// Debian package: $ARGS expanded from /etc/default/bangui_exporter
// (deploy/debian/bangui_exporter.default), split into words.
func unitExecArgs(t *testing.T, u map[string][]string) []string {
	t.Helper()
	env := defaultFileVars(t, filepath.Join(deployDir(t), "debian", "bangui_exporter.default"))
	var out []string
	for w := range strings.FieldsSeq(strings.Join(u["Service.ExecStart"], " ")) {
		if name, ok := strings.CutPrefix(w, "$"); ok {
			out = append(out, strings.Fields(env[strings.Trim(name, "{}")])...)
			continue
		}
		out = append(out, w)
	}
	return out
}

// defaultFileVars reads an EnvironmentFile= (KEY="value" lines, comments).
func defaultFileVars(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=value", path, line)
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		vars[k] = v
	}
	return vars
}
