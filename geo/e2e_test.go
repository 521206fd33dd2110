package geo

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bsandbox"
)

// TestEndToEndSandboxedFail2ban runs the real exporter binary against a real,
// sandboxed fail2ban-server: bans from IPs whose countries the mmdb knows
// show up under the right countries within one resolver cycle (the first
// scrape after the resolver has nothing pending), private and unknown IPs
// count as ZZ, on SIGTERM the geo cache is flushed to the app database, and
// a restart without any working provider shows every country from it.
func TestEndToEndSandboxedFail2ban(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	sandbox := f2bsandbox.StartT(t, f2bsandbox.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dir := t.TempDir()
	bin := filepath.Join(dir, "bangui_exporter")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/bangui/bangui_exporter")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mmdbPath := filepath.Join(dir, "countries.mmdb")
	writeMMDB(t, mmdbPath, "official", []mmdbNet{
		{cidr: "8.8.8.0/24", country: "US", name: "United States"},
		{cidr: "77.88.8.0/24", country: "RU", name: "Russia"},
		{cidr: "193.0.14.0/24", country: "NL", name: "Netherlands"},
	}, 1_700_000_000)

	ban := map[string][]string{
		"sshd": {"8.8.8.8", "77.88.8.8", "193.0.14.129", "9.9.9.9", "10.20.30.40"},
		"perm": {"8.8.8.8", "77.88.8.1"},
	}
	for jail, ips := range ban {
		if err := sandbox.BanIP(ctx, jail, ips...); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]float64{
		`fail2ban_banned_ips{country="US",jail="sshd"}`: 1,
		`fail2ban_banned_ips{country="RU",jail="sshd"}`: 1,
		`fail2ban_banned_ips{country="NL",jail="sshd"}`: 1,
		`fail2ban_banned_ips{country="ZZ",jail="sshd"}`: 2, // 9.9.9.9 (not in the mmdb), 10.20.30.40 (private)
		`fail2ban_banned_ips{country="US",jail="perm"}`: 1,
		`fail2ban_banned_ips{country="RU",jail="perm"}`: 1,
	}

	appDB := filepath.Join(dir, "app.sqlite3")
	first := startExporterBinary(t, bin,
		"--storage.path="+appDB,
		"--fail2ban.db="+sandbox.DBPath(),
		"--geo.mmdb="+mmdbPath,
		"--geo.ipapi.url=",
		"--geo.flush-interval=1h", // only the shutdown flush writes
	)
	// Wait for the first scrape that counts every ban; once the resolver has
	// nothing pending, the very next scrape must show the countries.
	deadline := time.Now().Add(60 * time.Second)
	counted := false
	for {
		got, pending, err := first.scrape() // refused until the exporter listens
		if err == nil && total(got) == 7 {
			counted = true
		}
		if counted && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bans never counted and resolved: %v, %v pending, %v", got, pending, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, _, err := first.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("countries one resolver cycle after the bans were counted:\n got %v\nwant %v", got, want)
	}
	// SIGTERM: the exporter flushes the geo cache before it exits.
	first.stop(t)

	// A restart with no provider that can answer (ip-api unreachable, no
	// mmdb) knows every country from the app database at once.
	second := startExporterBinary(t, bin,
		"--storage.path="+appDB,
		"--fail2ban.db="+sandbox.DBPath(),
		"--geo.providers=ipapi",
		"--geo.ipapi.url=http://127.0.0.1:1/batch",
	)
	deadline = time.Now().Add(60 * time.Second)
	for {
		got, _, err := second.scrape()
		if err == nil && total(got) == 7 {
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("after a restart the first counting scrape shows\n %v\nwant %v", got, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bans never counted after the restart: %v %v", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	second.stop(t)

	db, err := sql.Open("sqlite", "file:"+appDB+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(db)
	rows, err := db.Query("SELECT ip, COALESCE(country_code, ''), provider FROM geo_cache ORDER BY ip")
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(rows)
	var stored []string
	for rows.Next() {
		var ip, code, provider string
		if err := rows.Scan(&ip, &code, &provider); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, ip+"="+code+"/"+provider)
	}
	wantStored := "[10.20.30.40=/local 193.0.14.129=NL/mmdb 77.88.8.1=RU/mmdb 77.88.8.8=RU/mmdb 8.8.8.8=US/mmdb 9.9.9.9=/mmdb]"
	if fmt.Sprint(stored) != wantStored {
		t.Fatalf("geo_cache after shutdown:\n got %v\nwant %s", stored, wantStored)
	}
}

func total(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

// exporterProcess is a running bangui_exporter binary.
type exporterProcess struct {
	cmd     *exec.Cmd
	addr    string
	logs    *strings.Builder
	logDone chan struct{}
	stopped bool
}

func startExporterBinary(t *testing.T, bin string, args ...string) *exporterProcess {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	closeQuietly(ln)
	// An empty --fail2ban.socket: a fail2ban running on the test host never
	// leaks into the test.
	cmd := exec.Command(bin, append([]string{"--web.listen-address=" + addr, "--fail2ban.socket="}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &exporterProcess{cmd: cmd, addr: addr, logs: &strings.Builder{}, logDone: make(chan struct{})}
	go func() {
		defer close(p.logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.logs.WriteString(sc.Text() + "\n")
		}
	}()
	t.Cleanup(func() {
		if !p.stopped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		<-p.logDone
		if t.Failed() {
			t.Logf("exporter %v log:\n%s", args, p.logs.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *exporterProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := p.cmd.Wait()
	p.stopped = true
	if err != nil {
		t.Fatalf("exporter exit: %v", err)
	}
}

// scrape returns the fail2ban_banned_ips series and geo's pending IPs.
func (p *exporterProcess) scrape() (map[string]float64, float64, error) {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return nil, 0, err
	}
	defer closeQuietly(resp.Body)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	got := map[string]float64{}
	pending := -1.0
	for line := range strings.SplitSeq(string(body), "\n") {
		isBanned := strings.HasPrefix(line, "fail2ban_banned_ips{")
		isPending := strings.HasPrefix(line, "bangui_exporter_geo_pending_ips ")
		if !isBanned && !isPending {
			continue
		}
		var v float64
		i := strings.LastIndexByte(line, ' ')
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			return nil, 0, err
		}
		if isPending {
			pending = v
		} else {
			got[line[:i]] = v
		}
	}
	return got, pending, nil
}
