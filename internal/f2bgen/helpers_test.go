package f2bgen

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testNow is a fixed end of history, so tests are reproducible.
var testNow = time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)

// requireTool returns the path of an external program the test needs. When
// it is missing the test is skipped, except in CI (BANGUI_CI set), where it
// fails.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("%s is required in CI (BANGUI_CI=1): %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return path
}

// fail2banPython returns the interpreter fail2ban-server runs with (its
// shebang), which can import fail2ban's own modules.
func fail2banPython(t *testing.T) string {
	t.Helper()
	server := requireTool(t, "fail2ban-server")
	f, err := os.Open(server)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "#!") {
		t.Fatalf("cannot read the interpreter of %s: %q %v", server, line, err)
	}
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(fields) == 0 {
		t.Fatalf("empty shebang in %s", server)
	}
	return fields[0]
}

// runFail2banPython runs a Python script with fail2ban's modules importable
// and returns its standard output.
func runFail2banPython(t *testing.T, script string, args ...string) string {
	t.Helper()
	py := fail2banPython(t)
	cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python (fail2ban) failed: %v\nstderr:\n%s", err, stderr.String())
	}
	return string(out)
}

// openRO opens a database read-only.
func openRO(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n.Int64
}

func generate(t *testing.T, spec Spec) (string, Stats) {
	t.Helper()
	path := t.TempDir() + "/fail2ban.sqlite3"
	st, err := Generate(context.Background(), path, spec)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return path, st
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func fmtSscan(s string, args ...any) (int, error) { return fmt.Sscan(s, args...) }
