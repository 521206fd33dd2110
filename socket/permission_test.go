package socket

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
)

const helperEnv = "BANGUI_SOCKET_HELPER_PATH"

// TestCollectorNoPermission: a socket the exporter's user may not open (as
// with Debian's root-only /var/run/fail2ban) gives fail2ban_server_up 0 and
// a log line that says what to do. Run as root, the check runs in a child
// process as user nobody, since root ignores file permissions.
func TestCollectorNoPermission(t *testing.T) {
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{})
	if os.Geteuid() != 0 {
		if err := os.Chmod(sb.Socket(), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(sb.Socket(), 0o755) })
		up, logs := noPermissionScrape(t, sb.Socket())
		checkNoPermission(t, up, logs)
		return
	}
	// As root: the sandbox lies in a root-only 0700 directory (t.TempDir);
	// a child as nobody must be refused.
	if err := os.Chmod(filepath.Dir(sb.Socket()), 0o700); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyExe := filepath.Join(dir, "socket.test")
	copyFile(t, exe, copyExe)
	cmd := exec.Command(copyExe, "-test.run=^TestHelperNoPermission$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+sb.Socket(), "TMPDIR="+dir, "HOME="+dir)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, out)
	}
	text := string(out)
	if !strings.Contains(text, "HELPER_UP=0") {
		t.Fatalf("helper output lacks HELPER_UP=0:\n%s", text)
	}
	checkNoPermission(t, 0, text)
	// Root itself still gets in: the server is fine.
	coll, _, _ := newCollector(t, sb.Socket(), 5*time.Second)
	if up := scrape(t, coll)["fail2ban_server_up"][""]; up != 1 {
		t.Fatalf("root: up %v", up)
	}
}

func checkNoPermission(t *testing.T, up float64, logs string) {
	t.Helper()
	if up != 0 {
		t.Errorf("up %v on a socket without permission", up)
	}
	for _, want := range []string{"permission denied", "may not open the socket"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func noPermissionScrape(t *testing.T, path string) (float64, string) {
	coll, _, logs := newCollector(t, path, 2*time.Second)
	return scrape(t, coll)["fail2ban_server_up"][""], logs.String()
}

// TestHelperNoPermission is the child process of TestCollectorNoPermission.
func TestHelperNoPermission(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	up, logs := noPermissionScrape(t, path)
	t.Logf("HELPER_UP=%v\n%s", up, logs)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
