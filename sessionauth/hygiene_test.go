package sessionauth

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/bangui/bangui_exporter/geo"
)

func TestErrorCodes(t *testing.T) {
	f := newFixture(t, true)
	tok := f.login("")
	big := `{"password":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	cases := []struct {
		name   string
		r      req
		status int
		errMsg string
		allow  string
	}{
		{"unknown route", req{method: "GET", path: "/api/nope", bearer: tok}, 404, msgNotFound, ""},
		{"unknown route under auth", req{method: "GET", path: "/api/auth/", bearer: tok}, 404, msgNotFound, ""},
		{"api root", req{method: "GET", path: "/api/"}, 404, msgNotFound, ""},
		{"GET login", req{method: "GET", path: PathLogin}, 405, "method GET not allowed", "POST"},
		{"DELETE session", req{method: "DELETE", path: PathSession, bearer: tok}, 405, "method DELETE not allowed", "GET"},
		{"GET re-resolve", req{method: "GET", path: PathReResolve, bearer: tok}, 405, "", "POST"},
		{"POST lookup", req{method: "POST", path: PathLookupBase + "192.0.2.1", bearer: tok}, 405, "", "GET"},
		{"body over 64 KiB", req{method: "POST", path: PathLogin, body: big}, 413, msgBodyTooLarge, ""},
		{"text/plain", req{method: "POST", path: PathLogin, body: `{"password":"x"}`, contentType: "text/plain"}, 415, msgBadContentType, ""},
		{"no content type", req{method: "POST", path: PathLogin, body: `{"password":"x"}`, contentType: "-"}, 415, msgBadContentType, ""},
		{"json with charset", req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`, contentType: "application/json; charset=utf-8", remote: "192.0.2.200:1"}, 200, "", ""},
		{"unknown field", req{method: "POST", path: PathLogin, body: `{"password":"x","user":"admin"}`}, 400, `invalid JSON body: unknown field "user"`, ""},
		{"two values", req{method: "POST", path: PathLogin, body: `{"password":"x"} {}`}, 400, "invalid JSON body: more than one JSON value", ""},
		{"empty body", req{method: "POST", path: PathLogin, contentType: "application/json"}, 400, "empty request body", ""},
		{"not an object", req{method: "POST", path: PathLogin, body: `["x"]`}, 400, "", ""},
		{"wrong type", req{method: "POST", path: PathLogin, body: `{"password":12}`}, 400, "", ""},
		{"no password", req{method: "POST", path: PathLogin, body: `{}`}, 400, "password is required", ""},
		{"invalid IP", req{method: "GET", path: PathLookupBase + "999.1.1.1", bearer: tok}, 400, `invalid IP address "999.1.1.1"`, ""},
		{"IP with zone", req{method: "GET", path: PathLookupBase + "fe80::1%eth0", bearer: tok}, 400, `invalid IP address "fe80::1%eth0"`, ""},
		{"empty IP", req{method: "GET", path: PathLookupBase, bearer: tok}, 400, `invalid IP address ""`, ""},
		{"IP with suffix", req{method: "GET", path: PathLookupBase + "192.0.2.1/x", bearer: tok}, 400, "", ""},
		{"no token", req{method: "GET", path: PathSession}, 401, msgAuthFailed, ""},
		{"unknown token", req{method: "GET", path: PathSession, bearer: strings.Repeat("A", 43)}, 401, msgAuthFailed, ""},
		{"basic auth", req{method: "GET", path: PathSession, header: map[string]string{"Authorization": "Basic YTpi"}}, 401, msgAuthFailed, ""},
		{"bad bearer beats good cookie", req{method: "GET", path: PathSession, bearer: "nope", cookie: tok}, 401, msgAuthFailed, ""},
		{"basic auth of the web config beside the cookie", req{method: "GET", path: PathSession, cookie: tok, header: map[string]string{"Authorization": "Basic YTpi"}}, 200, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := f.do(c.r)
			wantJSON(t, rec, c.status, c.errMsg)
			if got := rec.Header().Get("Allow"); got != c.allow {
				t.Fatalf("Allow = %q, want %q", got, c.allow)
			}
			if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("headers %v", rec.Header())
			}
			if c.status == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

// A chunked body (no Content-Length) over the limit is cut off with 413 by
// the real server.
func TestBodyLimitOverTheWire(t *testing.T) {
	f := newFixture(t, true)
	srv := httptest.NewServer(f.svc)
	defer srv.Close()
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, `{"password":"`)
		chunk := strings.Repeat("a", 4096)
		for range 20 {
			if _, err := io.WriteString(pw, chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(pw, `"}`)
		_ = pw.Close()
	}()
	hr, _ := http.NewRequest(http.MethodPost, srv.URL+PathLogin, pr)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	pr.CloseWithError(io.ErrClosedPipe)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.ContentLength == 0 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestCSRFRules(t *testing.T) {
	f := newFixture(t, true)
	tok := f.login("")
	same := map[string]string{"Origin": "http://exporter.example:9635"}
	cases := []struct {
		name   string
		r      req
		status int
	}{
		{"cookie POST without content type", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "-"}, 415},
		{"cookie POST as form", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/x-www-form-urlencoded"}, 415},
		{"cookie POST from another origin", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/json", header: map[string]string{"Origin": "http://evil.example"}}, 403},
		{"cookie POST from another port", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/json", header: map[string]string{"Origin": "http://exporter.example:9999"}}, 403},
		{"cookie POST from https variant", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/json", header: map[string]string{"Origin": "https://exporter.example:9635"}}, 403},
		{"cookie POST with Origin null", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/json", header: map[string]string{"Origin": "null"}}, 403},
		{"cookie POST same origin", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/json", header: same}, 202},
		{"cookie POST without Origin", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/json"}, 202},
		{"bearer POST without content type", req{method: "POST", path: PathReResolve, bearer: tok, contentType: "-"}, 202},
		{"cookie GET needs neither", req{method: "GET", path: PathGeoStatus, cookie: tok, header: map[string]string{"Origin": "http://evil.example"}}, 200},
		{"login from another origin", req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`, header: map[string]string{"Origin": "http://evil.example"}}, 403},
		{"proxied https origin from a trusted proxy", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/json", remote: "10.1.2.3:1",
			header: map[string]string{"Origin": "https://admin.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "admin.example", "X-Forwarded-For": "198.51.100.7"}}, 202},
		{"forwarded headers from an untrusted peer are ignored", req{method: "POST", path: PathReResolve, cookie: tok, contentType: "application/json", remote: "192.0.2.9:1",
			header: map[string]string{"Origin": "https://admin.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "admin.example"}}, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := f.do(c.r)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
			}
		})
	}
}

func TestSecureCookieBehindTrustedProxy(t *testing.T) {
	f := newFixture(t, true)
	rec := f.do(req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`, remote: "10.0.0.1:1",
		header: map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}})
	if c := rec.Result().Cookies(); rec.Code != 200 || len(c) != 1 || !c[0].Secure {
		t.Fatalf("%d %v", rec.Code, c)
	}
	var client string
	if err := f.db.Reader.QueryRow("SELECT client_addr FROM sessions").Scan(&client); err != nil || client != "198.51.100.7" {
		t.Fatalf("client %q (%v)", client, err)
	}
}

func TestClientAddr(t *testing.T) {
	s := &Service{proxies: mustProxies(t, "10.0.0.0/8", "2001:db8:ffff::1")}
	cases := []struct {
		name, remote, xff string
		want              string
	}{
		{"direct", "192.0.2.1:5", "", "192.0.2.1"},
		{"direct ignores XFF", "192.0.2.1:5", "198.51.100.1", "192.0.2.1"},
		{"mapped peer", "[::ffff:192.0.2.1]:5", "", "192.0.2.1"},
		{"trusted proxy", "10.0.0.1:5", "198.51.100.1", "198.51.100.1"},
		{"trusted proxy without XFF", "10.0.0.1:5", "", "10.0.0.1"},
		{"spoofed left entries skipped", "10.0.0.1:5", "6.6.6.6, 198.51.100.1", "198.51.100.1"},
		{"proxy chain", "10.0.0.1:5", "198.51.100.1, 10.9.9.9", "198.51.100.1"},
		{"all trusted", "10.0.0.1:5", "10.0.0.2, 10.0.0.3", "10.0.0.2"},
		{"garbage stops the walk", "10.0.0.1:5", "198.51.100.1, bogus", "10.0.0.1"},
		{"ipv6 proxy", "[2001:db8:ffff::1]:5", "2001:db8::42", "2001:db8::42"},
		{"unix socket peer", "@", "198.51.100.1", "unknown"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/auth/session", nil)
			r.RemoteAddr = c.remote
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			if got := clientString(s.clientAddr(r)); got != c.want {
				t.Fatalf("client %q, want %q", got, c.want)
			}
		})
	}
}

func mustProxies(t *testing.T, v ...string) []netip.Prefix {
	t.Helper()
	p, err := ParseTrustedProxies(v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.0.0.0/8, 192.0.2.1", "::1", "2001:db8::/32", ""})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.1/32", "::1/128", "2001:db8::/32"}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example", "fe80::1%eth0", "::ffff:10.0.0.0/104"} {
		if _, err := ParseTrustedProxies([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestGeoEndpoints(t *testing.T) {
	f := newFixture(t, true)
	tok := f.login("")
	rec := f.do(req{method: "POST", path: PathReResolve, bearer: tok})
	wantJSON(t, rec, 202, "")
	if got := mustDecode[map[string]int](t, rec); len(got) != 1 || got["queued"] != 2 {
		t.Fatalf("re-resolve %v", got)
	}
	rec = f.do(req{method: "GET", path: PathGeoStatus, bearer: tok})
	wantJSON(t, rec, 200, "")
	st := mustDecode[geo.Status](t, rec)
	if st.Resolved != 1 || st.Unresolved != 2 || st.Pending != 2 || len(st.Providers) != 1 || st.Providers[0].Name != "mmdb" {
		t.Fatalf("status %+v", st)
	}
	cases := []struct {
		path    string
		known   bool
		ip      string
		country string
	}{
		{"192.0.2.1", true, "192.0.2.1", "DE"},
		{"::ffff:192.0.2.1", true, "192.0.2.1", "DE"},
		{"2001:db8::1", true, "2001:db8::1", ""},
		{"2001:DB8:0::1", true, "2001:db8::1", ""},
		{"203.0.113.77", false, "203.0.113.77", ""},
	}
	for _, c := range cases {
		rec := f.do(req{method: "GET", path: PathLookupBase + c.path, bearer: tok})
		wantJSON(t, rec, 200, "")
		var got map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		cc, _ := got["country_code"].(string)
		if got["known"] != c.known || got["ip"] != c.ip || cc != c.country {
			t.Errorf("lookup %s: %v", c.path, got)
		}
		if !c.known && got["pending"] != true {
			t.Errorf("unknown IP not reported pending: %v", got)
		}
	}
}

func TestGeoDisabled(t *testing.T) {
	f := newFixture(t, true, func(o *Options) { o.Geo = nil })
	tok := f.login("")
	for _, r := range []req{
		{method: "POST", path: PathReResolve, bearer: tok},
		{method: "GET", path: PathGeoStatus, bearer: tok},
		{method: "GET", path: PathLookupBase + "192.0.2.1", bearer: tok},
	} {
		wantJSON(t, f.do(r), 503, msgGeoDisabled)
	}
	// Unauthenticated requests learn nothing about geo.
	wantJSON(t, f.do(req{method: "GET", path: PathGeoStatus}), 401, msgAuthFailed)
}
