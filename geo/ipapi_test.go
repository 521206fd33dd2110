package geo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// globalIPs returns n distinct global addresses in 11.0.0.0/8 (routed,
// not special).
func globalIPs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range n {
		out[i] = netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	return out
}

func TestFakeIPAPISpeaksTheProtocol(t *testing.T) {
	clock := newAutoClock()
	f := newFakeIPAPI(t, clock)
	post := func(url, body string) (*http.Response, string) {
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer closeQuietly(resp.Body)
		var b bytes.Buffer
		if _, err := b.ReadFrom(resp.Body); err != nil {
			t.Fatal(err)
		}
		return resp, strings.TrimSpace(b.String())
	}
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("11.0.0.%d", i))
	}
	tests := []struct {
		name, url, body string
		wantCode        int
		wantBody        string
	}{
		{"fields by name", f.url() + "?fields=status,countryCode,query", `["8.8.8.8"]`, 200,
			`[{"countryCode":"US","query":"8.8.8.8","status":"success"}]`},
		{"fields by number 57347", f.url() + "?fields=57347", `["24.48.0.1"]`, 200,
			`[{"country":"Canada","countryCode":"CA","query":"24.48.0.1","status":"success"}]`},
		{"per-item object fields", f.url(), `[{"query":"1.1.1.1","fields":"countryCode"}]`, 200,
			`[{"countryCode":"AU"}]`},
		{"per-item failures", f.url() + "?fields=status,message,query", `["10.1.2.3","203.0.113.5","example.com"]`, 200,
			`[{"message":"private range","query":"10.1.2.3","status":"fail"},{"message":"reserved range","query":"203.0.113.5","status":"fail"},{"message":"invalid query","query":"example.com","status":"fail"}]`},
		{"no status asked, none given", f.url() + "?fields=countryCode", `["8.8.8.8"]`, 200, `[{"countryCode":"US"}]`},
		{"101 items", f.url(), "[" + strings.Join(many, ",") + "]", 422,
			`{"message":"too many items, maximum is 100","status":"fail"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(tt.url, tt.body)
			if resp.StatusCode != tt.wantCode || body != tt.wantBody {
				t.Errorf("got %d %s, want %d %s", resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
			if resp.Header.Get("X-Rl") == "" || resp.Header.Get("X-Ttl") == "" {
				t.Errorf("free endpoint response without X-Rl/X-Ttl: %v", resp.Header)
			}
		})
	}
	// The window: 15 requests a minute, then 429 with X-Rl 0 until reset.
	for range 15 - len(tests) {
		post(f.url(), `["8.8.8.8"]`)
	}
	resp, _ := post(f.url(), `["8.8.8.8"]`)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("X-Rl") != "0" || resp.Header.Get("X-Ttl") != "60" {
		t.Fatalf("16th request in a minute: %d X-Rl=%s X-Ttl=%s, want 429 0 60", resp.StatusCode, resp.Header.Get("X-Rl"), resp.Header.Get("X-Ttl"))
	}
	clock.Advance(time.Minute)
	if resp, _ := post(f.url(), `["8.8.8.8"]`); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Rl") != "14" {
		t.Fatalf("after the window: %d X-Rl=%s, want 200 14", resp.StatusCode, resp.Header.Get("X-Rl"))
	}
	// The pro endpoint checks the key and sends no rate headers.
	f.proKey = "secret"
	if resp, body := post(f.url()+"?key=wrong", `["8.8.8.8"]`); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "invalid/expired key") {
		t.Fatalf("bad key: %d %s", resp.StatusCode, body)
	}
	if resp, _ := post(f.url()+"?key=secret", `["8.8.8.8"]`); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Rl") != "" {
		t.Fatalf("good key: %d X-Rl=%q", resp.StatusCode, resp.Header.Get("X-Rl"))
	}
}

func TestIPAPIAnswers(t *testing.T) {
	tests := []struct {
		name string
		ip   string
		want Answer
	}{
		{"found", "8.8.8.8", Answer{Kind: AnswerFound, CountryCode: "US", CountryName: "United States", ASN: "AS15169 Google LLC"}},
		{"ipv6", "2001:4860:4860::8888", Answer{Kind: AnswerFound, CountryCode: "US", CountryName: "United States", ASN: "AS15169 Google LLC"}},
		{"private", "10.1.2.3", Answer{Kind: AnswerNoCountry, Message: "private range"}},
		{"reserved", "203.0.113.5", Answer{Kind: AnswerNoCountry, Message: "reserved range"}},
	}
	clock := newAutoClock()
	f := newFakeIPAPI(t, clock)
	p, err := NewIPAPI(IPAPIOptions{URL: f.url(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ips := make([]netip.Addr, len(tests))
	for i, tt := range tests {
		ips[i] = netip.MustParseAddr(tt.ip)
	}
	got, err := p.Lookup(context.Background(), ips)
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got[i] != tt.want {
				t.Errorf("got %+v, want %+v", got[i], tt.want)
			}
		})
	}
	if f.fieldsSeen[0] != ipapiFields {
		t.Errorf("fields asked = %q, want %q", f.fieldsSeen[0], ipapiFields)
	}
	if left, ok := p.rateLimitRemaining(); !ok || left != 14 {
		t.Errorf("rate limit remaining = %d %v, want 14 true", left, ok)
	}
}

func TestIPAPIFaults(t *testing.T) {
	shuffle := func(items []map[string]any) []map[string]any {
		rand.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
		return items
	}
	reverse := func(items []map[string]any) []map[string]any {
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
		return items
	}
	dropLast := func(items []map[string]any) []map[string]any { return items[:len(items)-1] }
	renameFirst := func(items []map[string]any) []map[string]any {
		items[0]["query"] = "9.9.9.9"
		return items
	}
	ips := addrs("8.8.8.8", "1.1.1.1", "24.48.0.1", "81.2.69.142")
	tests := []struct {
		name        string
		fault       func(f *fakeIPAPI)
		wantErr     string
		wantBackoff bool
		check       func(t *testing.T, got []Answer)
	}{
		{"shuffled order matched by query", func(f *fakeIPAPI) { f.transformNext(shuffle) }, "", false, nil},
		{"reversed order matched by query", func(f *fakeIPAPI) { f.transformNext(reverse) }, "", false, nil},
		{"wrong length", func(f *fakeIPAPI) { f.transformNext(dropLast) }, "3 answers for 4 IPs", false, nil},
		{"unknown query", func(f *fakeIPAPI) { f.transformNext(renameFirst) }, "", false, func(t *testing.T, got []Answer) {
			if got[0].Kind != AnswerError || got[1].CountryCode != "AU" {
				t.Errorf("got %+v", got)
			}
		}},
		{"malformed JSON", func(f *fakeIPAPI) {
			f.faults = append(f.faults, fakeFault{body: `[{"status":"success",`})
		}, "malformed response", false, nil},
		{"503", func(f *fakeIPAPI) { f.fail(503, "upstream down") }, "HTTP 503", true, nil},
		{"500", func(f *fakeIPAPI) { f.fail(500, `{"status":"fail","message":"internal"}`) }, "HTTP 500: internal", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newAutoClock()
			f := newFakeIPAPI(t, clock)
			p, err := NewIPAPI(IPAPIOptions{URL: f.url(), Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			tt.fault(f)
			got, err := p.Lookup(context.Background(), ips)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if tt.check != nil {
				tt.check(t, got)
			} else {
				want := []string{"US", "AU", "CA", "GB"}
				for i := range want {
					if got[i].CountryCode != want[i] {
						t.Errorf("answer %d = %+v, want %s", i, got[i], want[i])
					}
				}
			}
			// After a 5xx nothing is sent for the backoff; the next request
			// waits on the clock, then succeeds.
			before := clock.Now()
			if _, err := p.Lookup(context.Background(), ips[:1]); err != nil {
				t.Fatal(err)
			}
			waited := clock.Now().Sub(before)
			if tt.wantBackoff && waited < ipapiMinBackoff {
				t.Errorf("waited %v after a server error, want >= %v", waited, ipapiMinBackoff)
			}
			if !tt.wantBackoff && waited != 0 {
				t.Errorf("waited %v, want no wait", waited)
			}
		})
	}
}

func TestIPAPIBackoffGrowsAndResets(t *testing.T) {
	clock := newAutoClock()
	f := newFakeIPAPI(t, clock)
	f.limit = 1000
	p, err := NewIPAPI(IPAPIOptions{URL: f.url(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	var gaps []time.Duration
	for range 4 {
		f.fail(503, "down")
		before := clock.Now()
		if _, err := p.Lookup(context.Background(), addrs("8.8.8.8")); err == nil {
			t.Fatal("503 gave no error")
		}
		gaps = append(gaps, clock.Now().Sub(before))
	}
	// The first failure waits nothing before it; each next one waits double.
	want := []time.Duration{0, 5 * time.Second, 10 * time.Second, 20 * time.Second}
	for i := range want {
		if gaps[i] != want[i] {
			t.Fatalf("waits before each request = %v, want %v", gaps, want)
		}
	}
	before := clock.Now()
	if _, err := p.Lookup(context.Background(), addrs("8.8.8.8")); err != nil {
		t.Fatal(err)
	}
	if w := clock.Now().Sub(before); w != 40*time.Second {
		t.Fatalf("wait before the success = %v, want 40s", w)
	}
	before = clock.Now()
	if _, err := p.Lookup(context.Background(), addrs("8.8.8.8")); err != nil || clock.Now() != before {
		t.Fatalf("after a success the backoff is reset: err %v, waited %v", err, clock.Now().Sub(before))
	}
}

// TestIPAPIPacingWholeBacklog pushes a backlog of 5,000 IPs through the free
// endpoint: the client must never exceed 15 requests in any 60 s, never
// get a 429, and never send more than 100 IPs per request.
func TestIPAPIPacingWholeBacklog(t *testing.T) {
	tests := []struct {
		name        string
		serverLimit int // the server's window; below 15 when other clients share the address
		wantCodes   map[int]int
	}{
		{"free limit", 15, map[int]int{200: 50}},
		{"shared address: X-Rl reaches 0 early", 4, map[int]int{200: 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newAutoClock()
			f := newFakeIPAPI(t, clock)
			f.limit = tt.serverLimit
			p, err := NewIPAPI(IPAPIOptions{URL: f.url(), Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			db := openTestDB(t)
			r, err := New(context.Background(), Options{DB: db, Providers: []Provider{p}, Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			for _, ip := range globalIPs(5000) {
				r.Track(ip)
			}
			start := clock.Now()
			r.drain(context.Background())
			accepted, codes, items := f.snapshot()
			got := map[int]int{}
			for _, c := range codes {
				got[c]++
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantCodes) {
				t.Fatalf("response codes %v, want %v", got, tt.wantCodes)
			}
			for _, it := range items {
				if len(it) > 100 {
					t.Fatalf("request with %d items", len(it))
				}
			}
			for i := ipapiFreeRequests; i < len(accepted); i++ {
				if span := accepted[i].Sub(accepted[i-ipapiFreeRequests]); span < time.Minute {
					t.Fatalf("requests %d..%d within %v: more than 15 a minute", i-ipapiFreeRequests, i, span)
				}
			}
			if s := r.Status(); s.Resolved != 5000 || s.Pending != 0 {
				t.Fatalf("status %+v, want 5000 resolved", s)
			}
			t.Logf("5000 IPs in %d requests over %v of (fake) time", len(accepted), clock.Now().Sub(start))
		})
	}
}

func TestIPAPI429WaitsXTtlAndResends(t *testing.T) {
	for _, tt := range []struct {
		name     string
		withTTL  bool
		wantWait time.Duration
	}{
		{"X-Ttl given", true, 41 * time.Second},
		{"X-Ttl absent", false, 60 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := newAutoClock()
			f := newFakeIPAPI(t, clock)
			if tt.withTTL {
				// Another client used the whole window 20 s ago.
				f.windowStart, f.windowCount = clock.Now().Add(-20*time.Second), 15
			} else {
				f.fail(429, "Too many requests")
			}
			p, err := NewIPAPI(IPAPIOptions{URL: f.url(), Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			before := clock.Now()
			got, err := p.Lookup(context.Background(), addrs("8.8.8.8"))
			if err != nil || got[0].CountryCode != "US" {
				t.Fatalf("got %+v, %v", got, err)
			}
			_, codes, _ := f.snapshot()
			if fmt.Sprint(codes) != "[429 200]" {
				t.Fatalf("codes %v, want [429 200]", codes)
			}
			if w := clock.Now().Sub(before); w != tt.wantWait {
				t.Fatalf("waited %v after the 429, want %v", w, tt.wantWait)
			}
			if n := p.requestCounts()["429"]; n != 1 {
				t.Fatalf("requests_total{code=429} = %d", n)
			}
		})
	}
}

func TestIPAPIProKey(t *testing.T) {
	clock := newAutoClock()
	f := newFakeIPAPI(t, clock)
	f.proKey = "s3cret-key"
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	good, err := NewIPAPI(IPAPIOptions{URL: f.url(), Key: "s3cret-key", Clock: clock, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	for range 30 { // no free-tier pacing on the pro endpoint
		if _, err := good.Lookup(context.Background(), addrs("8.8.8.8")); err != nil {
			t.Fatal(err)
		}
	}
	if clock.slept != 0 {
		t.Errorf("pro endpoint waited %v", clock.slept)
	}
	if _, ok := good.rateLimitRemaining(); ok {
		t.Error("rate limit remaining reported for the pro endpoint")
	}
	bad, err := NewIPAPI(IPAPIOptions{URL: f.url(), Key: "wrong", Clock: clock, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Lookup(context.Background(), addrs("8.8.8.8"))
	if err == nil || !strings.Contains(err.Error(), "invalid/expired key") {
		t.Fatalf("bad key: %v", err)
	}
	st := bad.Status()
	for _, s := range []string{err.Error(), st.URL, st.LastError, logs.String()} {
		if strings.Contains(s, "wrong") || strings.Contains(s, "s3cret") {
			t.Errorf("key leaked: %q", s)
		}
	}
	// A key with the default URL switches to the pro endpoint.
	pro, err := NewIPAPI(IPAPIOptions{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pro.endpoint, ProIPAPIURL+"?") || pro.Status().URL != ProIPAPIURL {
		t.Errorf("endpoint %q, shown %q", pro.endpoint, pro.Status().URL)
	}
}

func TestIPAPIUnreachableRedactsKey(t *testing.T) {
	clock := newAutoClock()
	p, err := NewIPAPI(IPAPIOptions{URL: "http://127.0.0.1:1/batch", Key: "topsecret", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Lookup(context.Background(), addrs("8.8.8.8"))
	if err == nil {
		t.Fatal("no error for an unreachable endpoint")
	}
	if strings.Contains(err.Error(), "topsecret") || strings.Contains(p.Status().LastError, "topsecret") {
		t.Fatalf("key in error: %v", err)
	}
	if shortError(err) != "ip-api unreachable" {
		t.Errorf("short error %q", shortError(err))
	}
}

func TestNewIPAPIRejectsBadURL(t *testing.T) {
	for _, u := range []string{"ftp://x/batch", "not a url", "http://", "https://ip-api.com/batch"} {
		if _, err := NewIPAPI(IPAPIOptions{URL: u}); err == nil {
			t.Errorf("URL %q accepted", u)
		}
	}
}

// TestIPAPITimeoutBacksOff: a server that does not answer within the client
// timeout costs one error for the batch and a backoff, not a retry storm.
func TestIPAPITimeoutBacksOff(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer hang.Close()
	clock := newAutoClock()
	p, err := NewIPAPI(IPAPIOptions{URL: hang.URL + "/batch", Clock: clock, Client: &http.Client{Timeout: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Lookup(context.Background(), addrs("8.8.8.8"))
	if err == nil || shortError(err) != "timeout" {
		t.Fatalf("err = %v (short %q), want a timeout", err, shortError(err))
	}
	if st := p.Status(); !st.BlockedUntil.Equal(clock.Now().Add(ipapiMinBackoff)) || p.requestCounts()["error"] != 1 {
		t.Fatalf("after a timeout: %+v, counts %v", st, p.requestCounts())
	}
}
