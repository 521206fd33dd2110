// Package f2bsandbox runs a real fail2ban-server (Debian's fail2ban package)
// in a sandbox directory, for tests and for the quick-start demo.
//
// Everything the server touches lives inside the sandbox: its configuration,
// socket, pid file, log file, SQLite database and the log files its jails
// read. Every jail uses a "noop" action, so no firewall is ever touched, and
// the server runs as whatever user starts it (root or not), as long as that
// user owns the sandbox directory.
//
// The default jails are:
//
//   - "sshd": bantime 1h; bans come from log lines (see Fail) or banip;
//   - "perm": bantime -1 (permanent);
//   - "incr": bantime 10m with bantime.increment = true.
//
// All jails use maxretry 1, findtime 10m, the polling backend, usedns no,
// ignoreself false and ignoreip 127.0.0.1/8 ::1.
package f2bsandbox

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite", for read-only counts
)

// Binaries the sandbox runs, looked up on PATH.
const (
	ServerBinary = "fail2ban-server"
	ClientBinary = "fail2ban-client"
)

// maxSocketPath is the longest unix socket path we accept: sun_path holds
// 108 bytes including the terminating NUL.
const maxSocketPath = 107

// Jail describes one jail of the sandbox.
type Jail struct {
	// Name of the jail; letters, digits, '-' and '_' only.
	Name string
	// Bantime in fail2ban's syntax: "1h", "600", "-1" (permanent).
	Bantime string
	// Increment sets bantime.increment = true.
	Increment bool
}

// DefaultJails are the jails every sandbox has.
func DefaultJails() []Jail {
	return []Jail{
		{Name: "sshd", Bantime: "1h"},
		{Name: "perm", Bantime: "-1"},
		{Name: "incr", Bantime: "10m", Increment: true},
	}
}

// Options configure a sandbox.
type Options struct {
	// Dir is the sandbox directory; created when missing. Required for
	// Start (StartT uses a fresh temporary directory when empty).
	Dir string
	// Socket is the path of fail2ban's socket; empty means Dir/f2b.sock.
	// A unix socket path must stay below 108 bytes.
	Socket string
	// DBPurgeAge is fail2ban's dbpurgeage ("1d" when empty).
	DBPurgeAge string
	// PurgeInterval, when positive, replaces fail2ban's hard-coded hourly
	// purge interval (ObserverThread's db purge timer, first run one
	// interval after start): the server then runs through the same Python
	// interpreter with only that attribute patched, so a test sees
	// fail2ban's own purge (Fail2BanDb.purge with DBPurgeAge) within
	// seconds. fail2ban has no setting or command for it.
	PurgeInterval time.Duration
	// DBFile overrides fail2ban's dbfile: "None" (no database) or
	// ":memory:"; empty means the sandbox's DBPath.
	DBFile string
	// ExtraJails are added after the default jails.
	ExtraJails []Jail
}

// Sandbox is a running (or stopped) sandboxed fail2ban-server.
type Sandbox struct {
	dir           string
	socket        string
	dbPurgeAge    string
	dbFile        string
	purgeInterval time.Duration

	mu      sync.Mutex
	jails   []Jail
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	waitErr error         // cmd.Wait's result, valid after exited is closed
	stderr  *bytes.Buffer
}

var jailNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Start writes the sandbox configuration into opts.Dir, starts
// fail2ban-server and waits until it answers ping.
func Start(ctx context.Context, opts Options) (*Sandbox, error) {
	if opts.Dir == "" {
		return nil, errors.New("f2bsandbox: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("f2bsandbox: resolve %s: %w", opts.Dir, err)
	}
	socket := opts.Socket
	if socket == "" {
		socket = filepath.Join(dir, "f2b.sock")
	}
	if socket, err = filepath.Abs(socket); err != nil {
		return nil, fmt.Errorf("f2bsandbox: resolve socket path: %w", err)
	}
	if len(socket) > maxSocketPath {
		return nil, fmt.Errorf("f2bsandbox: socket path %s is %d bytes, longer than the %d a unix socket allows; use a shorter Dir or set Options.Socket", socket, len(socket), maxSocketPath)
	}
	purge := opts.DBPurgeAge
	if purge == "" {
		purge = "1d"
	}
	jails := append(DefaultJails(), opts.ExtraJails...)
	if err := validateJails(jails); err != nil {
		return nil, err
	}
	for _, bin := range []string{ServerBinary, ClientBinary} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("f2bsandbox: %s not found (install Debian's fail2ban package): %w", bin, err)
		}
	}
	if opts.DBFile != "" && opts.DBFile != "None" && opts.DBFile != ":memory:" {
		return nil, fmt.Errorf("f2bsandbox: DBFile %q: only \"None\" and \":memory:\" may override the sandbox's database", opts.DBFile)
	}
	s := &Sandbox{dir: dir, socket: socket, dbPurgeAge: purge, dbFile: opts.DBFile, jails: jails, purgeInterval: opts.PurgeInterval}
	for _, d := range []string{s.dir, s.ConfigDir(), s.logDir(), filepath.Join(s.ConfigDir(), "filter.d"), filepath.Join(s.ConfigDir(), "action.d"), filepath.Dir(socket)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("f2bsandbox: create %s: %w", d, err)
		}
	}
	if err := s.writeConfig(); err != nil {
		return nil, err
	}
	if err := s.startServer(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func validateJails(jails []Jail) error {
	seen := map[string]bool{}
	for _, j := range jails {
		if !jailNameRE.MatchString(j.Name) {
			return fmt.Errorf("f2bsandbox: invalid jail name %q", j.Name)
		}
		if seen[j.Name] {
			return fmt.Errorf("f2bsandbox: jail %q given twice", j.Name)
		}
		seen[j.Name] = true
		if j.Bantime == "" || strings.ContainsAny(j.Bantime, "\n\r") {
			return fmt.Errorf("f2bsandbox: jail %q: invalid bantime %q", j.Name, j.Bantime)
		}
	}
	return nil
}

// Dir is the sandbox directory.
func (s *Sandbox) Dir() string { return s.dir }

// ConfigDir is the directory passed to fail2ban as -c.
func (s *Sandbox) ConfigDir() string { return filepath.Join(s.dir, "etc") }

// Socket is the path of fail2ban's socket.
func (s *Sandbox) Socket() string { return s.socket }

// DBPath is the path of fail2ban's SQLite database.
func (s *Sandbox) DBPath() string { return filepath.Join(s.dir, "fail2ban.sqlite3") }

func (s *Sandbox) dbFileSetting() string {
	if s.dbFile != "" {
		return s.dbFile
	}
	return s.DBPath()
}

// PIDFile is the path of fail2ban's pid file.
func (s *Sandbox) PIDFile() string { return filepath.Join(s.dir, "fail2ban.pid") }

// ServerLog is the path of fail2ban's own log file.
func (s *Sandbox) ServerLog() string { return filepath.Join(s.dir, "fail2ban.log") }

// LogPath is the log file the jail reads.
func (s *Sandbox) LogPath(jail string) string { return filepath.Join(s.logDir(), jail+".log") }

func (s *Sandbox) logDir() string { return filepath.Join(s.dir, "logs") }

// Jails returns the names of the configured jails, in configuration order.
func (s *Sandbox) Jails() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, len(s.jails))
	for i, j := range s.jails {
		names[i] = j.Name
	}
	return names
}

func (s *Sandbox) hasJail(name string) bool {
	return slices.Contains(s.Jails(), name)
}

func (s *Sandbox) writeConfig() error {
	s.mu.Lock()
	jails := slices.Clone(s.jails)
	s.mu.Unlock()
	esc := func(p string) string { return strings.ReplaceAll(p, "%", "%%") }
	files := map[string]string{
		"fail2ban.conf": fmt.Sprintf(`# Written by bangui_exporter's f2bsandbox.
[DEFAULT]
loglevel = INFO
logtarget = %s
syslogsocket = auto
socket = %s
pidfile = %s
dbfile = %s
dbpurgeage = %s
dbmaxmatches = 10

[Definition]
allowipv6 = auto

[Thread]
`, esc(s.ServerLog()), esc(s.socket), esc(s.PIDFile()), esc(s.dbFileSetting()), s.dbPurgeAge),
		"jail.conf":                    s.jailConf(jails),
		"filter.d/bangui-sandbox.conf": filterConf,
		"action.d/noop.conf":           noopActionConf,
	}
	for name, content := range files {
		p := filepath.Join(s.ConfigDir(), name)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			return fmt.Errorf("f2bsandbox: create %s: %w", filepath.Dir(p), err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			return fmt.Errorf("f2bsandbox: write %s: %w", p, err)
		}
	}
	for _, j := range jails {
		f, err := os.OpenFile(s.LogPath(j.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("f2bsandbox: create log of jail %s: %w", j.Name, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("f2bsandbox: create log of jail %s: %w", j.Name, err)
		}
	}
	return nil
}

func (s *Sandbox) jailConf(jails []Jail) string {
	var b strings.Builder
	b.WriteString(`# Written by bangui_exporter's f2bsandbox.
[DEFAULT]
ignoreself = false
ignoreip = 127.0.0.1/8 ::1
backend = polling
usedns = no
maxretry = 1
findtime = 10m
bantime = 1h
banaction = noop
action = noop
filter = bangui-sandbox
logencoding = utf-8
`)
	for _, j := range jails {
		fmt.Fprintf(&b, "\n[%s]\nenabled = true\nlogpath = %s\nbantime = %s\n", j.Name, strings.ReplaceAll(s.LogPath(j.Name), "%", "%%"), j.Bantime)
		if j.Increment {
			b.WriteString("bantime.increment = true\n")
		}
	}
	return b.String()
}

// filterConf matches sshd-like lines as Fail writes them.
const filterConf = `# Written by bangui_exporter's f2bsandbox.
[Definition]
failregex = ^\s*sandbox sshd\[\d+\]: Failed password for (?:invalid user )?\S+ from <HOST> port \d+ ssh2$
ignoreregex =
datepattern = {^LN-BEG}%%Y-%%m-%%dT%%H:%%M:%%S%%z
`

// noopActionConf is an action that runs no command at all.
const noopActionConf = `# Written by bangui_exporter's f2bsandbox: an action that does nothing.
[Definition]
actionstart =
actionstop =
actioncheck =
actionflush =
actionban =
actionunban =
`

// startServer starts fail2ban-server in the foreground as a child process
// and waits until it answers ping.
func (s *Sandbox) startServer(ctx context.Context) error {
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		return errors.New("f2bsandbox: server already running")
	}
	// A stale socket from a killed server would make fail2ban refuse to start.
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.mu.Unlock()
		return fmt.Errorf("f2bsandbox: remove stale socket: %w", err)
	}
	// Not CommandContext: the server outlives the start context.
	args := []string{"-f", "-x", "-c", s.ConfigDir(), "-s", s.socket, "-p", s.PIDFile()}
	cmd := exec.Command(ServerBinary, args...)
	env := append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if s.purgeInterval > 0 {
		python, err := serverInterpreter()
		if err != nil {
			s.mu.Unlock()
			return err
		}
		cmd = exec.Command(python, append([]string{"-c", purgeIntervalWrapper}, args...)...)
		env = append(env, fmt.Sprintf("%s=%g", purgeIntervalEnv, s.purgeInterval.Seconds()))
	}
	stderr := &bytes.Buffer{}
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	cmd.Env = env
	// The server dies with us if we die without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("f2bsandbox: start %s: %w", ServerBinary, err)
	}
	exited := make(chan struct{})
	s.cmd, s.exited, s.stderr = cmd, exited, stderr
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		close(exited)
	}()
	s.mu.Unlock()

	err := s.waitReady(ctx, exited)
	if err == nil {
		err = s.waitJails(ctx, exited)
	}
	if err == nil {
		err = s.waitRestored(ctx)
	}
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = s.Stop(stopCtx)
		return err
	}
	return nil
}

// purgeIntervalEnv carries Options.PurgeInterval (seconds) to the wrapper.
const purgeIntervalEnv = "BANGUI_F2BSANDBOX_PURGE_INTERVAL"

// purgeIntervalWrapper runs fail2ban-server's own entry point with the
// observer's purge interval (a private attribute set in its __init__) taken
// from purgeIntervalEnv. Everything else is fail2ban's unchanged code.
const purgeIntervalWrapper = `import os, sys
from fail2ban.server import observer
_init = observer.ObserverThread.__init__
def _init_short_purge(self, *args, **kwargs):
	_init(self, *args, **kwargs)
	self._ObserverThread__db_purge_interval = float(os.environ["` + purgeIntervalEnv + `"])
observer.ObserverThread.__init__ = _init_short_purge
from fail2ban.client.fail2banserver import exec_command_line
sys.argv[0] = "fail2ban-server"
exec_command_line(sys.argv)
`

// serverInterpreter is the Python interpreter of fail2ban-server's shebang.
func serverInterpreter() (string, error) {
	path, err := exec.LookPath(ServerBinary)
	if err != nil {
		return "", fmt.Errorf("f2bsandbox: %s not found: %w", ServerBinary, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("f2bsandbox: read %s: %w", path, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if !strings.HasPrefix(line, "#!") || len(fields) == 0 || !strings.Contains(fields[len(fields)-1], "python") {
		return "", fmt.Errorf("f2bsandbox: %s does not start with a python shebang: %q", path, line)
	}
	if len(fields) == 2 && filepath.Base(fields[0]) == "env" {
		return exec.LookPath(fields[1])
	}
	return fields[0], nil
}

func (s *Sandbox) waitReady(ctx context.Context, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := s.Client(pingCtx, "ping")
		cancel()
		if err == nil && strings.Contains(out, "pong") {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("f2bsandbox: fail2ban-server exited during start: %s; see %s", s.serverOutput(), s.ServerLog())
		case <-ctx.Done():
			return fmt.Errorf("f2bsandbox: waiting for fail2ban-server to answer ping: %w (last: %v %s)", ctx.Err(), err, strings.TrimSpace(out)) //nolint:errorlint // err may be nil: a diagnostic, not a cause
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("f2bsandbox: fail2ban-server did not answer ping within 30s (last: %v %s)", err, strings.TrimSpace(out)) //nolint:errorlint // err may be nil: a diagnostic, not a cause
		}
	}
}

func (s *Sandbox) serverOutput() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stderr == nil {
		return ""
	}
	out := strings.TrimSpace(s.stderr.String())
	if s.waitErr != nil {
		out = fmt.Sprintf("%v: %s", s.waitErr, out)
	}
	return out
}

// Running reports whether the server process is running.
func (s *Sandbox) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Client runs fail2ban-client -c CONFIG with args and returns its output
// (stdout and stderr combined).
func (s *Sandbox) Client(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, ClientBinary, append([]string{"-c", s.ConfigDir()}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("f2bsandbox: fail2ban-client %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// BanIP bans ips in jail with "set JAIL banip".
func (s *Sandbox) BanIP(ctx context.Context, jail string, ips ...string) error {
	if len(ips) == 0 {
		return nil
	}
	_, err := s.Client(ctx, append([]string{"set", jail, "banip"}, ips...)...)
	return err
}

// UnbanIP unbans ips in jail with "set JAIL unbanip".
func (s *Sandbox) UnbanIP(ctx context.Context, jail string, ips ...string) error {
	if len(ips) == 0 {
		return nil
	}
	_, err := s.Client(ctx, append([]string{"set", jail, "unbanip"}, ips...)...)
	return err
}

// FailLine is the log line Fail writes for ip at time t; the sandbox's
// filter matches it.
func FailLine(t time.Time, ip string) string {
	return fmt.Sprintf("%s sandbox sshd[4242]: Failed password for invalid user admin from %s port 22 ssh2\n", t.UTC().Format("2006-01-02T15:04:05Z"), ip)
}

// Fail appends one current-time failure line per ip to the jail's log file,
// so fail2ban bans them itself (maxretry is 1), and waits until every ip
// shows up in the jail's banned list. Addresses in ignoreip (127.0.0.1/8,
// ::1) are never banned: Fail then waits until ctx ends.
func (s *Sandbox) Fail(ctx context.Context, jail string, ips ...string) error {
	if !s.hasJail(jail) {
		return fmt.Errorf("f2bsandbox: no jail %q", jail)
	}
	if len(ips) == 0 {
		return nil
	}
	var b strings.Builder
	now := time.Now()
	for _, ip := range ips {
		b.WriteString(FailLine(now, ip))
	}
	f, err := os.OpenFile(s.LogPath(jail), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("f2bsandbox: open log of jail %s: %w", jail, err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("f2bsandbox: write log of jail %s: %w", jail, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("f2bsandbox: close log of jail %s: %w", jail, err)
	}
	want := make(map[string]bool, len(ips))
	for _, ip := range ips {
		want[ip] = true
	}
	for {
		st, err := s.Status(ctx, jail)
		if err == nil {
			for _, ip := range st.BannedIPs {
				delete(want, ip)
			}
			if len(want) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("f2bsandbox: waiting for %d of %d IPs to be banned in %s: %w (last error: %v)", len(want), len(ips), jail, ctx.Err(), err) //nolint:errorlint // err may be nil: a diagnostic, not a cause
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// JailStatus is what "fail2ban-client status JAIL" reports.
type JailStatus struct {
	CurrentlyFailed int
	TotalFailed     int
	CurrentlyBanned int
	TotalBanned     int
	BannedIPs       []string
}

// Status runs "status JAIL" and parses its answer.
func (s *Sandbox) Status(ctx context.Context, jail string) (JailStatus, error) {
	out, err := s.Client(ctx, "status", jail)
	if err != nil {
		return JailStatus{}, err
	}
	return ParseJailStatus(out)
}

// ParseJailStatus parses the output of "fail2ban-client status JAIL".
func ParseJailStatus(out string) (JailStatus, error) {
	var st JailStatus
	found := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 64*1024*1024)
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), " |`-")
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		var target *int
		switch key {
		case "Currently failed":
			target = &st.CurrentlyFailed
		case "Total failed":
			target = &st.TotalFailed
		case "Currently banned":
			target = &st.CurrentlyBanned
		case "Total banned":
			target = &st.TotalBanned
		case "Banned IP list":
			st.BannedIPs = strings.Fields(value)
			found[key] = true
			continue
		default:
			continue
		}
		n, err := strconv.Atoi(value)
		if err != nil {
			return JailStatus{}, fmt.Errorf("f2bsandbox: status line %q: %w", line, err)
		}
		*target = n
		found[key] = true
	}
	if err := sc.Err(); err != nil {
		return JailStatus{}, fmt.Errorf("f2bsandbox: read status: %w", err)
	}
	if !found["Currently banned"] {
		return JailStatus{}, fmt.Errorf("f2bsandbox: no \"Currently banned\" in status output %q", out)
	}
	return st, nil
}

// CurrentlyBanned returns the jail's "Currently banned" count.
func (s *Sandbox) CurrentlyBanned(ctx context.Context, jail string) (int, error) {
	st, err := s.Status(ctx, jail)
	if err != nil {
		return 0, err
	}
	return st.CurrentlyBanned, nil
}

// SetExtraJails replaces the extra jails (the default jails stay), rewrites
// the configuration and, when the server runs, reloads it, so jails appear
// and disappear as in a real "fail2ban-client reload".
func (s *Sandbox) SetExtraJails(ctx context.Context, extra ...Jail) error {
	jails := append(DefaultJails(), extra...)
	if err := validateJails(jails); err != nil {
		return err
	}
	s.mu.Lock()
	s.jails = jails
	s.mu.Unlock()
	if err := s.writeConfig(); err != nil {
		return err
	}
	if !s.Running() {
		return nil
	}
	if _, err := s.Client(ctx, "reload"); err != nil {
		return err
	}
	// reload answers before every jail runs again; wait for the new set.
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	return s.waitJails(ctx, exited)
}

// waitJails waits until the server runs exactly the configured jails.
// waitJails waits until the server runs exactly the sandbox's jails. A
// server that answers ping and then dies while reading its configuration (a
// bad setting) is reported as such, however slow the machine.
func (s *Sandbox) waitJails(ctx context.Context, exited <-chan struct{}) error {
	for {
		out, err := s.Client(ctx, "status")
		if err == nil && sameJails(parseJailList(out), s.Jails()) {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("f2bsandbox: fail2ban-server exited during start: %s; see %s", s.serverOutput(), s.ServerLog())
		case <-ctx.Done():
			return fmt.Errorf("f2bsandbox: waiting for jails %v: %w (last: %v %s)", s.Jails(), ctx.Err(), err, strings.TrimSpace(out)) //nolint:errorlint // err may be nil: a diagnostic, not a cause
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitRestored waits until fail2ban has restored the bans it keeps in its
// database: fail2ban queues them when a jail starts and bans them shortly
// after. It returns once every jail's "Currently banned" equals the number
// of bips rows banned by fail2ban's rule, or, since fail2ban may restore
// fewer (a restored ban's expiry is lowered to the jail's current bantime),
// once the counts have not changed for a second.
func (s *Sandbox) waitRestored(ctx context.Context) error {
	stableSince := time.Now()
	var last map[string]int
	for {
		inDB, err := s.dbCurrentBans(ctx)
		if err != nil {
			return err
		}
		counts := make(map[string]int)
		equal := true
		for _, jail := range s.Jails() {
			n, err := s.CurrentlyBanned(ctx, jail)
			if err != nil {
				return err
			}
			counts[jail] = n
			if n != inDB[jail] {
				equal = false
			}
		}
		if equal {
			return nil
		}
		if !maps.Equal(counts, last) {
			last, stableSince = counts, time.Now()
		} else if time.Since(stableSince) > time.Second {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("f2bsandbox: waiting for restored bans: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dbCurrentBans counts, per jail, the bips rows that fail2ban's rule says
// are banned now, reading the database strictly read-only.
func (s *Sandbox) dbCurrentBans(ctx context.Context) (map[string]int, error) {
	counts := map[string]int{}
	if _, err := os.Stat(s.DBPath()); errors.Is(err, os.ErrNotExist) {
		return counts, nil
	}
	u := url.URL{Scheme: "file", Path: s.DBPath(), RawQuery: "mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("f2bsandbox: open %s: %w", s.DBPath(), err)
	}
	defer func() { _ = db.Close() }() // read-only: nothing to lose on close
	rows, err := db.QueryContext(ctx, `SELECT jail, count(*) FROM bips WHERE bantime <= -1 OR timeofban + bantime > ? GROUP BY jail`, time.Now().Unix())
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return counts, nil
		}
		return nil, fmt.Errorf("f2bsandbox: count bans in %s: %w", s.DBPath(), err)
	}
	defer func() { _ = rows.Close() }() // rows.Err below reports read errors
	for rows.Next() {
		var jail string
		var n int
		if err := rows.Scan(&jail, &n); err != nil {
			return nil, fmt.Errorf("f2bsandbox: count bans in %s: %w", s.DBPath(), err)
		}
		counts[jail] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("f2bsandbox: count bans in %s: %w", s.DBPath(), err)
	}
	return counts, nil
}

// parseJailList reads the "Jail list:" line of "fail2ban-client status".
func parseJailList(out string) []string {
	for line := range strings.SplitSeq(out, "\n") {
		_, list, ok := strings.Cut(line, "Jail list:")
		if !ok {
			continue
		}
		var names []string
		for n := range strings.SplitSeq(list, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
		return names
	}
	return nil
}

func sameJails(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Stop stops the server ("fail2ban-client stop", then SIGTERM and SIGKILL
// if it does not exit) and waits for it to exit. Stopping a stopped
// sandbox does nothing.
func (s *Sandbox) Stop(ctx context.Context) error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	defer func() {
		s.mu.Lock()
		s.cmd, s.exited = nil, nil
		s.mu.Unlock()
	}()
	select {
	case <-exited:
		return nil
	default:
	}
	clientCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, stopErr := s.Client(clientCtx, "stop")
	cancel()
	wait := func(d time.Duration) bool {
		select {
		case <-exited:
			return true
		case <-time.After(d):
			return false
		case <-ctx.Done():
			return false
		}
	}
	if wait(15 * time.Second) {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if wait(5 * time.Second) {
		return fmt.Errorf("f2bsandbox: fail2ban-server needed SIGTERM to stop (stop command: %v)", stopErr) //nolint:errorlint // err may be nil: a diagnostic, not a cause
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("f2bsandbox: fail2ban-server had to be killed (stop command: %v)", stopErr) //nolint:errorlint // err may be nil: a diagnostic, not a cause
}

// Restart stops the server and starts it again with the same configuration
// and database, so fail2ban restores its bans from the database.
func (s *Sandbox) Restart(ctx context.Context) error {
	if err := s.Stop(ctx); err != nil {
		return err
	}
	return s.startServer(ctx)
}
