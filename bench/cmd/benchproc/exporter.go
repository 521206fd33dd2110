package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// exporterProc is one running exporter process.
type exporterProc struct {
	cmd     *exec.Cmd
	baseURL string
	logPath string
	client  *http.Client
	started time.Time
	exited  chan error
}

// freeLoopbackPort asks the kernel for a free port on 127.0.0.1.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startExporter starts the exporter binary on fail2ban database dbPath with
// its own storage in workDir. Outbound HTTP of the exporter goes to a dead
// loopback proxy, so a benchmark never reaches the internet.
// env is added to the exporter's environment (e.g. GOMEMLIMIT=100MiB).
func startExporter(binary, dbPath, storagePath, workDir string, extraArgs, env []string) (*exporterProc, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--fail2ban.db=" + dbPath,
		"--storage.path=" + storagePath,
		"--web.listen-address=127.0.0.1:" + strconv.Itoa(port),
		"--log.level=warn",
	}, extraArgs...)
	logPath := filepath.Join(workDir, "exporter.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("exporter log: %w", err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(),
		"HTTP_PROXY=http://127.0.0.1:9", "HTTPS_PROXY=http://127.0.0.1:9", "NO_PROXY=", "no_proxy=")
	cmd.Env = append(cmd.Env, env...)
	p := &exporterProc{
		cmd:     cmd,
		baseURL: "http://127.0.0.1:" + strconv.Itoa(port),
		logPath: logPath,
		// No proxy for the harness's own loopback requests; no transparent
		// decompression, so a gzip scrape is timed as Prometheus receives it.
		client: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, DisableCompression: true}, Timeout: 60 * time.Second},
		exited: make(chan error, 1),
	}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start exporter: %w", err)
	}
	go func() {
		p.exited <- cmd.Wait()
		_ = logFile.Close()
	}()
	return p, nil
}

// waitReady polls /-/ready until it answers 200 and returns the time since
// the process started.
func (p *exporterProc) waitReady(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-p.exited:
			p.exited <- err
			return 0, fmt.Errorf("exporter exited before it was ready (%w); log:\n%s", err, p.logTail())
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.baseURL+"/-/ready", nil)
		resp, err := p.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(p.started), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("exporter not ready after %s (last: %w); log:\n%s", timeout, err, p.logTail())
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// scrape fetches /metrics and returns the body as sent and how long the
// whole request took (until the last byte). With gz it asks for gzip as
// Prometheus does (Accept-Encoding: gzip) and returns the compressed body;
// an answer that is not gzip-encoded is then an error.
func (p *exporterProc) scrape(ctx context.Context, gz bool) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.baseURL+"/metrics", nil)
	if err != nil {
		return nil, 0, err
	}
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, resp.Body); err != nil {
		return nil, 0, fmt.Errorf("scrape: read body: %w", err)
	}
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("scrape: status %s", resp.Status)
	}
	if enc := resp.Header.Get("Content-Encoding"); gz != (enc == "gzip") {
		return nil, 0, fmt.Errorf("scrape: asked for gzip %v, got Content-Encoding %q", gz, enc)
	}
	return buf.Bytes(), elapsed, nil
}

// scrapeStats are timed scrapes of an unchanged database, plain and gzip
// alternating.
type scrapeStats struct {
	N                   int
	P50, P95, P99, Max  time.Duration
	GzipN               int
	GzipP50, GzipP95    time.Duration
	GzipP99, GzipMax    time.Duration
	Series              int
	PlainBytes, GzBytes int
}

// timeScrapes runs warmup untimed scrapes, then n plain and n gzip scrapes,
// alternating.
func timeScrapes(ctx context.Context, p *exporterProc, warmup, n int) (scrapeStats, error) {
	var st scrapeStats
	for i := range warmup {
		if _, _, err := p.scrape(ctx, i%2 == 1); err != nil {
			return st, err
		}
	}
	plain := make([]time.Duration, 0, n)
	gzs := make([]time.Duration, 0, n)
	var lastPlain, lastGz []byte
	for range n {
		body, d, err := p.scrape(ctx, false)
		if err != nil {
			return st, err
		}
		plain, lastPlain = append(plain, d), body
		body, d, err = p.scrape(ctx, true)
		if err != nil {
			return st, err
		}
		gzs, lastGz = append(gzs, d), body
	}
	st.N, st.GzipN = len(plain), len(gzs)
	st.P50, st.P95, st.P99, st.Max = percentile(plain, 50), percentile(plain, 95), percentile(plain, 99), percentile(plain, 100)
	st.GzipP50, st.GzipP95, st.GzipP99, st.GzipMax = percentile(gzs, 50), percentile(gzs, 95), percentile(gzs, 99), percentile(gzs, 100)
	st.PlainBytes, st.GzBytes = len(lastPlain), len(lastGz)
	sums, err := sumMetrics(bytes.NewReader(lastPlain))
	if err != nil {
		return st, err
	}
	st.Series = sums.SeriesCount
	// The gzip body must be the same exposition.
	zr, err := gzip.NewReader(bytes.NewReader(lastGz))
	if err != nil {
		return st, fmt.Errorf("gzip scrape: %w", err)
	}
	gzSums, err := sumMetrics(zr)
	if err != nil {
		return st, fmt.Errorf("gzip scrape: %w", err)
	}
	if gzSums.SeriesCount != st.Series {
		return st, fmt.Errorf("gzip scrape has %d series, plain %d", gzSums.SeriesCount, st.Series)
	}
	return st, nil
}

// waitCountries scrapes until the exporter's geo part has nothing pending
// (bangui_exporter_geo_pending_ips 0) and two scrapes in a row expose no
// country with more banned IPs than before (expiries only) and the same
// fail2ban_bans_total: countries are
// then as resolved as they get. It returns the time since the process
// started.
func (p *exporterProc) waitCountries(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	var prev map[string]float64
	prevTotal := -1.0
	for {
		body, _, err := p.scrape(ctx, false)
		if err != nil {
			return 0, err
		}
		sums, err := sumMetrics(bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		if sums.Gauges["bangui_exporter_geo_pending_ips"] == 0 && prev != nil && onlyFell(prev, sums.ByCountry) && prevTotal == sums.BansTotal {
			return time.Since(p.started), nil
		}
		prev, prevTotal = sums.ByCountry, sums.BansTotal
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("countries not resolved after %s (%v IPs pending)", timeout, sums.Gauges["bangui_exporter_geo_pending_ips"])
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// onlyFell reports whether no country's count in cur is above prev: bans
// that expire between two scrapes lower counts (at 10M rows one does about
// every second, so two scrapes in a row are seldom equal), while a country
// that arrives moves an IP from ZZ to a country, which rises.
func onlyFell(prev, cur map[string]float64) bool {
	for c, v := range cur {
		if v > prev[c] {
			return false
		}
	}
	return true
}

// peakRSS returns VmHWM of the process.
func (p *exporterProc) peakRSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS: %w", err)
	}
	defer func() { _ = f.Close() }()
	return vmHWM(f)
}

// stop sends SIGTERM and waits for a graceful exit (SIGKILL after 30 s); it
// returns how long the shutdown took.
func (p *exporterProc) stop() (time.Duration, error) {
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("stop exporter: %w", err)
	}
	select {
	case err := <-p.exited:
		p.exited <- err
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			return time.Since(start), fmt.Errorf("stop exporter: %w", err)
		}
		if err != nil {
			return time.Since(start), fmt.Errorf("exporter exited with %w; log:\n%s", err, p.logTail())
		}
		return time.Since(start), nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return time.Since(start), fmt.Errorf("exporter did not stop within 30 s after SIGTERM; killed")
	}
}

func (p *exporterProc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
