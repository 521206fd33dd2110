package socket

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
	"github.com/bangui/bangui_exporter/internal/testkit"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newCollector(t *testing.T, path string, timeout time.Duration) (*Collector, *Client, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	client := New(Options{Path: path, Timeout: timeout})
	t.Cleanup(func() { _ = client.Close() })
	coll := NewCollector(client, CollectorOptions{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	return coll, client, logs
}

// scrape gathers the collector once: metric name → jail (or "") → value.
func scrape(t *testing.T, c prometheus.Collector) map[string]map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, mf := range families {
		byLabel := map[string]float64{}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, lp := range m.GetLabel() {
				key = lp.GetValue()
			}
			byLabel[key] = value(m)
		}
		out[mf.GetName()] = byLabel
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return 0
}

// dbCurrentlyBanned counts, per jail, the bips rows banned by fail2ban's
// own rule, read strictly read-only.
func dbCurrentlyBanned(t *testing.T, path string) map[string]float64 {
	t.Helper()
	u := url.URL{Scheme: "file", Path: path, RawQuery: "mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	rows, err := db.Query(`SELECT jail, count(*) FROM bips WHERE bantime <= -1 OR timeofban + bantime > ? GROUP BY jail`, time.Now().Unix())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	counts := map[string]float64{}
	for rows.Next() {
		var jail string
		var n float64
		if err := rows.Scan(&jail, &n); err != nil {
			t.Fatal(err)
		}
		counts[jail] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

func TestCollectorEveryMetric(t *testing.T) {
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{DBPurgeAge: "2d"})
	ctx := testCtx(t)
	ips := f2bsandbox.SampleIPs(9)
	if err := sb.Fail(ctx, "sshd", ips[0:3]...); err != nil {
		t.Fatal(err)
	}
	if err := sb.BanIP(ctx, "perm", ips[3:5]...); err != nil {
		t.Fatal(err)
	}
	if err := sb.Fail(ctx, "incr", ips[5]); err != nil {
		t.Fatal(err)
	}
	if err := sb.UnbanIP(ctx, "sshd", ips[0]); err != nil {
		t.Fatal(err)
	}
	coll, _, _ := newCollector(t, sb.Socket(), 5*time.Second)

	want := `
# HELP fail2ban_db_purge_age_seconds fail2ban's dbpurgeage: ban history older than this is deleted from its database.
# TYPE fail2ban_db_purge_age_seconds gauge
fail2ban_db_purge_age_seconds 172800
# HELP fail2ban_jail_banned_current IPs fail2ban itself has banned in the jail right now ("Currently banned").
# TYPE fail2ban_jail_banned_current gauge
fail2ban_jail_banned_current{jail="incr"} 1
fail2ban_jail_banned_current{jail="perm"} 2
fail2ban_jail_banned_current{jail="sshd"} 2
# HELP fail2ban_jail_banned_total Bans in the jail since fail2ban started ("Total banned"); resets when fail2ban restarts.
# TYPE fail2ban_jail_banned_total counter
fail2ban_jail_banned_total{jail="incr"} 1
fail2ban_jail_banned_total{jail="perm"} 2
fail2ban_jail_banned_total{jail="sshd"} 3
# HELP fail2ban_jail_bantime_seconds The jail's bantime; -1 means permanent. With bantime.increment this is the base ban time.
# TYPE fail2ban_jail_bantime_seconds gauge
fail2ban_jail_bantime_seconds{jail="incr"} 600
fail2ban_jail_bantime_seconds{jail="perm"} -1
fail2ban_jail_bantime_seconds{jail="sshd"} 3600
# HELP fail2ban_jail_failed_current Failures fail2ban currently counts in the jail, within findtime ("Currently failed").
# TYPE fail2ban_jail_failed_current gauge
fail2ban_jail_failed_current{jail="incr"} 0
fail2ban_jail_failed_current{jail="perm"} 0
fail2ban_jail_failed_current{jail="sshd"} 0
# HELP fail2ban_jail_failed_total Failures fail2ban matched in the jail since it started ("Total failed"); resets when fail2ban restarts.
# TYPE fail2ban_jail_failed_total counter
fail2ban_jail_failed_total{jail="incr"} 1
fail2ban_jail_failed_total{jail="perm"} 0
fail2ban_jail_failed_total{jail="sshd"} 3
# HELP fail2ban_jail_findtime_seconds The jail's findtime: the window in which maxretry failures lead to a ban.
# TYPE fail2ban_jail_findtime_seconds gauge
fail2ban_jail_findtime_seconds{jail="incr"} 600
fail2ban_jail_findtime_seconds{jail="perm"} 600
fail2ban_jail_findtime_seconds{jail="sshd"} 600
# HELP fail2ban_jail_maxretry The jail's maxretry: failures within findtime that lead to a ban.
# TYPE fail2ban_jail_maxretry gauge
fail2ban_jail_maxretry{jail="incr"} 1
fail2ban_jail_maxretry{jail="perm"} 1
fail2ban_jail_maxretry{jail="sshd"} 1
# HELP fail2ban_server_up 1 when fail2ban's socket answered this scrape, 0 otherwise.
# TYPE fail2ban_server_up gauge
fail2ban_server_up 1
# HELP fail2ban_version_info fail2ban's version, from its socket; the value is always 1.
# TYPE fail2ban_version_info gauge
fail2ban_version_info{version="1.0.2"} 1
`
	if err := testutil.CollectAndCompare(coll, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(coll)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// promtool, when installed, agrees.
	if promtool, err := exec.LookPath("promtool"); err == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(coll)
		srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		defer srv.Close()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v: %s", err, out)
		}
	} else if os.Getenv(f2bsandbox.CIEnv) == "1" {
		t.Errorf("promtool not installed but %s=1", f2bsandbox.CIEnv)
	}
}

// TestSocketMatchesDatabase: in steady state fail2ban's own "currently
// banned" equals the bips rows banned by fail2ban's rule, per jail — after
// log-line bans, manual bans, an unban and a restart.
func TestSocketMatchesDatabase(t *testing.T) {
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{})
	ctx := testCtx(t)
	coll, _, _ := newCollector(t, sb.Socket(), 5*time.Second)
	ips := f2bsandbox.SampleIPs(60)
	steps := []struct {
		name string
		do   func() error
	}{
		{"log lines", func() error { return sb.Fail(ctx, "sshd", ips[:30]...) }},
		{"banip permanent", func() error { return sb.BanIP(ctx, "perm", ips[30:40]...) }},
		{"log lines increment", func() error { return sb.Fail(ctx, "incr", ips[40:50]...) }},
		{"same IPs in another jail", func() error { return sb.BanIP(ctx, "perm", ips[:5]...) }},
		{"unban", func() error { return sb.UnbanIP(ctx, "sshd", ips[:7]...) }},
		{"restart", func() error { return sb.Restart(ctx) }},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			if err := step.do(); err != nil {
				t.Fatal(err)
			}
			// fail2ban writes a ban to its DB shortly after applying it.
			var socketCounts map[string]float64
			testkit.Eventually(t, 15*time.Second, func() error {
				socketCounts = scrape(t, coll)["fail2ban_jail_banned_current"]
				dbCounts := dbCurrentlyBanned(t, sb.DBPath())
				mismatch := ""
				for _, jail := range sb.Jails() {
					if socketCounts[jail] != dbCounts[jail] {
						mismatch += fmt.Sprintf(" %s: socket %v, DB %v;", jail, socketCounts[jail], dbCounts[jail])
					}
				}
				if mismatch != "" {
					return fmt.Errorf("socket and DB disagree:%s", mismatch)
				}
				return nil
			})
			if socketCounts["sshd"] == 0 {
				t.Fatal("no bans counted at all")
			}
		})
	}
}

func TestCollectorReloadAddsAndRemovesJails(t *testing.T) {
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{})
	ctx := testCtx(t)
	coll, client, _ := newCollector(t, sb.Socket(), 5*time.Second)
	if got := scrape(t, coll)["fail2ban_jail_bantime_seconds"]; len(got) != 3 {
		t.Fatalf("bantime series %v, want 3 jails", got)
	}
	if err := sb.SetExtraJails(ctx, f2bsandbox.Jail{Name: "web", Bantime: "30m"}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Fail(ctx, "web", f2bsandbox.SampleIPs(2)...); err != nil {
		t.Fatal(err)
	}
	m := scrape(t, coll)
	if m["fail2ban_jail_bantime_seconds"]["web"] != 1800 || m["fail2ban_jail_banned_current"]["web"] != 2 {
		t.Fatalf("after adding web: bantime %v, banned %v", m["fail2ban_jail_bantime_seconds"], m["fail2ban_jail_banned_current"])
	}
	if err := sb.SetExtraJails(ctx); err != nil {
		t.Fatal(err)
	}
	m = scrape(t, coll)
	for name, series := range m {
		if _, ok := series["web"]; ok {
			t.Errorf("%s still has jail web after it was removed", name)
		}
	}
	if m["fail2ban_server_up"][""] != 1 {
		t.Fatal("server down after reload")
	}
	if client.Dials() != 1 {
		t.Errorf("%d connections for a reload; want the one connection reused", client.Dials())
	}
}

func TestCollectorReconnects(t *testing.T) {
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{})
	ctx := testCtx(t)
	coll, client, logs := newCollector(t, sb.Socket(), 2*time.Second)
	if err := sb.Fail(ctx, "sshd", f2bsandbox.SampleIPs(3)...); err != nil {
		t.Fatal(err)
	}
	up := func() float64 { return scrape(t, coll)["fail2ban_server_up"][""] }
	if up() != 1 {
		t.Fatal("not up at start")
	}

	t.Run("restart between scrapes: no gap", func(t *testing.T) {
		dials := client.Dials()
		if err := sb.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		m := scrape(t, coll)
		if m["fail2ban_server_up"][""] != 1 {
			t.Fatalf("first scrape after a restart: up 0; logs:\n%s", logs)
		}
		if client.Dials() != dials+1 {
			t.Errorf("dials %d → %d, want one reconnect", dials, client.Dials())
		}
		// Counters reset with fail2ban; restored bans are banned again.
		// Restored bans count in "Total banned" again; failures start at 0.
		if m["fail2ban_jail_banned_current"]["sshd"] != 3 || m["fail2ban_jail_banned_total"]["sshd"] != 3 || m["fail2ban_jail_failed_total"]["sshd"] != 0 {
			t.Errorf("after restart: banned %v banned_total %v failed_total %v", m["fail2ban_jail_banned_current"]["sshd"], m["fail2ban_jail_banned_total"]["sshd"], m["fail2ban_jail_failed_total"]["sshd"])
		}
	})

	t.Run("stopped: gap, then back", func(t *testing.T) {
		if err := sb.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			m := scrape(t, coll)
			if m["fail2ban_server_up"][""] != 0 {
				t.Fatal("up while fail2ban is stopped")
			}
			if len(m) != 1 {
				t.Errorf("series besides fail2ban_server_up while down: %v", m)
			}
		}
		if err := sb.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if up() != 1 {
			t.Fatalf("not up after fail2ban came back; logs:\n%s", logs)
		}
		// One log line per state change, not per scrape.
		if n := strings.Count(logs.String(), "stopped answering"); n != 1 {
			t.Errorf("%d 'stopped answering' lines, want 1:\n%s", n, logs)
		}
		if n := strings.Count(logs.String(), "socket answers"); n != 2 {
			t.Errorf("%d 'socket answers' lines, want 2:\n%s", n, logs)
		}
	})
}

func TestCollectorSocketAbsentAtStart(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "f2b.sock")
	coll, _, logs := newCollector(t, sock, time.Second)
	if got := scrape(t, coll)["fail2ban_server_up"][""]; got != 0 {
		t.Fatalf("up %v with no socket", got)
	}
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{Dir: filepath.Join(dir, "sb"), Socket: sock})
	_ = sb
	if got := scrape(t, coll)["fail2ban_server_up"][""]; got != 1 {
		t.Fatalf("up %v once fail2ban started; logs:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "does not answer") || !strings.Contains(logs.String(), "socket answers") {
		t.Errorf("logs:\n%s", logs)
	}
}

// TestCollectorNotFail2ban: a socket that is not fail2ban — garbage, or a
// peer that never answers — gives fail2ban_server_up 0 within the budget,
// and a whole scrape through HTTP finishes within Prometheus' scrape
// timeout.
func TestCollectorNotFail2ban(t *testing.T) {
	tests := []struct {
		name     string
		handle   func(net.Conn)
		wantHint string
	}{
		{"garbage", func(c net.Conn) {
			if readRequest(c) == nil {
				_, _ = c.Write([]byte("220 smtp.example ESMTP\r\n<F2B_END_COMMAND>"))
			}
		}, "does not lead to fail2ban"},
		{"never answers", func(c net.Conn) {
			_ = readRequest(c)
			buf := make([]byte, 1)
			_, _ = c.Read(buf)
		}, "is fail2ban running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fakePeer(t, tt.handle)
			// A socket timeout longer than the scrape timeout: the scrape
			// timeout must win.
			coll, _, logs := newCollector(t, path, 30*time.Second)
			reg := prometheus.NewRegistry()
			reg.MustRegister(coll)
			srv := httptest.NewServer(coll.ObserveScrapeTimeout(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "1.5")
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if took := time.Since(start); took > 1500*time.Millisecond {
				t.Errorf("scrape took %s, longer than the 1.5 s scrape timeout", took)
			}
			if !strings.Contains(string(body), "fail2ban_server_up 0") {
				t.Errorf("body:\n%s", body)
			}
			if !strings.Contains(logs.String(), tt.wantHint) {
				t.Errorf("log lacks %q:\n%s", tt.wantHint, logs)
			}
		})
	}
}

func TestCollectorConcurrentScrapesShareCommands(t *testing.T) {
	sb := f2bsandbox.StartT(t, f2bsandbox.Options{})
	coll, client, _ := newCollector(t, sb.Socket(), 5*time.Second)
	reg := prometheus.NewRegistry()
	reg.MustRegister(coll)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			families, err := reg.Gather()
			if err != nil {
				errs <- err
				return
			}
			for _, mf := range families {
				if mf.GetName() == "fail2ban_server_up" && mf.GetMetric()[0].GetGauge().GetValue() != 1 {
					errs <- fmt.Errorf("server down in a concurrent scrape")
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if client.Dials() != 1 {
		t.Errorf("%d connections, want 1", client.Dials())
	}
}
