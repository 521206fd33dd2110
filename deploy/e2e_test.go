package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/bangui/bangui_exporter/dashboards"
	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/internal/testkit"
	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

// The end-to-end test: a real fail2ban-server in a sandbox with bans, the
// real exporter binary reading it, and a real Prometheus scraping the
// exporter with our scrape config and rules. Every PromQL expression of
// the dashboards (variables substituted with real values) and of the rules
// must run through /api/v1/query; the world-map and per-jail panels must
// return exactly what the exporter exposes and what fail2ban reports.
//
// It needs fail2ban, prometheus and a main package that builds; without
// them it skips, except in CI (BANGUI_CI set), where it fails.

// banPlan is which sample IPs the test bans in which jail, and which
// country the test's MaxMind database gives each of them. Late bans happen
// after the exporter started, so fail2ban_bans_total counts them.
type banPlan struct {
	jails     map[string][]string // jail → IPs banned before the exporter starts
	late      map[string][]string // jail → IPs banned while it runs
	countries map[string]string   // IP → country
	asns      map[string]uint32   // IP → autonomous system (the test's ASN database)
}

// planCities are the test City database's place of each planned country.
var planCities = map[string]struct {
	city     string
	lat, lon float64
}{
	"DE": {"Berlin", 52.5196, 13.4069}, "US": {"Ashburn", 39.0438, -77.4874}, "CN": {"Beijing", 39.9042, 116.4074},
	"BR": {"Sao Paulo", -23.5505, -46.6333}, "JP": {"Tokyo", 35.6895, 139.6917},
}

func newBanPlan() banPlan {
	ips := f2bsandbox.SampleIPs(34)
	codes := []string{"DE", "US", "CN", "BR", "JP"}
	p := banPlan{jails: map[string][]string{}, late: map[string][]string{}, countries: map[string]string{}, asns: map[string]uint32{}}
	for i, ip := range ips {
		switch {
		case i < 18:
			p.jails["sshd"] = append(p.jails["sshd"], ip)
		case i < 25:
			p.jails["perm"] = append(p.jails["perm"], ip)
		case i < 30:
			p.jails["incr"] = append(p.jails["incr"], ip)
		default:
			p.late["sshd"] = append(p.late["sshd"], ip)
		}
		// Some IPs stay out of the database: they count as ZZ.
		if i%7 != 6 {
			p.countries[ip] = codes[i%len(codes)]
		}
		// Some IPs stay out of the ASN database: they count as "unknown".
		if i%5 != 4 {
			p.asns[ip] = 64496 + uint32(i%3)
		}
	}
	return p
}

// expected returns IPs summed by a label ("jail" or "country") over the
// given bans; geo tells whether countries are resolved.
func (p banPlan) expected(bans []map[string][]string, by string, geo bool) map[string]float64 {
	out := map[string]float64{}
	for _, jails := range bans {
		for jail, ips := range jails {
			for _, ip := range ips {
				key := jail
				if by == "country" {
					key = "ZZ"
					if c, ok := p.countries[ip]; ok && geo {
						key = c
					}
				}
				out[key]++
			}
		}
	}
	return out
}

// writeMMDB writes a GeoLite2-City-layout database giving each planned
// IP its country and its country's city (planCities).
func (p banPlan) writeMMDB(t *testing.T, path string) {
	t.Helper()
	nets := make([]testmmdb.Network, 0, len(p.countries))
	for ip, country := range p.countries {
		c := planCities[country]
		nets = append(nets, testmmdb.Network{CIDR: ip, Country: country, City: c.city, Lat: c.lat, Lon: c.lon})
	}
	testmmdb.Write(t, path, testmmdb.Options{Layout: testmmdb.City}, nets)
}

// writeASNMMDB writes a GeoLite2-ASN-layout database giving each planned
// IP its autonomous system.
func (p banPlan) writeASNMMDB(t *testing.T, path string) {
	t.Helper()
	nets := make([]testmmdb.Network, 0, len(p.asns))
	for ip, asn := range p.asns {
		nets = append(nets, testmmdb.Network{CIDR: ip, ASNumber: asn, ASOrg: fmt.Sprintf("Test network %d", asn)})
	}
	testmmdb.Write(t, path, testmmdb.Options{Layout: testmmdb.ASN}, nets)
}

// expectedMaps returns banned IPs (pairs) by AS ("AS64496"; IPs without
// one left out) and by city (IPs without a place left out).
func (p banPlan) expectedMaps(bans []map[string][]string) (byASN, byCity map[string]float64) {
	byASN, byCity = map[string]float64{}, map[string]float64{}
	for _, jails := range bans {
		for _, ips := range jails {
			for _, ip := range ips {
				if asn, ok := p.asns[ip]; ok {
					byASN[fmt.Sprintf("AS%d", asn)]++
				}
				if c, ok := p.countries[ip]; ok {
					byCity[planCities[c].city]++
				}
			}
		}
	}
	return byASN, byCity
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// startProcess runs a command until the test ends (SIGTERM, then a kill
// after 10 s) or the test binary dies, with its output in a log file shown
// when the test fails.
func startProcess(t *testing.T, name string, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	// A test binary that dies (a -timeout panic skips every Cleanup) takes
	// its processes with it rather than leave 50 exporters and two stores
	// running on the machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait() // the exit status of a process stopped by a signal
		if err := logFile.Close(); err != nil {
			t.Errorf("close %s log: %v", name, err)
		}
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			if len(data) > 4000 {
				data = data[len(data)-4000:]
			}
			t.Logf("--- %s log (tail) ---\n%s", name, data)
		}
	})
}

func httpGet(ctx context.Context, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	if closeErr := resp.Body.Close(); err == nil {
		err = closeErr
	}
	return resp.StatusCode, body, err
}

// buildExporter builds the main package. A tree whose main package does not
// build yet skips the test, except in CI.
func buildExporter(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bangui_exporter")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		if os.Getenv("BANGUI_CI") == "1" {
			t.Fatalf("go build of the exporter failed: %v\n%s", err, out)
		}
		t.Skipf("the exporter does not build yet (set BANGUI_CI=1 to make this a failure): %v\n%s", err, out)
	}
	return bin
}

// promQuery is the answer of /api/v1/query for a vector or scalar.
type promQuery struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

type vectorSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func query(t *testing.T, base, expr string) promQuery {
	t.Helper()
	_, body, err := httpGet(t.Context(), base+"/api/v1/query?query="+url.QueryEscape(expr))
	if err != nil {
		t.Fatalf("query %q: %v", expr, err)
	}
	var q promQuery
	if err := json.Unmarshal(body, &q); err != nil {
		t.Fatalf("query %q: %v: %s", expr, err, body)
	}
	return q
}

// queryRange runs expr over the last two minutes in 15 s steps.
func queryRange(t *testing.T, base, expr string) promQuery {
	t.Helper()
	end := time.Now()
	v := url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(end.Add(-2*time.Minute).Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {"15"},
	}
	_, body, err := httpGet(t.Context(), base+"/api/v1/query_range?"+v.Encode())
	if err != nil {
		t.Fatalf("query_range %q: %v", expr, err)
	}
	var q promQuery
	if err := json.Unmarshal(body, &q); err != nil {
		t.Fatalf("query_range %q: %v: %s", expr, err, body)
	}
	return q
}

// vectorBy runs expr and sums its vector result by label.
func vectorBy(t *testing.T, base, expr, label string) (map[string]float64, error) {
	q := query(t, base, expr)
	if q.Status != "success" {
		return nil, fmt.Errorf("%s: %s", q.ErrorType, q.Error)
	}
	if q.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", q.Data.ResultType)
	}
	var samples []vectorSample
	if err := json.Unmarshal(q.Data.Result, &samples); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, s := range samples {
		v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		if err != nil {
			return nil, err
		}
		out[s.Metric[label]] += v
	}
	return out, nil
}

// exposition scrapes the exporter and sums a family by a label.
func exposition(t *testing.T, exporterURL string) map[string]*dto.MetricFamily {
	t.Helper()
	_, body, err := httpGet(t.Context(), exporterURL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return families
}

func sumBy(families map[string]*dto.MetricFamily, name, label string, match map[string]string) map[string]float64 {
	out := map[string]float64{}
	fam, ok := families[name]
	if !ok {
		return out
	}
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		skip := false
		for k, v := range match {
			if labels[k] != v {
				skip = true
			}
		}
		if skip {
			continue
		}
		v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
		out[labels[label]] += v
	}
	return out
}

// helpFlags returns the long flags the exporter's --help lists.
func helpFlags(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), bin, "--help-long").CombinedOutput()
	if err != nil {
		out, err = exec.CommandContext(t.Context(), bin, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", bin, err, out)
		}
	}
	flags := map[string]bool{}
	for f := range strings.FieldsSeq(string(out)) {
		if name, ok := strings.CutPrefix(f, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			flags[strings.TrimRight(name, ",")] = true
		}
	}
	return flags
}

func TestEndToEndWithRealPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	prometheusBin := requireTool(t, "prometheus", "/usr/bin/prometheus")
	f2bsandbox.RequireFail2ban(t)
	bin := buildExporter(t)
	flags := helpFlags(t, bin)

	// The flags this test relies on exist: a renamed or removed one fails
	// here instead of silently dropping that part of the test.
	for _, name := range []string{"fail2ban.socket", "geo.mmdb", "geo.providers", "geo.ipapi.url", "storage.path"} {
		if !flags[name] {
			t.Fatalf("the exporter has no --%s flag", name)
		}
	}
	// Every flag the deploy kit passes exists in the binary.
	u := unitDirectives(t, "systemd/bangui_exporter.service")
	kitArgs := unitExecArgs(t, u)[1:]
	kitArgs = append(kitArgs, loadCompose(t).Services["bangui_exporter"].Command...)
	for _, a := range kitArgs {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !flags[name] {
			t.Errorf("the deploy kit passes --%s, which the exporter does not know", name)
		}
	}

	plan := newBanPlan()
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	for _, jail := range []string{"sshd", "perm", "incr"} {
		if err := sb.BanIP(ctx, jail, plan.jails[jail]...); err != nil {
			t.Fatal(err)
		}
	}
	// fail2ban writes a ban to its database a moment after the ban.
	testkit.Eventually(t, 30*time.Second, func() error { // waiting for fail2ban to report the bans
		// Only the early bans so far.
		for jail, ips := range plan.jails {
			n, err := sb.CurrentlyBanned(ctx, jail)
			if err != nil {
				return err
			}
			if n != len(ips) {
				return fmt.Errorf("jail %s: %d banned, want %d", jail, n, len(ips))
			}
		}
		return nil
	})

	dir := t.TempDir()
	exporterPort := freePort(t)
	exporterURL := fmt.Sprintf("http://127.0.0.1:%d", exporterPort)
	args := []string{
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", exporterPort),
		"--fail2ban.db=" + sb.DBPath(),
		"--storage.path=" + filepath.Join(dir, "bangui.sqlite3"),
		"--log.level=debug",
	}
	if flags["fail2ban.socket"] {
		args = append(args, "--fail2ban.socket="+sb.Socket())
	} else {
		args = append(args, "--fail2ban.socket=") // never the host's own fail2ban
	}
	geo := flags["geo.mmdb"]
	if geo {
		mmdb := filepath.Join(dir, "countries.mmdb")
		plan.writeMMDB(t, mmdb)
		args = append(args, "--geo.mmdb="+mmdb)
	}
	// Never any lookup on the internet.
	if flags["geo.providers"] {
		if geo {
			args = append(args, "--geo.providers=mmdb")
		} else {
			args = append(args, "--geo.providers=none")
		}
	}
	if flags["geo.ipapi.url"] {
		args = append(args, "--geo.ipapi.url=")
	}
	// The top networks and places (banmap), recomputed every second here
	// rather than every minute.
	asnOn := flags["geo.asn-mmdb"]
	if asnOn {
		asnDB := filepath.Join(dir, "asn.mmdb")
		plan.writeASNMMDB(t, asnDB)
		args = append(args, "--geo.asn-mmdb="+asnDB, "--geo.top.interval=1s")
	}
	startProcess(t, "exporter", bin, args...)

	early := []map[string][]string{plan.jails}
	all := []map[string][]string{plan.jails, plan.late}
	waitForExposition(ctx, t, exporterURL, plan.expected(early, "jail", geo), plan.expected(early, "country", geo), nil)
	// Bans while the exporter runs appear in fail2ban_bans_total too.
	if err := sb.BanIP(ctx, "sshd", plan.late["sshd"]...); err != nil {
		t.Fatal(err)
	}
	wantByJail := plan.expected(all, "jail", geo)
	wantByCountry := plan.expected(all, "country", geo)
	waitForExposition(ctx, t, exporterURL, wantByJail, wantByCountry, plan.expected([]map[string][]string{plan.late}, "country", geo))
	var mw mapsWant
	if asnOn {
		mw.byASN, mw.byCity = plan.expectedMaps(all)
		mw.on = true
		// The lists follow the engine within their interval: each jail's
		// ASN series sum to its banned IPs, the places to all of them.
		testkit.Eventually(t, 30*time.Second, func() error { // waiting for banmap's lists to catch up
			fams := exposition(t, exporterURL)
			if got := sumBy(fams, "fail2ban_banned_ips_by_asn", "jail", nil); !maps.Equal(got, wantByJail) {
				return fmt.Errorf("fail2ban_banned_ips_by_asn by jail %v, want %v", got, wantByJail)
			}
			total := 0.0
			for _, v := range wantByJail {
				total += v
			}
			if got := sumBy(fams, "fail2ban_banned_ips_by_location", "", nil); got[""] != total {
				return fmt.Errorf("fail2ban_banned_ips_by_location sums to %v, want %v", got[""], total)
			}
			return nil
		})
	}
	checkContract(t, exposition(t, exporterURL), flags["fail2ban.socket"])

	// Prometheus with our scrape config (target rewritten, faster
	// intervals) and our rules.
	promPort := freePort(t)
	promURL := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	configPath := writePrometheusConfig(t, dir, fmt.Sprintf("127.0.0.1:%d", exporterPort))
	startProcess(t, "prometheus", prometheusBin,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort),
	)
	testkit.Eventually(t, 60*time.Second, func() error { // waiting for Prometheus to be ready
		code, body, err := httpGet(ctx, promURL+"/-/ready")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("%d %v %s", code, err, body) //nolint:errorlint // err may be nil
		}
		return nil
	})
	// Enough samples for rate() over the substituted $__rate_interval.
	testkit.Eventually(t, 90*time.Second, func() error { // waiting for samples in Prometheus
		got, err := vectorBy(t, promURL, `count_over_time(fail2ban_up{job="fail2ban"}[1m])`, "job")
		if err != nil {
			return err
		}
		if got["fail2ban"] < 8 {
			return fmt.Errorf("%v samples of fail2ban_up", got["fail2ban"])
		}
		return nil
	})

	instance := fmt.Sprintf("127.0.0.1:%d", exporterPort)
	newBans := banCounts{
		byJail:    plan.expected([]map[string][]string{plan.late}, "jail", geo),
		byCountry: plan.expected([]map[string][]string{plan.late}, "country", geo),
	}
	checkDashboardQueries(t, promURL, exporterURL, instance, wantByJail, wantByCountry, newBans, mw, flags["fail2ban.socket"])
	checkRuleQueries(t, promURL)
	checkFail2banAgrees(ctx, t, sb, promURL, instance)

	// A healthy system raises no alert, not even a pending one.
	if got := activeAlerts(t, promURL); len(got) != 0 {
		t.Errorf("alerts active on a healthy system: %v", got)
	}
	// fail2ban's server stops while the exporter keeps running: the socket
	// alert goes pending, and so does "no jail enabled" (fail2ban marks its
	// jails disabled in the database when it stops). Both fire after their
	// for: durations.
	if flags["fail2ban.socket"] {
		if err := sb.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"Fail2banNoJailEnabled{instance=" + instance + "} pending",
			"Fail2banServerDown{instance=" + instance + "} pending",
		}
		testkit.Eventually(t, 30*time.Second, func() error { // waiting for the alerts of a stopped fail2ban to go pending
			if got := activeAlerts(t, promURL); !slices.Equal(got, want) {
				return fmt.Errorf("active alerts %v, want %v", got, want)
			}
			return nil
		})
	}
}

// activeAlerts lists Prometheus's pending and firing alerts as
// "Name{instance=...} state".
func activeAlerts(t *testing.T, promURL string) []string {
	t.Helper()
	_, body, err := httpGet(t.Context(), promURL+"/api/v1/alerts")
	if err != nil {
		t.Fatal(err)
	}
	var alerts struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &alerts); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range alerts.Data.Alerts {
		out = append(out, fmt.Sprintf("%s{instance=%s} %s", a.Labels["alertname"], a.Labels["instance"], a.State))
	}
	sort.Strings(out)
	return out
}

// waitForExposition waits until the exporter is ready and exposes the
// wanted banned IPs per jail and country, and, when newBans is not nil,
// that many new bans per country in fail2ban_bans_total.
func waitForExposition(ctx context.Context, t *testing.T, exporterURL string, byJail, byCountry, newBans map[string]float64) {
	t.Helper()
	testkit.Eventually(t, 60*time.Second, func() error { // waiting for the exporter to expose the bans
		code, _, err := httpGet(ctx, exporterURL+"/-/ready")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("ready: %d %v", code, err) //nolint:errorlint // err may be nil
		}
		fams := exposition(t, exporterURL)
		if got := sumBy(fams, "fail2ban_banned_ips", "jail", nil); !maps.Equal(got, byJail) {
			return fmt.Errorf("banned per jail %v, want %v", got, byJail)
		}
		if got := sumBy(fams, "fail2ban_banned_ips", "country", nil); !maps.Equal(got, byCountry) {
			return fmt.Errorf("banned per country %v, want %v", got, byCountry)
		}
		if newBans != nil {
			if got := sumBy(fams, "fail2ban_bans_total", "country", nil); !maps.Equal(got, newBans) {
				return fmt.Errorf("fail2ban_bans_total per country %v, want %v", got, newBans)
			}
		}
		return nil
	})
}

// checkContract compares the exporter's exposition with the metric
// contract: every fail2ban_ and bangui_exporter_ family it exposes is in the
// contract, with the contract's type, labels and HELP text (README's metric
// table is generated from the contract, so the three agree), and every
// fail2ban_ family of the parts that are wired in is there.
func checkContract(t *testing.T, fams map[string]*dto.MetricFamily, socket bool) {
	t.Helper()
	for name, fam := range fams {
		if !strings.HasPrefix(name, "fail2ban_") && !strings.HasPrefix(name, "bangui_exporter_") {
			continue
		}
		m, ok := dashboards.LookupMetric(name)
		if !ok {
			t.Errorf("the exporter exposes %s, which is not in the metric contract (dashboards/contract.go)", name)
			continue
		}
		if want := strings.ToLower(fam.GetType().String()); want != string(m.Type) {
			t.Errorf("%s is a %s, the contract says %s", name, want, m.Type)
		}
		if fam.GetHelp() != m.Help {
			t.Errorf("%s: the exporter's HELP is %q, the contract's (README's) %q", name, fam.GetHelp(), m.Help)
		}
		for _, metric := range fam.GetMetric() {
			var labels []string
			for _, lp := range metric.GetLabel() {
				labels = append(labels, lp.GetName())
			}
			want := slices.Clone(m.Labels)
			sort.Strings(labels)
			sort.Strings(want)
			if !slices.Equal(labels, want) {
				t.Errorf("%s has labels %v, the contract says %v", name, labels, want)
				break
			}
		}
	}
	for _, m := range dashboards.Contract() {
		wired := m.Owner == dashboards.OwnerCore || (socket && m.Owner == dashboards.OwnerSocket)
		if !wired || !strings.HasPrefix(m.Name, "fail2ban_") {
			continue
		}
		if _, ok := fams[m.Name]; !ok {
			t.Errorf("the exporter does not expose %s (%s)", m.Name, m.Owner)
		}
	}
}

func writePrometheusConfig(t *testing.T, dir, target string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir(t), "prometheus/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	global := cfg["global"].(map[string]any)
	global["scrape_interval"] = "1s"
	global["scrape_timeout"] = "1s"
	global["evaluation_interval"] = "1s"
	// Our rules, with the recording group's interval shortened like the
	// scrape interval.
	var rules []any
	for i, rf := range cfg["rule_files"].([]any) {
		var rulesCfg ruleFile
		data, err := os.ReadFile(filepath.Join(deployDir(t), "prometheus", rf.(string)))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, &rulesCfg); err != nil {
			t.Fatal(err)
		}
		for g := range rulesCfg.Groups {
			if rulesCfg.Groups[g].Interval != "" {
				rulesCfg.Groups[g].Interval = "1s"
			}
		}
		out, err := yaml.Marshal(rulesCfg)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("rules-%d.yml", i))
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		rules = append(rules, path)
	}
	cfg["rule_files"] = rules
	scrape := cfg["scrape_configs"].([]any)[0].(map[string]any)
	scrape["static_configs"].([]any)[0].(map[string]any)["targets"] = []any{target}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkDashboardQueries runs every dashboard query with the variables set
// as a user would set them, and compares the world-map and per-jail
// panels with what the exporter exposes.
// banCounts are bans summed per jail and per country.
type banCounts struct{ byJail, byCountry map[string]float64 }

// mapsWant is what the top networks and places panels must show (on: the
// exporter has banmap).
type mapsWant struct {
	on            bool
	byASN, byCity map[string]float64
}

func checkDashboardQueries(t *testing.T, promURL, exporterURL, instance string, wantByJail, wantByCountry map[string]float64, newBans banCounts, mw mapsWant, socket bool) {
	t.Helper()
	queries, err := dashboards.AllQueries()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"job": "fail2ban", "instance": instance, "jail": ".+", "datasource": "Prometheus",
		// Windows longer than Prometheus has been running: every ban the
		// exporter counted falls inside them.
		"__rate_interval": "5m", "__range": "1h", "__interval": "15s",
	}
	// Variable queries first: each must list values, as Grafana's
	// label_values() would through the series API.
	for _, q := range queries {
		if q.VariableLabel == "" {
			continue
		}
		sel, err := dashboards.Substitute(q.Expr, values)
		if err != nil {
			t.Fatal(err)
		}
		labelValues, err := variableValues(t, promURL, q, sel)
		if err != nil || len(labelValues) == 0 {
			t.Errorf("%s %s: %s gave %v %v", q.Dashboard, q.Panel, sel, labelValues, err)
			continue
		}
		lv := struct{ Data []string }{labelValues}
		if q.VariableLabel == "window" {
			values["window"] = lv.Data[0]
			if slices.Contains(lv.Data, "24h") {
				values["window"] = "24h"
			}
		}
	}
	if values["window"] == "" {
		t.Fatal("no window label values")
	}

	exposed := exposition(t, exporterURL)
	recentByCountry := sumBy(exposed, "fail2ban_recent_bans", "country", map[string]string{"window": values["window"]})
	ran, compared, mapsCompared := 0, 0, 0
	for _, q := range queries {
		if q.VariableLabel != "" {
			continue
		}
		views := []string{""}
		if strings.Contains(q.Expr, "$view") {
			views = []string{dashboards.ViewBannedNow, dashboards.ViewRecentWindow}
		}
		for _, view := range views {
			vals := maps.Clone(values)
			vals["view"] = view
			expr, err := dashboards.Substitute(q.Expr, vals)
			if err != nil {
				t.Errorf("%s / %s: %v", q.Dashboard, q.Panel, err)
				continue
			}
			res := query(t, promURL, expr)
			ran++
			if res.Status != "success" {
				t.Errorf("%s / %s %s (view %q): %s: %s\n%s", q.Dashboard, q.Panel, q.RefID, view, res.ErrorType, res.Error, expr)
				continue
			}
			if !q.Instant {
				// Time series panels run as range queries in Grafana.
				if rr := queryRange(t, promURL, expr); rr.Status != "success" {
					t.Errorf("%s / %s %s as a range query: %s: %s\n%s", q.Dashboard, q.Panel, q.RefID, rr.ErrorType, rr.Error, expr)
				}
			}
			var want map[string]float64
			label := ""
			switch {
			case mw.on && q.Dashboard == "bangui-world-map" && q.Panel == "Bans per country" && q.RefID == "B":
				// The city layer: banned now only.
				label, want = "city", mw.byCity
				if view == dashboards.ViewRecentWindow {
					want = map[string]float64{}
				}
				mapsCompared++
			case mw.on && q.Dashboard == "bangui-world-map" && q.Panel == "Top attacking networks":
				label, want = "asn", mw.byASN
				mapsCompared++
			case q.Dashboard == "bangui-world-map" && q.Panel == "Bans per country" && q.RefID != "A":
				continue
			case q.Dashboard == "bangui-world-map" && (q.Panel == "Bans per country" || q.Panel == "Countries"):
				label, want = "country", wantByCountry
				if view == dashboards.ViewRecentWindow {
					want = recentByCountry
					if !maps.Equal(recentByCountry, wantByCountry) {
						t.Errorf("exporter: recent bans (%s) per country %v, want every ban once: %v", values["window"], recentByCountry, wantByCountry)
					}
				}
				if q.Panel == "Bans per country" {
					// The map leaves ZZ out of its scale; the table keeps it.
					want = maps.Clone(want)
					delete(want, "ZZ")
				}
			case q.Dashboard == "bangui-world-map" && (q.Panel == "Total" || q.Panel == "Country unknown (ZZ)"):
				source := wantByCountry
				if view == dashboards.ViewRecentWindow {
					source = recentByCountry
				}
				total := 0.0
				for country, v := range source {
					if q.Panel == "Total" || country == "ZZ" {
						total += v
					}
				}
				label, want = "", map[string]float64{"": total}
				if total == 0 {
					want = map[string]float64{} // no series: the stat shows its "0" no-value text
				}
			case q.Dashboard == "bangui-overview" && q.Panel == "New bans per jail":
				label, want = "jail", newBans.byJail
			case q.Dashboard == "bangui-overview" && q.Panel == "New bans per country":
				label, want = "country", newBans.byCountry
			case q.Dashboard == "bangui-overview" && q.Panel == "Bans in time range":
				total := 0.0
				for _, v := range newBans.byJail {
					total += v
				}
				label, want = "", map[string]float64{"": total}
			case q.Dashboard == "bangui-overview" && q.Panel == "Banned now per jail":
				label, want = "jail", wantByJail
			case q.Dashboard == "bangui-overview" && q.Panel == "Banned now: fail2ban server vs database" && q.RefID == "B":
				label, want = "jail", wantByJail
			case socket && q.Dashboard == "bangui-overview" && q.Panel == "Banned now: fail2ban server vs database" && q.RefID == "A":
				// fail2ban's own count through its socket, once that part is in.
				label, want = "jail", wantByJail
			case socket && q.Dashboard == "bangui-overview" && q.Panel == "fail2ban server":
				label, want = "", map[string]float64{"": 1}
			default:
				continue
			}
			compared++
			got, err := vectorBy(t, promURL, expr, label)
			if err != nil {
				t.Errorf("%s / %s: %v", q.Dashboard, q.Panel, err)
				continue
			}
			if !maps.Equal(got, want) {
				t.Errorf("%s / %s (view %q): %v by %s, want %v", q.Dashboard, q.Panel, view, got, label, want)
			}
		}
	}
	if mw.on && mapsCompared != 3 {
		t.Errorf("%d results of the city layer and the top networks compared, want 3 (two views and one)", mapsCompared)
	}
	if ran < 30 || compared < 13 {
		t.Errorf("only %d dashboard queries ran, %d compared with the exporter", ran, compared)
	}
	t.Logf("ran %d dashboard queries, compared %d world-map and per-jail results with the exporter", ran, compared)
}

// variableValues lists a template variable's values as Grafana would:
// label_values() through the series API, query_result() as an instant
// query whose results' label is taken.
func variableValues(t *testing.T, promURL string, q dashboards.Query, expr string) ([]string, error) {
	t.Helper()
	if q.VariableQueryResult {
		got, err := vectorBy(t, promURL, expr, q.VariableLabel)
		if err != nil {
			return nil, err
		}
		return slices.Sorted(maps.Keys(got)), nil
	}
	_, body, err := httpGet(t.Context(), promURL+"/api/v1/label/"+q.VariableLabel+"/values?match[]="+url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	var lv struct {
		Status string   `json:"status"`
		Data   []string `json:"data"`
	}
	if err := json.Unmarshal(body, &lv); err != nil {
		return nil, fmt.Errorf("%w: %s", err, body)
	}
	if lv.Status != "success" {
		return nil, fmt.Errorf("status %s: %s", lv.Status, body)
	}
	return lv.Data, nil
}

// checkRuleQueries runs every rule expression and checks that Prometheus
// loaded and evaluated our rules without error.
func checkRuleQueries(t *testing.T, promURL string) {
	t.Helper()
	for name, expr := range ruleExprs(t) {
		if res := query(t, promURL, expr); res.Status != "success" {
			t.Errorf("rule %s: %s: %s", name, res.ErrorType, res.Error)
		}
	}
	// Every rule was loaded and has been evaluated without error.
	testkit.Eventually(t, 30*time.Second, func() error { // waiting for every rule evaluated
		_, body, err := httpGet(t.Context(), promURL+"/api/v1/rules")
		if err != nil {
			return err
		}
		var rules struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name      string `json:"name"`
						Health    string `json:"health"`
						LastError string `json:"lastError"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &rules); err != nil {
			return err
		}
		n := 0
		for _, g := range rules.Data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
				}
			}
		}
		if want := len(ruleExprs(t)); n != want {
			return fmt.Errorf("prometheus loaded %d rules, the file has %d", n, want)
		}
		return nil
	})
	// The recording rule of banned IPs per jail has data.
	got, err := vectorBy(t, promURL, "instance_jail:fail2ban_banned_ips:sum", "jail")
	if err != nil || len(got) == 0 {
		t.Errorf("instance_jail:fail2ban_banned_ips:sum: %v %v", got, err)
	}
}

// checkFail2banAgrees compares the per-jail panel in Prometheus with
// fail2ban-client's own "Currently banned".
func checkFail2banAgrees(ctx context.Context, t *testing.T, sb *f2bsandbox.Sandbox, promURL, instance string) {
	t.Helper()
	got, err := vectorBy(t, promURL, fmt.Sprintf(`sum by (jail) (fail2ban_banned_ips{instance=%q})`, instance), "jail")
	if err != nil {
		t.Fatal(err)
	}
	for _, jail := range sb.Jails() {
		n, err := sb.CurrentlyBanned(ctx, jail)
		if err != nil {
			t.Fatal(err)
		}
		if got[jail] != float64(n) {
			t.Errorf("jail %s: Prometheus has %v banned, fail2ban-client says %d", jail, got[jail], n)
		}
	}
}
