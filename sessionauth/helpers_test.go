package sessionauth

import (
	"context"
	"crypto/tls"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"modernc.org/sqlite"

	"github.com/bangui/bangui_exporter/geo"
	"github.com/bangui/bangui_exporter/internal/appdb"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// testPassword satisfies the password rules.
const testPassword = "correct horse battery staple"

// counter counts the statements a *sql.DB sends to SQLite.
type counter struct{ n atomic.Int64 }

func (c *counter) get() int64 { return c.n.Load() }

// countingConnector opens real modernc.org/sqlite connections and counts
// every query, exec, prepare and transaction on them.
type countingConnector struct {
	dsn string
	drv *sqlite.Driver
	c   *counter
}

func (cc *countingConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := cc.drv.Open(cc.dsn)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: cc.c}, nil
}

func (cc *countingConnector) Driver() driver.Driver { return cc.drv }

type countingConn struct {
	driver.Conn
	c *counter
}

func (c *countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.c.n.Add(1)
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.c.n.Add(1)
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (c *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.c.n.Add(1)
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.c.n.Add(1)
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *countingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

// countingDB is an app database whose reader and writer pools count the
// statements they run.
type countingDB struct {
	*appdb.DB
	reads, writes *counter
}

func (d *countingDB) total() int64 { return d.reads.get() + d.writes.get() }

// openCountingDB creates an app database the way appdb.Open does (WAL, one
// writer, query_only readers) and wraps both pools in counters.
func openCountingDB(t testing.TB) *countingDB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.sqlite3")
	// Let appdb create the file in WAL mode.
	first, err := appdb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	dsn := func(readOnly bool) string {
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "synchronous(NORMAL)")
		if readOnly {
			q.Add("_pragma", "query_only(1)")
		}
		q.Set("_txlock", "immediate")
		return (&url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}).String()
	}
	reads, writes := &counter{}, &counter{}
	w := sql.OpenDB(&countingConnector{dsn: dsn(false), drv: &sqlite.Driver{}, c: writes})
	w.SetMaxOpenConns(1)
	r := sql.OpenDB(&countingConnector{dsn: dsn(true), drv: &sqlite.Driver{}, c: reads})
	db := &countingDB{DB: appdb.Wrap(path, w, r), reads: reads, writes: writes}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeGeo is a small in-memory Geo.
type fakeGeo struct {
	mu         sync.Mutex
	entries    map[netip.Addr]geo.Entry
	reResolves int
	lookups    []netip.Addr
}

func newFakeGeo() *fakeGeo {
	return &fakeGeo{entries: map[netip.Addr]geo.Entry{
		netip.MustParseAddr("192.0.2.1"):    {IP: netip.MustParseAddr("192.0.2.1"), CountryCode: "DE", Provider: "mmdb", Final: true},
		netip.MustParseAddr("2001:db8::1"):  {IP: netip.MustParseAddr("2001:db8::1"), Failures: 2, Message: "timeout"},
		netip.MustParseAddr("198.51.100.9"): {IP: netip.MustParseAddr("198.51.100.9")},
	}}
}

func (g *fakeGeo) ReResolve() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reResolves++
	n := 0
	for ip, e := range g.entries {
		if e.CountryCode == "" {
			e.Pending = true
			g.entries[ip] = e
			n++
		}
	}
	return n
}

func (g *fakeGeo) Status() geo.Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := geo.Status{Providers: []geo.ProviderStatus{{Name: "mmdb", MMDBStatus: &geo.MMDBStatus{Path: "/x.mmdb"}}}}
	for _, e := range g.entries {
		if e.CountryCode != "" {
			s.Resolved++
		} else {
			s.Unresolved++
		}
		if e.Pending {
			s.Pending++
		}
	}
	return s
}

func (g *fakeGeo) Lookup(ip netip.Addr) (geo.Entry, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lookups = append(g.lookups, ip)
	e, ok := g.entries[ip]
	if !ok {
		e = geo.Entry{IP: ip, Pending: true}
		g.entries[ip] = e
	}
	return e, ok
}

// fixture is a Service over a counting database with a fake clock.
type fixture struct {
	t     testing.TB
	svc   *Service
	db    *countingDB
	clock *fakeClock
	logs  *testkit.LogBuffer
	geo   *fakeGeo
}

type fixtureOption func(*Options)

// newFixture returns a service; with setUp the admin password testPassword
// exists before the service starts.
func newFixture(t testing.TB, setUp bool, opts ...fixtureOption) *fixture {
	t.Helper()
	db := openCountingDB(t)
	if setUp {
		if _, err := setPassword(context.Background(), db.DB, testPassword, bcrypt.MinCost); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{t: t, db: db, clock: newFakeClock(), logs: &testkit.LogBuffer{}, geo: newFakeGeo()}
	o := Options{
		DB:              db.DB,
		Logger:          slog.New(slog.NewTextHandler(f.logs, nil)),
		SessionTTL:      time.Hour,
		SessionCacheTTL: 10 * time.Second,
		Geo:             f.geo,
		Now:             f.clock.Now,
		TrustedProxies:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		hashCost:        bcrypt.MinCost,
	}
	for _, fn := range opts {
		fn(&o)
	}
	svc, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	return f
}

// req describes one request to the service.
type req struct {
	method, path, body string
	// contentType defaults to application/json when body is set; "-" sends
	// none.
	contentType string
	bearer      string
	cookie      string
	remote      string // default 192.0.2.100:40000
	header      map[string]string
	tls         bool
}

func (f *fixture) do(r req) *httptest.ResponseRecorder {
	f.t.Helper()
	var body io.Reader = http.NoBody
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	// The path is set decoded, as the server would have decoded it.
	hr := httptest.NewRequest(r.method, "http://exporter.example:9635/", body)
	hr.URL.Path = r.path
	hr.RemoteAddr = "192.0.2.100:40000"
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	}
	switch {
	case r.contentType == "-":
	case r.contentType != "":
		hr.Header.Set("Content-Type", r.contentType)
	case r.body != "":
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.cookie != "" {
		hr.AddCookie(&http.Cookie{Name: CookieName, Value: r.cookie})
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	if r.tls {
		hr.TLS = &tls.ConnectionState{}
	}
	rec := httptest.NewRecorder()
	f.svc.ServeHTTP(rec, hr)
	return rec
}

// doPolite is do for a login or setup that honours a 503's Retry-After
// (all password check slots busy) by advancing the clock and retrying, at
// most 100 times; it returns the last answer. Safe in any goroutine.
func (f *fixture) doPolite(r req) *httptest.ResponseRecorder {
	f.t.Helper()
	for range 100 {
		rec := f.do(r)
		secs, err := strconv.Atoi(rec.Header().Get("Retry-After"))
		if rec.Code != http.StatusServiceUnavailable || err != nil {
			return rec
		}
		f.clock.Advance(time.Duration(secs) * time.Second)
		time.Sleep(time.Millisecond) // let the checks in flight move on
	}
	return f.do(r)
}

// login logs in with testPassword and returns the token.
func (f *fixture) login(remote string) string {
	f.t.Helper()
	rec := f.doPolite(req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`, remote: remote})
	if rec.Code != http.StatusOK {
		f.t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	var resp sessionResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		f.t.Fatal(err)
	}
	return resp.Token
}

// wantJSON checks the status and the JSON error message (when wantErr is
// set) of a response.
func wantJSON(t testing.TB, rec *httptest.ResponseRecorder, status int, wantErr string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q is not JSON: %v", rec.Body, err)
	}
	if wantErr != "" {
		if got, _ := body["error"].(string); got != wantErr {
			t.Fatalf("error = %q, want %q", got, wantErr)
		}
	}
}

func mustDecode[T any](t testing.TB, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body, err)
	}
	return v
}
