package debian

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

const ciEnv = "BANGUI_CI"

// requireTools skips the test when a tool is missing, or fails it in CI.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, name := range tools {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv(ciEnv) == "1" {
				t.Fatalf("%s is required in CI (%s=1): .ci/run installs it (%v)", name, ciEnv, err)
			}
			t.Skipf("%s not installed (%s=1 makes this a failure): %v", name, ciEnv, err)
		}
	}
}

// repoRoot is the module root (two levels above this package).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the package")
	}
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// buildPackage runs build.sh (what make package runs) into a temporary
// directory and returns the .deb.
func buildPackage(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), filepath.Join(repoRoot(t), "deploy", "debian", "build.sh"), out)
	cmd.Dir = repoRoot(t)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	deb, err := cmd.Output()
	if err != nil {
		t.Fatalf("build.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(deb))
}

// TestPackageLintian builds the package and checks it with Debian's lintian:
// no error and no warning (the package's lintian-overrides give the reason
// for each overridden tag).
func TestPackageLintian(t *testing.T) {
	if testing.Short() && os.Getenv(ciEnv) != "1" {
		t.Skip("builds the package")
	}
	requireTools(t, "lintian", "dpkg-deb")
	deb := buildPackage(t)
	// Overridden tags (deploy/debian/lintian-overrides, each with its
	// reason) are not reported; with --show-overrides lintian would count
	// them towards --fail-on.
	out, err := exec.CommandContext(t.Context(), "lintian", "--fail-on", "error,warning", "-EvIL", "+pedantic", "--color", "never", deb).CombinedOutput()
	t.Logf("lintian:\n%s", out)
	if err != nil {
		t.Errorf("lintian: %v", err)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}

	// The contents the README documents.
	list, err := exec.CommandContext(t.Context(), "dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"./usr/bin/bangui_exporter", "./lib/systemd/system/bangui_exporter.service", "./etc/default/bangui_exporter",
		"./etc/fail2ban/filter.d/bangui-exporter.conf", "./etc/fail2ban/jail.d/bangui-exporter.conf",
		"./usr/share/bangui_exporter/dashboards/bangui-overview.json", "./usr/share/bangui_exporter/prometheus/rules/bangui_exporter.rules.yml",
		"./usr/share/doc/bangui-exporter/changelog.gz", "./usr/share/doc/bangui-exporter/changelog.Debian.gz",
		"./usr/share/doc/bangui-exporter/copyright", "./usr/share/man/man1/bangui_exporter.1.gz",
	} {
		if !strings.Contains(string(list), " "+want+"\n") {
			t.Errorf("the package has no %s", want)
		}
	}
	conffiles, err := exec.CommandContext(t.Context(), "dpkg-deb", "-I", deb, "conffiles").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/etc/default/bangui_exporter", "/etc/fail2ban/jail.d/bangui-exporter.conf", "/etc/fail2ban/filter.d/bangui-exporter.conf"} {
		if !slices.Contains(strings.Fields(string(conffiles)), want) {
			t.Errorf("%s is not a conffile: %s", want, conffiles)
		}
	}
}

// The jails of the test: Debian's fail2ban with a no-op ban action (the
// container has no CAP_NET_ADMIN and no iptables).
const testJails = `# bangui_exporter real-host test
[DEFAULT]
banaction = bangui-noop
banaction_allports = bangui-noop

[test-web]
enabled  = true
filter   = sshd
backend  = polling
logpath  = /var/log/bangui-test.log
bantime  = 1d

[test-mail]
enabled  = true
filter   = sshd
backend  = polling
logpath  = /var/log/bangui-test.log
bantime  = -1
`

const noopAction = "[Definition]\nactionstart =\nactionstop =\nactioncheck =\nactionflush =\nactionban =\nactionunban =\n"

// TestRealHost installs the package with dpkg on a Debian bookworm booted
// with systemd-nspawn beside Debian's fail2ban, and checks the service from
// the host: first start, numbers equal to fail2ban's own, countries from the
// discovered mmdb, recovery from a fail2ban restart, a quick stop, fail2ban's
// database untouched, and remove/purge.
func TestRealHost(t *testing.T) {
	if testing.Short() && os.Getenv(ciEnv) != "1" {
		t.Skip("boots a Debian container (minutes)")
	}
	if os.Geteuid() != 0 {
		if os.Getenv(ciEnv) == "1" {
			t.Fatal("the real-host test needs root (debootstrap, systemd-nspawn)")
		}
		t.Skip("needs root (debootstrap, systemd-nspawn)")
	}
	requireTools(t, "debootstrap", "systemd-nspawn", "nsenter", "dpkg", "mmdblookup")
	testStart := time.Now()
	phase := func(name string, since time.Time) {
		t.Logf("phase %-28s %s", name, time.Since(since).Round(100*time.Millisecond))
	}

	start := time.Now()
	deb := buildPackage(t)
	phase("package built", start)

	mmdb := testMMDB(t)

	start = time.Now()
	cached := cachedRootfs(t)
	phase("rootfs (cached or built)", start)
	root := copyRootfsFor(t, cached)

	// fail2ban: Debian's stock configuration, the sshd jail off (no sshd,
	// no journal reader in the container), two test jails.
	c := &container{t: t, root: root}
	c.writeFile("/etc/fail2ban/jail.d/defaults-debian.conf", "[sshd]\nenabled = false\n", 0o644)
	c.writeFile("/etc/fail2ban/jail.d/bangui-test.conf", testJails, 0o644)
	c.writeFile("/etc/fail2ban/action.d/bangui-noop.conf", noopAction, 0o644)
	c.writeFile("/var/log/bangui-test.log", "", 0o640)
	// The test GeoLite2 database where geoipupdate puts it.
	data, err := os.ReadFile(mmdb)
	if err != nil {
		t.Fatal(err)
	}
	c.writeFile("/var/lib/GeoIP/GeoLite2-Country.mmdb", string(data), 0o644)
	// The package's /etc/default file with a free port (the container
	// shares the host's network) and ip-api off (no test touches the
	// internet; the sample IPs are all in the mmdb anyway).
	port := freePort(t)
	defaults, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "debian", "bangui_exporter.default"))
	if err != nil {
		t.Fatal(err)
	}
	args := regexp.MustCompile(`--web\.listen-address=:9635`)
	if !args.Match(defaults) {
		t.Fatalf("bangui_exporter.default has no --web.listen-address=:9635:\n%s", defaults)
	}
	ourDefaults := args.ReplaceAllString(string(defaults), fmt.Sprintf("--web.listen-address=127.0.0.1:%d --geo.ipapi.url=", port))
	c.writeFile("/etc/default/bangui_exporter", ourDefaults, 0o644)
	debData, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	c.writeFile("/root/bangui-exporter.deb", string(debData), 0o644)

	start = time.Now()
	c = bootContainer(t, root)
	phase("container booted", start)

	// fail2ban is up with the test jails; ban sample IPs (public, in the
	// mmdb) in both jails, one IP in both.
	testkit.Eventually(t, 90*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := c.run(ctx, "fail2ban-client", "status")
		if err != nil || !strings.Contains(out, "test-mail") || !strings.Contains(out, "test-web") {
			return fmt.Errorf("fail2ban not ready (%s): %w", out, err)
		}
		return nil
	})
	ips := f2bsandbox.SampleIPs(12)
	bans := map[string][]string{"test-web": ips[:8], "test-mail": append([]string{ips[0]}, ips[8:]...)}
	for jail, list := range bans {
		c.must("fail2ban-client", append([]string{"set", jail, "banip"}, list...)...)
	}
	for jail, list := range bans {
		testkit.Eventually(t, 30*time.Second, func() error {
			if n := currentlyBanned(t, c, jail); n != len(list) {
				return fmt.Errorf("jail %s: fail2ban reports %d banned, want %d", jail, n, len(list))
			}
			return nil
		})
	}
	wantCountries := map[string]map[string]int{}
	for jail, list := range bans {
		wantCountries[jail] = map[string]int{}
		for _, ip := range list {
			wantCountries[jail][countryOf(t, mmdb, ip)]++
		}
	}
	t.Logf("countries per jail from mmdblookup: %v", wantCountries)

	// First start: dpkg -i on the stock host enables and starts the unit.
	start = time.Now()
	out := c.must("dpkg", "-i", "--force-confold", "/root/bangui-exporter.deb")
	t.Logf("dpkg -i:\n%s", out)
	if got := strings.TrimSpace(c.must("systemctl", "is-enabled", "bangui_exporter.service")); got != "enabled" {
		t.Errorf("after dpkg -i the unit is %q, want enabled", got)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	checkNumbers := func(what string) {
		t.Helper()
		testkit.Eventually(t, 90*time.Second, func() error {
			return numbersMatch(t, c, base, bans, wantCountries)
		})
		t.Logf("%s: /metrics equals fail2ban-client status per jail, countries match the mmdb", what)
	}
	checkNumbers("first start")
	phase("installed and exporting", start)
	if got := strings.TrimSpace(c.must("systemctl", "is-active", "bangui_exporter.service")); got != "active" {
		t.Errorf("bangui_exporter.service is %q", got)
	}
	journal := c.must("journalctl", "-u", "bangui_exporter.service", "--no-pager", "-o", "cat")
	if !strings.Contains(journal, "using the country database found at a standard path") || !strings.Contains(journal, "/var/lib/GeoIP/GeoLite2-Country.mmdb") {
		t.Errorf("the journal does not say which country database was discovered:\n%s", tail(journal, 30))
	}
	if mode := statMode(t, c.path("/var/lib/bangui_exporter")); mode != "drwx------" {
		t.Errorf("/var/lib/bangui_exporter mode %s, want drwx------", mode)
	}

	// The hardened unit's exposure, measured by the container's systemd.
	sec := c.must("systemd-analyze", "security", "--no-pager", "bangui_exporter.service")
	m := regexp.MustCompile(`Overall exposure level for bangui_exporter\.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security: no overall exposure:\n%s", sec)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("systemd-analyze security bangui_exporter.service (inside the container): %s", m[1])
	if score > 2.0 {
		t.Errorf("exposure %.1f > 2.0:\n%s", score, sec)
	}

	// fail2ban restarts: the exporter recovers by itself, without restart.
	mainPID := c.must("systemctl", "show", "-p", "MainPID", "--value", "bangui_exporter.service")

	// systemctl reload reopens the country database (SIGHUP) in place.
	c.must("systemctl", "reload", "bangui_exporter.service")
	testkit.Eventually(t, 30*time.Second, func() error {
		j := c.must("journalctl", "-u", "bangui_exporter.service", "--no-pager", "-o", "cat")
		if !strings.Contains(j, "SIGHUP") {
			return fmt.Errorf("no reload in the journal yet")
		}
		return nil
	})
	start = time.Now()
	c.must("systemctl", "restart", "fail2ban.service")
	checkNumbers("after systemctl restart fail2ban")
	phase("recovered from fail2ban restart", start)
	if got := c.must("systemctl", "show", "-p", "MainPID", "--value", "bangui_exporter.service"); got != mainPID {
		t.Errorf("the exporter was restarted (MainPID %s -> %s): it must recover by itself", strings.TrimSpace(mainPID), strings.TrimSpace(got))
	}

	// fail2ban stopped: a window of scrapes leaves its database and its
	// directory byte for byte as they were.
	c.must("systemctl", "stop", "fail2ban.service")
	dbDir := c.path("/var/lib/fail2ban")
	beforeSum, beforeList := dirState(t, dbDir)
	window := 60 * time.Second
	if w := os.Getenv("BANGUI_REALHOST_QUIET_WINDOW"); w != "" {
		if window, err = time.ParseDuration(w); err != nil {
			t.Fatal(err)
		}
	}
	start = time.Now()
	scrapes := 0
	for time.Since(start) < window {
		fams := scrape(t, base)
		scrapes++
		if v := single(fams, "fail2ban_server_up"); v != 0 {
			t.Errorf("fail2ban_server_up = %v with fail2ban stopped", v)
		}
		if v := single(fams, "fail2ban_up"); v != 1 {
			t.Errorf("fail2ban_up = %v: the database must stay readable with fail2ban stopped", v)
		}
		time.Sleep(500 * time.Millisecond)
	}
	afterSum, afterList := dirState(t, dbDir)
	if beforeSum != afterSum || beforeList != afterList {
		t.Errorf("fail2ban's database changed during %d scrapes with fail2ban stopped:\nbefore %s\n%s\nafter %s\n%s", scrapes, beforeSum, beforeList, afterSum, afterList)
	}
	t.Logf("fail2ban's database unchanged over %s (%d scrapes): sha256 %s", window, scrapes, afterSum)

	// A quick stop.
	start = time.Now()
	c.must("systemctl", "stop", "bangui_exporter.service")
	stopTook := time.Since(start)
	t.Logf("systemctl stop bangui_exporter took %s", stopTook.Round(10*time.Millisecond))
	if stopTook > 5*time.Second {
		t.Errorf("systemctl stop bangui_exporter took %s, want <= 5s", stopTook)
	}
	c.must("systemctl", "start", "bangui_exporter.service")

	// dpkg -r: stopped, state kept; dpkg -P: state gone.
	c.must("dpkg", "-r", "bangui-exporter")
	if out, _ := c.run(t.Context(), "systemctl", "is-active", "bangui_exporter.service"); strings.TrimSpace(out) == "active" {
		t.Errorf("bangui_exporter.service still active after dpkg -r")
	}
	if _, err := os.Stat(c.path("/var/lib/bangui_exporter/bangui.sqlite3")); err != nil {
		t.Errorf("dpkg -r must keep the state: %v", err)
	}
	if _, err := os.Stat(c.path("/usr/bin/bangui_exporter")); !os.IsNotExist(err) {
		t.Errorf("dpkg -r left /usr/bin/bangui_exporter: %v", err)
	}
	if _, err := os.Stat(c.path("/etc/default/bangui_exporter")); err != nil {
		t.Errorf("dpkg -r must keep the conffile: %v", err)
	}
	c.must("dpkg", "-P", "bangui-exporter")
	for _, p := range []string{"/var/lib/bangui_exporter", "/etc/default/bangui_exporter", "/etc/fail2ban/jail.d/bangui-exporter.conf"} {
		if _, err := os.Stat(c.path(p)); !os.IsNotExist(err) {
			t.Errorf("dpkg -P left %s: %v", p, err)
		}
	}
	t.Logf("real-host test took %s", time.Since(testStart).Round(time.Second))
}

// copyRootfsFor copies the cached rootfs for this run.
func copyRootfsFor(t *testing.T, cached string) string {
	t.Helper()
	start := time.Now()
	root := copyRootfs(t, cached)
	t.Logf("phase %-28s %s", "rootfs copied", time.Since(start).Round(100*time.Millisecond))
	return root
}

// testMMDB is the real GeoLite2 Country database of the tests
// (scripts/fetch-geoip.sh).
func testMMDB(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BANGUI_GEOIP_MMDB"); p != "" {
		return p
	}
	out, err := exec.CommandContext(t.Context(), filepath.Join(repoRoot(t), "scripts", "fetch-geoip.sh")).Output()
	if err != nil {
		if os.Getenv(ciEnv) == "1" {
			t.Fatalf("scripts/fetch-geoip.sh: %v", err)
		}
		t.Skipf("no test GeoLite2 database (scripts/fetch-geoip.sh: %v)", err)
	}
	return strings.TrimSpace(string(out))
}

// countryOf is the ISO code mmdblookup finds for ip ("ZZ" when none).
func countryOf(t *testing.T, mmdb, ip string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "mmdblookup", "--file", mmdb, "--ip", ip, "country", "iso_code").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Could not find") {
			return "ZZ"
		}
		t.Fatalf("mmdblookup %s: %v\n%s", ip, err, out)
	}
	m := regexp.MustCompile(`"([A-Z]{2})"`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("mmdblookup %s: no country in\n%s", ip, out)
	}
	return m[1]
}

var currentlyBannedRE = regexp.MustCompile(`Currently banned:\s+(\d+)`)

// currentlyBanned is what fail2ban-client status JAIL reports.
func currentlyBanned(t *testing.T, c *container, jail string) int {
	t.Helper()
	m := currentlyBannedRE.FindStringSubmatch(c.must("fail2ban-client", "status", jail))
	if m == nil {
		t.Fatalf("fail2ban-client status %s: no 'Currently banned'", jail)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// numbersMatch compares the exporter's /metrics with fail2ban's own answer
// and the expected countries.
func numbersMatch(t *testing.T, c *container, base string, bans map[string][]string, wantCountries map[string]map[string]int) error {
	t.Helper()
	fams, err := tryScrape(base)
	if err != nil {
		return err
	}
	if v := single(fams, "fail2ban_server_up"); v != 1 {
		return fmt.Errorf("fail2ban_server_up = %v", v)
	}
	if v := single(fams, "fail2ban_up"); v != 1 {
		return fmt.Errorf("fail2ban_up = %v", v)
	}
	for jail := range bans {
		status := currentlyBanned(t, c, jail)
		if got := sumWhere(fams, "fail2ban_jail_banned_current", "jail", jail); got != float64(status) {
			return fmt.Errorf("jail %s: fail2ban_jail_banned_current = %v, fail2ban-client status says %d", jail, got, status)
		}
		if got := sumWhere(fams, "fail2ban_banned_ips", "jail", jail); got != float64(status) {
			return fmt.Errorf("jail %s: sum of fail2ban_banned_ips = %v, fail2ban-client status says %d", jail, got, status)
		}
		for country, n := range wantCountries[jail] {
			if got := sumWhere(fams, "fail2ban_banned_ips", "jail", jail, "country", country); got != float64(n) {
				return fmt.Errorf("jail %s country %s: fail2ban_banned_ips = %v, want %d from the mmdb", jail, country, got, n)
			}
		}
	}
	return nil
}

func tryScrape(base string) (map[string]model.Vector, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	out := map[string]model.Vector{}
	for name, mf := range parsed {
		v, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, mf)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func scrape(t *testing.T, base string) map[string]model.Vector {
	t.Helper()
	fams, err := tryScrape(base)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// single is the value of a metric without labels (-1 when absent).
func single(fams map[string]model.Vector, name string) float64 {
	v := fams[name]
	if len(v) != 1 {
		return -1
	}
	return float64(v[0].Value)
}

// sumWhere sums a metric's samples whose labels match the pairs given.
func sumWhere(fams map[string]model.Vector, name string, labels ...string) float64 {
	var s float64
	for _, smp := range fams[name] {
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if string(smp.Metric[model.LabelName(labels[i])]) != labels[i+1] {
				ok = false
			}
		}
		if ok {
			s += float64(smp.Value)
		}
	}
	return s
}

// dirState is the sha256 of fail2ban's database and a listing of its
// directory (name, size, mode, modification time of every entry).
func dirState(t *testing.T, dir string) (sum, listing string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "fail2ban.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %d %s %s\n", e.Name(), fi.Size(), fi.Mode(), fi.ModTime().Format(time.RFC3339Nano))
	}
	return hex.EncodeToString(h[:]), b.String()
}

func statMode(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().String()
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
