package dashboards

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite README.md's generated metric table from the contract")

const (
	readmePath       = "../README.md"
	readmeTableBegin = "<!-- BEGIN metric table: generated from dashboards/contract.go by `go test ./dashboards -run TestREADMEMetricTable -update-readme`; do not edit -->"
	readmeTableEnd   = "<!-- END metric table -->"
)

// readmeMetricTable renders the contract as README.md's metric table.
func readmeMetricTable(metrics []Metric) string {
	var b strings.Builder
	b.WriteString("| metric | type | labels | meaning | part |\n|---|---|---|---|---|\n")
	for _, m := range metrics {
		labels := make([]string, len(m.Labels))
		for i, l := range m.Labels {
			labels[i] = "`" + l + "`"
		}
		part, _, _ := strings.Cut(string(m.Owner), " ")
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", m.Name, m.Type, strings.Join(labels, ", "),
			strings.ReplaceAll(m.Help, "|", `\|`), part)
	}
	return b.String()
}

// TestREADMEMetricTable checks that README.md's metric table is the one
// generated from the contract: every metric, with its type, labels and
// meaning, in one place.
func TestREADMEMetricTable(t *testing.T) {
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	begin := strings.Index(readme, readmeTableBegin)
	end := strings.Index(readme, readmeTableEnd)
	if begin < 0 || end < begin {
		t.Fatalf("README.md has no generated metric table between %q and %q", readmeTableBegin, readmeTableEnd)
	}
	want := readmeTableBegin + "\n" + readmeMetricTable(Contract())
	got := readme[begin:end]
	if got == want {
		return
	}
	if *updateREADME {
		if err := os.WriteFile(readmePath, []byte(readme[:begin]+want+readme[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	gotLines, wantLines := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(gotLines), len(wantLines)) {
		var g, w string
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if g != w {
			t.Errorf("README.md's metric table differs from the contract at line %d:\n got %s\nwant %s", i+1, g, w)
		}
	}
	t.Log("run `go test ./dashboards -run TestREADMEMetricTable -update-readme` to regenerate it")
}

// readmeRowRE matches a row of a hand-written README table that names a
// metric: | `name{label,...}` | type | ... |
var readmeRowRE = regexp.MustCompile("(?m)^\\| `([a-z0-9_:]+)(?:\\{([a-z_,.]*)\\})?` \\| ([a-z]+) \\|")

// TestREADMEMetricMentions checks every metric README.md names outside the
// generated table: it is in the contract, and where a table row gives its
// type and labels, they agree with the contract.
func TestREADMEMetricMentions(t *testing.T) {
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	if b, e := strings.Index(readme, readmeTableBegin), strings.Index(readme, readmeTableEnd); b >= 0 && e > b {
		readme = readme[:b] + readme[e:]
	}
	rows := readmeRowRE.FindAllStringSubmatch(readme, -1)
	if len(rows) == 0 {
		t.Fatal("no metric rows found in README.md's hand-written tables")
	}
	for _, row := range rows {
		name, labels, typ := row[1], row[2], row[3]
		m, ok := LookupMetric(name)
		if !ok {
			t.Errorf("README.md names %s, which is not in the contract", name)
			continue
		}
		if typ != string(m.Type) {
			t.Errorf("README.md gives %s the type %s; the contract says %s", name, typ, m.Type)
		}
		var got []string
		for l := range strings.SplitSeq(labels, ",") {
			if l != "" && l != "..." {
				got = append(got, l)
			}
		}
		for _, l := range got {
			if !slices.Contains(m.Labels, l) {
				t.Errorf("README.md gives %s the label %s; the contract's labels are %v", name, l, m.Labels)
			}
		}
		if !strings.Contains(labels, "...") && len(got) != len(m.Labels) {
			t.Errorf("README.md gives %s the labels %v; the contract's are %v", name, got, m.Labels)
		}
	}
	// Every name that looks like one of the exporter's metrics is known.
	for _, n := range regexp.MustCompile("`((?:fail2ban|bangui_exporter)_[a-z0-9_]+)").FindAllStringSubmatch(readme, -1) {
		if _, ok := LookupMetric(n[1]); !ok && !strings.HasSuffix(n[1], "_") {
			t.Errorf("README.md names %s, which is not in the contract", n[1])
		}
	}
}
