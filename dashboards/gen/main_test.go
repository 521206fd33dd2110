package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangui/bangui_exporter/dashboards"
)

// repo is the repository root, seen from dashboards/gen.
const repo = "../.."

// TestRunWritesTheCommittedFiles runs the generator as go generate does,
// into temporary directories, and compares every file with the committed
// one: the mixin (mixin/), the dashboards (dashboards/*.json) and the
// deploy kit's rule file.
func TestRunWritesTheCommittedFiles(t *testing.T) {
	tmp := t.TempDir()
	o, err := parse([]string{"-out", filepath.Join(tmp, "mixin"), "-dashboards-dir", filepath.Join(tmp, "dashboards"),
		"-rules-file", filepath.Join(tmp, "rules.yml")})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "dashboards"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	pairs := map[string]string{
		filepath.Join(tmp, "rules.yml"): filepath.Join(repo, "deploy/prometheus/rules/bangui_exporter.rules.yml"),
	}
	n := 0
	for _, sub := range []struct{ generated, committed string }{{"mixin", "mixin"}, {"dashboards", "dashboards"}} {
		root := filepath.Join(tmp, sub.generated)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			pairs[path] = filepath.Join(repo, sub.committed, rel)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for generated, committed := range pairs {
		n++
		got, err := os.ReadFile(generated)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(committed)
		if err != nil {
			t.Errorf("generated %s is not committed: %v", committed, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generator's output; run make generate", committed)
		}
	}
	// 2 rule files + 4 dashboards in the mixin, 4 flat dashboards, 1 deploy rule file.
	if want := 2 + 2*len(dashboards.All()) + 1; n != want {
		t.Errorf("compared %d files, want %d", n, want)
	}
	// No stale generated file: every JSON in dashboards/ and mixin/dashboards_out/ is generated.
	for _, dir := range []string{filepath.Join(repo, "dashboards"), filepath.Join(repo, "mixin", dashboards.MixinDashboardsDir)} {
		committed, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		if len(committed) != len(dashboards.All()) {
			t.Errorf("%s holds %d JSON files, the generator writes %d", dir, len(committed), len(dashboards.All()))
		}
	}
}

// TestAnotherSelector is the documented command for another job name: every
// rule and every dashboard query carries the new selector, none the old.
func TestAnotherSelector(t *testing.T) {
	out := t.TempDir()
	o, err := parse([]string{"-selector", `job="node"`, "-out", out})
	if err != nil {
		t.Fatal(err)
	}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	files := 0
	err = filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		text := string(data)
		if strings.Contains(text, `job=\"fail2ban\"`) || strings.Contains(text, `job="fail2ban"`) {
			t.Errorf("%s still selects job fail2ban", path)
		}
		if !strings.Contains(text, `job=\"node\"`) && !strings.Contains(text, `job="node"`) {
			t.Errorf("%s does not use the selector job=\"node\"", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 2+len(dashboards.All()) {
		t.Errorf("wrote %d files", files)
	}
}

func TestParseRejectsBadConfiguration(t *testing.T) {
	for _, args := range [][]string{
		{},                                  // no -out
		{"-out", "x", "-selector", ""},      // empty selector
		{"-out", "x", "-selector", "job=x"}, // not a matcher
		{"-out", "x", "-runbook-url", "runbook.md"},
		{"-out", "x", "-unknown-country-share", "1.5"},
		{"-out", "x", "-mmdb-max-age", "30s"},
		{"-out", "x", "extra"},
	} {
		if _, err := parse(args); err == nil {
			t.Errorf("parse(%q) accepted a bad configuration", args)
		}
	}
}

func TestRunFailsOnAnUnwritableDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := parse([]string{"-out", filepath.Join(file, "mixin")})
	if err != nil {
		t.Fatal(err)
	}
	if err := run(o); err == nil {
		t.Fatal("run wrote below a regular file")
	}
}
