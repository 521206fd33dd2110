package geo

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

func TestClassifyLocal(t *testing.T) {
	tests := []struct {
		ip      string
		want    string
		special bool
	}{
		{"10.1.2.3", msgPrivateRange, true},
		{"172.16.5.4", msgPrivateRange, true},
		{"192.168.1.1", msgPrivateRange, true},
		{"100.64.0.1", msgPrivateRange, true},
		{"127.0.0.1", msgPrivateRange, true},
		{"169.254.1.1", msgPrivateRange, true},
		{"::1", msgPrivateRange, true},
		{"fd00::1", msgPrivateRange, true},
		{"fe80::1", msgPrivateRange, true},
		{"0.1.2.3", msgReservedRange, true},
		{"192.0.2.1", msgReservedRange, true},
		{"198.51.100.7", msgReservedRange, true},
		{"203.0.113.5", msgReservedRange, true},
		{"198.18.0.1", msgReservedRange, true},
		{"224.0.0.1", msgReservedRange, true},
		{"255.255.255.255", msgReservedRange, true},
		{"2001:db8::1", msgReservedRange, true},
		{"3fff::1", msgReservedRange, true},
		{"ff02::1", msgReservedRange, true},
		{"::", msgReservedRange, true},
		{"64:ff9b::1.2.3.4", msgReservedRange, true},
		{"4000::1", msgReservedRange, true}, // outside 2000::/3
		{"8.8.8.8", "", false},
		{"2001:4860:4860::8888", "", false},
		{"172.32.0.1", "", false},
		{"100.128.0.1", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			msg, special := classifyLocal(normalize(netip.MustParseAddr(tt.ip)))
			if msg != tt.want || special != tt.special {
				t.Errorf("got %q %v, want %q %v", msg, special, tt.want, tt.special)
			}
		})
	}
	if msg, _ := classifyLocal(normalize(netip.MustParseAddr("::ffff:10.0.0.1"))); msg != msgPrivateRange {
		t.Errorf("IPv4-mapped private address: %q", msg)
	}
}

type resolverEnv struct {
	r     *Resolver
	clock *autoClock
	mmdb  *MMDB
	api   *fakeIPAPI
	ipapi *IPAPI
}

// newResolverEnv builds a resolver over a test mmdb and the fake ip-api, in
// the given provider order.
func newResolverEnv(t *testing.T, order []string, opts Options) *resolverEnv {
	t.Helper()
	env := &resolverEnv{clock: newAutoClock()}
	env.mmdb, _ = newTestMMDB(t, "official", testNets)
	env.api = newFakeIPAPI(t, env.clock)
	var err error
	env.ipapi, err = NewIPAPI(IPAPIOptions{URL: env.api.url(), Clock: env.clock})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range order {
		switch name {
		case "mmdb":
			opts.Providers = append(opts.Providers, env.mmdb)
		case "ipapi":
			opts.Providers = append(opts.Providers, env.ipapi)
		}
	}
	if opts.DB == nil {
		opts.DB = openTestDB(t)
	}
	opts.Clock = env.clock
	env.r, err = New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func (env *resolverEnv) sentToIPAPI() []string {
	_, _, items := env.api.snapshot()
	var out []string
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func TestResolverProviderOrder(t *testing.T) {
	ips := []string{"8.8.8.8", "24.48.0.1", "10.1.2.3", "203.0.113.5", "::ffff:1.1.1.1", "fe80::1%eth0"}
	tests := []struct {
		order        []string
		wantCountry  map[string]string
		wantProvider map[string]string
		wantSent     []string
	}{
		{
			order:        []string{"mmdb", "ipapi"},
			wantCountry:  map[string]string{"8.8.8.8": "US", "24.48.0.1": "CA", "10.1.2.3": "", "203.0.113.5": "", "::ffff:1.1.1.1": "AU", "fe80::1%eth0": ""},
			wantProvider: map[string]string{"8.8.8.8": "mmdb", "24.48.0.1": "ipapi", "10.1.2.3": "local", "203.0.113.5": "local", "::ffff:1.1.1.1": "mmdb", "fe80::1%eth0": "local"},
			wantSent:     []string{"24.48.0.1"},
		},
		{
			order:        []string{"ipapi", "mmdb"},
			wantCountry:  map[string]string{"8.8.8.8": "US", "24.48.0.1": "CA", "10.1.2.3": "", "203.0.113.5": "", "::ffff:1.1.1.1": "AU", "fe80::1%eth0": ""},
			wantProvider: map[string]string{"8.8.8.8": "ipapi", "24.48.0.1": "ipapi", "10.1.2.3": "local", "203.0.113.5": "local", "::ffff:1.1.1.1": "ipapi", "fe80::1%eth0": "local"},
			wantSent:     []string{"1.1.1.1", "24.48.0.1", "8.8.8.8"},
		},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.order, ","), func(t *testing.T) {
			env := newResolverEnv(t, tt.order, Options{})
			r := env.r
			gen0 := r.Generation()
			for _, s := range ips {
				ip := netip.MustParseAddr(s)
				r.Track(ip)
				if c := r.Country(ip); c != "" {
					t.Fatalf("country of %s known before resolution: %q", s, c)
				}
			}
			if r.Status().Pending != len(ips) {
				t.Fatalf("pending = %d, want %d", r.Status().Pending, len(ips))
			}
			r.drain(context.Background())
			if r.Generation() == gen0 {
				t.Error("generation unchanged after countries became known")
			}
			for _, s := range ips {
				ip := netip.MustParseAddr(s)
				if got := r.Country(ip); got != tt.wantCountry[s] {
					t.Errorf("Country(%s) = %q, want %q", s, got, tt.wantCountry[s])
				}
				e, ok := r.Lookup(ip)
				if !ok || e.Provider != tt.wantProvider[s] || e.Pending {
					t.Errorf("Lookup(%s) = %+v %v, want provider %s", s, e, ok, tt.wantProvider[s])
				}
			}
			sent := env.sentToIPAPI()
			slices.Sort(sent)
			if !slices.Equal(sent, tt.wantSent) {
				t.Errorf("sent to ip-api %v, want %v (private and reserved addresses never leave)", sent, tt.wantSent)
			}
			if e, _ := r.Lookup(netip.MustParseAddr("24.48.0.1")); e.ASN != "AS5769 Videotron Telecom Ltee" || e.CountryName != "Canada" {
				t.Errorf("ip-api entry %+v", e)
			}
			if e, _ := r.Lookup(netip.MustParseAddr("10.1.2.3")); e.Message != msgPrivateRange || !e.Final {
				t.Errorf("private entry %+v", e)
			}
		})
	}
}

func TestResolverNegativeTierBackoff(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb"}, Options{NegativeTTL: 5 * time.Minute})
	r := env.r
	ip := netip.MustParseAddr("9.9.9.9") // unknown to the test mmdb
	r.Track(ip)
	r.drain(context.Background())
	e, _ := r.Lookup(ip)
	if e.Failures != 1 || e.Message != msgNotFound || e.Final || !e.RetryAt.Equal(env.clock.Now().Add(5*time.Minute).Truncate(time.Second)) {
		t.Fatalf("after the first failure: %+v", e)
	}
	for i, wait := range []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute} {
		env.clock.Advance(wait - time.Second)
		if n := r.RetryDue(); n != 0 {
			t.Fatalf("failure %d: retried %d before the backoff passed", i+1, n)
		}
		if e, _ := r.Lookup(ip); e.Pending {
			t.Fatalf("Lookup queued an IP in the negative tier: %+v", e)
		}
		env.clock.Advance(time.Second)
		if n := r.RetryDue(); n != 1 {
			t.Fatalf("failure %d: retried %d after %v, want 1", i+1, n, wait)
		}
		r.drain(context.Background())
		if e, _ := r.Lookup(ip); e.Failures != i+2 {
			t.Fatalf("failures = %d, want %d", e.Failures, i+2)
		}
	}
	// Untracked IPs are not retried by the timer.
	r.Untrack(ip)
	env.clock.Advance(24 * time.Hour)
	if n := r.RetryDue(); n != 0 {
		t.Fatalf("untracked IP retried")
	}
	// ReResolve clears the negative tier and queues it.
	if n := r.ReResolve(); n != 1 {
		t.Fatalf("ReResolve queued %d, want 1", n)
	}
	if e, _ := r.Lookup(ip); !e.Pending || e.Failures != 0 {
		t.Fatalf("after ReResolve: %+v", e)
	}
}

func TestResolverFinalAnswersAreNotRetried(t *testing.T) {
	env := newResolverEnv(t, []string{"ipapi"}, Options{})
	r := env.r
	// ip-api calls a global address reserved (it is the authority here).
	env.api.transformNext(func(items []map[string]any) []map[string]any {
		for _, it := range items {
			it["status"], it["message"] = "fail", "reserved range"
			delete(it, "countryCode")
		}
		return items
	})
	ip := netip.MustParseAddr("8.8.4.4")
	r.Track(ip)
	r.Track(netip.MustParseAddr("10.0.0.1"))
	r.drain(context.Background())
	e, _ := r.Lookup(ip)
	if !e.Final || e.Message != "reserved range" || e.Failures != 0 {
		t.Fatalf("entry %+v", e)
	}
	env.clock.Advance(48 * time.Hour)
	if n := r.RetryDue(); n != 0 {
		t.Fatalf("final answer retried")
	}
	// ReResolve asks the provider again, but not for locally classified addresses.
	if n := r.ReResolve(); n != 1 {
		t.Fatalf("ReResolve queued %d, want 1", n)
	}
	r.drain(context.Background())
	if c := r.Country(ip); c != "US" {
		t.Fatalf("after ReResolve: %q", c)
	}
}

func TestResolverBatchErrorFallsThroughThenNegative(t *testing.T) {
	env := newResolverEnv(t, []string{"ipapi", "mmdb"}, Options{})
	r := env.r
	env.api.fail(503, "down")
	for _, s := range []string{"8.8.8.8", "9.9.9.9"} {
		r.Track(netip.MustParseAddr(s))
	}
	r.drain(context.Background())
	if c := r.Country(netip.MustParseAddr("8.8.8.8")); c != "US" {
		t.Errorf("ip-api down: mmdb should answer 8.8.8.8, got %q", c)
	}
	e, _ := r.Lookup(netip.MustParseAddr("9.9.9.9"))
	if e.Failures != 1 || e.Message != msgNotFound {
		t.Errorf("9.9.9.9: %+v", e)
	}
	got := testutil.ToFloat64(r.metrics.lookups.WithLabelValues("ipapi", "error"))
	if got != 2 {
		t.Errorf("lookups_total{ipapi,error} = %v, want 2", got)
	}
}

func TestResolverCacheSizeNeverEvictsTracked(t *testing.T) {
	env := newResolverEnv(t, []string{"ipapi"}, Options{CacheSize: 100})
	env.api.limit = 1000
	r := env.r
	ips := globalIPs(150)
	for _, ip := range ips {
		r.Track(ip)
	}
	r.drain(context.Background())
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := r.Evict(); n != 0 {
		t.Fatalf("evicted %d tracked IPs", n)
	}
	for _, ip := range ips[:100] {
		r.Untrack(ip)
	}
	// Dirty entries are kept until flushed.
	r.Track(netip.MustParseAddr("8.8.8.8"))
	r.drain(context.Background())
	r.Untrack(netip.MustParseAddr("8.8.8.8"))
	if n := r.Evict(); n != 61 {
		t.Fatalf("evicted %d, want 61 (151 down to 90)", n)
	}
	for _, ip := range ips[100:] {
		if r.Country(ip) == "" {
			t.Fatalf("tracked %v evicted", ip)
		}
	}
	if r.Country(netip.MustParseAddr("8.8.8.8")) != "US" {
		t.Fatal("dirty entry evicted before its flush")
	}
	if s := r.Status(); s.Resolved != 90 || s.Unresolved != 0 || s.Tracked != 50 {
		t.Fatalf("status %+v", s)
	}
}

func TestResolverQueueBoundAndBacklog(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb"}, Options{QueueSize: 10})
	r := env.r
	var ips []netip.Addr
	for i := range 25 {
		ips = append(ips, netip.AddrFrom4([4]byte{8, 8, 8, byte(i)}))
	}
	for _, ip := range ips {
		r.Track(ip)
	}
	if s := r.Status(); s.Pending != 10 || s.Providers[0].Queued != 10 {
		t.Fatalf("status %+v, want 10 pending", s)
	}
	if got := testutil.ToFloat64(r.metrics.queueDropped); got != 15 {
		t.Fatalf("queue_full_total = %v, want 15", got)
	}
	r.drain(context.Background())
	for _, ip := range ips {
		if r.Country(ip) != "US" {
			t.Fatalf("%v not resolved from the backlog", ip)
		}
	}
}

// TestResolverReResolveCountsTheBacklog: ReResolve reports every IP it
// schedules, also those that wait for room in a full queue, and all of
// them get resolved.
func TestResolverReResolveCountsTheBacklog(t *testing.T) {
	env := newResolverEnv(t, []string{"ipapi"}, Options{QueueSize: 10})
	r := env.r
	reserved := func(items []map[string]any) []map[string]any {
		for _, it := range items {
			it["status"], it["message"] = "fail", "reserved range"
			delete(it, "countryCode")
		}
		return items
	}
	for range 3 { // 25 IPs through a queue of 10: three requests
		env.api.transformNext(reserved)
	}
	var ips []netip.Addr
	for i := range 25 {
		ip := netip.AddrFrom4([4]byte{8, 8, 8, byte(i)})
		ips = append(ips, ip)
		r.Track(ip)
	}
	r.drain(context.Background())
	for _, ip := range ips {
		if e, _ := r.Lookup(ip); !e.Final || e.CountryCode != "" {
			t.Fatalf("before ReResolve %v: %+v", ip, e)
		}
	}
	if n := r.ReResolve(); n != 25 {
		t.Fatalf("ReResolve scheduled %d, want 25 (10 queued, 15 in the backlog)", n)
	}
	if s := r.Status(); s.Pending != 10 {
		t.Fatalf("status %+v, want 10 pending in the queue", s)
	}
	if n := r.ReResolve(); n != 15 {
		t.Fatalf("second ReResolve scheduled %d, want the 15 still waiting (queued ones are not counted)", n)
	}
	r.drain(context.Background())
	for _, ip := range ips {
		if e, _ := r.Lookup(ip); len(e.CountryCode) != 2 || e.Provider != "ipapi" {
			t.Fatalf("%v not resolved after ReResolve: %+v", ip, e)
		}
	}
}

func TestResolverLookupQueuesUnknown(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb"}, Options{})
	r := env.r
	ip := netip.MustParseAddr("81.2.69.142")
	e, ok := r.Lookup(ip)
	if ok || !e.Pending || e.IP != ip {
		t.Fatalf("Lookup of an unknown IP: %+v %v", e, ok)
	}
	if e, _ := r.Lookup(ip); !e.Pending {
		t.Fatal("not pending on the second Lookup")
	}
	if r.Status().Pending != 1 {
		t.Fatalf("queued twice: %+v", r.Status())
	}
	r.drain(context.Background())
	e, ok = r.Lookup(ip)
	if !ok || e.CountryCode != "GB" || e.CountryName != "United Kingdom" || e.Tracked {
		t.Fatalf("after resolution: %+v %v", e, ok)
	}
}

func TestResolverTrackIsIdempotent(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb"}, Options{})
	r := env.r
	ip := netip.MustParseAddr("8.8.8.8")
	for range 3 {
		r.Track(ip)
	}
	if s := r.Status(); s.Tracked != 1 || s.Pending != 1 {
		t.Fatalf("status %+v", s)
	}
	r.Untrack(ip)
	r.Untrack(ip)
	if s := r.Status(); s.Tracked != 0 {
		t.Fatalf("status %+v", s)
	}
	// The zero address is classified, not a panic.
	r.Track(netip.Addr{})
	r.drain(context.Background())
	if c := r.Country(netip.Addr{}); c != "" {
		t.Fatalf("country of the zero address: %q", c)
	}
}

func TestResolverRunStopsAndResolves(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb", "ipapi"}, Options{FlushInterval: 20 * time.Millisecond})
	env.mmdb.checkInterval = 10 * time.Millisecond
	r := env.r
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { // also when the wait below fails
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}()
	r.Track(netip.MustParseAddr("8.8.8.8"))
	// Resolved and flushed: the entry's flush is counted (a flush every
	// 20 ms overwrites LastFlushedRows with 0 soon after, so the counter is
	// what a poll can see).
	testkit.Eventually(t, 10*time.Second, func() error {
		if s, n := r.Status(), testutil.ToFloat64(r.metrics.flushedEntries); s.Resolved != 1 || s.Dirty != 0 || n != 1 {
			return fmt.Errorf("not resolved and flushed by Run: %+v, %v entries flushed", s, n)
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestRetryAtCapped(t *testing.T) {
	r := &Resolver{negativeTTL: time.Hour}
	ce := cacheEntry{at: 1000, failures: 200}
	if got := r.retryAt(&ce); got != 1000+uint32(maxBackoff/time.Second) {
		t.Fatalf("retryAt = %d", got)
	}
}

// TestCacheEntryIsCompact guards the memory tier's layout: 16 bytes an entry.
func TestCacheEntryIsCompact(t *testing.T) {
	if s := unsafe.Sizeof(cacheEntry{}); s != 16 {
		t.Fatalf("cacheEntry is %d bytes, want 16", s)
	}
}

// TestResolverDropsEndedBansFromTheQueue: an IP the engine stopped counting
// before its turn is not sent to ip-api; one the admin API asked about is.
func TestResolverDropsEndedBansFromTheQueue(t *testing.T) {
	env := newResolverEnv(t, []string{"ipapi"}, Options{})
	r := env.r
	ended, banned := netip.MustParseAddr("8.8.4.4"), netip.MustParseAddr("8.8.8.8")
	r.Track(ended)
	r.Track(banned)
	r.Untrack(ended)
	asked, _ := r.Lookup(netip.MustParseAddr("1.1.1.1"))
	if !asked.Pending {
		t.Fatalf("Lookup did not queue: %+v", asked)
	}
	r.drain(context.Background())
	sent := env.sentToIPAPI()
	slices.Sort(sent)
	if !slices.Equal(sent, []string{"1.1.1.1", "8.8.8.8"}) {
		t.Fatalf("sent %v, want the banned and the asked-for IP only", sent)
	}
	if c := r.Country(ended); c != "" {
		t.Fatalf("ended ban resolved: %q", c)
	}
	if s := r.Status(); s.Resolved != 2 || s.Pending != 0 {
		t.Fatalf("status %+v", s)
	}
	// Banned again: queued again.
	r.Track(ended)
	r.drain(context.Background())
	if r.Country(ended) != "US" {
		t.Fatal("a returning ban was not resolved")
	}
}

// TestResolverSlowProviderQueueFull: when the second provider's queue is
// full, the overflow waits in the backlog for the maintenance tick; the
// first stage does not loop on it.
func TestResolverSlowProviderQueueFull(t *testing.T) {
	env := newResolverEnv(t, []string{"mmdb", "ipapi"}, Options{QueueSize: 2})
	r := env.r
	ips := addrs("9.9.9.1", "9.9.9.2", "9.9.9.3", "9.9.9.4") // unknown to the mmdb
	for _, ip := range ips[:2] {
		r.Track(ip)
	}
	batch := r.take(0)
	r.resolveBatch(context.Background(), 0, batch) // both to ip-api's queue (now full)
	for _, ip := range ips[2:] {
		r.Track(ip)
	}
	batch = r.take(0)
	r.resolveBatch(context.Background(), 0, batch) // ip-api's queue is full: backlog
	if r.takeBacklog() {
		t.Fatal("a later stage's overflow set the first stage's backlog flag")
	}
	if s := r.Status(); s.Providers[1].Queued != 2 || s.Pending != 2 {
		t.Fatalf("status %+v", s)
	}
	r.drain(context.Background())  // ip-api's queue drains
	if n := r.RetryDue(); n != 2 { // the maintenance tick
		t.Fatalf("RetryDue queued %d, want the 2 in the backlog", n)
	}
	r.drain(context.Background())
	for _, ip := range ips {
		if r.Country(ip) == "" {
			t.Fatalf("%v not resolved", ip)
		}
	}
}
