package main

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// testFamily is a cached family for the framing tests.
type testFamily struct {
	name string
	text []byte
	z    []byte
}

func newTestFamily(name string, text []byte) *testFamily {
	var b bytes.Buffer
	zw, _ := flate.NewWriter(&b, flate.BestSpeed)
	_, _ = zw.Write(text)
	_ = zw.Flush()
	return &testFamily{name: name, text: text, z: b.Bytes()}
}

func (f *testFamily) Name() string    { return f.name }
func (f *testFamily) Text() []byte    { return f.text }
func (f *testFamily) Deflate() []byte { return f.z }

// gunzipStrict decodes body as exactly one gzip member: compress/gzip with
// Multistream(false) must read it whole (CRC-32 and length checked), and
// nothing may follow it.
func gunzipStrict(t *testing.T, body []byte) []byte {
	t.Helper()
	r := bytes.NewReader(body)
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatalf("gzip header: %v", err)
	}
	zr.Multistream(false)
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip member: %v", err)
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes after the gzip member", r.Len())
	}
	// And as most clients read it (multistream, the default).
	zr2, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain2, err := io.ReadAll(zr2)
	if err != nil || !bytes.Equal(plain, plain2) {
		t.Fatalf("multistream read: %v", err)
	}
	return plain
}

// TestGzipFraming: the gzip member of any sequence of cached and
// per-scrape parts decodes to their texts in order, as a single member.
func TestGzipFraming(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	text := func(name string, n int) []byte {
		var b bytes.Buffer
		fmt.Fprintf(&b, "# HELP %s x\n# TYPE %s gauge\n", name, name)
		for i := range n {
			fmt.Fprintf(&b, "%s{country=\"C%d\",jail=\"j%d\"} %d\n", name, i%250, i%7, i)
		}
		return b.Bytes()
	}
	cached := func(name string, b []byte) part { return part{text: b, fam: newTestFamily(name, b)} }
	dynamic := func(b []byte) part { return part{text: b} }
	for _, tc := range []struct {
		name  string
		parts []part
	}{
		{"nothing", nil},
		{"one part gathered at the scrape", []part{dynamic(text("a", 10))}},
		{"one cached family", []part{cached("a", text("a", 10))}},
		{"cached first", []part{cached("a", text("a", 3000)), dynamic(text("b", 50))}},
		{"interleaved", []part{dynamic(text("a", 5)), cached("b", text("b", 4000)), dynamic(text("c", 40)), cached("d", text("d", 1)), dynamic(text("e", 2))}},
		{"empty part", []part{dynamic(nil), cached("b", text("b", 2)), dynamic([]byte{})}},
		{"incompressible, stored blocks", []part{cached("a", random(200_000)), dynamic(random(70_000)), cached("c", random(10))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &metricsHandler{}
			var z bytes.Buffer
			var body []byte
			for _, b := range h.gzip(&z, tc.parts) {
				body = append(body, b...)
			}
			var want []byte
			for _, p := range tc.parts {
				want = append(want, p.text...)
			}
			if got := gunzipStrict(t, body); !bytes.Equal(got, want) {
				t.Fatalf("decoded %d bytes, want %d", len(got), len(want))
			}
			// The test can fail: a wrong CRC-32 is an error.
			bad := slices.Clone(body)
			crc := binary.LittleEndian.Uint32(bad[len(bad)-8:])
			binary.LittleEndian.PutUint32(bad[len(bad)-8:], crc^1)
			zr, err := gzip.NewReader(bytes.NewReader(bad))
			if err == nil {
				_, err = io.ReadAll(zr)
			}
			if err == nil {
				t.Fatal("a member with a wrong CRC-32 decoded without error")
			}
		})
	}
}

// TestAcceptsGzipAsPromhttp: the handler picks gzip exactly when promhttp
// would, for every Accept-Encoding a client may send.
func TestAcceptsGzipAsPromhttp(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "x", Help: "x"}))
	ph := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	for _, values := range [][]string{
		nil, {""}, {"gzip"}, {"GZIP"}, {"x-gzip"}, {"gzip;q=0"}, {"gzip; q=0.001"}, {"gzip, identity"}, {"identity, gzip"},
		{"identity;q=0.5, gzip"}, {"*"}, {"*;q=0"}, {"gzip;q=0.5, *;q=0.8"}, {"deflate"}, {"br, gzip;q=0.9"},
		{"gzip;foo=bar"}, {"gzip ;q=1.0"}, {"gzip;q=1."}, {"gzip;q=2"}, {"zstd, gzip"}, {"identity;q=0.1", "gzip"},
		{"gzip, deflate, br, zstd"}, {"identity;q=0, gzip;q=0"}, {",gzip"}, {"gzip,"}, {"\tgzip\t"}, {"identity;q=1, gzip;q=1"},
	} {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		for _, v := range values {
			req.Header.Add("Accept-Encoding", v)
		}
		rec := httptest.NewRecorder()
		ph.ServeHTTP(rec, req)
		want := rec.Header().Get("Content-Encoding") == "gzip"
		if got := acceptsGzip(req); got != want {
			t.Errorf("Accept-Encoding %q: gzip %v, promhttp %v", values, got, want)
		}
	}
}

// spreadCountries places IPs in a few hundred countries, from memory.
type spreadCountries struct{}

func (spreadCountries) Track(netip.Addr)   {}
func (spreadCountries) Untrack(netip.Addr) {}
func (spreadCountries) Generation() uint64 { return 1 }
func (spreadCountries) Country(ip netip.Addr) string {
	b := ip.As16()
	return string([]byte{'A' + b[15]%26, 'A' + b[14]%26})
}

// handlerFixture is the exporter's /metrics as main wires it, beside
// promhttp serving the same Exporter the way main did before.
type handlerFixture struct {
	dbPath string
	h      http.Handler
	ref    http.Handler
	reg    *prometheus.Registry
	log    *testkit.LogBuffer
}

func newHandlerFixture(t *testing.T, rows, maxRequests int, extra ...prometheus.Collector) *handlerFixture {
	t.Helper()
	dbPath := f2bgen.GenerateT(t, f2bgen.DefaultSpec(rows, time.Now()))
	f2b := collector.NewExporter(collector.Options{DBPath: dbPath, Windows: []collector.Window{
		{Label: "24h", Length: 24 * time.Hour}, {Label: "7d", Length: 7 * 24 * time.Hour}, {Label: "30d", Length: 30 * 24 * time.Hour},
	}}, spreadCountries{})
	t.Cleanup(func() { _ = f2b.Close() })
	logs := &testkit.LogBuffer{}
	errorLog := log.New(logs, "", 0)

	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector(exporterName), f2b.Uncached())
	reg.MustRegister(extra...)
	h, err := newMetricsHandler(reg, f2b, maxRequests, errorLog)
	if err != nil {
		t.Fatal(err)
	}
	refReg := prometheus.NewRegistry()
	refReg.MustRegister(versioncollector.NewCollector(exporterName), f2b)
	refReg.MustRegister(extra...)
	ref := promhttp.HandlerFor(refReg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Registry: refReg})
	return &handlerFixture{dbPath: dbPath, h: h, ref: ref, reg: reg, log: logs}
}

type response struct {
	code    int
	header  http.Header
	body    []byte // decoded
	rawBody []byte
}

func serveReq(t *testing.T, h http.Handler, method, target string, header map[string]string) response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{code: rec.Code, header: rec.Header(), rawBody: rec.Body.Bytes(), body: rec.Body.Bytes()}
	if res.header.Get("Content-Encoding") == "gzip" {
		res.body = gunzipStrict(t, res.rawBody)
	}
	return res
}

// volatileFamilies change at every refresh, so two scrapes differ there.
var volatileFamilies = []string{"bangui_exporter_fail2ban_read_duration_seconds", "bangui_exporter_fail2ban_last_read_success_timestamp_seconds"}

func stable(body []byte) string {
	var b strings.Builder
	for line := range strings.SplitSeq(string(body), "\n") {
		if slices.ContainsFunc(volatileFamilies, func(f string) bool { return strings.Contains(line, f) }) {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// Accept headers of real scrapers.
const (
	acceptPrometheus2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	acceptPrometheus3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
	acceptProtobuf    = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,text/plain;version=0.0.4;q=0.3"
)

// TestMetricsHandlerEqualsPromhttp: for every request a scraper makes, the
// handler answers what promhttp answers over the same collectors: status,
// Content-Type, Content-Encoding, Vary, and the same exposition byte for
// byte (decoded), the families the handler caches included.
func TestMetricsHandlerEqualsPromhttp(t *testing.T) {
	fx := newHandlerFixture(t, 3000, 40)
	for _, tc := range []struct {
		name   string
		method string
		target string
		header map[string]string
	}{
		{"curl", "GET", "/metrics", map[string]string{"Accept": "*/*"}},
		{"no headers", "GET", "/metrics", nil},
		{"gzip", "GET", "/metrics", map[string]string{"Accept-Encoding": "gzip"}},
		{"Prometheus 2", "GET", "/metrics", map[string]string{"Accept": acceptPrometheus2, "Accept-Encoding": "gzip"}},
		{"Prometheus 3", "GET", "/metrics", map[string]string{"Accept": acceptPrometheus3, "Accept-Encoding": "gzip"}},
		{"protobuf (native histograms)", "GET", "/metrics", map[string]string{"Accept": acceptProtobuf, "Accept-Encoding": "gzip"}},
		{"HEAD", "HEAD", "/metrics", map[string]string{"Accept-Encoding": "gzip"}},
		{"name[] filter", "GET", "/metrics?name[]=fail2ban_banned_ips&name[]=fail2ban_up", nil},
		{"name[] filter, gzip", "GET", "/metrics?name[]=fail2ban_recent_bans", map[string]string{"Accept-Encoding": "gzip"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := serveReq(t, fx.h, tc.method, tc.target, tc.header)
			want := serveReq(t, fx.ref, tc.method, tc.target, tc.header)
			if got.code != 200 || got.code != want.code {
				t.Fatalf("status %d, promhttp %d", got.code, want.code)
			}
			for _, k := range []string{"Content-Type", "Content-Encoding"} {
				if got.header.Get(k) != want.header.Get(k) {
					t.Errorf("%s %q, promhttp %q", k, got.header.Get(k), want.header.Get(k))
				}
			}
			if g, w := got.header.Values("Vary"), want.header.Values("Vary"); !slices.Equal(g, w) {
				t.Errorf("Vary %q, promhttp %q", g, w)
			}
			if expfmt.Format(got.header.Get("Content-Type")).FormatType() == expfmt.TypeProtoDelim {
				compareProtobuf(t, got.body, want.body)
				return
			}
			if g, w := stable(got.body), stable(want.body); g != w {
				t.Errorf("exposition differs from promhttp's:\n%s", lineDiff(g, w))
			}
			if tc.method == "GET" && !strings.Contains(tc.target, "name[]") {
				// The cached families are there, with thousands of series.
				n := strings.Count(string(got.body), "\nfail2ban_recent_bans{")
				if n < 100 {
					t.Errorf("only %d fail2ban_recent_bans series", n)
				}
			}
		})
	}
}

func compareProtobuf(t *testing.T, got, want []byte) {
	t.Helper()
	decode := func(b []byte) map[string]*dto.MetricFamily {
		dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.NewFormat(expfmt.TypeProtoDelim))
		out := map[string]*dto.MetricFamily{}
		for {
			mf := &dto.MetricFamily{}
			if err := dec.Decode(mf); errors.Is(err, io.EOF) {
				return out
			} else if err != nil {
				t.Fatal(err)
			}
			out[mf.GetName()] = mf
		}
	}
	g, w := decode(got), decode(want)
	for name, mf := range w {
		if slices.Contains(volatileFamilies, name) {
			continue
		}
		var gb, wb bytes.Buffer
		if g[name] != nil {
			_, _ = expfmt.MetricFamilyToText(&gb, g[name])
		}
		_, _ = expfmt.MetricFamilyToText(&wb, mf)
		if gb.String() != wb.String() {
			t.Errorf("%s differs:\n%s", name, lineDiff(gb.String(), wb.String()))
		}
	}
	if len(g) != len(w) {
		t.Errorf("%d families, promhttp %d", len(g), len(w))
	}
}

// lineDiff shows the first lines where got and want differ.
func lineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n  got  %q\n  want %q\n(%d lines, promhttp %d)", i+1, gl, wl, len(g), len(w))
		}
	}
	return "(equal)"
}

// TestMetricsHandlerShowsChanges: a scrape after new bans shows them, plain
// and gzip: no cached text outlives the counts it was made from.
func TestMetricsHandlerShowsChanges(t *testing.T) {
	fx := newHandlerFixture(t, 500, 40)
	sum := func(body []byte, name string) float64 {
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var s float64
		for _, m := range fams[name].GetMetric() {
			s += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		return s
	}
	ctx := context.Background()
	w, err := f2bgen.OpenWriter(ctx, fx.dbPath, f2bgen.WriterOptions{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	for round := range 3 {
		for _, enc := range []string{"", "gzip"} {
			before := serveReq(t, fx.h, "GET", "/metrics", map[string]string{"Accept-Encoding": enc})
			// Bans a second apart: distinct ban events, also when one
			// goes to an IP banned before.
			var bans []f2bgen.Ban
			for i := range 5 + round {
				b, err := w.NextBan(ctx, time.Now().Add(-time.Duration(i)*time.Second))
				if err == nil {
					err = w.AddBan(ctx, b)
				}
				if err != nil {
					t.Fatal(err)
				}
				bans = append(bans, b)
			}
			after := serveReq(t, fx.h, "GET", "/metrics", map[string]string{"Accept-Encoding": enc})
			if d := sum(after.body, "fail2ban_recent_bans") - sum(before.body, "fail2ban_recent_bans"); d != float64(3*len(bans)) {
				t.Errorf("round %d %q: fail2ban_recent_bans grew by %v after %d bans, want %d (one per window)", round, enc, d, len(bans), 3*len(bans))
			}
			if d := sum(after.body, "fail2ban_bans_total") - sum(before.body, "fail2ban_bans_total"); d != float64(len(bans)) {
				t.Errorf("round %d %q: fail2ban_bans_total grew by %v after %d bans", round, enc, d, len(bans))
			}
			// And the exposition is still promhttp's.
			ref := serveReq(t, fx.ref, "GET", "/metrics", nil)
			if g, w := stable(after.body), stable(ref.body); g != w {
				t.Errorf("round %d %q: %s", round, enc, lineDiff(g, w))
			}
		}
	}
}

// failingCollector's metric cannot be collected.
type failingCollector struct{}

var failingDesc = prometheus.NewDesc("test_failing", "A metric that fails.", nil, nil)

func (failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- failingDesc }
func (failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(failingDesc, fmt.Errorf("test failure"))
}

// TestMetricsHandlerCollectorError: a failing collector is logged and
// counted in promhttp_metric_handler_errors_total, and everything else is
// served, as promhttp does with ContinueOnError.
func TestMetricsHandlerCollectorError(t *testing.T) {
	fx := newHandlerFixture(t, 200, 40, failingCollector{})
	for i, header := range []map[string]string{nil, {"Accept-Encoding": "gzip"}, {"Accept": acceptProtobuf}} {
		res := serveReq(t, fx.h, "GET", "/metrics", header)
		if res.code != 200 || !bytes.Contains(res.body, []byte("fail2ban_recent_bans")) {
			t.Fatalf("status %d, body %.200q", res.code, res.body)
		}
		if got := errorsCounted(t, fx.reg, "gathering"); got != float64(i+1) {
			t.Errorf("after %d scrapes promhttp_metric_handler_errors_total{cause=\"gathering\"} = %v", i+1, got)
		}
	}
	if !strings.Contains(fx.log.String(), "error gathering metrics:") || !strings.Contains(fx.log.String(), "test failure") {
		t.Errorf("error not logged: %q", fx.log.String())
	}
}

// errorsCounted is promhttp_metric_handler_errors_total{cause} in reg.
func errorsCounted(t *testing.T, reg *prometheus.Registry, cause string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil && !strings.Contains(err.Error(), "test failure") {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "promhttp_metric_handler_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == cause {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no promhttp_metric_handler_errors_total{cause=%q}", cause)
	return 0
}

// blockingCollector blocks its Collect until released.
type blockingCollector struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

var blockingDesc = prometheus.NewDesc("test_blocking", "A metric that waits.", nil, nil)

func (c *blockingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- blockingDesc }
func (c *blockingCollector) Collect(ch chan<- prometheus.Metric) {
	c.once.Do(func() { close(c.entered) })
	<-c.release
	ch <- prometheus.MustNewConstMetric(blockingDesc, prometheus.GaugeValue, 1)
}

// TestMetricsHandlerInFlightLimit: --web.max-requests holds for every
// format, with promhttp's answer.
func TestMetricsHandlerInFlightLimit(t *testing.T) {
	bc := &blockingCollector{entered: make(chan struct{}), release: make(chan struct{})}
	fx := newHandlerFixture(t, 100, 1, bc)
	done := make(chan response)
	go func() { done <- serveReq(t, fx.h, "GET", "/metrics", nil) }()
	<-bc.entered
	for _, header := range []map[string]string{nil, {"Accept": acceptProtobuf}} {
		res := serveReq(t, fx.h, "GET", "/metrics", header)
		if res.code != http.StatusServiceUnavailable || !strings.Contains(string(res.body), "Limit of concurrent requests reached (1), try again later.") {
			t.Errorf("second scrape: %d %q", res.code, res.body)
		}
	}
	close(bc.release)
	if res := <-done; res.code != 200 {
		t.Fatalf("first scrape: %d", res.code)
	}
	if res := serveReq(t, fx.h, "GET", "/metrics", nil); res.code != 200 {
		t.Fatalf("scrape after the first ended: %d", res.code)
	}
}

// TestMetricsHandlerRealClient: Go's HTTP client, which asks for gzip and
// decompresses it itself (checking CRC-32 and length), reads the
// exposition over a real connection, with Content-Length.
func TestMetricsHandlerRealClient(t *testing.T) {
	fx := newHandlerFixture(t, 1000, 40)
	srv := httptest.NewServer(fx.h)
	defer srv.Close()
	for range 3 {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Uncompressed {
			t.Fatal("the client did not get gzip")
		}
		ref := serveReq(t, fx.ref, "GET", "/metrics", nil)
		if g, w := stable(body), stable(ref.body); g != w {
			t.Fatal(lineDiff(g, w))
		}
	}
	// Plain, Content-Length is the body's length.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.ContentLength != int64(len(body)) || len(body) == 0 {
		t.Fatalf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
	}
}
