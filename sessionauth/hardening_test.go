package sessionauth

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wrongLogin is a login with a wrong password from remote.
func wrongLogin(remote string) req {
	return req{method: "POST", path: PathLogin, body: `{"password":"wrong password guess"}`, remote: remote}
}

// Many addresses of one network cannot take turns: from the 16th failure
// of an IPv4 /24 or an IPv6 /48 on, the whole network backs off, while
// other networks are not affected.
func TestNetworkBackoff(t *testing.T) {
	for _, tc := range []struct {
		name string
		// addr is the i-th client address (a new /32 or /64 each) of the
		// attacking network; other is a client of another network.
		addr  func(i int) string
		other string
	}{
		{"IPv4 /24", func(i int) string { return fmt.Sprintf("203.0.113.%d:1", i+1) }, "203.0.114.1:1"},
		{"IPv6 /48", func(i int) string { return fmt.Sprintf("[2001:db8:7:%x::1]:1", i) }, "[2001:db8:8::1]:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true)
			for i := range networkThreshold - 1 {
				wantJSON(t, f.do(wrongLogin(tc.addr(i))), 401, msgAuthFailed)
			}
			// The failure that reaches the threshold is still checked...
			rec := f.do(wrongLogin(tc.addr(networkThreshold - 1)))
			wantJSON(t, rec, 401, msgAuthFailed)
			// ...and from then on every address of the network waits, even
			// a new one, and even with the right password.
			for _, i := range []int{networkThreshold, networkThreshold + 100} {
				rec := f.do(wrongLogin(tc.addr(i)))
				wantJSON(t, rec, 429, msgTooMany)
				if got := rec.Header().Get("Retry-After"); got != "1" {
					t.Fatalf("Retry-After %q, want 1", got)
				}
			}
			wantJSON(t, f.do(req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`, remote: tc.addr(networkThreshold + 1)}), 429, msgTooMany)
			// Another network is not affected.
			f.login(tc.other)
			// After the network's wait, its next failure doubles it.
			f.clock.Advance(time.Second)
			rec = f.do(wrongLogin(tc.addr(networkThreshold + 2)))
			wantJSON(t, rec, 401, msgAuthFailed)
			if got := rec.Header().Get("Retry-After"); got != "2" {
				t.Fatalf("Retry-After after the network's 17th failure %q, want 2", got)
			}
			wantJSON(t, f.do(wrongLogin(tc.addr(networkThreshold+3))), 429, msgTooMany)
			// An hour without failures: the network starts afresh.
			f.clock.Advance(backoffForget)
			for i := range networkThreshold - 1 {
				wantJSON(t, f.do(wrongLogin(tc.addr(200+i))), 401, msgAuthFailed)
			}
		})
	}
}

// A polite client, which waits as long as Retry-After says, writes one
// failure line per wrong password and is never refused; a client that
// keeps retrying during its wait is refused each time but logged once per
// wait (46 refused retries were 46 WARN lines).
func TestFailureLogOncePerWait(t *testing.T) {
	f := newFixture(t, true)
	const polite, impolite = "198.51.100.7:1", "198.51.100.8:1"
	for round := range 5 {
		rec := f.do(wrongLogin(polite))
		wantJSON(t, rec, 401, msgAuthFailed)
		secs, err := strconv.Atoi(rec.Header().Get("Retry-After"))
		if err != nil || time.Duration(secs)*time.Second != delay(round+1) {
			t.Errorf("round %d: a failed login's Retry-After %q, want %v", round, rec.Header().Get("Retry-After"), delay(round+1))
		}
		f.clock.Advance(delay(round + 1))
	}

	wantJSON(t, f.do(wrongLogin(impolite)), 401, msgAuthFailed)
	for i := range 46 {
		wantJSON(t, f.do(wrongLogin(impolite)), 429, msgTooMany)
		if i%10 == 9 {
			f.clock.Advance(10 * time.Millisecond)
		}
	}
	f.clock.Advance(time.Second)
	wantJSON(t, f.do(wrongLogin(impolite)), 401, msgAuthFailed) // its second wait (2 s)
	for range 3 {
		wantJSON(t, f.do(wrongLogin(impolite)), 429, msgTooMany)
	}

	logs := f.logs.String()
	count := func(client, reason string) int {
		return strings.Count(logs, `msg="admin API authentication failed" client=`+client+` action=login reason=`+reason)
	}
	for _, c := range []struct {
		client, reason string
		want           int
	}{
		{"198.51.100.7", "wrong_password", 5},
		{"198.51.100.7", "throttled", 0},
		{"198.51.100.8", "wrong_password", 2},
		{"198.51.100.8", "throttled", 2}, // one per wait
	} {
		if got := count(c.client, c.reason); got != c.want {
			t.Errorf("%s %s: %d lines, want %d\n%s", c.client, c.reason, got, c.want, logs)
		}
	}
}

// When a request carries several bangui_session cookies (a stale one of
// another path or host, then the current one), each is checked, at most
// maxSessionCookies of them.
func TestSeveralSessionCookies(t *testing.T) {
	f := newFixture(t, true)
	valid := f.login("192.0.2.30:1")
	other := f.login("192.0.2.31:1")
	if rec := f.do(req{method: "POST", path: PathLogout, bearer: other}); rec.Code != 200 {
		t.Fatalf("logout %d", rec.Code)
	}
	malformed := "not-a-token"
	for _, tc := range []struct {
		name    string
		cookies []string
		want    int
	}{
		{"valid", []string{valid}, 200},
		{"malformed then valid", []string{malformed, valid}, 200},
		{"ended session then valid", []string{other, valid}, 200},
		{"valid then malformed", []string{valid, malformed}, 200},
		{"valid fourth", []string{malformed, other, malformed, valid}, 200},
		{"valid fifth: beyond the bound", []string{malformed, other, malformed, other, valid}, 401},
		{"none valid", []string{malformed, other}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hr := req{method: "GET", path: PathSession}
			var parts []string
			for _, c := range tc.cookies {
				parts = append(parts, CookieName+"="+c)
			}
			hr.header = map[string]string{"Cookie": "theme=dark; " + strings.Join(parts, "; ")}
			rec := f.do(hr)
			if rec.Code != tc.want {
				t.Fatalf("%d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == 200 {
				// A cookie-authenticated POST still follows the CSRF rule.
				post := hr
				post.method, post.path = "POST", PathReResolve
				wantJSON(t, f.do(post), http.StatusUnsupportedMediaType, msgBadContentType)
			}
		})
	}
}

// A client refused by the full password gate (503) is told when to come
// back; a retry before that is refused without a check and logged once.
func TestLimiterRefusedByGate(t *testing.T) {
	l := newLimiter()
	a := ipAddr("192.0.2.1")
	now := time.Unix(1_800_000_000, 0)
	if v := l.begin(a, now); v.wait != 0 || v.suspect {
		t.Fatalf("first attempt: %+v", v)
	}
	l.refused(a, now, 3*time.Second)
	for i, want := range []verdict{{wait: 3 * time.Second, log: true}, {wait: 2 * time.Second}} {
		if v := l.begin(a, now.Add(time.Duration(i)*time.Second)); v != want {
			t.Fatalf("retry %d before Retry-After: %+v, want %+v", i, v, want)
		}
	}
	if v := l.begin(a, now.Add(3*time.Second)); v.wait != 0 || v.suspect {
		t.Fatalf("retry at Retry-After: %+v", v)
	}
	// No failure was recorded: an aborted attempt forgets the client.
	l.end(a, now.Add(3*time.Second), attemptAborted)
	if len(l.clients) != 0 || len(l.networks) != 0 {
		t.Fatalf("limiter remembers %d clients, %d networks", len(l.clients), len(l.networks))
	}
	// A failure makes the client and its network suspect.
	l.begin(a, now)
	l.end(a, now, attemptFailed)
	if v := l.begin(ipAddr("192.0.2.2"), now); v.wait != 0 || !v.suspect {
		t.Fatalf("neighbour: %+v, want admitted as suspect", v)
	}
}
