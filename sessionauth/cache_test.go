package sessionauth

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// queries runs r and returns how many statements the database saw.
func (f *fixture) queries(r req, wantStatus int) int64 {
	f.t.Helper()
	before := f.db.total()
	rec := f.do(r)
	if rec.Code != wantStatus {
		f.t.Fatalf("%s %s: status %d, want %d; %s", r.method, r.path, rec.Code, wantStatus, rec.Body)
	}
	return f.db.total() - before
}

func TestSetupFlagCache(t *testing.T) {
	f := newFixture(t, false)
	anon := req{method: "GET", path: PathSession}
	// Not set up: every request asks the database (the password may have
	// been set with the CLI meanwhile).
	for range 3 {
		if n := f.queries(anon, http.StatusServiceUnavailable); n != 1 {
			t.Fatalf("request before setup ran %d statements, want 1", n)
		}
	}
	token := loggedSetupToken(t, f.logs.String())
	if rec := f.do(req{method: "POST", path: PathSetup, body: `{"setup_token":"` + token + `","password":"` + testPassword + `"}`}); rec.Code != 201 {
		t.Fatalf("setup: %d %s", rec.Code, rec.Body)
	}
	// Set up: a request needing no session costs no statement at all.
	for range 3 {
		if n := f.queries(anon, http.StatusUnauthorized); n != 0 {
			t.Fatalf("request after setup ran %d statements, want 0", n)
		}
	}
	// The flag is one-way: even if the row vanished, the cache holds.
	if _, err := f.db.Writer.Exec("DELETE FROM settings"); err != nil {
		t.Fatal(err)
	}
	if n := f.queries(anon, http.StatusUnauthorized); n != 0 {
		t.Fatalf("ran %d statements", n)
	}
}

func TestSetupFlagCachedAtStartup(t *testing.T) {
	f := newFixture(t, true)
	if n := f.queries(req{method: "GET", path: PathGeoStatus}, http.StatusUnauthorized); n != 0 {
		t.Fatalf("ran %d statements, want 0", n)
	}
	// A malformed token is refused without a query, too.
	if n := f.queries(req{method: "GET", path: PathGeoStatus, bearer: "not-a-token"}, http.StatusUnauthorized); n != 0 {
		t.Fatalf("ran %d statements, want 0", n)
	}
}

func TestSessionCache(t *testing.T) {
	f := newFixture(t, true)
	tok := f.login("")
	session := req{method: "GET", path: PathSession, bearer: tok}
	status := req{method: "GET", path: PathGeoStatus, cookie: tok}

	// Login put the session in the cache.
	for _, r := range []req{session, status, session} {
		if n := f.queries(r, 200); n != 0 {
			t.Fatalf("cached %s ran %d statements, want 0", r.path, n)
		}
	}
	// At the end of the window the session is validated again: one read,
	// then cached anew.
	f.clock.Advance(10*time.Second - time.Millisecond)
	if n := f.queries(session, 200); n != 0 {
		t.Fatalf("inside the window: %d statements", n)
	}
	f.clock.Advance(time.Millisecond)
	reads, writes := f.db.reads.get(), f.db.writes.get()
	if n := f.queries(session, 200); n != 1 {
		t.Fatalf("window over: %d statements, want 1", n)
	}
	if f.db.reads.get()-reads != 1 || f.db.writes.get() != writes {
		t.Fatal("validation must be one read on the reader pool, no write")
	}
	for range 5 {
		if n := f.queries(session, 200); n != 0 {
			t.Fatalf("re-cached: %d statements", n)
		}
	}
	// ClearSessionCache forces the next request to the database.
	f.svc.ClearSessionCache()
	if n := f.queries(status, 200); n != 1 {
		t.Fatalf("after ClearSessionCache: %d statements, want 1", n)
	}
	// Logout: one write; afterwards refused, and still without a
	// query-free path reviving it.
	if n := f.queries(req{method: "POST", path: PathLogout, bearer: tok}, 200); n != 1 {
		t.Fatalf("logout: %d statements, want 1", n)
	}
	if n := f.queries(session, 401); n != 1 {
		t.Fatalf("after logout: %d statements, want 1 (cache evicted)", n)
	}
}

func TestSessionCacheDisabled(t *testing.T) {
	f := newFixture(t, true, func(o *Options) { o.SessionCacheTTL = 0 })
	tok := f.login("")
	for range 3 {
		if n := f.queries(req{method: "GET", path: PathSession, bearer: tok}, 200); n != 1 {
			t.Fatalf("uncached validation ran %d statements, want 1", n)
		}
	}
}

// Unknown tokens are never cached, so a token revoked elsewhere (the CLI
// deleting every session) stays revoked once the cache window is over.
func TestRevokedByCommandAfterWindow(t *testing.T) {
	f := newFixture(t, true)
	tok := f.login("")
	if _, err := f.db.Writer.Exec("DELETE FROM sessions"); err != nil {
		t.Fatal(err)
	}
	f.queries(req{method: "GET", path: PathSession, bearer: tok}, 200) // inside the window
	f.clock.Advance(10 * time.Second)
	for range 2 {
		f.queries(req{method: "GET", path: PathSession, bearer: tok}, 401)
	}
}

func TestCacheSweep(t *testing.T) {
	f := newFixture(t, true)
	for range maxCachedSessions + 10 {
		tok, _ := newToken()
		h, _ := parseToken(tok)
		f.svc.cacheMu.Lock()
		f.svc.cacheLocked(h, session{expires: f.clock.Now().Add(time.Hour), trustedUntil: f.clock.Now().Add(time.Second)}, f.clock.Now())
		f.svc.cacheMu.Unlock()
	}
	f.clock.Advance(time.Second)
	tok := f.login("")
	f.svc.cacheMu.Lock()
	n := len(f.svc.cache)
	f.svc.cacheMu.Unlock()
	if n != 1 {
		t.Fatalf("%d cached sessions after the sweep, want 1", n)
	}
	if strings.TrimSpace(tok) == "" {
		t.Fatal("no token")
	}
}
