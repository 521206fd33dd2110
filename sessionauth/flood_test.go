package sessionauth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// threadCPU is the CPU time the calling OS thread has used.
func threadCPU(t testing.TB) time.Duration {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processCPU is the CPU time the whole test process has used.
func processCPU(t testing.TB) time.Duration {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bcryptCheckCost measures one failing bcrypt comparison at cost: its wall
// time and the CPU time of the thread that ran it (the median of three).
func bcryptCheckCost(t testing.TB, cost int) (wall, cpu time.Duration) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), cost)
	if err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var walls, cpus []time.Duration
	for range 3 {
		c0, w0 := threadCPU(t), time.Now()
		_ = bcrypt.CompareHashAndPassword(hash, []byte("not the password"))
		walls, cpus = append(walls, time.Since(w0)), append(cpus, threadCPU(t)-c0)
	}
	slices.Sort(walls)
	slices.Sort(cpus)
	return walls[1], cpus[1]
}

// floodCost picks the bcrypt cost whose check takes about target on this
// machine and build (the race detector makes bcrypt ~50 times slower, so
// the production cost 12 would take many seconds here).
func floodCost(t testing.TB, target time.Duration) (cost int, wall, cpu time.Duration) {
	t.Helper()
	cost = bcrypt.MinCost
	wall, cpu = bcryptCheckCost(t, cost)
	for cost < DefaultHashCost && wall*2 <= target*3/2 {
		cost++
		wall, cpu = bcryptCheckCost(t, cost)
	}
	return cost, wall, cpu
}

// floodClient is an HTTP client whose connections leave from local.
func floodClient(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	return &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1},
		Timeout:   60 * time.Second,
	}
}

// postLogin sends one login and returns the status, the Retry-After header
// (0 when absent) and the token of a successful login.
func postLogin(c *http.Client, base, password string) (status int, retry time.Duration, token string, err error) {
	resp, err := c.Post(base+PathLogin, "application/json", strings.NewReader(`{"password":`+strconv.Quote(password)+`}`))
	if err != nil {
		return 0, 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, "", err
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs < 1 {
			return 0, 0, "", fmt.Errorf("status %d: Retry-After %q is not a positive number of seconds", resp.StatusCode, v)
		}
		retry = time.Duration(secs) * time.Second
	}
	if resp.StatusCode == http.StatusOK {
		var s sessionResponse
		if err := json.Unmarshal(body, &s); err != nil {
			return 0, 0, "", err
		}
		token = s.Token
	}
	return resp.StatusCode, retry, token, nil
}

// floodStats are what the attackers saw.
type floodStats struct {
	mu      sync.Mutex
	codes   map[int]int
	byAddr  map[string]map[int]int
	slowest map[int]time.Duration // per status
	errs    []error
}

func (s *floodStats) add(addr string, code int, took time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs = append(s.errs, err)
		return
	}
	s.codes[code]++
	if s.byAddr[addr] == nil {
		s.byAddr[addr] = map[int]int{}
	}
	s.byAddr[addr][code]++
	s.slowest[code] = max(s.slowest[code], took)
}

// TestLoginFloodDoesNotLockOutAdmin floods the login endpoint of a real
// HTTP server from 100 loopback source addresses (127.0.1.1–100, one /24):
// 90 attackers honour Retry-After, 10 retry at once whatever they are told.
// The admin logs in from 127.0.0.1, a moment after the flood started (so
// the attackers are ahead of it), honouring Retry-After, and must be in
// within 5 s of the flood's start; a session token must be served at once
// all along, and refused attempts must be immediate. It reports the CPU
// time spent on bcrypt. The failures the flood provokes must reach the
// fail2ban filter, one line per failure, and no more.
func TestLoginFloodDoesNotLockOutAdmin(t *testing.T) {
	if testing.Short() {
		t.Skip("a timed flood of real bcrypt checks")
	}
	cost, checkWall, checkCPU := floodCost(t, 150*time.Millisecond)
	t.Logf("bcrypt cost %d for the flood: one check takes %v wall, %v CPU (GOMAXPROCS %d)", cost, checkWall, checkCPU, runtime.GOMAXPROCS(0))

	ctx := context.Background()
	db := openCountingDB(t)
	if _, err := setPassword(ctx, db.DB, testPassword, cost); err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	svc, err := New(ctx, Options{DB: db.DB, Logger: promslogLogger(t, "logfmt", logs), hashCost: cost, SessionCacheTTL: DefaultSessionCacheTTL})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close)

	// A session made before the flood, used by a script during it.
	_, _, session, err := postLogin(floodClient("127.0.2.1"), srv.URL, testPassword)
	if err != nil || session == "" {
		t.Fatalf("login before the flood: %v", err)
	}

	const attackers, impolite = 100, 10
	const floodFor = 6 * time.Second
	stats := &floodStats{codes: map[int]int{}, byAddr: map[string]map[int]int{}, slowest: map[int]time.Duration{}}
	start := make(chan struct{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range attackers {
		addr := fmt.Sprintf("127.0.1.%d", i+1)
		c := floodClient(addr)
		wg.Go(func() {
			defer c.CloseIdleConnections()
			<-start
			for n := 0; ; n++ {
				t0 := time.Now()
				code, retry, _, err := postLogin(c, srv.URL, fmt.Sprintf("wrong guess %d from %s", n, addr))
				stats.add(addr, code, time.Since(t0), err)
				if err != nil {
					return
				}
				wait := retry
				if i < impolite {
					wait = 200 * time.Millisecond // ignores Retry-After
				} else if wait == 0 {
					wait = time.Second
				}
				select {
				case <-stop:
					return
				case <-time.After(wait):
				}
			}
		})
	}

	cpu0 := processCPU(t)
	floodStart := time.Now()
	close(start)

	// The admin comes a moment later: the attackers' first attempts are in.
	adminDone := make(chan time.Duration, 1)
	var adminTries []string
	go func() {
		c := floodClient("127.0.0.1")
		defer c.CloseIdleConnections()
		time.Sleep(200 * time.Millisecond)
		for time.Since(floodStart) < 30*time.Second {
			code, retry, token, err := postLogin(c, srv.URL, testPassword)
			adminTries = append(adminTries, fmt.Sprintf("%v: %d (Retry-After %v, %v)", time.Since(floodStart).Round(time.Millisecond), code, retry, err))
			if err == nil && code == http.StatusOK && token != "" {
				adminDone <- time.Since(floodStart)
				return
			}
			if retry == 0 {
				retry = time.Second
			}
			time.Sleep(retry)
		}
		adminDone <- -1
	}()

	// A script with a session token all along.
	var sessionSlowest time.Duration
	var sessionFails []string
	scriptDone := make(chan struct{})
	go func() {
		defer close(scriptDone)
		c := floodClient("127.0.2.1")
		defer c.CloseIdleConnections()
		for time.Since(floodStart) < floodFor {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+PathSession, nil)
			req.Header.Set("Authorization", "Bearer "+session)
			t0 := time.Now()
			resp, err := c.Do(req)
			took := time.Since(t0)
			if err != nil {
				sessionFails = append(sessionFails, err.Error())
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					sessionFails = append(sessionFails, resp.Status)
				}
			}
			sessionSlowest = max(sessionSlowest, took)
			time.Sleep(100 * time.Millisecond)
		}
	}()

	var adminAt time.Duration
	select {
	case adminAt = <-adminDone:
	case <-time.After(40 * time.Second):
		adminAt = -1
	}
	time.Sleep(time.Until(floodStart.Add(floodFor)))
	close(stop)
	wg.Wait()
	<-scriptDone
	floodWall := time.Since(floodStart)
	cpuFlood := processCPU(t) - cpu0

	stats.mu.Lock()
	defer stats.mu.Unlock()
	checks := stats.codes[http.StatusUnauthorized] + 1 // every 401, and the admin's login
	bcryptCPU := time.Duration(checks) * checkCPU
	t.Logf("flood of %v from %d addresses: responses %v; admin logged in after %v (tries: %s)",
		floodWall.Round(time.Millisecond), attackers, stats.codes, adminAt.Round(time.Millisecond), strings.Join(adminTries, "; "))
	t.Logf("bcrypt during the flood: %d checks × %v CPU = %v CPU in %v wall (%.0f%% of %d CPUs); the whole test process used %v CPU",
		checks, checkCPU, bcryptCPU.Round(time.Millisecond), floodWall.Round(time.Millisecond),
		100*bcryptCPU.Seconds()/floodWall.Seconds()/float64(runtime.GOMAXPROCS(0)), runtime.GOMAXPROCS(0), cpuFlood.Round(time.Millisecond))
	t.Logf("slowest answer per status: %v; slowest session request %v", stats.slowest, sessionSlowest.Round(time.Millisecond))
	gs := svc.gate.stats()
	t.Logf("password gate: %d workers, queue %d; %d checks took %v wall in all, %d refused, longest queue %d",
		svc.gate.workers, svc.gate.queueMax, gs.checks, gs.busy.Round(time.Millisecond), gs.refused, gs.maxQueue)
	if gs.running != 0 || gs.waiting != 0 || gs.networks != 0 {
		t.Errorf("gate not empty after the flood: %+v", gs)
	}

	if len(stats.errs) > 0 {
		t.Errorf("%d attacker requests failed, e.g. %v", len(stats.errs), stats.errs[0])
	}
	if adminAt < 0 || adminAt > 5*time.Second {
		t.Errorf("the admin was logged in after %v, want within 5s of the flood's start", adminAt)
	}
	// Bounds that a wait behind the password checks (seconds each) would
	// break, with room for a loaded machine: answers that wait for no
	// check come back within 2 s.
	const immediate = 2 * time.Second
	if len(sessionFails) > 0 || sessionSlowest > immediate {
		t.Errorf("a session request waited %v (failures %v): sessions must not wait behind password checks", sessionSlowest, sessionFails)
	}
	// Refusals are immediate: never a wait in an unbounded queue.
	for _, code := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		if d := stats.slowest[code]; d > immediate {
			t.Errorf("a %d took %v to come back, want an immediate answer", code, d)
		}
	}
	// CPU spent on bcrypt is bounded by the slots: GOMAXPROCS checks at once.
	if limit := time.Duration(runtime.GOMAXPROCS(0)) * floodWall; bcryptCPU > limit+4*checkCPU {
		t.Errorf("bcrypt used %v CPU in %v, more than %d CPUs can give", bcryptCPU, floodWall, runtime.GOMAXPROCS(0))
	}

	checkFloodLog(t, logs.String(), stats)
}

// checkFloodLog checks the failure lines the flood wrote: one per wrong
// password (401) and at most one per refused retry (429), none for a
// polite refusal (503) nor for the admin, and fail2ban's filter agrees.
func checkFloodLog(t *testing.T, logText string, stats *floodStats) {
	t.Helper()
	if strings.Contains(logText, "wrong guess") {
		t.Fatal("a password reached the log")
	}
	lineRE := regexp.MustCompile(`msg="admin API authentication failed" client=(\S+) action=login reason=(\S+)`)
	lines := map[string]int{}
	reasons := map[string]int{}
	for _, m := range lineRE.FindAllStringSubmatch(logText, -1) {
		lines[m[1]]++
		reasons[m[2]]++
	}
	t.Logf("failure lines by reason: %v (%d lines in all)", reasons, len(lineRE.FindAllString(logText, -1)))
	if lines["127.0.0.1"] != 0 || lines["127.0.2.1"] != 0 {
		t.Errorf("the admin or the script was logged as a failure: %v", lines)
	}
	for addr, codes := range stats.byAddr {
		if got := strings.Count(logText, `client=`+addr+` action=login reason=wrong_password`); got != codes[http.StatusUnauthorized] {
			t.Errorf("%s: %d wrong_password lines for %d answers 401", addr, got, codes[http.StatusUnauthorized])
		}
		if throttled := strings.Count(logText, `client=`+addr+` action=login reason=throttled`); throttled > codes[http.StatusTooManyRequests] {
			t.Errorf("%s: %d throttled lines for %d answers 429", addr, throttled, codes[http.StatusTooManyRequests])
		}
	}
	if reasons["throttled"] > stats.codes[http.StatusTooManyRequests] {
		t.Errorf("%d throttled lines for %d answers 429", reasons["throttled"], stats.codes[http.StatusTooManyRequests])
	}
	// The log of one flood of 6 s stays small: at most one line per
	// check and per impolite client and backoff window.
	if n := len(lineRE.FindAllString(logText, -1)); n > stats.codes[http.StatusUnauthorized]+10*12 {
		t.Errorf("%d failure lines for %d checks", n, stats.codes[http.StatusUnauthorized])
	}

	bin := requireTool(t, "fail2ban-regex")
	filter, err := filepath.Abs(filterFile)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "flood.log")
	if err := os.WriteFile(logPath, []byte(logText), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-o", "row", logPath, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	matched := map[string]int{}
	for _, m := range rowRE.FindAllStringSubmatch(string(out), -1) {
		matched[m[1]]++
	}
	if fmt.Sprint(matched) != fmt.Sprint(lines) {
		t.Errorf("fail2ban-regex matched %v, the log has failure lines %v", matched, lines)
	}
}
