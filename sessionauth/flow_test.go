package sessionauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

var setupTokenRE = regexp.MustCompile(`setup_token=(\S+)`)

func loggedSetupToken(t *testing.T, logs string) string {
	t.Helper()
	m := setupTokenRE.FindAllStringSubmatch(logs, -1)
	if len(m) != 1 {
		t.Fatalf("want exactly one logged setup token, logs:\n%s", logs)
	}
	return m[0][1]
}

func TestSetupRequiredUntilPasswordExists(t *testing.T) {
	f := newFixture(t, false)
	for _, r := range []req{
		{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`},
		{method: "POST", path: PathLogout, bearer: strings.Repeat("A", 43)},
		{method: "GET", path: PathSession},
		{method: "POST", path: PathReResolve},
		{method: "GET", path: PathGeoStatus},
		{method: "GET", path: PathLookupBase + "192.0.2.1"},
	} {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			wantJSON(t, f.do(r), http.StatusServiceUnavailable, "setup required")
		})
	}
}

func TestSetupWithToken(t *testing.T) {
	f := newFixture(t, false)
	token := loggedSetupToken(t, f.logs.String())
	if len(token) != 43 {
		t.Fatalf("setup token %q: want 43 characters (256 bits)", token)
	}
	body := func(tok, pw string) string { return `{"setup_token":"` + tok + `","password":"` + pw + `"}` }
	steps := []struct {
		name   string
		r      req
		status int
		errMsg string
	}{
		{"no token", req{method: "POST", path: PathSetup, body: `{"password":"` + testPassword + `"}`, remote: "192.0.2.51:1"}, 401, "authentication failed"},
		{"wrong token", req{method: "POST", path: PathSetup, body: body(strings.Repeat("x", 43), testPassword), remote: "192.0.2.52:1"}, 401, "authentication failed"},
		{"form content type", req{method: "POST", path: PathSetup, body: body(token, testPassword), contentType: "application/x-www-form-urlencoded", remote: "192.0.2.53:1"}, 415, msgBadContentType},
		{"cross origin", req{method: "POST", path: PathSetup, body: body(token, testPassword), header: map[string]string{"Origin": "https://evil.example"}, remote: "192.0.2.54:1"}, 403, msgBadOrigin},
		{"unknown field", req{method: "POST", path: PathSetup, body: `{"setup_token":"` + token + `","password":"` + testPassword + `","admin":true}`, remote: "192.0.2.55:1"}, 400, ""},
		{"short password", req{method: "POST", path: PathSetup, body: body(token, "elevenchars"), remote: "192.0.2.56:1"}, 400, ErrPasswordTooShort.Error()},
		{"too long password", req{method: "POST", path: PathSetup, body: body(token, strings.Repeat("p", 73)), remote: "192.0.2.57:1"}, 400, ErrPasswordTooLong.Error()},
		{"ok", req{method: "POST", path: PathSetup, body: body(token, testPassword), remote: "192.0.2.58:1"}, 201, ""},
		{"again with the same token", req{method: "POST", path: PathSetup, body: body(token, "another password!"), remote: "192.0.2.59:1"}, 409, msgAlreadySetUp},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			wantJSON(t, f.do(s.r), s.status, s.errMsg)
		})
	}
	// The password set by setup works, the rejected one does not.
	f.login("192.0.2.60:1")
	wantJSON(t, f.do(req{method: "POST", path: PathLogin, body: `{"password":"another password!"}`, remote: "192.0.2.61:1"}), 401, msgAuthFailed)
	hash, err := readPasswordHash(context.Background(), f.db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(hash, []byte(testPassword)) {
		t.Fatal("password stored in clear")
	}
	// Two failed attempts were logged, with their client addresses.
	for _, ip := range []string{"192.0.2.51", "192.0.2.52"} {
		if !strings.Contains(f.logs.String(), `msg="admin API authentication failed" client=`+ip+" action=setup reason=invalid_setup_token") {
			t.Errorf("no failure line for %s in\n%s", ip, f.logs)
		}
	}
}

func TestNoSetupTokenWhenPasswordExists(t *testing.T) {
	f := newFixture(t, true)
	if strings.Contains(f.logs.String(), "setup_token") {
		t.Fatalf("setup token logged although a password exists:\n%s", f.logs)
	}
	wantJSON(t, f.do(req{method: "POST", path: PathSetup, body: `{"setup_token":"x","password":"` + testPassword + `"}`}), 409, msgAlreadySetUp)
}

// A password set with the CLI while the exporter waits for setup ends the
// setup phase: the setup endpoint refuses, login works.
func TestPasswordSetByCommandWhileRunning(t *testing.T) {
	f := newFixture(t, false)
	token := loggedSetupToken(t, f.logs.String())
	if _, err := setPassword(context.Background(), f.db.DB, testPassword, bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	wantJSON(t, f.do(req{method: "POST", path: PathSetup, body: `{"setup_token":"` + token + `","password":"other password 123"}`}), 409, msgAlreadySetUp)
	f.login("")
}

func TestSetPasswordUsesCost12AndRevokesSessions(t *testing.T) {
	f := newFixture(t, true)
	tok := f.login("")
	revoked, err := SetPassword(context.Background(), f.db.DB, "a new password that is long")
	if err != nil {
		t.Fatal(err)
	}
	if revoked != 1 {
		t.Fatalf("revoked %d sessions, want 1", revoked)
	}
	hash, err := readPasswordHash(context.Background(), f.db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost(hash); err != nil || cost != 12 {
		t.Fatalf("bcrypt cost = %d (%v), want 12", cost, err)
	}
	f.svc.ClearSessionCache()
	wantJSON(t, f.do(req{method: "GET", path: PathSession, bearer: tok}), 401, msgAuthFailed)
	for _, bad := range []string{"", "short", strings.Repeat("é", 11), strings.Repeat("x", 73)} {
		if _, err := SetPassword(context.Background(), f.db.DB, bad); err == nil {
			t.Errorf("SetPassword(%q) accepted", bad)
		}
	}
}

func TestLoginSessionLogout(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[useTLS], func(t *testing.T) {
			f := newFixture(t, true)
			rec := f.do(req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`, tls: useTLS})
			wantJSON(t, rec, 200, "")
			resp := mustDecode[sessionResponse](t, rec)
			if len(resp.Token) != 43 || resp.TokenType != "Bearer" {
				t.Fatalf("login response %+v", resp)
			}
			if want := f.clock.Now().Add(time.Hour); !resp.ExpiresAt.Equal(want) || resp.ExpiresIn != 3600 {
				t.Fatalf("expires_at %v in %d, want %v in 3600", resp.ExpiresAt, resp.ExpiresIn, want)
			}
			cookies := rec.Result().Cookies()
			if len(cookies) != 1 {
				t.Fatalf("cookies %v", cookies)
			}
			c := cookies[0]
			if c.Name != CookieName || c.Value != resp.Token || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/api" || c.Secure != useTLS || c.MaxAge != 3600 {
				t.Fatalf("cookie %+v", c)
			}
			// Only the SHA-256 of the token is stored.
			var stored []byte
			var client string
			if err := f.db.Reader.QueryRow("SELECT token_sha256, client_addr FROM sessions").Scan(&stored, &client); err != nil {
				t.Fatal(err)
			}
			if want := sha256.Sum256([]byte(resp.Token)); !bytes.Equal(stored, want[:]) || client != "192.0.2.100" {
				t.Fatalf("stored %x %q", stored, client)
			}
			// Session by Bearer and by cookie.
			for _, r := range []req{{method: "GET", path: PathSession, bearer: resp.Token}, {method: "GET", path: PathSession, cookie: resp.Token}} {
				rec := f.do(r)
				wantJSON(t, rec, 200, "")
				s := mustDecode[sessionResponse](t, rec)
				if !s.ExpiresAt.Equal(resp.ExpiresAt) || s.Token != "" {
					t.Fatalf("session %+v", s)
				}
			}
			// Logout revokes at once, inside the cache window.
			rec = f.do(req{method: "POST", path: PathLogout, cookie: resp.Token, contentType: "application/json"})
			wantJSON(t, rec, 200, "")
			if c := rec.Result().Cookies(); len(c) != 1 || c[0].MaxAge != -1 {
				t.Fatalf("logout cookies %v", c)
			}
			wantJSON(t, f.do(req{method: "GET", path: PathSession, bearer: resp.Token}), 401, msgAuthFailed)
			wantJSON(t, f.do(req{method: "POST", path: PathLogout, bearer: resp.Token}), 401, msgAuthFailed)
			var n int
			if err := f.db.Reader.QueryRow("SELECT count(*) FROM sessions").Scan(&n); err != nil || n != 0 {
				t.Fatalf("%d sessions left (%v)", n, err)
			}
		})
	}
}

func TestTokensNeverInDatabaseFiles(t *testing.T) {
	f := newFixture(t, true)
	tok := f.login("")
	if _, err := f.db.Writer.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	var path string
	if err := f.db.Reader.QueryRow("SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&path); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(path + "*")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte(testPassword)) {
			t.Fatalf("%s contains the token or the password", file)
		}
	}
	if strings.Contains(f.logs.String(), tok) || strings.Contains(f.logs.String(), testPassword) {
		t.Fatal("logs contain the token or the password")
	}
}

func TestSessionExpiryIsExact(t *testing.T) {
	for _, cached := range []bool{true, false} {
		t.Run(map[bool]string{true: "cached", false: "from database"}[cached], func(t *testing.T) {
			f := newFixture(t, true, func(o *Options) { o.SessionCacheTTL = 2 * time.Hour })
			tok := f.login("")
			f.clock.Advance(time.Hour - time.Millisecond)
			if !cached {
				f.svc.ClearSessionCache()
			}
			wantJSON(t, f.do(req{method: "GET", path: PathSession, bearer: tok}), 200, "")
			f.clock.Advance(time.Millisecond)
			if !cached {
				f.svc.ClearSessionCache()
			}
			wantJSON(t, f.do(req{method: "GET", path: PathSession, bearer: tok}), 401, msgAuthFailed)
		})
	}
}

// Expired sessions are deleted from the table at the next login.
func TestExpiredSessionsPruned(t *testing.T) {
	f := newFixture(t, true)
	f.login("")
	f.login("")
	f.clock.Advance(2 * time.Hour)
	f.login("")
	var n int
	if err := f.db.Reader.QueryRow("SELECT count(*) FROM sessions").Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d sessions (%v), want 1", n, err)
	}
}

func TestWrongPasswordBacksOffPerClient(t *testing.T) {
	f := newFixture(t, true)
	const attacker = "203.0.113.5:5555"
	wrong := req{method: "POST", path: PathLogin, body: `{"password":"wrong password guess"}`, remote: attacker}
	for i, wait := range []int{1, 2, 4, 8, 16} {
		wantJSON(t, f.do(wrong), 401, msgAuthFailed)
		rec := f.do(wrong)
		wantJSON(t, rec, 429, msgTooMany)
		if got := rec.Header().Get("Retry-After"); got != strconvI(wait) {
			t.Fatalf("attempt %d: Retry-After %q, want %d", i, got, wait)
		}
		// The right password is refused too while the client backs off.
		wantJSON(t, f.do(req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`, remote: attacker}), 429, msgTooMany)
		// Another client is not affected.
		f.login("198.51.100.20:1")
		f.clock.Advance(time.Duration(wait) * time.Second)
	}
	// Same /64 counts as the same IPv6 client, another /64 does not.
	v6 := req{method: "POST", path: PathLogin, body: `{"password":"wrong password guess"}`, remote: "[2001:db8:1:2::1]:1"}
	wantJSON(t, f.do(v6), 401, msgAuthFailed)
	v6.remote = "[2001:db8:1:2::ffff]:1"
	wantJSON(t, f.do(v6), 429, msgTooMany)
	f.login("[2001:db8:1:3::1]:1")

	// A successful login resets the backoff.
	f.login(attacker)
	wantJSON(t, f.do(wrong), 401, msgAuthFailed)
	if rec := f.do(wrong); rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("after a success the backoff restarts at 1s, got %q", rec.Header().Get("Retry-After"))
	}
	logs := f.logs.String()
	if n := strings.Count(logs, `msg="admin API authentication failed" client=203.0.113.5 action=login reason=wrong_password`); n != 6 {
		t.Fatalf("%d wrong_password lines for the attacker, want 6:\n%s", n, logs)
	}
	// One throttled line per wait (the first refused retry of each of the
	// six waits), not one per refused retry (11).
	if n := strings.Count(logs, `msg="admin API authentication failed" client=203.0.113.5 action=login reason=throttled`); n != 6 {
		t.Fatalf("%d throttled lines, want 6", n)
	}
	if strings.Contains(logs, "wrong password guess") {
		t.Fatal("a password was logged")
	}
}

func TestLimiterDelayCapAndForget(t *testing.T) {
	l := newLimiter()
	a := ipAddr("192.0.2.1")
	now := time.Unix(1_800_000_000, 0)
	var last time.Duration
	for range 30 {
		if w := l.begin(a, now).wait; w != 0 {
			t.Fatalf("begin refused after waiting: %v", w)
		}
		last = l.end(a, now, attemptFailed)
		now = now.Add(last)
	}
	if last != backoffMax {
		t.Fatalf("delay after 30 failures = %v, want the cap %v", last, backoffMax)
	}
	if w := l.begin(a, now.Add(-time.Second)).wait; w != time.Second {
		t.Fatalf("wait = %v", w)
	}
	// One attempt in flight per client.
	if w := l.begin(a, now).wait; w != 0 {
		t.Fatal(w)
	}
	if w := l.begin(a, now).wait; w == 0 {
		t.Fatal("second concurrent attempt allowed")
	}
	l.end(a, now, attemptFailed)
	// After backoffForget without failures the client starts afresh.
	now = now.Add(backoffForget)
	if w := l.begin(a, now).wait; w != 0 {
		t.Fatal(w)
	}
	if d := l.end(a, now, attemptFailed); d != backoffBase {
		t.Fatalf("delay after forgetting = %v", d)
	}
}

func TestLimiterBoundedMemory(t *testing.T) {
	l := newLimiter()
	now := time.Unix(1_800_000_000, 0)
	base := ipAddr("10.0.0.0")
	for i := range maxTrackedClients + 500 {
		a := base
		for range i {
			a = a.Next()
		}
		l.begin(a, now)
		l.end(a, now, attemptFailed)
		now = now.Add(time.Millisecond)
	}
	if n := len(l.clients); n > maxTrackedClients {
		t.Fatalf("limiter tracks %d clients, bound %d", n, maxTrackedClients)
	}
}

func TestOpenWithRealAppDB(t *testing.T) {
	ctx := context.Background()
	db, err := appdb.Open(ctx, filepath.Join(t.TempDir(), "a.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	for range 2 { // migrations are idempotent
		if _, err := New(ctx, Options{DB: db, hashCost: bcrypt.MinCost}); err != nil {
			t.Fatal(err)
		}
	}
	var v int
	if err := db.Reader.QueryRow("SELECT version FROM schema_versions WHERE component = 'sessionauth'").Scan(&v); err != nil || v != 1 {
		t.Fatalf("version %d (%v)", v, err)
	}
	if _, err := New(ctx, Options{}); err == nil {
		t.Fatal("New without a database succeeded")
	}
	if _, err := New(ctx, Options{DB: db, SessionTTL: -1}); err == nil {
		t.Fatal("negative TTL accepted")
	}
}

func strconvI(i int) string { return strconv.Itoa(i) }

func ipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestLimiterAbortedAttemptKeepsBackoff(t *testing.T) {
	l := newLimiter()
	a, b := ipAddr("192.0.2.1"), ipAddr("192.0.2.2")
	now := time.Unix(1_800_000_000, 0)
	l.begin(a, now)
	l.end(a, now, attemptFailed)
	now = now.Add(backoffBase)
	l.begin(a, now)
	l.end(a, now, attemptAborted)
	if w := l.begin(a, now).wait; w != 0 {
		t.Fatalf("aborted attempt left the client in flight: %v", w)
	}
	if d := l.end(a, now, attemptFailed); d != 2*backoffBase {
		t.Fatalf("after an aborted attempt the next failure waits %v, want %v", d, 2*backoffBase)
	}
	l.begin(b, now)
	l.end(b, now, attemptAborted)
	if _, ok := l.clients[b]; ok {
		t.Fatal("an aborted first attempt is remembered")
	}
}

// A database failure is a JSON 500, logged, and does not count against the
// client.
func TestDatabaseFailureIsInternalError(t *testing.T) {
	f := newFixture(t, true)
	if err := f.db.Reader.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		wantJSON(t, f.do(req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`}), 500, msgInternal)
	}
	if !strings.Contains(f.logs.String(), `msg="admin API request failed" path=/api/auth/login`) {
		t.Fatalf("no error logged:\n%s", f.logs)
	}
	if strings.Contains(f.logs.String(), LogFailedAuth) {
		t.Fatal("an internal error was logged as a failed login")
	}
	if n := len(f.svc.limiter.clients); n != 0 {
		t.Fatalf("limiter remembers %d clients", n)
	}
}
