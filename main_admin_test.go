package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
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

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"golang.org/x/sys/unix"
	_ "modernc.org/sqlite"

	"github.com/bangui/bangui_exporter/geo"
	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testkit"
	"github.com/bangui/bangui_exporter/internal/testmmdb"
	"github.com/bangui/bangui_exporter/sessionauth"
)

const adminE2EPassword = "end to end admin password"

// buildExporter builds this package's binary once per test.
func buildExporter(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the exporter: %v", err)
	}
	bin := filepath.Join(t.TempDir(), exporterName)
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// exporterProcess is a running exporter.
type exporterProcess struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *testkit.LogBuffer
	exited chan struct{}
	base   string // http://127.0.0.1:PORT
}

var listenRE = regexp.MustCompile(`msg="Listening on" address=(\S+)`)

// withoutHostSocket adds an empty --fail2ban.socket unless args set one,
// so a fail2ban running on the test host never leaks into a test.
func withoutHostSocket(args []string) []string {
	for _, a := range args {
		if a == "--fail2ban.socket" || strings.HasPrefix(a, "--fail2ban.socket=") {
			return args
		}
	}
	return append([]string{"--fail2ban.socket="}, args...)
}

func startExporter(t *testing.T, bin string, args ...string) *exporterProcess {
	t.Helper()
	p := &exporterProcess{t: t, logs: &testkit.LogBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"--web.listen-address=127.0.0.1:0"}, withoutHostSocket(args)...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	p.waitLog("the listener", func(logs string) bool {
		if m := listenRE.FindStringSubmatch(logs); m != nil {
			p.base = "http://" + m[1]
			return true
		}
		return false
	})
	return p
}

func (p *exporterProcess) waitLog(what string, ok func(string) bool) {
	p.t.Helper()
	testkit.Eventually(p.t, 30*time.Second, func() error {
		if ok(p.logs.String()) {
			return nil
		}
		select {
		case <-p.exited:
			p.t.Fatalf("exporter exited while waiting for %s:\n%s", what, p.logs)
		default:
		}
		return fmt.Errorf("waiting for %s:\n%s", what, p.logs)
	})
}

// stop ends the exporter with SIGTERM and checks it exits cleanly.
func (p *exporterProcess) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	p.waitExit()
}

// waitExit waits for the exporter to exit after a signal and checks it
// exited cleanly.
func (p *exporterProcess) waitExit() {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("exporter did not stop:\n%s", p.logs)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Fatalf("exit code %d:\n%s", code, p.logs)
	}
}

// apiClient talks to the admin API like curl does.
type apiClient struct {
	t      *testing.T
	base   string
	http   *http.Client
	bearer string
}

func newAPIClient(t *testing.T, base string) *apiClient {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &apiClient{t: t, base: base, http: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

func (c *apiClient) call(method, path, body string, wantStatus int, out any) {
	c.t.Helper()
	status, b, _ := c.do(method, path, body)
	if status != wantStatus {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, status, b, wantStatus)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

// do sends one request and returns the status, body and headers.
func (c *apiClient) do(method, path, body string) (int, []byte, http.Header) {
	c.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" || method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b, resp.Header
}

// loginAfterBackoff logs in, waiting out the backoff of earlier failures
// as a polite client does: 429 answers are retried after their
// Retry-After.
func (c *apiClient) loginAfterBackoff(password string, out any) {
	c.t.Helper()
	body := `{"password":"` + password + `"}`
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, b, h := c.do("POST", "/api/auth/login", body)
		switch {
		case status == http.StatusOK:
			if err := json.Unmarshal(b, out); err != nil {
				c.t.Fatalf("login: %v in %s", err, b)
			}
			return
		case status != http.StatusTooManyRequests:
			c.t.Fatalf("login: %d %s, want 200 or 429", status, b)
		case time.Now().After(deadline):
			c.t.Fatalf("login still refused with 429 after 30 s: %s", b)
		}
		wait := time.Second
		if secs, err := strconv.Atoi(h.Get("Retry-After")); err == nil && secs > 0 {
			wait = time.Duration(secs) * time.Second
		}
		time.Sleep(wait) // what the server asked for, not a guess
	}
}

func (c *apiClient) status() geo.Status {
	c.t.Helper()
	var st geo.Status
	c.call("GET", "/api/geo/status", "", 200, &st)
	return st
}

func (c *apiClient) waitStatus(what string, ok func(geo.Status) bool) geo.Status {
	c.t.Helper()
	var st geo.Status
	testkit.Eventually(c.t, 30*time.Second, func() error {
		st = c.status()
		if ok(st) {
			return nil
		}
		return fmt.Errorf("waiting for %s: %+v", what, st)
	})
	return st
}

// metric reads one sample without labels from /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exposed", name)
	return 0
}

// bannedIPs reads every IP fail2ban's database has a ban row for.
func bannedIPs(t *testing.T, dbPath string) []netip.Addr {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	rows, err := db.Query("SELECT DISTINCT ip FROM bips")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var ips []netip.Addr
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		ips = append(ips, netip.MustParseAddr(s))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ips
}

// writeCountryMMDB writes a MaxMind-format country database that places
// every ip in country code (none for an empty list).
func writeCountryMMDB(t *testing.T, path string, ips []netip.Addr, code string) {
	t.Helper()
	nets := make([]testmmdb.Network, len(ips))
	for i, ip := range ips {
		nets[i] = testmmdb.Network{CIDR: ip.String(), Country: code, Name: "Iceland"}
	}
	testmmdb.Write(t, path, testmmdb.Options{}, nets)
}

// TestAdminEndToEnd runs the built exporter: the password is set with the
// subcommand, a client logs in, and a re-resolve of IPs an older database
// did not know lands in geo_cache in one flush.
func TestAdminEndToEnd(t *testing.T) {
	bin := buildExporter(t)
	dir := t.TempDir()
	storage := filepath.Join(dir, "app", "bangui.sqlite3")
	f2bDB := f2bgen.GenerateT(t, f2bgen.DefaultSpec(400, time.Now()))
	banned := bannedIPs(t, f2bDB)
	mmdb := filepath.Join(dir, "country.mmdb")
	writeCountryMMDB(t, mmdb, nil, "")

	// The password, piped to the subcommand.
	set := exec.Command(bin, "admin", "set-password", "--storage.path", storage)
	set.Stdin = strings.NewReader(adminE2EPassword + "\n")
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("admin set-password: %v\n%s", err, out)
	}
	short := exec.Command(bin, "admin", "set-password", "--storage.path", storage)
	short.Stdin = strings.NewReader("too short\n")
	if out, err := short.CombinedOutput(); err == nil || !strings.Contains(string(out), "at least 12 characters") {
		t.Fatalf("short password: %v\n%s", err, out)
	}

	p := startExporter(t, bin,
		"--storage.path", storage,
		"--fail2ban.db", f2bDB,
		"--geo.providers=mmdb", "--geo.mmdb", mmdb, "--geo.mmdb.check-interval=0",
		"--geo.flush-interval=300ms", "--geo.negative-ttl=1h",
		"--web.enable-admin-api",
	)
	if strings.Contains(p.logs.String(), "setup_token") {
		t.Fatal("a setup token was logged although the password exists")
	}
	c := newAPIClient(t, p.base)
	c.call("POST", "/api/auth/login", `{"password":"wrong password here"}`, 401, nil)
	var login struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	c.loginAfterBackoff(adminE2EPassword, &login)
	if len(login.Token) != 43 || time.Until(login.ExpiresAt) < 23*time.Hour {
		t.Fatalf("login %+v", login)
	}
	// The cookie jar carries the session.
	var sess map[string]any
	c.call("GET", "/api/auth/session", "", 200, &sess)
	p.waitLog("the failed login line", func(l string) bool {
		return strings.Contains(l, `msg="admin API authentication failed" client=127.0.0.1 action=login reason=wrong_password`)
	})

	// The engine tracks the banned IPs; none has a country yet.
	first := c.waitStatus("the first lookups", func(s geo.Status) bool {
		return s.Tracked > 0 && s.Unresolved == s.Tracked && s.Pending == 0 && s.Dirty == 0
	})
	tracked := first.Tracked
	if tracked < 5 {
		t.Fatalf("only %d banned IPs tracked", tracked)
	}

	// A newer database knows them; reload it like an operator would.
	writeCountryMMDB(t, mmdb, banned, "IS")
	before := c.status().Providers[0].LoadedAt
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.waitStatus("the reload", func(s geo.Status) bool { return s.Providers[0].LoadedAt.After(before) })
	flushes := metric(t, p.base, "bangui_exporter_geo_flushes_total")
	flushed := metric(t, p.base, "bangui_exporter_geo_flushed_entries_total")

	c.bearer = login.Token // scripts use the Bearer header
	var queued map[string]int
	c.call("POST", "/api/geo/re-resolve", "", 202, &queued)
	if queued["queued"] != tracked {
		t.Fatalf("queued %v, want %d", queued, tracked)
	}
	c.waitStatus("the resolution and its flush", func(s geo.Status) bool {
		return s.Resolved == tracked && s.Dirty == 0 && s.Pending == 0
	})
	if d := metric(t, p.base, "bangui_exporter_geo_flushes_total") - flushes; d != 1 {
		t.Fatalf("%v flushes for the re-resolve, want exactly 1", d)
	}
	if d := metric(t, p.base, "bangui_exporter_geo_flushed_entries_total") - flushed; int(d) != tracked {
		t.Fatalf("%v entries flushed, want %d", d, tracked)
	}

	// geo_cache holds every country, read by a separate read-only
	// connection through geo's read API.
	db, err := sql.Open("sqlite", "file:"+storage+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	cached, err := geo.ReadCache(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var someIP string
	for _, e := range cached {
		if e.CountryCode == "IS" {
			n++
			someIP = e.IP.String()
		}
	}
	if n != tracked {
		t.Fatalf("geo_cache has %d entries with IS, want %d", n, tracked)
	}
	var entry map[string]any
	c.call("GET", "/api/geo/lookup/"+someIP, "", 200, &entry)
	if entry["country_code"] != "IS" || entry["known"] != true {
		t.Fatalf("lookup %v", entry)
	}

	c.call("POST", "/api/auth/logout", "", 200, nil)
	c.call("GET", "/api/auth/session", "", 401, nil)
	p.stop()
	if strings.Contains(p.logs.String(), adminE2EPassword) || strings.Contains(p.logs.String(), login.Token) {
		t.Fatal("the log contains the password or the token")
	}
}

var setupTokenLogRE = regexp.MustCompile(`setup_token=(\S+)`)

// TestAdminSetupTokenAndDisabledAPI covers the other way to set the
// password (the one-time setup token from the log), geo disabled, and
// the API off: by default and with --no-web.enable-admin-api.
func TestAdminSetupTokenAndDisabledAPI(t *testing.T) {
	bin := buildExporter(t)
	dir := t.TempDir()
	storage := filepath.Join(dir, "bangui.sqlite3")
	f2bDB := f2bgen.GenerateT(t, f2bgen.DefaultSpec(50, time.Now()))

	p := startExporter(t, bin, "--storage.path", storage, "--fail2ban.db", f2bDB, "--geo.providers=none", "--web.enable-admin-api")
	var token string
	p.waitLog("the setup token", func(l string) bool {
		m := setupTokenLogRE.FindStringSubmatch(l)
		if m != nil {
			token = m[1]
		}
		return m != nil
	})
	c := newAPIClient(t, p.base)
	c.call("POST", "/api/auth/login", `{"password":"`+adminE2EPassword+`"}`, 503, nil)
	c.call("POST", "/api/setup", `{"setup_token":"`+token+`","password":"`+adminE2EPassword+`"}`, 201, nil)
	c.call("POST", "/api/setup", `{"setup_token":"`+token+`","password":"`+adminE2EPassword+`"}`, 409, nil)
	c.call("POST", "/api/auth/login", `{"password":"`+adminE2EPassword+`"}`, 200, nil)
	var e map[string]string
	c.call("GET", "/api/geo/status", "", 503, &e)
	if !strings.Contains(e["error"], "disabled") {
		t.Fatalf("geo disabled error %v", e)
	}
	// Metrics keep working beside the API.
	resp, err := http.Get(p.base + "/metrics")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	p.stop()

	for _, args := range [][]string{nil, {"--no-web.enable-admin-api"}} {
		off := startExporter(t, bin, append([]string{"--storage.path", storage, "--fail2ban.db", f2bDB, "--geo.providers=none"}, args...)...)
		assertNoAdminAPI(t, off.base)
		off.stop()
	}
}

// assertNoAdminAPI checks that /api/ does not exist on the exporter at base.
func assertNoAdminAPI(t *testing.T, base string) {
	t.Helper()
	for _, path := range []string{"/api/auth/session", "/api/setup", "/api/geo/status"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || json.Valid(body) {
			t.Fatalf("%s with the API disabled: %d %s", path, resp.StatusCode, body)
		}
	}
}

func TestReadPasswordFrom(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"secret password\n", "secret password", true},
		{"secret password\r\n", "secret password", true},
		{"secret password", "secret password", true},
		{"  spaced  \n", "  spaced  ", true},
		{"two\nlines\n", "", false},
		{strings.Repeat("x", maxPasswordInput+1), "", false},
	}
	for _, c := range cases {
		got, err := readPasswordFrom(strings.NewReader(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("readPasswordFrom(%q) = %q, %v", c.in, got, err)
		}
	}
}

func TestAdminFlags(t *testing.T) {
	cases := []struct {
		args    []string
		enabled bool
		proxies []string
	}{
		{nil, false, nil},
		{[]string{"--web.enable-admin-api"}, true, nil},
		{[]string{"--no-web.enable-admin-api"}, false, nil},
		{[]string{"--web.trusted-proxies=10.0.0.0/8,::1", "--web.trusted-proxies", "192.0.2.1"}, false, []string{"10.0.0.0/8,::1", "192.0.2.1"}},
	}
	for _, c := range cases {
		app := kingpinApp()
		af := addAdminFlags(app)
		if _, err := app.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if *af.enableAPI != c.enabled || !slices.Equal(*af.trustedProxies, c.proxies) {
			t.Errorf("%v: enabled %v proxies %v", c.args, *af.enableAPI, *af.trustedProxies)
		}
		if *af.sessionTTL != 24*time.Hour || *af.sessionCacheTTL != 10*time.Second {
			t.Errorf("defaults %v %v", *af.sessionTTL, *af.sessionCacheTTL)
		}
	}
	// The subcommand parses and is recognised.
	app := kingpinApp()
	af := addAdminFlags(app)
	cmd, err := app.Parse([]string{"admin", "set-password"})
	if err != nil || cmd != "admin set-password" {
		t.Fatalf("%q %v", cmd, err)
	}
	if _, handled := runAdminCommand("serve", af, nil, nil); handled {
		t.Fatal("serve handled as an admin command")
	}
}

// kingpinApp is an application with every part's flags, as run builds it,
// so a flag name clashing with another part or exporter-toolkit fails.
func kingpinApp() *kingpin.Application {
	app := kingpin.New(exporterName, "")
	promslogflag.AddFlags(app, &promslog.Config{})
	app.Command("serve", "").Default()
	addCoreFlags(app)
	addGeoFlags(app)
	addSocketFlags(app)
	return app
}

// openPTY opens a pseudo-terminal pair (Linux).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("no pseudo-terminals here but BANGUI_CI=1: %v", err)
		}
		t.Skipf("no pseudo-terminals here (with BANGUI_CI=1 this fails): %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return m, s
}

// TestSetPasswordOnTerminal types the password twice at the no-echo prompt
// of the real binary on a pseudo-terminal.
func TestSetPasswordOnTerminal(t *testing.T) {
	bin := buildExporter(t)
	cases := []struct {
		name          string
		first, second string
		ok            bool
	}{
		{"same twice", adminE2EPassword, adminE2EPassword, true},
		{"different", adminE2EPassword, adminE2EPassword + "x", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			storage := filepath.Join(t.TempDir(), "bangui.sqlite3")
			master, slave := openPTY(t)
			// Everything the terminal shows (the echo, if any) is collected.
			shown := &testkit.LogBuffer{}
			go func() { _, _ = io.Copy(shown, master) }()
			// Prove the capture works: the terminal echoes by default.
			if _, err := master.WriteString("probe\n"); err != nil {
				t.Fatal(err)
			}
			if _, err := slave.Read(make([]byte, 64)); err != nil { // drain the probe line
				t.Fatal(err)
			}
			testkit.EventuallyTrue(t, 10*time.Second, "the probe's echo", func() bool {
				return strings.Contains(shown.String(), "probe")
			})
			prompts := &testkit.LogBuffer{}
			cmd := exec.Command(bin, "admin", "set-password", "--storage.path", storage)
			cmd.Stdin, cmd.Stderr = slave, prompts
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			typeAfter := func(prompt, line string, count int) {
				testkit.EventuallyTrue(t, 20*time.Second, "the prompt "+prompt, func() bool {
					return strings.Count(prompts.String(), prompt) >= count
				})
				// The prompt is written just before echo goes off: type
				// only once the terminal says it is off.
				testkit.EventuallyTrue(t, 20*time.Second, "echo off after "+prompt, func() bool {
					tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
					return err == nil && tio.Lflag&unix.ECHO == 0
				})
				if _, err := master.WriteString(line + "\n"); err != nil {
					t.Fatal(err)
				}
			}
			typeAfter("New admin password: ", c.first, 1)
			typeAfter("Repeat the password: ", c.second, 1)
			err := cmd.Wait()
			if (err == nil) != c.ok {
				t.Fatalf("set-password: %v\n%s", err, prompts)
			}
			if !c.ok && !strings.Contains(prompts.String(), "the passwords differ") {
				t.Fatalf("no mismatch message: %s", prompts)
			}
			if strings.Contains(shown.String(), adminE2EPassword) {
				t.Fatalf("the password was echoed on the terminal: %q", shown)
			}
			if !c.ok {
				return
			}
			db, err := appdb.Open(context.Background(), storage)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = db.Close() }()
			if ok, err := sessionauth.VerifyPassword(context.Background(), db, adminE2EPassword); !ok || err != nil {
				t.Fatalf("stored password does not match the typed one: %v %v", ok, err)
			}
		})
	}
}
