package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bangui/bangui_exporter/dashboards"
	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testkit"
	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

// The fleet test: fleetHosts exporters on loopback (the built binary), each
// reading its own synthetic fail2ban database (internal/f2bgen) with its own
// jails and country mix, scraped by one real Prometheus that evaluates the
// mixin's rules and remote_writes everything into a real VictoriaMetrics.
// Every dashboard query and every rule expression must answer on both
// stores, with the variables set to All and to one instance; the fleet-level
// numbers must equal the sum of what each exporter itself exposes, and so
// must the recording rules meant for the fleet-level panels. It logs the
// figures docs/scaling.md quotes: series per host, samples per second, the
// stores' RSS and the dashboards' query times.

const (
	fleetHosts = 50
	// fleetScrape is the scrape and rule evaluation interval of the test.
	fleetScrape = 2 * time.Second
)

// fleetJails are the jails hosts pick from. Bantimes of a day or more and a
// history of 12 hours: no ban expires while the test runs, so what the
// exporters expose stays put between reading it and querying the stores.
var fleetJails = []f2bgen.Jail{
	{Name: "sshd", Weight: 4, BanTime: 7 * 24 * time.Hour, Enabled: true, LogPath: "/var/log/auth.log", Filter: f2bgen.FilterSSHD, MaxRetry: 5},
	{Name: "nginx-botsearch", Weight: 2, BanTime: 24 * time.Hour, Enabled: true, LogPath: "/var/log/nginx/access.log", Filter: f2bgen.FilterNginxBots, MaxRetry: 2},
	{Name: "nginx-http-auth", Weight: 1, BanTime: 48 * time.Hour, Enabled: true, LogPath: "/var/log/nginx/error.log", Filter: f2bgen.FilterNginxAuth, MaxRetry: 3},
	{Name: "postfix-sasl", Weight: 2, BanTime: 24 * time.Hour, Enabled: true, LogPath: "/var/log/mail.log", Filter: f2bgen.FilterPostfix, MaxRetry: 3},
	{Name: "dovecot", Weight: 1, BanTime: 30 * 24 * time.Hour, Enabled: true, LogPath: "/var/log/mail.log", Filter: f2bgen.FilterDovecot, MaxRetry: 5},
	{Name: "recidive", Weight: 1, BanTime: -1, Enabled: true, LogPath: "/var/log/fail2ban.log", Filter: f2bgen.FilterRecidive, MaxRetry: 5},
}

var fleetCountries = []string{"CN", "US", "RU", "DE", "BR", "IN", "VN", "FR", "NL", "KR", "ID", "GB", "IR", "TR", "UA", "JP", "SG", "HK", "TW", "AR"}

// fleetHost is one exporter of the fleet.
type fleetHost struct {
	db, url, instance string
	spec              f2bgen.Spec
	// live are the bans written while the fleet runs.
	live []f2bgen.Ban
}

// fleetSpec gives host i its own database: 1 to 4 jails, 60 to 256 ban rows.
func fleetSpec(i int, now time.Time) f2bgen.Spec {
	var jails []f2bgen.Jail
	for k := range 1 + i%4 {
		jails = append(jails, fleetJails[(i+k)%len(fleetJails)])
	}
	// Bantimes longer than the history: an (ip, jail) pair is banned once,
	// so there are as many pairs as rows; an IP is banned in up to all of
	// the host's jails.
	ips := 1.0
	if len(jails) > 1 {
		ips = 0.7
	}
	return f2bgen.Spec{Rows: 60 + 4*i, Seed: uint64(1000 + i), Now: now, History: 12 * time.Hour, Jails: jails,
		IPsPerRow: ips, PairsPerRow: 1}
}

// fleetCountryOf is host i's country mix: 2 to 6 countries of its own, with
// 0 to 20 % of its IPs left out of the database (country ZZ).
func fleetCountryOf(i, n int) string {
	if n%20 < (i%10)/2 {
		return ""
	}
	k := 2 + i%5
	return fleetCountries[(3*i+n%k)%len(fleetCountries)]
}

// store is one queryable backend: Prometheus or VictoriaMetrics.
type store struct{ name, url string }

func TestFleetOnPrometheusAndVictoriaMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet test skipped in -short mode")
	}
	prometheusBin := requireTool(t, "prometheus", "/usr/bin/prometheus")
	vmBin := requireTool(t, "victoria-metrics", "/usr/bin/victoria-metrics")
	bin := buildExporter(t)
	cfg := dashboards.DefaultConfig()
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	started := time.Now()

	// 50 databases and one MaxMind-format file for all their IPs.
	dir := t.TempDir()
	now := time.Now().Truncate(time.Second)
	hosts := make([]fleetHost, fleetHosts)
	var nets []testmmdb.Network
	for i := range hosts {
		h := &hosts[i]
		h.spec = fleetSpec(i, now)
		h.db = filepath.Join(dir, fmt.Sprintf("host%02d.sqlite3", i))
		if _, err := f2bgen.Generate(ctx, h.db, h.spec); err != nil {
			t.Fatal(err)
		}
		bans, err := f2bgen.Bans(h.spec, false)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, b := range bans {
			if seen[b.IP] {
				continue
			}
			seen[b.IP] = true
			if c := fleetCountryOf(i, len(seen)); c != "" {
				nets = append(nets, testmmdb.Network{CIDR: b.IP, Country: c})
			}
		}
	}
	// Bans to write while the fleet runs, on ten hosts, drawn now so that
	// their IPs have a country in the database: fail2ban_bans_total counts
	// a new ban once its country is final.
	for i := range 10 {
		w, err := f2bgen.OpenWriter(ctx, hosts[i].db, f2bgen.WriterOptions{Seed: uint64(i), Jails: hosts[i].spec.Jails, RepeatShare: 1e-9})
		if err != nil {
			t.Fatal(err)
		}
		for k := range 3 + i {
			b, err := w.NextBan(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			hosts[i].live = append(hosts[i].live, b)
			nets = append(nets, testmmdb.Network{CIDR: b.IP, Country: fleetCountries[(i+k)%len(fleetCountries)]})
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	mmdb := filepath.Join(dir, "countries.mmdb")
	testmmdb.Write(t, mmdb, testmmdb.Options{}, nets)

	// VictoriaMetrics and Prometheus first: a fresh install, no exporter
	// series yet.
	// Distinct ports: a port closed by freePort may be handed out again.
	used := map[int]bool{}
	port := func() int {
		for {
			if p := freePort(t); !used[p] {
				used[p] = true
				return p
			}
		}
	}
	vm := store{"VictoriaMetrics", fmt.Sprintf("http://127.0.0.1:%d", port())}
	vmAddr := strings.TrimPrefix(vm.url, "http://")
	startProcess(t, "victoria-metrics", vmBin,
		"-storageDataPath="+filepath.Join(dir, "vm"),
		"-httpListenAddr="+vmAddr,
		"-retentionPeriod=1d",
		"-search.latencyOffset=1s",
		"-search.disableCache",
		"-loggerLevel=WARN",
	)
	for i := range hosts {
		hosts[i].instance = fmt.Sprintf("127.0.0.1:%d", port())
		hosts[i].url = "http://" + hosts[i].instance
	}
	prom := store{"Prometheus", fmt.Sprintf("http://127.0.0.1:%d", port())}
	configPath := writeFleetConfig(t, dir, hosts, vm.url+"/api/v1/write")
	startProcess(t, "prometheus", prometheusBin,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+strings.TrimPrefix(prom.url, "http://"),
	)
	stores := []store{prom, vm}
	for _, s := range stores {
		testkit.EventuallyFor(t, s.name+" to be ready", 60*time.Second, func() error {
			path := "/-/ready"
			if s == vm {
				path = "/health"
			}
			code, body, err := httpGet(ctx, s.url+path)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("%d %v %s", code, err, body) //nolint:errorlint // err may be nil
			}
			return nil
		})
	}
	checkFreshInstall(t, cfg, stores)

	for i, h := range hosts {
		startProcess(t, fmt.Sprintf("exporter%02d", i), bin,
			"--web.listen-address="+h.instance,
			"--fail2ban.db="+h.db,
			"--fail2ban.socket=",
			"--storage.path="+filepath.Join(dir, fmt.Sprintf("app%02d.sqlite3", i)),
			"--geo.mmdb="+mmdb,
			"--geo.providers=mmdb",
			"--geo.ipapi.url=",
			"--log.level=warn",
		)
	}
	for _, s := range stores {
		testkit.EventuallyFor(t, "every exporter up in "+s.name, 90*time.Second, func() error {
			got, err := vectorBy(t, s.url, `count(up{job="fail2ban"} == 1)`, "")
			if err != nil {
				return err
			}
			if got[""] != fleetHosts {
				down, _ := vectorBy(t, prom.url, `up{job="fail2ban"} == 0`, "instance")
				return fmt.Errorf("%v of %d targets up; down in Prometheus: %v", got[""], fleetHosts, slices.Sorted(maps.Keys(down)))
			}
			return nil
		})
	}
	t.Logf("fleet: %d exporters up after %s", fleetHosts, time.Since(started).Round(time.Second))

	// The bans while the fleet runs: fail2ban_bans_total grows.
	for _, h := range hosts {
		if len(h.live) == 0 {
			continue
		}
		w, err := f2bgen.OpenWriter(ctx, h.db, f2bgen.WriterOptions{Jails: h.spec.Jails})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range h.live {
			b.TimeOfBan = time.Now()
			if err := w.AddBan(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}

	truth := fleetTruth(t, hosts)
	checkFleetSums(t, stores, truth, hosts[7].instance)
	checkFleetPanels(t, cfg, stores, truth, hosts[7].instance)
	checkFleetDashboards(t, cfg, stores, hosts[7].instance)
	checkFleetRules(t, cfg, stores)
	reportFleet(t, stores, truth)
	t.Logf("fleet test took %s", time.Since(started).Round(time.Second))
}

// writeFleetConfig writes Prometheus' configuration: the shipped one with
// the fleet as targets, the mixin's rule files (group intervals as short as
// the scrape interval) and remote_write into VictoriaMetrics.
func writeFleetConfig(t *testing.T, dir string, hosts []fleetHost, remoteWrite string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir(t), "prometheus/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	interval := fleetScrape.String()
	global := cfg["global"].(map[string]any)
	global["scrape_interval"], global["scrape_timeout"], global["evaluation_interval"] = interval, interval, interval
	var ruleFiles []any
	for _, f := range []string{dashboards.MixinRulesFile, dashboards.MixinAlertsFile} {
		var rf ruleFile
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "mixin", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, &rf); err != nil {
			t.Fatal(err)
		}
		for g := range rf.Groups {
			if rf.Groups[g].Interval != "" {
				rf.Groups[g].Interval = interval
			}
		}
		out, err := yaml.Marshal(rf)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, f)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		ruleFiles = append(ruleFiles, path)
	}
	cfg["rule_files"] = ruleFiles
	targets := make([]any, len(hosts))
	for i, h := range hosts {
		targets[i] = h.instance
	}
	scrape := cfg["scrape_configs"].([]any)[0].(map[string]any)
	scrape["static_configs"].([]any)[0].(map[string]any)["targets"] = targets
	cfg["remote_write"] = []any{map[string]any{
		"url":          remoteWrite,
		"queue_config": map[string]any{"batch_send_deadline": "1s", "min_backoff": "100ms", "max_backoff": "1s"},
	}}
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

// checkFreshInstall: with no exporter series at all, the world map's window
// variable still has a value (the configured default) and the "History
// missing from window" query answers on both stores instead of failing with
// an empty duration.
func checkFreshInstall(t *testing.T, cfg dashboards.Config, stores []store) {
	t.Helper()
	values := map[string]string{"job": ".+", "instance": ".+", "jail": ".+"}
	expr, err := dashboards.Substitute(cfg.WindowVariableQuery(), values)
	if err != nil {
		t.Fatal(err)
	}
	expr = strings.TrimSuffix(strings.TrimPrefix(expr, "query_result("), ")")
	for _, s := range stores {
		got, err := vectorBy(t, s.url, expr, "window")
		if err != nil {
			t.Fatalf("%s: window variable query %s: %v", s.name, expr, err)
		}
		if want := map[string]float64{cfg.DefaultWindow: 0}; !maps.Equal(got, want) {
			t.Errorf("%s: window variable on a fresh install lists %v, want %v", s.name, got, want)
		}
		values["window"] = cfg.DefaultWindow
		q, err := dashboards.Substitute(cfg.WindowTruncationQuery(), values)
		if err != nil {
			t.Fatal(err)
		}
		if res := query(t, s.url, q); res.Status != "success" {
			t.Errorf("%s: %q on a fresh install: %s %s", s.name, q, res.ErrorType, res.Error)
		}
	}
}

// fleetTruths are what the exporters themselves expose, read once every
// exporter has resolved its IPs and seen the live bans.
type fleetTruths struct {
	bannedByInstance  map[string]float64
	bannedByCountry   map[string]float64
	countryByInstance map[string]map[string]float64
	bansByInstance    map[string]float64 // fail2ban_bans_total
	banned, bans      float64
	seriesByInstance  map[string]float64
	recentSeries      map[string]float64 // fail2ban_recent_bans series per instance
	jails, countries  map[string]float64 // per instance
	// families: series per metric family, summed over the fleet; pairs:
	// (jail, country) pairs with IPs banned now, summed over the fleet.
	families map[string]float64
	pairs    float64
}

func fleetTruth(t *testing.T, hosts []fleetHost) fleetTruths {
	t.Helper()
	tr := fleetTruths{
		bannedByInstance: map[string]float64{}, bannedByCountry: map[string]float64{}, countryByInstance: map[string]map[string]float64{},
		bansByInstance: map[string]float64{}, seriesByInstance: map[string]float64{}, recentSeries: map[string]float64{},
		jails: map[string]float64{}, countries: map[string]float64{}, families: map[string]float64{},
	}
	for _, h := range hosts {
		// Settled: geo resolution done, the live bans counted.
		testkit.EventuallyFor(t, "exporter "+h.instance+" to settle", 60*time.Second, func() error {
			fams := exposition(t, h.url)
			pending := sumBy(fams, "bangui_exporter_geo_pending_ips", "", nil)[""]
			counted := sumBy(fams, "fail2ban_bans_total", "", nil)[""]
			if pending > 0 || counted != float64(len(h.live)) {
				return fmt.Errorf("%v IPs pending, %v of %d live bans counted", pending, counted, len(h.live))
			}
			return nil
		})
		fams := exposition(t, h.url)
		byCountry := sumBy(fams, "fail2ban_banned_ips", "country", nil)
		tr.countryByInstance[h.instance] = byCountry
		for c, v := range byCountry {
			tr.bannedByCountry[c] += v
			tr.bannedByInstance[h.instance] += v
			tr.banned += v
		}
		tr.bansByInstance[h.instance] = sumBy(fams, "fail2ban_bans_total", "", nil)[""]
		tr.bans += tr.bansByInstance[h.instance]
		n := 0
		for name, f := range fams {
			n += len(f.GetMetric())
			tr.families[name] += float64(len(f.GetMetric()))
		}
		tr.pairs += float64(len(fams["fail2ban_banned_ips"].GetMetric()))
		tr.seriesByInstance[h.instance] = float64(n)
		tr.recentSeries[h.instance] = float64(len(fams["fail2ban_recent_bans"].GetMetric()))
		tr.jails[h.instance] = float64(len(sumBy(fams, "fail2ban_jail_enabled", "jail", nil)))
		tr.countries[h.instance] = float64(len(byCountry))
	}
	return tr
}

// round6 makes sums of floats comparable.
func round6(m map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = math.Round(v*1e6) / 1e6
	}
	return out
}

// eventually polls a store's answer until it equals want (the stores lag
// the exporters by a scrape, VictoriaMetrics by a remote_write batch too).
func eventually(t *testing.T, s store, what, expr, label string, want map[string]float64) {
	t.Helper()
	var got map[string]float64
	var err error
	deadline := time.Now().Add(45 * time.Second)
	for {
		got, err = vectorBy(t, s.url, expr, label)
		if err == nil && maps.Equal(round6(got), round6(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %s = %v (%v), want %v\n%s", s.name, what, got, err, want, expr)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkFleetSums compares fleet-level numbers, the per-host views and the
// recording rules for the fleet panels with the exporters' own numbers.
func checkFleetSums(t *testing.T, stores []store, tr fleetTruths, one string) {
	t.Helper()
	total := map[string]float64{"": tr.banned}
	bansTotal := map[string]float64{"": tr.bans}
	for _, s := range stores {
		eventually(t, s, "banned now, fleet", `sum(fail2ban_banned_ips{job="fail2ban"})`, "", total)
		eventually(t, s, "banned now per host", `sum by (instance) (fail2ban_banned_ips{job="fail2ban"})`, "instance", tr.bannedByInstance)
		eventually(t, s, "banned now per country", `sum by (country) (fail2ban_banned_ips{job="fail2ban"})`, "country", tr.bannedByCountry)
		eventually(t, s, "ban counters, fleet", `sum(fail2ban_bans_total{job="fail2ban"})`, "", bansTotal)
		// The recording rules for the fleet-level panels: Prometheus
		// evaluates them, VictoriaMetrics receives them by remote_write.
		eventually(t, s, dashboards.RecJobBanned, dashboards.RecJobBanned, "", total)
		eventually(t, s, dashboards.RecInstanceBanned, dashboards.RecInstanceBanned, "instance", tr.bannedByInstance)
		eventually(t, s, dashboards.RecJobCountryBanned, dashboards.RecJobCountryBanned, "country", tr.bannedByCountry)
		eventually(t, s, dashboards.RecJobUp, dashboards.RecJobUp, "", map[string]float64{"": fleetHosts})
		eventually(t, s, "one host's countries", fmt.Sprintf(`%s{instance=%q}`, dashboards.RecInstanceCountryBanned, one), "country", tr.countryByInstance[one])
	}
}

// timedQuery runs an instant query and returns the answer and its time.
func timedQuery(t *testing.T, base, expr string) (promQuery, time.Duration) {
	t.Helper()
	start := time.Now()
	q := query(t, base, expr)
	return q, time.Since(start)
}

// checkFleetDashboards runs every dashboard query on both stores with the
// variables at All and at one instance, and compares the fleet panels with
// the exporters' numbers. It logs the query times.
func checkFleetDashboards(t *testing.T, cfg dashboards.Config, stores []store, one string) {
	t.Helper()
	queries, err := cfg.AllQueries()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		for _, inst := range []string{".+", one} {
			values := map[string]string{
				"job": ".+", "instance": inst, "jail": ".+", "datasource": "x", "window": "24h",
				"__rate_interval": "1m", "__range": "1h", "__interval": "15s",
			}
			// The variables list values, on both stores.
			for _, q := range queries {
				if q.VariableLabel == "" {
					continue
				}
				expr, err := dashboards.Substitute(q.Expr, values)
				if err != nil {
					t.Fatal(err)
				}
				got, err := variableValues(t, s.url, q, expr)
				if err != nil || len(got) == 0 {
					t.Errorf("%s: %s %s (instance %s): %v %v", s.name, q.Dashboard, q.Panel, inst, got, err)
				}
				if q.VariableLabel == "instance" && inst == ".+" && len(got) != fleetHosts {
					t.Errorf("%s: instance variable lists %d hosts, want %d", s.name, len(got), fleetHosts)
				}
			}
			var times []time.Duration
			ran := 0
			for _, q := range queries {
				if q.VariableLabel != "" {
					continue
				}
				views := []string{""}
				if strings.Contains(q.Expr, "$view") {
					views = []string{dashboards.ViewBannedNow, dashboards.ViewRecentWindow}
				}
				for _, view := range views {
					values["view"] = view
					expr, err := dashboards.Substitute(q.Expr, values)
					if err != nil {
						t.Fatal(err)
					}
					res, took := timedQuery(t, s.url, expr)
					times = append(times, took)
					ran++
					if res.Status != "success" {
						t.Errorf("%s: %s / %s %s (instance %s): %s: %s\n%s", s.name, q.Dashboard, q.Panel, q.RefID, inst, res.ErrorType, res.Error, expr)
						continue
					}
					if !q.Instant {
						start := time.Now()
						if rr := queryRange(t, s.url, expr); rr.Status != "success" {
							t.Errorf("%s: %s / %s as a range query: %s: %s\n%s", s.name, q.Dashboard, q.Panel, rr.ErrorType, rr.Error, expr)
						}
						times = append(times, time.Since(start))
					}
				}
			}
			slices.Sort(times)
			var sum time.Duration
			for _, d := range times {
				sum += d
			}
			t.Logf("%s, instance=%s: %d dashboard queries (%d with range queries) in %s: median %s, p90 %s, max %s",
				s.name, inst, ran, len(times), sum.Round(time.Millisecond), times[len(times)/2].Round(time.Microsecond),
				times[len(times)*9/10].Round(time.Microsecond), times[len(times)-1].Round(time.Microsecond))
		}
	}
}

// checkFleetPanels compares the fleet dashboard's and the world map's
// panels with the exporters' numbers, on both stores.
func checkFleetPanels(t *testing.T, cfg dashboards.Config, stores []store, tr fleetTruths, one string) {
	t.Helper()
	sub := func(expr, inst string) string {
		out, err := dashboards.Substitute(expr, map[string]string{
			"job": ".+", "instance": inst, "jail": ".+", "window": "24h", "view": dashboards.ViewBannedNow,
			"__rate_interval": "1m", "__range": "1h",
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The ten most attacked hosts: the values of topk equal the ten
	// largest of the hosts' own numbers (ties make the hosts ambiguous).
	top := slices.Sorted(maps.Values(tr.bannedByInstance))
	slices.Reverse(top)
	top = top[:10]
	noZZ := maps.Clone(tr.bannedByCountry)
	delete(noZZ, "ZZ")
	for _, s := range stores {
		got, err := vectorBy(t, s.url, sub(cfg.FleetBannedByInstance(), ".+"), "instance")
		if err != nil {
			t.Fatal(err)
		}
		values := slices.Sorted(maps.Values(got))
		slices.Reverse(values)
		if !slices.Equal(values, top) {
			t.Errorf("%s: top attacked hosts %v, want the values %v", s.name, got, top)
		}
		eventually(t, s, "world map (All)", sub(cfg.WorldMapQuery(), ".+"), "country", noZZ)
		eventually(t, s, "country table (All)", sub(cfg.CountryTableQuery(), ".+"), "country", tr.bannedByCountry)
		eventually(t, s, "country table host column", sub(cfg.CountryTableQuery(), ".+"), "instance", tr.bannedByInstance)
		eventually(t, s, "country table (one host)", sub(cfg.CountryTableQuery(), one), "country", tr.countryByInstance[one])
	}
	// The fleet dashboard's stats and its Hosts table, from their own queries.
	queries, err := cfg.AllQueries()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		label string
		want  map[string]float64
	}{
		"Hosts scraped/A":                {"", map[string]float64{"": fleetHosts}},
		"Hosts with a readable DB/A":     {"", map[string]float64{"": fleetHosts}},
		"Hosts with an unreadable DB/A":  {"", map[string]float64{}},
		"Banned now (fleet)/A":           {"", map[string]float64{"": tr.banned}},
		"Bans in time range (fleet)/A":   {"", map[string]float64{"": tr.bans}},
		"Hosts/B":                        {"instance", tr.bannedByInstance},
		"Hosts/C":                        {"instance", nonZero(tr.bansByInstance)},
		"Hosts/D":                        {"instance", tr.jails},
		"Countries banned now (fleet)/A": {"country", tr.bannedByCountry},
	}
	compared := 0
	for _, q := range queries {
		w, ok := want[q.Panel+"/"+q.RefID]
		if !ok || q.Dashboard != cfg.UIDPrefix+"-fleet" {
			continue
		}
		compared++
		for _, s := range stores {
			eventually(t, s, "fleet dashboard "+q.Panel+" "+q.RefID, sub(q.Expr, ".+"), w.label, w.want)
		}
	}
	if compared != len(want) {
		t.Errorf("compared %d fleet dashboard queries, want %d", compared, len(want))
	}
	// Exact counts of new bans (the first ban of a new series included),
	// the same on both stores.
	for _, s := range stores {
		eventually(t, s, "bans in time range per host",
			sub("sum by (instance) ("+dashboards.NewEvents(`fail2ban_bans_total{job="fail2ban",instance=~"$instance"}`, "$__range")+")", ".+"),
			"instance", nonZero(tr.bansByInstance))
		eventually(t, s, "bans in time range (fleet)",
			sub("sum("+dashboards.NewEvents(`fail2ban_bans_total{job="fail2ban",instance=~"$instance"}`, "$__range")+")", ".+"),
			"", map[string]float64{"": tr.bans})
	}
}

func nonZero(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// checkFleetRules runs every rule expression on both stores, and checks
// that Prometheus evaluated every rule without error.
func checkFleetRules(t *testing.T, cfg dashboards.Config, stores []store) {
	t.Helper()
	var exprs []string
	var names []string
	for _, g := range []dashboards.RuleGroup{cfg.RecordingRules(), cfg.AlertRules()} {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			names = append(names, r.Alert+r.Record)
		}
	}
	for _, s := range stores {
		for i, expr := range exprs {
			if res := query(t, s.url, expr); res.Status != "success" {
				t.Errorf("%s: rule %s: %s: %s", s.name, names[i], res.ErrorType, res.Error)
			}
		}
	}
	_, body, err := httpGet(t.Context(), stores[0].url+"/api/v1/rules")
	if err != nil {
		t.Fatal(err)
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
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				t.Errorf("Prometheus: rule %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n != len(exprs) {
		t.Errorf("Prometheus loaded %d rules, the mixin has %d", n, len(exprs))
	}
	// A healthy fleet raises no alert.
	if got := activeAlerts(t, stores[0].url); len(got) != 0 {
		t.Errorf("alerts active on a healthy fleet: %v", got)
	}
}

// metricValue reads one unlabelled sample (or the sum of a family) from a
// process' own /metrics.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	_, body, err := httpGet(t.Context(), base+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == name || strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			fields := strings.Fields(line)
			v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err == nil {
				total += v
			}
		}
	}
	return total
}

func stats(m map[string]float64) (minV, avg, maxV float64) {
	vals := slices.Sorted(maps.Values(m))
	sum := 0.0
	for _, v := range vals {
		sum += v
	}
	return vals[0], sum / float64(len(vals)), vals[len(vals)-1]
}

// reportFleet logs the figures of docs/scaling.md.
func reportFleet(t *testing.T, stores []store, tr fleetTruths) {
	t.Helper()
	lo, avg, hi := stats(tr.seriesByInstance)
	t.Logf("series per host (exposition): min %.0f, avg %.1f, max %.0f; fleet %.0f", lo, avg, hi, avg*fleetHosts)
	lo, avg, hi = stats(tr.recentSeries)
	t.Logf("fail2ban_recent_bans series per host: min %.0f, avg %.1f, max %.0f", lo, avg, hi)
	var perFamily []string
	fixed := 0.0
	for _, name := range slices.Sorted(maps.Keys(tr.families)) {
		n := tr.families[name] / fleetHosts
		perFamily = append(perFamily, fmt.Sprintf("%s %.1f", name, n))
		if !strings.HasPrefix(name, "fail2ban_") || name == "fail2ban_up" || name == "fail2ban_oldest_ban_timestamp_seconds" {
			fixed += n
		}
	}
	t.Logf("series per host by family (avg): %s", strings.Join(perFamily, ", "))
	t.Logf("per host: %.1f series without jail/country labels; %.1f (jail, country) pairs with IPs banned now", fixed, tr.pairs/fleetHosts)
	_, avgJ, _ := stats(tr.jails)
	_, avgC, _ := stats(tr.countries)
	t.Logf("jails per host avg %.1f, countries (incl. ZZ) with banned IPs per host avg %.1f", avgJ, avgC)
	if got, err := vectorBy(t, stores[0].url, `sum(scrape_samples_scraped{job="fail2ban"})`, ""); err == nil {
		t.Logf("Prometheus: %.0f samples per scrape round, %.0f samples/s at a %s scrape interval", got[""], got[""]/fleetScrape.Seconds(), fleetScrape)
	}
	prom, vm := stores[0], stores[1]
	a0, v0, t0 := metricValue(t, prom.url, "prometheus_tsdb_head_samples_appended_total"), metricValue(t, vm.url, "vm_rows_inserted_total"), time.Now()
	time.Sleep(10 * time.Second)
	a1, v1, t1 := metricValue(t, prom.url, "prometheus_tsdb_head_samples_appended_total"), metricValue(t, vm.url, "vm_rows_inserted_total"), time.Now()
	secs := t1.Sub(t0).Seconds()
	t.Logf("ingest over %.0fs: Prometheus appends %.0f samples/s (scrapes and rules), VictoriaMetrics inserts %.0f rows/s (remote_write)", secs, (a1-a0)/secs, (v1-v0)/secs)
	t.Logf("head series: Prometheus %.0f; VictoriaMetrics new series %.0f",
		metricValue(t, prom.url, "prometheus_tsdb_head_series"), metricValue(t, vm.url, "vm_new_timeseries_created_total"))
	for _, s := range stores {
		t.Logf("%s RSS: %.1f MiB", s.name, metricValue(t, s.url, "process_resident_memory_bytes")/(1<<20))
	}
	keys := slices.Sorted(maps.Keys(tr.bannedByCountry))
	t.Logf("fleet: %.0f IPs banned now over %d countries (ZZ %.0f); %.0f live bans", tr.banned, len(keys), tr.bannedByCountry["ZZ"], tr.bans)
}
