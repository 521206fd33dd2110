package scripts

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

func requireBash(t *testing.T) string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		if os.Getenv(f2bsandbox.CIEnv) == "1" {
			t.Fatalf("bash not found: %v", err)
		}
		t.Skipf("bash not found: %v", err)
	}
	return bash
}

func buildExporter(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bangui_exporter")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestHasFlag runs demo.sh's flag detection many times under the demo's own
// shell options against the real binary: the old `--help | grep -q` lost
// about one run in three to SIGPIPE (status 141) and the demo then read the
// host's fail2ban socket.
func TestHasFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the exporter")
	}
	bash := requireBash(t)
	bin := buildExporter(t)
	const runs = 100
	script := fmt.Sprintf(`set -euo pipefail
. ./demo-lib.sh
ok=0
for _ in $(seq 1 %d); do
	if has_flag "$BIN" fail2ban.socket; then ok=$((ok+1)); fi
done
echo "found=$ok"
if has_flag "$BIN" no.such.flag; then echo "absent=found"; else echo "absent=missing"; fi
if has_flag "$BIN" fail2ban; then echo "prefix=found"; else echo "prefix=missing"; fi
`, runs)
	cmd := exec.Command(bash, "-c", script)
	cmd.Env = append(os.Environ(), "BIN="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	for _, want := range []string{fmt.Sprintf("found=%d\n", runs), "absent=missing\n", "prefix=missing\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("want %q in\n%s", want, out)
		}
	}
}

// syncBuffer collects the demo's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// TestDemo runs scripts/demo.sh as a user does and checks that the
// exporter it starts reads the sandbox's socket (never the host's), says how
// to turn the admin API on, and stops cleanly on SIGINT.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	bash := requireBash(t)
	f2bsandbox.RequireFail2ban(t)
	dir, err := os.MkdirTemp("", "demo") // short: the sandbox's socket lives in it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	port := freePort(t)
	cmd := exec.Command(bash, "./demo.sh", fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--geo.ipapi.url=")
	cmd.Env = append(os.Environ(), "DEMO_DIR="+dir, "SAMPLE_BANS=5", "BAN_EVERY=0", "NO_INSTALL=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	testkit.Eventually(t, 4*time.Minute, func() error {
		select {
		case err := <-exited:
			t.Fatalf("demo exited early: %v\n%s", err, out)
		default:
		}
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), "fail2ban_server_up 1") {
			return fmt.Errorf("no fail2ban_server_up 1 yet")
		}
		return nil
	})

	// The exporter's command line names the sandbox's socket.
	socket := ""
	for line := range strings.SplitSeq(out.String(), "\n") {
		if s, ok := strings.CutPrefix(line, "demo: fail2ban socket:"); ok {
			socket = strings.TrimSpace(s)
		}
	}
	if socket == "" || !strings.HasPrefix(socket, dir) {
		t.Fatalf("the demo did not report the sandbox's socket under %s:\n%s", dir, out)
	}
	args := exporterArgs(t, filepath.Join(dir, "bangui_exporter"))
	if !strings.Contains(args, "--fail2ban.socket="+socket) {
		t.Errorf("the exporter runs without the sandbox's socket: %s", args)
	}
	if !strings.Contains(out.String(), "--web.enable-admin-api") {
		t.Errorf("the demo does not say how to turn the admin API on:\n%s", out)
	}

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		t.Logf("demo exited after SIGINT: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatalf("the demo did not stop within 60 s of SIGINT:\n%s", out)
	}
}

// exporterArgs returns the command line of the running process whose
// executable is bin.
func exporterArgs(t *testing.T, bin string) string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || exe != bin {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.ReplaceAll(string(cmdline), "\x00", " ")
	}
	t.Fatalf("no running process of %s", bin)
	return ""
}
