package geo

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeIPAPI is a local server speaking ip-api.com's batch protocol: POST
// /batch with a JSON array of up to 100 items (IP strings or {"query",
// "fields", "lang"} objects; 422 beyond 100), the fields parameter by names
// or by number, per-item "fail" answers (private range, reserved range,
// invalid query), on the free endpoint a 15-requests-per-minute window with
// X-Rl/X-Ttl on every response and 429 when exceeded, on the pro endpoint a
// key check (403) and no rate-limit headers. Time comes from the test clock.
type fakeIPAPI struct {
	t      testing.TB
	clock  Clock
	server *httptest.Server

	mu          sync.Mutex
	known       map[string]fakeGeo
	proKey      string // non-empty: behave as the pro endpoint
	limit       int    // requests per window on the free endpoint
	window      time.Duration
	windowStart time.Time
	windowCount int
	accepted    []time.Time // times of requests answered 200
	codes       []int       // status of every request
	items       [][]string  // queries of every accepted request
	fieldsSeen  []string
	// Faults for the next requests, consumed in order.
	faults []fakeFault
}

type fakeGeo struct{ country, code, as string }

type fakeFault struct {
	status int    // answer with this status (and body) instead
	body   string // raw body to send with status 200 when status is 0
	// transform changes the items of a 200 answer (shuffle, drop, ...).
	transform func([]map[string]any) []map[string]any
}

// fakeIPAPIFieldBits are ip-api's numeric field bits.
var fakeIPAPIFieldBits = map[string]int{
	"status": 16384, "message": 32768, "country": 1, "countryCode": 2, "region": 4, "regionName": 8, "city": 16,
	"zip": 32, "lat": 64, "lon": 128, "timezone": 256, "isp": 512, "org": 1024, "as": 2048, "reverse": 4096,
	"query": 8192, "mobile": 65536, "proxy": 131072, "district": 524288, "continent": 1048576,
	"continentCode": 2097152, "asname": 4194304, "currency": 8388608, "hosting": 16777216, "offset": 33554432,
}

// defaultFakeKnown answers like the real service for a few well-known IPs.
var defaultFakeKnown = map[string]fakeGeo{
	"8.8.8.8":              {"United States", "US", "AS15169 Google LLC"},
	"8.8.4.4":              {"United States", "US", "AS15169 Google LLC"},
	"1.1.1.1":              {"Australia", "AU", "AS13335 Cloudflare, Inc."},
	"24.48.0.1":            {"Canada", "CA", "AS5769 Videotron Telecom Ltee"},
	"81.2.69.142":          {"United Kingdom", "GB", "AS20712 Andrews & Arnold Ltd"},
	"2001:4860:4860::8888": {"United States", "US", "AS15169 Google LLC"},
}

func newFakeIPAPI(t testing.TB, clock Clock) *fakeIPAPI {
	f := &fakeIPAPI{t: t, clock: clock, known: map[string]fakeGeo{}, limit: 15, window: time.Minute}
	maps.Copy(f.known, defaultFakeKnown)
	f.server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.server.Close)
	return f
}

func (f *fakeIPAPI) url() string { return f.server.URL + "/batch" }

func (f *fakeIPAPI) fail(status int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, fakeFault{status: status, body: body})
}

func (f *fakeIPAPI) transformNext(fn func([]map[string]any) []map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, fakeFault{transform: fn})
}

func (f *fakeIPAPI) snapshot() (accepted []time.Time, codes []int, items [][]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.accepted...), append([]int(nil), f.codes...), append([][]string(nil), f.items...)
}

func (f *fakeIPAPI) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		f.t.Errorf("fake ip-api: encode: %v", err)
	}
}

func (f *fakeIPAPI) serve(w http.ResponseWriter, req *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	status := http.StatusOK
	defer func() { f.codes = append(f.codes, status) }()
	if req.URL.Path != "/batch" {
		status = http.StatusNotFound
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodPost {
		status = http.StatusMethodNotAllowed
		http.Error(w, "method not allowed", status)
		return
	}
	q := req.URL.Query()
	if f.proKey != "" {
		if q.Get("key") != f.proKey {
			status = http.StatusForbidden
			f.writeJSON(w, status, map[string]string{"status": "fail", "message": "invalid/expired key, please contact support"})
			return
		}
	} else {
		// The free endpoint's window: every response carries X-Rl and
		// X-Ttl; over the limit is 429 until the window resets.
		now := f.clock.Now()
		if f.windowStart.IsZero() || !now.Before(f.windowStart.Add(f.window)) {
			f.windowStart, f.windowCount = now, 0
		}
		ttl := int(math.Ceil(f.windowStart.Add(f.window).Sub(now).Seconds()))
		if f.windowCount >= f.limit {
			status = http.StatusTooManyRequests
			w.Header().Set("X-Rl", "0")
			w.Header().Set("X-Ttl", strconv.Itoa(ttl))
			w.WriteHeader(status)
			_, _ = fmt.Fprintln(w, "Too many requests")
			return
		}
		f.windowCount++
		w.Header().Set("X-Rl", strconv.Itoa(f.limit-f.windowCount))
		w.Header().Set("X-Ttl", strconv.Itoa(ttl))
	}
	var raw []json.RawMessage
	if err := json.NewDecoder(req.Body).Decode(&raw); err != nil {
		status = http.StatusBadRequest
		f.writeJSON(w, status, map[string]string{"status": "fail", "message": "invalid json"})
		return
	}
	if len(raw) > 100 {
		status = http.StatusUnprocessableEntity
		f.writeJSON(w, status, map[string]string{"status": "fail", "message": "too many items, maximum is 100"})
		return
	}
	var fault fakeFault
	if len(f.faults) > 0 {
		fault, f.faults = f.faults[0], f.faults[1:]
	}
	if fault.status != 0 {
		// Like an error page of a proxy in front: no rate-limit headers.
		status = fault.status
		w.Header().Del("X-Rl")
		w.Header().Del("X-Ttl")
		w.WriteHeader(status)
		_, _ = fmt.Fprint(w, fault.body)
		return
	}
	defaultFields := q.Get("fields")
	f.fieldsSeen = append(f.fieldsSeen, defaultFields)
	out := make([]map[string]any, 0, len(raw))
	var queries []string
	for _, item := range raw {
		query, fields := "", defaultFields
		var s string
		if err := json.Unmarshal(item, &s); err == nil {
			query = s
		} else {
			var obj struct {
				Query  string `json:"query"`
				Fields string `json:"fields"`
				Lang   string `json:"lang"`
			}
			if err := json.Unmarshal(item, &obj); err != nil {
				status = http.StatusBadRequest
				f.writeJSON(w, status, map[string]string{"status": "fail", "message": "invalid item"})
				return
			}
			query = obj.Query
			if obj.Fields != "" {
				fields = obj.Fields
			}
		}
		queries = append(queries, query)
		out = append(out, filterFields(f.answer(query), fields))
	}
	if fault.transform != nil {
		out = fault.transform(out)
	}
	f.accepted = append(f.accepted, f.clock.Now())
	f.items = append(f.items, queries)
	if fault.body != "" {
		w.WriteHeader(status)
		_, _ = fmt.Fprint(w, fault.body)
		return
	}
	f.writeJSON(w, status, out)
}

// answer is the full answer for one query, before fields filtering.
func (f *fakeIPAPI) answer(query string) map[string]any {
	ip, err := netip.ParseAddr(query)
	if err != nil {
		return map[string]any{"status": "fail", "message": "invalid query", "query": query}
	}
	ip = ip.Unmap()
	switch {
	case ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast():
		return map[string]any{"status": "fail", "message": "private range", "query": query}
	case !ip.IsGlobalUnicast() || netip.MustParsePrefix("203.0.113.0/24").Contains(ip) ||
		netip.MustParsePrefix("2001:db8::/32").Contains(ip):
		return map[string]any{"status": "fail", "message": "reserved range", "query": query}
	}
	g, ok := f.known[ip.String()]
	if !ok {
		// The real service knows every routed address; the fake derives a
		// stable answer from the address so large tests have one.
		b := ip.As16()
		g = fakeGeo{"Testland", string([]byte{'A' + b[14]%26, 'A' + b[15]%26}), "AS64500 Test"}
	}
	return map[string]any{
		"status": "success", "country": g.country, "countryCode": g.code, "region": "X", "regionName": "Region",
		"city": "City", "zip": "", "lat": 1.5, "lon": 2.5, "timezone": "UTC", "isp": "ISP", "org": "Org", "as": g.as,
		"query": query,
	}
}

// filterFields keeps the fields asked for (names, comma-separated, or the
// numeric bit form); no fields parameter means ip-api's default set.
func filterFields(full map[string]any, fields string) map[string]any {
	if fields == "" {
		fields = "status,message,country,countryCode,region,regionName,city,zip,lat,lon,timezone,isp,org,as,query"
	}
	want := map[string]bool{}
	if n, err := strconv.Atoi(fields); err == nil {
		for name, bit := range fakeIPAPIFieldBits {
			if n&bit != 0 {
				want[name] = true
			}
		}
	} else {
		for name := range strings.SplitSeq(fields, ",") {
			want[strings.TrimSpace(name)] = true
		}
	}
	out := map[string]any{}
	for k, v := range full {
		if want[k] {
			out[k] = v
		}
	}
	return out
}
