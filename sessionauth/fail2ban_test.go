package sessionauth

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/promslog"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// Paths of the shipped fail2ban files, relative to this package.
var (
	filterFile = filepath.Join("..", "deploy", "fail2ban", "filter.d", "bangui-exporter.conf")
	jailFile   = filepath.Join("..", "deploy", "fail2ban", "jail.d", "bangui-exporter.conf")
)

// requireTool skips the test when bin is missing, or fails it when
// BANGUI_CI=1.
func requireTool(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("%s not found but BANGUI_CI=1: install Debian's fail2ban package (%v)", bin, err)
		}
		t.Skipf("%s not found (install Debian's fail2ban package; with BANGUI_CI=1 this fails): %v", bin, err)
	}
	return p
}

// promslogLogger is the exporter's logger as main builds it for
// --log.format=format, writing to w.
func promslogLogger(t *testing.T, format string, w *testkit.LogBuffer) *slog.Logger {
	t.Helper()
	cfg := &promslog.Config{Format: promslog.NewFormat(), Writer: w}
	if err := cfg.Format.Set(format); err != nil {
		t.Fatal(err)
	}
	return promslog.New(cfg)
}

// attackLog drives the real handlers into writing log lines: failures that
// fail2ban must count, and lines it must not.
func attackLog(t *testing.T, format string) (log string, wantHits map[string]int) {
	t.Helper()
	out := &testkit.LogBuffer{}
	logger := promslogLogger(t, format, out)
	withLogger := func(o *Options) { o.Logger = logger }

	f := newFixture(t, true, withLogger)
	wrong := func(remote string, header map[string]string) int {
		return f.do(req{method: "POST", path: PathLogin, body: `{"password":"not the password"}`, remote: remote, header: header}).Code
	}
	for range 3 {
		if c := wrong("192.0.2.7:5000", nil); c != 401 {
			t.Fatalf("wrong login: %d", c)
		}
		if c := wrong("192.0.2.7:5000", nil); c != 429 { // throttled, logged too
			t.Fatalf("throttled login: %d", c)
		}
		f.clock.Advance(backoffMax)
	}
	wrong("[2001:db8::7]:5000", nil)
	// Behind a trusted proxy the forwarded client is logged, not the proxy.
	wrong("10.0.0.1:5000", map[string]string{"X-Forwarded-For": "203.0.113.44"})
	// A successful login, and an attacker-chosen value that quotes the
	// failure line, must not match.
	f.login("192.0.2.99:1")
	logger.Warn("admin API request failed", "path", `/x msg="admin API authentication failed" client=198.51.100.66`)
	logger.Warn("admin API request failed", "path", `","msg":"admin API authentication failed","client":"198.51.100.67"`)

	setup := newFixture(t, false, withLogger)
	setup.do(req{method: "POST", path: PathSetup, body: `{"setup_token":"guess","password":"` + testPassword + `"}`, remote: "198.51.100.3:1"})

	return out.String(), map[string]int{"192.0.2.7": 6, "2001:db8::7": 1, "203.0.113.44": 1, "198.51.100.3": 1}
}

var rowRE = regexp.MustCompile(`(?m)^\['([^']+)',\s*(\d+|None),`)

func TestFail2banFilterMatchesRealLogLines(t *testing.T) {
	bin := requireTool(t, "fail2ban-regex")
	filter, err := filepath.Abs(filterFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"logfmt", "json"} {
		t.Run(format, func(t *testing.T) {
			logText, want := attackLog(t, format)
			logPath := filepath.Join(t.TempDir(), "exporter.log")
			if err := os.WriteFile(logPath, []byte(logText), 0o600); err != nil {
				t.Fatal(err)
			}
			start := time.Now().Add(-time.Minute)
			out, err := exec.Command(bin, "-o", "row", logPath, filter).CombinedOutput()
			if err != nil {
				t.Fatalf("fail2ban-regex: %v\n%s", err, out)
			}
			got := map[string]int{}
			for _, m := range rowRE.FindAllStringSubmatch(string(out), -1) {
				got[m[1]]++
				sec, err := strconv.ParseInt(m[2], 10, 64)
				if err != nil {
					t.Fatalf("no time found for a match of %s: %s", m[1], out)
				}
				if at := time.Unix(sec, 0); at.Before(start) || at.After(time.Now().Add(time.Minute)) {
					t.Fatalf("match of %s at %v: the date pattern misread the time", m[1], at)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("fail2ban-regex found %v, want %v\nlog:\n%s\noutput:\n%s", got, want, logText, out)
			}
			if strings.Contains(logText, "not the password") {
				t.Fatal("the log contains a password")
			}
		})
	}
}

// TestFail2banJailBans runs a real fail2ban-server with the shipped filter
// and jail (backend switched to polling a log file, action to a no-op) and
// checks that it bans a client of the admin API after maxretry failures,
// and only that client.
func TestFail2banJailBans(t *testing.T) {
	server := requireTool(t, "fail2ban-server")
	client := requireTool(t, "fail2ban-client")
	dir, err := os.MkdirTemp("", "f2bj") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	etc := filepath.Join(dir, "etc")
	logPath := filepath.Join(dir, "exporter.log")
	sock := filepath.Join(dir, "f2b.sock")
	filterText, err := os.ReadFile(filterFile)
	if err != nil {
		t.Fatal(err)
	}
	jailText, err := os.ReadFile(jailFile)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"fail2ban.conf": fmt.Sprintf("[DEFAULT]\nloglevel = INFO\nlogtarget = %s\nsocket = %s\npidfile = %s\ndbfile = %s\n[Definition]\nallowipv6 = auto\n",
			filepath.Join(dir, "fail2ban.log"), sock, filepath.Join(dir, "f2b.pid"), filepath.Join(dir, "f2b.sqlite3")),
		"jail.conf": "[DEFAULT]\nignoreself = false\nignoreip = 127.0.0.1/8 ::1\nusedns = no\nbanaction = noop\naction = noop\n",
		// The shipped files, unchanged.
		"filter.d/bangui-exporter.conf": string(filterText),
		"jail.d/bangui-exporter.conf":   string(jailText),
		// This machine's test switches: a log file instead of the journal.
		"jail.local":         fmt.Sprintf("[bangui-exporter]\nbackend = polling\nlogpath = %s\njournalmatch =\n", logPath),
		"action.d/noop.conf": "[Definition]\nactionstart =\nactionstop =\nactioncheck =\nactionflush =\nactionban =\nactionunban =\n",
	}
	for name, content := range files {
		p := filepath.Join(etc, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logFile.Close() })

	if out, err := exec.Command(client, "-c", etc, "-t").CombinedOutput(); err != nil {
		t.Fatalf("fail2ban-client -t: %v\n%s", err, out)
	}
	var serverOut testkit.LogBuffer // read while the server writes it
	cmd := exec.Command(server, "-f", "-x", "-c", etc, "-s", sock, "-p", filepath.Join(dir, "f2b.pid"))
	cmd.Stdout, cmd.Stderr = &serverOut, &serverOut
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = exec.Command(client, "-c", etc, "-s", sock, "stop").Run()
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	status := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, client, "-c", etc, "-s", sock, "status", "bangui-exporter").CombinedOutput()
		return string(out)
	}
	waitFor := func(what string, ok func(string) bool) string {
		var s string
		testkit.Eventually(t, 30*time.Second, func() error {
			if s = status(); ok(s) {
				return nil
			}
			select {
			case <-exited:
				t.Fatalf("fail2ban-server exited: %s", serverOut.String())
			default:
			}
			return fmt.Errorf("waiting for %s; status:\n%s\nserver:\n%s", what, s, serverOut.String())
		})
		return s
	}
	waitFor("the jail", func(s string) bool { return strings.Contains(s, "Banned IP list") })

	// The real handler writes to the file fail2ban polls.
	w := &testkit.LogBuffer{}
	f := newFixture(t, true, func(o *Options) { o.Logger = promslogLogger(t, "logfmt", w) })
	attempt := func(remote string) {
		f.do(req{method: "POST", path: PathLogin, body: `{"password":"brute force guess"}`, remote: remote})
		f.clock.Advance(backoffMax)
	}
	for range 5 { // maxretry
		attempt("203.0.113.45:1")
	}
	for range 2 {
		attempt("203.0.113.46:1")
	}
	f.login("203.0.113.47:1")
	if _, err := logFile.WriteString(w.String()); err != nil {
		t.Fatal(err)
	}
	got := waitFor("the ban", func(s string) bool { return strings.Contains(s, "203.0.113.45") })
	banned := regexp.MustCompile(`Banned IP list:\s*(.*)`).FindStringSubmatch(got)
	if banned == nil || !slices.Equal(strings.Fields(banned[1]), []string{"203.0.113.45"}) {
		t.Fatalf("banned %q, want only 203.0.113.45:\n%s", banned, got)
	}
	if !strings.Contains(got, "Total failed:\t7") && !regexp.MustCompile(`Total failed:\s+7`).MatchString(got) {
		t.Fatalf("want 7 failures counted:\n%s", got)
	}
}
