package geo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The ip-api batch endpoints and their limits.
const (
	DefaultIPAPIURL = "http://ip-api.com/batch"
	ProIPAPIURL     = "https://pro.ip-api.com/batch"
	// ipapiFields are the fields asked for; status, message and query are
	// needed to read an answer at all.
	ipapiFields = "status,message,country,countryCode,as,query"
	// ipapiMaxBatch is the endpoint's limit; more items get HTTP 422.
	ipapiMaxBatch = 100
	// The free endpoint allows 15 batch requests per minute.
	ipapiFreeRequests = 15
	ipapiFreeWindow   = time.Minute
	// ipapiDefaultRetry is the wait after a 429 without X-Ttl.
	ipapiDefaultRetry = 60 * time.Second
	// ipapiTTLMargin is added to every X-Ttl wait: the header has whole
	// seconds and the server's window may end a moment later than ours.
	ipapiTTLMargin  = time.Second
	ipapiMinBackoff = 5 * time.Second
	ipapiMaxBackoff = 10 * time.Minute
	ipapiMaxBody    = 1 << 20
)

// IPAPIOptions configure the ip-api provider.
type IPAPIOptions struct {
	// URL of the batch endpoint; DefaultIPAPIURL when empty.
	URL string
	// Key switches to the pro endpoint (ProIPAPIURL unless URL is set to
	// something other than the free default) and is sent as ?key=.
	Key string
	// Client defaults to an http.Client with a 10 s timeout.
	Client *http.Client
	Clock  Clock
	Logger *slog.Logger
}

// IPAPI resolves IPs with ip-api.com's batch endpoint: at most 100 IPs per
// request, never more than 15 requests a minute on the free endpoint,
// X-Rl/X-Ttl honoured on every response, 429 waited out, timeouts and 5xx
// backed off exponentially, answers matched by their query field.
type IPAPI struct {
	endpoint string // with fields (and key): what is requested
	display  string // without the key: what is shown and logged
	pro      bool
	client   *http.Client
	clock    Clock
	logger   *slog.Logger

	mu           sync.Mutex
	sent         []time.Time // send times of the last ipapiFreeRequests requests (free endpoint)
	blockedUntil time.Time   // nothing is sent before this
	backoff      time.Duration
	rl           int
	rlKnown      bool
	rlReset      time.Time
	lastErr      string
	requests     map[string]uint64 // by HTTP status code, "error" for no response
}

// NewIPAPI returns the ip-api provider.
func NewIPAPI(opts IPAPIOptions) (*IPAPI, error) {
	raw := opts.URL
	if raw == "" {
		raw = DefaultIPAPIURL
	}
	if opts.Key != "" && raw == DefaultIPAPIURL {
		raw = ProIPAPIURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("geo: ip-api URL %q is not an http(s) URL", raw)
	}
	if opts.Key == "" && u.Scheme == "https" && u.Hostname() == "ip-api.com" {
		return nil, fmt.Errorf("geo: ip-api URL %q: the free endpoint is plain HTTP only (HTTPS answers 403); use http:// or set a pro key", raw)
	}
	display := *u
	q := u.Query()
	q.Set("fields", ipapiFields)
	if opts.Key != "" {
		q.Set("key", opts.Key)
	}
	u.RawQuery = q.Encode()
	dq := display.Query()
	dq.Del("key")
	display.RawQuery = dq.Encode()
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &IPAPI{
		endpoint: u.String(),
		display:  display.String(),
		pro:      opts.Key != "",
		client:   opts.Client,
		clock:    opts.Clock,
		logger:   opts.Logger,
		requests: map[string]uint64{"200": 0},
	}, nil
}

// Name implements Provider.
func (p *IPAPI) Name() string { return "ipapi" }

// MaxBatch implements Provider.
func (p *IPAPI) MaxBatch() int { return ipapiMaxBatch }

// ipapiItem is one answer of the batch endpoint.
type ipapiItem struct {
	Status      string `json:"status"`
	Message     string `json:"message"`
	Country     string `json:"country"`
	CountryCode string `json:"countryCode"`
	AS          string `json:"as"`
	Query       string `json:"query"`
}

// Lookup implements Provider. It waits (on the provider's clock) until a
// request is allowed, and after a 429 waits and sends the batch again.
func (p *IPAPI) Lookup(ctx context.Context, ips []netip.Addr) ([]Answer, error) {
	if len(ips) > ipapiMaxBatch {
		return nil, fmt.Errorf("ip-api: batch of %d IPs exceeds %d", len(ips), ipapiMaxBatch)
	}
	queries := make([]string, len(ips))
	for i, ip := range ips {
		queries[i] = ip.String()
	}
	body, err := json.Marshal(queries)
	if err != nil {
		return nil, fmt.Errorf("ip-api: encode batch: %w", err)
	}
	for {
		if wait := p.reserve(); wait > 0 {
			if err := p.clock.Sleep(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		items, retry, err := p.send(ctx, body)
		if err != nil {
			return nil, err
		}
		if retry {
			continue
		}
		return matchAnswers(ips, queries, items)
	}
}

// reserve returns how long to wait before the next request may go out; when
// it returns 0 the request is counted as sent now.
func (p *IPAPI) reserve() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	if now.Before(p.blockedUntil) {
		return p.blockedUntil.Sub(now)
	}
	if !p.pro && len(p.sent) >= ipapiFreeRequests {
		if next := p.sent[len(p.sent)-ipapiFreeRequests].Add(ipapiFreeWindow); now.Before(next) {
			return next.Sub(now)
		}
	}
	if !p.pro {
		p.sent = append(p.sent, now)
		if len(p.sent) > ipapiFreeRequests {
			p.sent = append(p.sent[:0], p.sent[len(p.sent)-ipapiFreeRequests:]...)
		}
	}
	return 0
}

// send posts one batch. retry reports a 429 (the batch must be sent again
// after the wait reserve now imposes).
func (p *IPAPI) send(ctx context.Context, body []byte) (items []ipapiItem, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, false, p.fail("error", fmt.Errorf("ip-api: build request: %w", p.redact(err)), false)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "bangui_exporter")
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, false, p.fail("error", &providerError{short: "ip-api unreachable", err: fmt.Errorf("ip-api: %w", p.redact(err))}, true)
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body; a close error changes nothing
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, ipapiMaxBody+1))
	code := strconv.Itoa(resp.StatusCode)
	p.readRateHeaders(resp)
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		p.mu.Lock()
		p.requests[code]++
		wait := ipapiDefaultRetry
		if ttl, ok := headerInt(resp.Header, "X-Ttl"); ok {
			wait = time.Duration(ttl)*time.Second + ipapiTTLMargin
		}
		p.blockedUntil = maxTime(p.blockedUntil, p.clock.Now().Add(wait))
		p.lastErr = "HTTP 429 (rate limited)"
		p.mu.Unlock()
		p.logger.Warn("ip-api rate limit hit; waiting", "wait", wait)
		return nil, true, nil
	case resp.StatusCode != http.StatusOK:
		msg := bodyMessage(data)
		return nil, false, p.fail(code, &providerError{
			short: "ip-api HTTP " + code,
			err:   fmt.Errorf("ip-api: HTTP %d: %s", resp.StatusCode, msg),
		}, true)
	case readErr != nil:
		return nil, false, p.fail(code, &providerError{short: "ip-api read error", err: fmt.Errorf("ip-api: read response: %w", readErr)}, true)
	case len(data) > ipapiMaxBody:
		return nil, false, p.fail(code, &providerError{short: "ip-api response too large", err: errors.New("ip-api: response larger than 1 MiB")}, true)
	}
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, false, p.fail(code, &providerError{short: "ip-api malformed response", err: fmt.Errorf("ip-api: malformed response: %w", err)}, false)
	}
	p.mu.Lock()
	p.requests[code]++
	p.backoff = 0
	p.lastErr = ""
	p.mu.Unlock()
	return items, false, nil
}

// fail counts a failed request, backs off when asked to, and returns err.
func (p *IPAPI) fail(code string, err error, backoff bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests[code]++
	p.lastErr = err.Error()
	if backoff {
		p.backoff = min(max(p.backoff*2, ipapiMinBackoff), ipapiMaxBackoff)
		p.blockedUntil = maxTime(p.blockedUntil, p.clock.Now().Add(p.backoff))
	}
	return err
}

// readRateHeaders applies X-Rl and X-Ttl: when no request is left in the
// window, nothing is sent until it resets.
func (p *IPAPI) readRateHeaders(resp *http.Response) {
	rl, okRl := headerInt(resp.Header, "X-Rl")
	ttl, okTTL := headerInt(resp.Header, "X-Ttl")
	if !okRl {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	p.rl, p.rlKnown = rl, true
	if okTTL {
		p.rlReset = now.Add(time.Duration(ttl) * time.Second)
	}
	if rl <= 0 {
		wait := ipapiDefaultRetry
		if okTTL {
			wait = time.Duration(ttl)*time.Second + ipapiTTLMargin
		}
		p.blockedUntil = maxTime(p.blockedUntil, now.Add(wait))
	}
}

func headerInt(h http.Header, name string) (int, bool) {
	v := h.Get(name)
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// bodyMessage extracts ip-api's {"message": ...} from an error body, or a
// short prefix of the body.
func bodyMessage(data []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &m) == nil && m.Message != "" {
		return m.Message
	}
	if len(data) > 200 {
		data = data[:200]
	}
	return strconv.Quote(string(bytes.TrimSpace(data)))
}

// redact removes the key from errors that carry the request URL.
func (p *IPAPI) redact(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return &url.Error{Op: ue.Op, URL: p.display, Err: ue.Err}
	}
	return err
}

// matchAnswers pairs the response items with the IPs by their query field,
// never by position alone. A response of the wrong length is an error for
// the batch.
func matchAnswers(ips []netip.Addr, queries []string, items []ipapiItem) ([]Answer, error) {
	if len(items) != len(ips) {
		return nil, &providerError{short: "ip-api wrong answer count",
			err: fmt.Errorf("ip-api: %d answers for %d IPs", len(items), len(ips))}
	}
	byQuery := make(map[string]*ipapiItem, len(items))
	for i := range items {
		byQuery[items[i].Query] = &items[i]
	}
	answers := make([]Answer, len(ips))
	for i := range ips {
		it, ok := byQuery[queries[i]]
		if !ok {
			answers[i] = Answer{Kind: AnswerError, Message: "missing in ip-api response"}
			continue
		}
		answers[i] = it.answer()
	}
	return answers, nil
}

func (it *ipapiItem) answer() Answer {
	switch it.Status {
	case "success":
		if it.CountryCode == "" {
			return Answer{Kind: AnswerNotFound, ASN: it.AS}
		}
		if !validCountryCode(it.CountryCode) {
			return Answer{Kind: AnswerError, Message: "invalid country code from ip-api"}
		}
		return Answer{Kind: AnswerFound, CountryCode: it.CountryCode, CountryName: it.Country, ASN: it.AS}
	case "fail":
		switch it.Message {
		case msgPrivateRange, msgReservedRange, msgInvalidQuery:
			return Answer{Kind: AnswerNoCountry, Message: it.Message}
		}
		msg := it.Message
		if len(msg) > 80 {
			msg = msg[:80]
		}
		return Answer{Kind: AnswerError, Message: "ip-api: " + msg}
	}
	return Answer{Kind: AnswerError, Message: "ip-api: unexpected status"}
}

var (
	ipapiRequestsDesc = prometheus.NewDesc(namespace+"ipapi_requests_total",
		"Batch requests sent to ip-api by HTTP status code (\"error\" when no response arrived).", []string{"code"}, nil)
	ipapiRateRemainingDesc = prometheus.NewDesc(namespace+"ipapi_rate_limit_remaining",
		"Requests left in ip-api's current rate-limit window (X-Rl header of the last response); absent before the first response and on the pro endpoint.", nil, nil)
)

// Describe implements prometheus.Collector; the resolver's collector
// includes it.
func (p *IPAPI) Describe(ch chan<- *prometheus.Desc) {
	ch <- ipapiRequestsDesc
	ch <- ipapiRateRemainingDesc
}

// Collect implements prometheus.Collector.
func (p *IPAPI) Collect(ch chan<- prometheus.Metric) {
	if left, ok := p.rateLimitRemaining(); ok {
		ch <- prometheus.MustNewConstMetric(ipapiRateRemainingDesc, prometheus.GaugeValue, float64(left))
	}
	for code, n := range p.requestCounts() {
		ch <- prometheus.MustNewConstMetric(ipapiRequestsDesc, prometheus.CounterValue, float64(n), code)
	}
}

// rateLimitRemaining is X-Rl of the last response that had it.
func (p *IPAPI) rateLimitRemaining() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rl, p.rlKnown
}

// requestCounts copies the request counters.
func (p *IPAPI) requestCounts() map[string]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.requests)
}

// IPAPIStatus is the ip-api provider's part of ProviderStatus.
type IPAPIStatus struct {
	URL                string    `json:"url,omitempty"` // never contains the key
	RateLimitRemaining *int      `json:"rate_limit_remaining,omitempty"`
	RateLimitReset     time.Time `json:"rate_limit_reset,omitzero"`
	BlockedUntil       time.Time `json:"blocked_until,omitzero"`
}

// Status implements Provider.
func (p *IPAPI) Status() ProviderStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &IPAPIStatus{URL: p.display, RateLimitReset: p.rlReset}
	if p.rlKnown {
		rl := p.rl
		s.RateLimitRemaining = &rl
	}
	if p.clock.Now().Before(p.blockedUntil) {
		s.BlockedUntil = p.blockedUntil
	}
	return ProviderStatus{Name: p.Name(), IPAPIStatus: s, LastError: p.lastErr}
}
