package main

import (
	"bytes"
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
func startExporter(binary, dbPath, storagePath, workDir string, extraArgs []string) (*exporterProc, error) {
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
	p := &exporterProc{
		cmd:     cmd,
		baseURL: "http://127.0.0.1:" + strconv.Itoa(port),
		logPath: logPath,
		// No proxy for the harness's own loopback requests.
		client: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}, Timeout: 60 * time.Second},
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

// scrape fetches /metrics and returns the body and how long the whole
// request took (until the last byte).
func (p *exporterProc) scrape(ctx context.Context) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.baseURL+"/metrics", nil)
	if err != nil {
		return nil, 0, err
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
	return buf.Bytes(), elapsed, nil
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
