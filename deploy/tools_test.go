package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// requireTool returns the path of an external tool. When it is missing the
// test is skipped, except in CI (BANGUI_CI set), where it fails.
func requireTool(t *testing.T, name string, fallbacks ...string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	for _, f := range fallbacks {
		if info, err := os.Stat(f); err == nil && !info.IsDir() {
			return f
		}
	}
	if os.Getenv("BANGUI_CI") == "1" {
		t.Fatalf("%s is required in CI (BANGUI_CI=1) but not installed; apt-get install -y %s", name, debianPackage[name])
	}
	t.Skipf("%s not installed (set BANGUI_CI=1 to make this a failure)", name)
	return ""
}

// debianPackage names the Debian package that brings each tool.
var debianPackage = map[string]string{
	"promtool":         "prometheus",
	"prometheus":       "prometheus",
	"systemd-analyze":  "systemd",
	"fail2ban-client":  "fail2ban",
	"victoria-metrics": "victoria-metrics",
}

// deployDir is the absolute path of deploy/ (this package's directory).
func deployDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the deploy package")
	}
	return filepath.Dir(file)
}

// repoRoot is the module root, one level above deploy/.
func repoRoot(t *testing.T) string { return filepath.Dir(deployDir(t)) }
