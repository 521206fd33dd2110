package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// buildStampedExporter builds the binary with version information stamped
// through -ldflags, as promu does.
func buildStampedExporter(t *testing.T, ver, rev string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), exporterName)
	ldflags := fmt.Sprintf("-X github.com/prometheus/common/version.Version=%s -X github.com/prometheus/common/version.Revision=%s -X github.com/prometheus/common/version.Branch=testbranch", ver, rev)
	if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func httpGetBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrapeFamilies parses the whole exposition.
func scrapeFamilies(t *testing.T, base string) map[string]*model.Vector {
	t.Helper()
	_, body := httpGetBody(t, base+"/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	out := map[string]*model.Vector{}
	for name, mf := range fams {
		v, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, mf)
		if err != nil {
			t.Fatal(err)
		}
		vec := model.Vector(v)
		out[name] = &vec
	}
	return out
}

func sumOf(fams map[string]*model.Vector, name string) (float64, bool) {
	v, ok := fams[name]
	if !ok {
		return 0, false
	}
	var s float64
	for _, smp := range *v {
		s += float64(smp.Value)
	}
	return s, true
}

// TestCoreBinary runs the built exporter on a database that appears only
// after start: healthy at once, ready after the first successful read,
// build_info stamped, landing page, and a clean SIGTERM during scrapes.
func TestCoreBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the exporter")
	}
	bin := buildStampedExporter(t, "9.8.7-test", "deadbeef")

	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "version 9.8.7-test") || !strings.Contains(string(out), "revision: deadbeef") {
		t.Fatalf("--version: %v\n%s", err, out)
	}

	dir := t.TempDir()
	f2bDB := filepath.Join(dir, "fail2ban.sqlite3")
	p := startExporter(t, bin, "--fail2ban.db", f2bDB, "--fail2ban.socket=",
		"--storage.path", filepath.Join(dir, "state", "bangui.sqlite3"), "--geo.providers=none")

	for _, tc := range []struct {
		path     string
		code     int
		contains []string
	}{
		{"/-/healthy", 200, []string{"Healthy"}},
		{"/-/ready", 503, []string{"Not ready"}},
		{"/", 200, []string{`href="/metrics"`, `href="/-/healthy"`, `href="/-/ready"`, "9.8.7-test"}},
	} {
		code, body := httpGetBody(t, p.base+tc.path)
		if code != tc.code {
			t.Errorf("GET %s: %d, want %d\n%s", tc.path, code, tc.code, body)
		}
		for _, want := range tc.contains {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: no %q in\n%s", tc.path, want, body)
			}
		}
	}

	fams := scrapeFamilies(t, p.base)
	if up, ok := sumOf(fams, "fail2ban_up"); !ok || up != 0 {
		t.Errorf("fail2ban_up = %v (exposed %v) with the database missing, want 0", up, ok)
	}
	bi, ok := fams["bangui_exporter_build_info"]
	if !ok || len(*bi) != 1 || (*bi)[0].Metric["version"] != "9.8.7-test" || (*bi)[0].Metric["revision"] != "deadbeef" || (*bi)[0].Metric["branch"] != "testbranch" {
		t.Errorf("bangui_exporter_build_info = %v", bi)
	}

	// fail2ban creates its database: the exporter notices within a scrape.
	now := time.Now().Truncate(time.Second)
	st, err := f2bgen.Generate(context.Background(), f2bDB, f2bgen.DefaultSpec(2000, now))
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() error {
		fams = scrapeFamilies(t, p.base)
		if up, _ := sumOf(fams, "fail2ban_up"); up != 1 {
			return fmt.Errorf("fail2ban_up never turned 1:\n%s", p.logs)
		}
		return nil
	})
	if code, _ := httpGetBody(t, p.base+"/-/ready"); code != 200 {
		t.Errorf("/-/ready = %d after a successful read, want 200", code)
	}
	// Bans can expire between two reads: compare with SQL around the scrape.
	db, err := sql.Open("sqlite", "file:"+f2bDB+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	countNow := func() float64 {
		var n float64
		if err := db.QueryRow(`SELECT count(*) FROM bips WHERE bantime <= -1 OR timeofban + bantime > CAST(strftime('%s','now') AS INTEGER)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := countNow()
	banned, _ := sumOf(scrapeFamilies(t, p.base), "fail2ban_banned_ips")
	after := countNow()
	if banned > before || banned < after || banned == 0 {
		t.Errorf("sum(fail2ban_banned_ips) = %v, SQL says %v before and %v after (generator: %d at %v)", banned, before, after, st.CurrentlyBanned, now)
	}

	// SIGTERM while scrapes are in flight (each has its response under
	// way, its body not read yet): they finish, the exit is clean. No
	// connection error is ignored: every scrape was answered before the
	// signal.
	var started, wg sync.WaitGroup
	terminated := make(chan struct{})
	errs := make(chan error, 20)
	for range 20 {
		started.Add(1)
		wg.Go(func() {
			resp, err := http.Get(p.base + "/metrics")
			started.Done()
			if err != nil {
				errs <- fmt.Errorf("scrape before SIGTERM: %w", err)
				return
			}
			defer func() { _ = resp.Body.Close() }()
			<-terminated
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "fail2ban_up") {
				errs <- fmt.Errorf("in-flight scrape: status %d, err %w", resp.StatusCode, err)
			}
		})
	}
	started.Wait()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	close(terminated)
	wg.Wait()
	p.waitExit()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !strings.Contains(p.logs.String(), "shutting down") {
		t.Errorf("no shutdown log line:\n%s", p.logs)
	}
}
