package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/internal/testkit"
	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

// The real-engine test: a real Docker engine (Debian's docker.io) started
// inside the test's temporary directory, our image built on a busybox base
// made from Debian's busybox-static (no image registry is reachable), run
// against a sandboxed real fail2ban. See docs/deploy.md for what it covers
// and what it does not.

// dockerEnv is a running private Docker engine.
type dockerEnv struct {
	host   string // DOCKER_HOST
	docker string // the docker client
}

// cmd runs the docker client (or another tool) against the private engine
// and returns its combined output.
func (d *dockerEnv) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (d *dockerEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.run(t.Context(), d.docker, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// startDockerd starts dockerd with its data root, exec root, pid file and
// socket inside dir, without touching the host's network configuration
// (no iptables, no default bridge), and stops it by its PID when the test
// ends, failed or not.
func startDockerd(t *testing.T, dir string) *dockerEnv {
	t.Helper()
	dockerd := requireTool(t, "dockerd", "/usr/sbin/dockerd", "/usr/bin/dockerd")
	docker := requireTool(t, "docker")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	logPath := filepath.Join(dir, "dockerd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dockerd,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"-H", "unix://"+sock,
		"--iptables=false", "--ip6tables=false", "--bridge=none",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a signal to the test does not reach it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// By PID: SIGTERM stops the containers and containerd with it.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			t.Logf("dockerd (PID %d) stopped: %v", cmd.Process.Pid, err)
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			err := <-exited
			t.Errorf("dockerd: %v", err)
			t.Errorf("dockerd (PID %d) did not stop within 60 s of SIGTERM; killed", cmd.Process.Pid)
		}
		_ = logFile.Close()
		unmountBelow(t, dir)
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			if len(data) > 6000 {
				data = data[len(data)-6000:]
			}
			t.Logf("--- dockerd log (tail) ---\n%s", data)
		}
	})
	d := &dockerEnv{host: "unix://" + sock, docker: docker}
	testkit.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			data, _ := os.ReadFile(logPath)
			return fmt.Errorf("dockerd exited: %w\n%s", err, data)
		default:
		}
		_, err := d.run(t.Context(), docker, "version", "--format", "{{.Server.Version}}")
		return err
	})
	return d
}

// unmountBelow unmounts what dockerd left mounted below dir (its network
// namespace file), so the temporary directory can be removed.
func unmountBelow(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("read mountinfo: %v", err)
		return
	}
	var points []string
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	for _, p := range slices.Backward(points) {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", p, err)
		}
	}
}

// busyboxDeb returns Debian's busybox-static package, downloaded with
// apt-get into a cache outside the clone (BANGUI_CACHE_DIR, or the user's
// cache directory) on first use.
func busyboxDeb(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("BANGUI_CACHE_DIR")
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			t.Fatalf("no cache directory for busybox-static: %v (set BANGUI_CACHE_DIR)", err)
		}
		cache = filepath.Join(base, "bangui_exporter")
	}
	dir := filepath.Join(cache, "busybox-static")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	find := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, "busybox-static_*.deb"))
		slices.Sort(m)
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1]
	}
	if deb := find(); deb != "" {
		return deb
	}
	aptGet := requireTool(t, "apt-get")
	cmd := exec.CommandContext(t.Context(), aptGet, "download", "busybox-static")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get download busybox-static: %v\n%s", err, out)
	}
	deb := find()
	if deb == "" {
		t.Fatal("apt-get download busybox-static left no .deb")
	}
	return deb
}

// importBusybox makes the base image local/busybox:latest from Debian's
// busybox-static: the static busybox with its applet links, /etc/passwd
// and /etc/group with root and nobody, /tmp and /var.
func importBusybox(t *testing.T, d *dockerEnv, dir string) string {
	t.Helper()
	const image = "local/busybox:latest"
	dpkgDeb := requireTool(t, "dpkg-deb")
	rootfs := filepath.Join(dir, "busybox-rootfs")
	if out, err := exec.CommandContext(t.Context(), dpkgDeb, "-x", busyboxDeb(t), rootfs).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	bb := filepath.Join(rootfs, "bin", "busybox")
	out, err := exec.CommandContext(t.Context(), bb, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for applet := range strings.FieldsSeq(string(out)) {
		link := filepath.Join(rootfs, "bin", applet)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink("busybox", link); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"etc", "tmp", "var", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tarCmd := exec.CommandContext(t.Context(), "tar", "-C", rootfs, "-c", ".")
	importCmd := exec.CommandContext(t.Context(), d.docker, "import", "-", image)
	importCmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host)
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	importCmd.Stdin = pipe
	if err := tarCmd.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := importCmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v\n%s", err, out)
	}
	if err := tarCmd.Wait(); err != nil {
		t.Fatalf("tar of the busybox rootfs: %v", err)
	}
	return image
}

// dockerArch is the host's platform in promu's and the Dockerfile's names.
func dockerArch() string {
	if runtime.GOARCH == "arm" {
		return "armv7"
	}
	return runtime.GOARCH
}

// buildImage builds our image as make docker does: the static binary in
// .build/linux-ARCH/, the data directory staged in .build/docker/, and
// deploy/Dockerfile with BASE set to the local base image.
func buildImage(t *testing.T, d *dockerEnv, dir, base, tag string) {
	t.Helper()
	ctxDir := filepath.Join(dir, "context")
	arch := dockerArch()
	bin := filepath.Join(ctxDir, ".build", "linux-"+arch, "bangui_exporter")
	// The Makefile's flags (without the version ldflags): a cache shared
	// with make docker.
	build := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-tags", "netgo,osusergo", "-o", bin, ".")
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build of the image's binary: %v\n%s", err, out)
	}
	// Parents first; chmod despite the umask.
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Join(ctxDir, ".build", "docker", "empty"), 0o755},
		{filepath.Join(ctxDir, ".build", "docker", "var-lib"), 0o755},
		{filepath.Join(ctxDir, ".build", "docker", "var-lib", "bangui_exporter"), 0o770},
	} {
		if err := os.MkdirAll(p.path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p.path, p.mode); err != nil {
			t.Fatal(err)
		}
	}
	d.must(t, "build", "-q", "-f", filepath.Join(deployDir(t), "Dockerfile"),
		"--build-arg", "ARCH="+arch, "--build-arg", "OS=linux", "--build-arg", "BASE="+base,
		"-t", tag, ctxDir)
}

// buildPrometheusImage builds a Prometheus image from Debian's prometheus
// binary and the shared libraries it links, on the busybox base, with the
// entrypoint of the upstream image.
func buildPrometheusImage(t *testing.T, d *dockerEnv, dir, base, tag string) {
	t.Helper()
	prom := requireTool(t, "prometheus", "/usr/bin/prometheus")
	ctxDir := filepath.Join(dir, "prometheus-context")
	files := []string{prom}
	out, err := exec.CommandContext(t.Context(), "ldd", prom).CombinedOutput()
	if err == nil { // a static binary: ldd fails, nothing to add
		for line := range strings.SplitSeq(string(out), "\n") {
			for f := range strings.FieldsSeq(line) {
				if strings.HasPrefix(f, "/") {
					files = append(files, f)
				}
			}
		}
	}
	var dockerfile strings.Builder
	fmt.Fprintf(&dockerfile, "FROM %s\n", base)
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("f%d", i)
		if err := os.MkdirAll(ctxDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctxDir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
		target := f
		if i == 0 {
			target = "/bin/prometheus"
		}
		fmt.Fprintf(&dockerfile, "COPY %s %s\n", name, target)
	}
	dockerfile.WriteString("ENTRYPOINT [\"/bin/prometheus\"]\n")
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(dockerfile.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d.must(t, "build", "-q", "-t", tag, ctxDir)
}

// mmdbCountries looks IPs up in a MaxMind database as the exporter's
// documentation says it does (country, else registered country); "ZZ" when
// the database has no country.
func mmdbCountries(t *testing.T, path string, ips []string) map[string]string {
	t.Helper()
	db, err := maxminddb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }() // read-only
	out := map[string]string{}
	for _, ip := range ips {
		var rec struct {
			Country struct {
				ISOCode string `maxminddb:"iso_code"`
			} `maxminddb:"country"`
			Registered struct {
				ISOCode string `maxminddb:"iso_code"`
			} `maxminddb:"registered_country"`
		}
		if err := db.Lookup(netip.MustParseAddr(ip)).Decode(&rec); err != nil {
			t.Fatal(err)
		}
		switch {
		case rec.Country.ISOCode != "":
			out[ip] = rec.Country.ISOCode
		case rec.Registered.ISOCode != "":
			out[ip] = rec.Registered.ISOCode
		default:
			out[ip] = "ZZ"
		}
	}
	return out
}

// realMMDB is the real GeoLite2 Country database of testdata/geoip
// (scripts/fetch-geoip.sh, run by make test).
func realMMDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), "testdata", "geoip", "GeoLite2-Country.mmdb")
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("%s missing (run scripts/fetch-geoip.sh): %v", path, err)
		}
		t.Skipf("%s missing (run scripts/fetch-geoip.sh; with BANGUI_CI=1 this fails): %v", path, err)
	}
	return path
}

func parseExposition(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// want is what the exporter must expose, from fail2ban-client and the mmdb.
type want struct {
	byJail        map[string]float64
	byJailCountry map[string]float64 // "jail/country"
}

// fail2banTruth asks fail2ban-client for each jail's banned IPs and maps
// them to countries.
func fail2banTruth(ctx context.Context, t *testing.T, sb *f2bsandbox.Sandbox, countries map[string]string) want {
	t.Helper()
	w := want{byJail: map[string]float64{}, byJailCountry: map[string]float64{}}
	for _, jail := range sb.Jails() {
		st, err := sb.Status(ctx, jail)
		if err != nil {
			t.Fatal(err)
		}
		w.byJail[jail] = float64(st.CurrentlyBanned)
		if len(st.BannedIPs) != st.CurrentlyBanned {
			t.Fatalf("jail %s: %d banned but %d IPs listed", jail, st.CurrentlyBanned, len(st.BannedIPs))
		}
		for _, ip := range st.BannedIPs {
			c, ok := countries[ip]
			if !ok {
				t.Fatalf("fail2ban bans %s, which the test did not ban", ip)
			}
			w.byJailCountry[jail+"/"+c]++
		}
	}
	return w
}

// exposed scrapes the exporter: banned IPs per jail and per jail/country,
// and every sample as name{labels} → value for further checks.
func exposed(t *testing.T, exporterURL string) (want, map[string]float64, error) {
	code, body, err := httpGet(t.Context(), exporterURL+"/metrics")
	if err != nil || code != http.StatusOK {
		return want{}, nil, fmt.Errorf("scrape: %d %v", code, err) //nolint:errorlint // err may be nil
	}
	fams := parseExposition(t, body)
	got := want{byJail: sumBy(fams, "fail2ban_banned_ips", "jail", nil), byJailCountry: map[string]float64{}}
	all := map[string]float64{}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			var labels []string
			var jail, country string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
				switch lp.GetName() {
				case "jail":
					jail = lp.GetValue()
				case "country":
					country = lp.GetValue()
				}
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			all[name+"{"+strings.Join(labels, ",")+"}"] = v
			if name == "fail2ban_banned_ips" {
				got.byJailCountry[jail+"/"+country] += v
			}
		}
	}
	return got, all, nil
}

// mmdbFound is the sample of IPs the mmdb provider found a country for.
const mmdbFound = "bangui_exporter_geo_lookups_total{provider=mmdb,result=found}"

// keysWith lists the samples whose name contains substr.
func keysWith(all map[string]float64, substr string) []string {
	var out []string
	for k := range all {
		if strings.Contains(k, substr) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// containerRun describes one docker run of our image.
type containerRun struct {
	name   string
	user   string // "" keeps the image's (nobody)
	volume string // the named volume of the app database
	mmdb   string // host path mounted at /geo/countries.mmdb
	socket bool   // mount fail2ban's socket directory and use it
	port   int
}

func (r containerRun) args(image, libDir, runDir string) []string {
	args := []string{"run", "-d", "--name", r.name, "--network", "host",
		"--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		// The image's own HEALTHCHECK command; only checked more often.
		"--health-interval", "1s", "--health-start-period", "30s",
		"-v", libDir + ":/var/lib/fail2ban:ro",
		"-v", r.mmdb + ":/geo/countries.mmdb:ro",
		"-v", r.volume + ":/var/lib/bangui_exporter",
	}
	if r.user != "" {
		args = append(args, "--user", r.user)
	}
	if r.socket {
		args = append(args, "-v", runDir+":/var/run/fail2ban:ro")
	}
	args = append(args, image,
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", r.port),
		"--fail2ban.db=/var/lib/fail2ban/fail2ban.sqlite3",
		"--storage.path=/var/lib/bangui_exporter/bangui.sqlite3",
		"--geo.mmdb=/geo/countries.mmdb", "--geo.providers=mmdb", "--geo.ipapi.url=",
		"--log.level=debug",
	)
	if !r.socket {
		// fail2ban's socket is root-only: nobody goes without it.
		args = append(args, "--fail2ban.socket=")
	}
	return args
}

func TestDockerRealEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("real-engine test skipped in -short mode")
	}
	start := time.Now()
	setfacl := requireTool(t, "setfacl")
	composeBin := requireTool(t, "docker-compose")
	f2bsandbox.RequireFail2ban(t)
	mmdb := realMMDB(t)
	if os.Geteuid() != 0 {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatal("the real-engine test starts dockerd and needs root (CI runs as root)")
		}
		t.Skip("the real-engine test starts dockerd and needs root")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()

	// A sandboxed fail2ban whose database and socket sit in directories
	// laid out like the host's /var/lib/fail2ban and /var/run/fail2ban.
	libDir, runDir := filepath.Join(dir, "lib"), filepath.Join(dir, "run")
	for _, d := range []string{libDir, runDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{Dir: libDir, Socket: filepath.Join(runDir, "fail2ban.sock")})
	ips := f2bsandbox.SampleIPs(30)
	plan := map[string][]string{"sshd": ips[:14], "perm": ips[14:22], "incr": ips[22:]}
	for jail, list := range plan {
		if err := sb.BanIP(ctx, jail, list...); err != nil {
			t.Fatal(err)
		}
	}
	countries := mmdbCountries(t, mmdb, ips)
	var truth want
	testkit.Eventually(t, 30*time.Second, func() error {
		truth = fail2banTruth(ctx, t, sb, countries)
		for jail, list := range plan {
			if truth.byJail[jail] != float64(len(list)) {
				return fmt.Errorf("jail %s: %v banned, want %d", jail, truth.byJail[jail], len(list))
			}
		}
		return nil
	})
	// fail2ban's root 0600 database, readable by nobody through an ACL,
	// as docs/deploy.md tells users to do.
	dbPath := sb.DBPath()
	if filepath.Dir(dbPath) != libDir || filepath.Base(dbPath) != "fail2ban.sqlite3" {
		t.Fatalf("sandbox database at %s, want %s/fail2ban.sqlite3", dbPath, libDir)
	}
	for _, acl := range [][]string{{"-m", "u:65534:x", libDir}, {"-m", "u:65534:r", dbPath}} {
		if out, err := exec.CommandContext(ctx, setfacl, acl...).CombinedOutput(); err != nil {
			t.Fatalf("setfacl %v: %v\n%s", acl, err, out)
		}
	}
	// fail2ban writes a ban a moment after it reports it: wait for the
	// file to settle before taking its checksum.
	var f2bSum string
	testkit.Eventually(t, 30*time.Second, func() error {
		a := sha256File(t, dbPath)
		time.Sleep(time.Second)
		if b := sha256File(t, dbPath); a != b {
			return errors.New("fail2ban's database still changes")
		}
		f2bSum = a
		return nil
	})

	engineStart := time.Now()
	d := startDockerd(t, filepath.Join(dir, "docker"))
	t.Logf("dockerd ready in %v", time.Since(engineStart).Round(time.Millisecond))
	buildStart := time.Now()
	base := importBusybox(t, d, dir)
	const image = "bangui_exporter-test:latest"
	buildImage(t, d, dir, base, image)
	t.Logf("base image and our image built in %v", time.Since(buildStart).Round(time.Millisecond))
	if user := d.must(t, "image", "inspect", "-f", "{{.Config.User}}", image); user != "nobody" {
		t.Errorf("image user %q, want nobody", user)
	}

	// An mmdb that knows none of the banned IPs: a recreated container
	// that still shows the real countries has them from its geo cache.
	emptyMMDB := filepath.Join(dir, "empty.mmdb")
	testmmdb.Write(t, emptyMMDB, testmmdb.Options{}, []testmmdb.Network{{CIDR: "192.0.2.0/24", Country: "FR"}})

	runAndCheck := func(t *testing.T, r containerRun, expect want, extra func(all map[string]float64) error) map[string]float64 {
		t.Helper()
		d.must(t, r.args(image, libDir, runDir)...)
		t.Cleanup(func() {
			if t.Failed() {
				out, _ := d.run(context.Background(), d.docker, "logs", "--tail", "60", r.name)
				t.Logf("--- %s logs ---\n%s", r.name, out)
			}
		})
		url := fmt.Sprintf("http://127.0.0.1:%d", r.port)
		var all map[string]float64
		testkit.Eventually(t, 90*time.Second, func() error {
			got, a, err := exposed(t, url)
			if err != nil {
				return err
			}
			if !maps.Equal(got.byJail, expect.byJail) {
				return fmt.Errorf("banned per jail %v, fail2ban-client says %v", got.byJail, expect.byJail)
			}
			if !maps.Equal(got.byJailCountry, expect.byJailCountry) {
				return fmt.Errorf("banned per jail/country %v, want %v", got.byJailCountry, expect.byJailCountry)
			}
			if a["fail2ban_up{}"] != 1 {
				return errors.New("fail2ban_up is not 1")
			}
			if extra != nil {
				if err := extra(a); err != nil {
					return err
				}
			}
			all = a
			return nil
		})
		// The image's HEALTHCHECK (our healthcheck subcommand) turns healthy.
		testkit.Eventually(t, 60*time.Second, func() error {
			status := d.must(t, "inspect", "-f", "{{.State.Health.Status}}", r.name)
			if status != "healthy" {
				return fmt.Errorf("health %s", status)
			}
			return nil
		})
		return all
	}
	stop := func(t *testing.T, name string) {
		t.Helper()
		// docker stop: SIGTERM, the exporter flushes and closes its database.
		d.must(t, "stop", "-t", "30", name)
		d.must(t, "rm", name)
	}

	t.Run("nobody with a read ACL", func(t *testing.T) {
		r := containerRun{name: "exporter-nobody", volume: "data-nobody", mmdb: mmdb, port: freePort(t)}
		var ingested float64
		runAndCheck(t, r, truth, func(all map[string]float64) error {
			// The archive ingests in the background: wait for every ban.
			ingested = all["bangui_exporter_archive_ingested_events_total{}"]
			if ingested < float64(len(ips)) || all["bangui_exporter_archive_events{}"] != ingested {
				return fmt.Errorf("archive: %v ingested, %v events; want at least %d, all kept", ingested, all["bangui_exporter_archive_events{}"], len(ips))
			}
			if all[mmdbFound] == 0 {
				return fmt.Errorf("no %s in the first run: %v", mmdbFound, keysWith(all, "geo_lookups"))
			}
			return nil
		})
		stop(t, r.name)

		// Removed and recreated on the same volume, with an mmdb that
		// knows none of the IPs: countries come from the geo cache, and the
		// archive holds every event without ingesting them again.
		r.name, r.mmdb = "exporter-nobody-2", emptyMMDB
		runAndCheck(t, r, truth, func(all map[string]float64) error {
			if n := all["bangui_exporter_archive_events{}"]; n != ingested {
				return fmt.Errorf("archive holds %v events after the restart, %v before", n, ingested)
			}
			if n := all["bangui_exporter_archive_ingested_events_total{}"]; n != 0 {
				return fmt.Errorf("the recreated container ingested %v events again: the archive was lost", n)
			}
			if v := all[mmdbFound]; v != 0 {
				return fmt.Errorf("%s = %v: the recreated container looked countries up again", mmdbFound, v)
			}
			return nil
		})
		stop(t, r.name)
	})

	t.Run("root without capabilities, with the socket", func(t *testing.T) {
		r := containerRun{name: "exporter-root", user: "root", volume: "data-root", mmdb: mmdb, socket: true, port: freePort(t)}
		runAndCheck(t, r, truth, func(all map[string]float64) error {
			if all["fail2ban_server_up{}"] != 1 {
				return errors.New("fail2ban_server_up is not 1: the socket is not reachable")
			}
			for jail, n := range truth.byJail {
				if got := all["fail2ban_jail_banned_current{jail="+jail+"}"]; got != n {
					return fmt.Errorf("fail2ban_jail_banned_current{jail=%s} = %v, fail2ban-client says %v", jail, got, n)
				}
			}
			return nil
		})
		caps := d.must(t, "inspect", "-f", "{{json .HostConfig.CapDrop}} {{.HostConfig.ReadonlyRootfs}}", r.name)
		if caps != `["ALL"] true` {
			t.Errorf("container runs with %s, want every capability dropped and a read-only root", caps)
		}
		stop(t, r.name)
	})

	t.Run("compose", func(t *testing.T) {
		compose := func(args ...string) (string, error) {
			return d.run(ctx, composeBin, args...)
		}
		file := filepath.Join(deployDir(t), "docker-compose.yml")
		if _, err := compose("-f", file, "config", "-q"); err != nil {
			t.Fatalf("docker-compose config rejects %s: %v", file, err)
		}
		const promImage = "local/prometheus:test"
		buildPrometheusImage(t, d, dir, base, promImage)
		exporterPort, promPort := freePort(t), freePort(t)
		// The sandbox's fail2ban instead of the compose fail2ban service
		// (whose Debian base image cannot be pulled here): an override
		// file replaces the shared volumes by the sandbox's directories.
		override := filepath.Join(dir, "override.yml")
		overrideYAML := fmt.Sprintf(`version: "3.8"
services:
  bangui_exporter:
    volumes:
      - %s:/var/lib/fail2ban:ro
      - %s:/var/run/fail2ban:ro
`, libDir, runDir)
		if err := os.WriteFile(override, []byte(overrideYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		project := fmt.Sprintf("banguitest%d", os.Getpid())
		env := []string{
			"BANGUI_EXPORTER_IMAGE=" + image, "PROMETHEUS_IMAGE=" + promImage,
			fmt.Sprintf("BANGUI_EXPORTER_PORT=%d", exporterPort), fmt.Sprintf("PROMETHEUS_PORT=%d", promPort),
		}
		composeEnv := func(args ...string) (string, error) {
			cmd := exec.CommandContext(ctx, composeBin, append([]string{"-p", project, "-f", file, "-f", override}, args...)...)
			cmd.Env = append(append(os.Environ(), "DOCKER_HOST="+d.host), env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				return string(out), fmt.Errorf("docker-compose %v: %w\n%s", args, err, out)
			}
			return string(out), nil
		}
		if out, err := composeEnv("config"); err != nil {
			t.Fatal(err)
		} else if !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d:9635", exporterPort)) && !strings.Contains(out, "host_ip: 127.0.0.1") {
			t.Errorf("the compose file does not publish the exporter on loopback:\n%s", out)
		}
		t.Cleanup(func() {
			if t.Failed() {
				out, _ := composeEnv("logs", "--no-color", "--tail", "40")
				t.Logf("--- compose logs ---\n%s", out)
			}
			if out, err := composeEnv("down", "-v", "-t", "20"); err != nil {
				t.Errorf("docker-compose down: %v\n%s", err, out)
			}
		})
		if _, err := composeEnv("up", "-d", "--no-deps", "bangui_exporter", "prometheus"); err != nil {
			t.Fatal(err)
		}
		exporterURL := fmt.Sprintf("http://127.0.0.1:%d", exporterPort)
		testkit.Eventually(t, 90*time.Second, func() error {
			got, all, err := exposed(t, exporterURL)
			if err != nil {
				return err
			}
			if !maps.Equal(got.byJail, truth.byJail) || all["fail2ban_server_up{}"] != 1 {
				return fmt.Errorf("compose exporter: banned per jail %v (want %v), server_up %v", got.byJail, truth.byJail, all["fail2ban_server_up{}"])
			}
			return nil
		})
		// The image's health check, under compose's own settings (listen
		// address :9635 from the compose command).
		id, err := composeEnv("ps", "-q", "bangui_exporter")
		if err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 90*time.Second, func() error {
			if status := d.must(t, "inspect", "-f", "{{.State.Health.Status}}", strings.TrimSpace(id)); status != "healthy" {
				return fmt.Errorf("compose exporter health %s", status)
			}
			return nil
		})
		// Prometheus (compose's config and rules) scrapes the exporter by
		// its service name.
		promURL := fmt.Sprintf("http://127.0.0.1:%d", promPort)
		testkit.Eventually(t, 120*time.Second, func() error {
			code, body, err := httpGet(ctx, promURL+"/api/v1/query?query=up")
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("query: %d %v", code, err) //nolint:errorlint // err may be nil
			}
			var q struct {
				Data struct {
					Result []struct {
						Metric map[string]string `json:"metric"`
						Value  [2]any            `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			if err := json.Unmarshal(body, &q); err != nil {
				return err
			}
			for _, r := range q.Data.Result {
				if r.Metric["job"] == "fail2ban" && r.Value[1] == "1" {
					return nil
				}
			}
			return fmt.Errorf("no up{job=fail2ban} == 1 yet: %s", body)
		})
		code, body, err := httpGet(ctx, promURL+"/api/v1/rules")
		if err != nil || code != http.StatusOK || !bytes.Contains(body, []byte("Fail2ban")) {
			t.Errorf("Prometheus has not loaded our rules: %d %v %.300s", code, err, body)
		}
	})

	// The exporter never wrote to fail2ban's database.
	if got := sha256File(t, dbPath); got != f2bSum {
		t.Errorf("fail2ban's database changed while the containers ran: sha256 %s, before %s", got, f2bSum)
	}
	if extra, _ := filepath.Glob(dbPath + "-*"); len(extra) != 0 {
		t.Errorf("files next to fail2ban's database: %v", extra)
	}
	t.Logf("real-engine test body took %v", time.Since(start).Round(time.Millisecond))
}
