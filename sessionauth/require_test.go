package sessionauth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRequireSession checks the wrapper other parts mount under /api/:
// the same 401 and setup rules as the admin API's own endpoints, GET and
// HEAD only, its headers, and no database access for a cached session.
func TestRequireSession(t *testing.T) {
	f := newFixture(t, true)
	token := f.login("")
	calls := 0
	h := f.svc.RequireSession(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls++
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	serve := func(method, bearer, cookie string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "http://exporter.example:9635/api/bans", nil)
		r.RemoteAddr = "192.0.2.100:40000"
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: CookieName, Value: cookie})
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	tests := []struct {
		name           string
		method, bearer string
		cookie         string
		status         int
		called         bool
	}{
		{"bearer", http.MethodGet, token, "", http.StatusOK, true},
		{"cookie", http.MethodGet, "", token, http.StatusOK, true},
		{"head", http.MethodHead, token, "", http.StatusOK, true},
		{"no session", http.MethodGet, "", "", http.StatusUnauthorized, false},
		{"bad token", http.MethodGet, "not-a-token", "", http.StatusUnauthorized, false},
		{"post", http.MethodPost, token, "", http.StatusMethodNotAllowed, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := calls
			rec := serve(tc.method, tc.bearer, tc.cookie)
			if rec.Code != tc.status || (calls > before) != tc.called {
				t.Errorf("%d (called %v), want %d (called %v): %s", rec.Code, calls > before, tc.status, tc.called, rec.Body)
			}
			if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("headers %v", rec.Header())
			}
		})
	}
	// Within the session cache's TTL a request reads no database.
	serve(http.MethodGet, token, "")
	n := f.db.total()
	for range 10 {
		if rec := serve(http.MethodGet, token, ""); rec.Code != http.StatusOK {
			t.Fatal(rec.Code)
		}
	}
	if got := f.db.total() - n; got != 0 {
		t.Errorf("%d database statements for 10 requests with a cached session", got)
	}
	// After logout the session is refused at once.
	if rec := f.do(req{method: "POST", path: PathLogout, bearer: token}); rec.Code != http.StatusOK {
		t.Fatal(rec.Code)
	}
	if rec := serve(http.MethodGet, token, ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("after logout: %d", rec.Code)
	}
	// Before setup: the admin API's answer.
	unset := newFixture(t, false)
	h2 := unset.svc.RequireSession(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("called before setup") }))
	rec := httptest.NewRecorder()
	h2.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/bans", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("before setup: %d", rec.Code)
	}
}
