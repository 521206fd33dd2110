package sessionauth

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/testkit"
)

// heldCheck is a check that runs until released.
type heldCheck struct {
	started chan struct{}
	release chan struct{}
	result  chan *gateRefusal
}

// startCheck runs a check through g in the background.
func startCheck(ctx context.Context, g *passwordGate, network string, suspect bool) *heldCheck {
	h := &heldCheck{started: make(chan struct{}), release: make(chan struct{}), result: make(chan *gateRefusal, 1)}
	go func() {
		h.result <- g.run(ctx, netip.MustParsePrefix(network), suspect, func() {
			close(h.started)
			<-h.release
		})
	}()
	return h
}

func (h *heldCheck) isStarted() bool {
	select {
	case <-h.started:
		return true
	default:
		return false
	}
}

func waitQueued(t *testing.T, g *passwordGate, n int) {
	t.Helper()
	testkit.EventuallyTrue(t, 5*time.Second, "queued checks", func() bool { return g.stats().waiting == n })
}

func TestPasswordGateBounds(t *testing.T) {
	ctx := context.Background()
	g := newPasswordGate(2)
	if g.queueMax != 4 || g.suspectMax != 2 || g.networkMax != 3 {
		t.Fatalf("bounds: queue %d, suspect %d, per network %d", g.queueMax, g.suspectMax, g.networkMax)
	}
	// Two run at once, from two networks.
	a := startCheck(ctx, g, "192.0.2.0/24", false)
	b := startCheck(ctx, g, "198.51.100.0/24", false)
	<-a.started
	<-b.started
	// A third network's check waits; so does one more of the first.
	c := startCheck(ctx, g, "203.0.113.0/24", true)
	waitQueued(t, g, 1)
	d := startCheck(ctx, g, "192.0.2.0/24", false)
	waitQueued(t, g, 2)
	// The first network holds 2 of its 3 places; two suspect checks may
	// wait, a third is refused at once although the queue has room.
	e := startCheck(ctx, g, "10.1.0.0/24", true)
	waitQueued(t, g, 3)
	if r := g.run(ctx, netip.MustParsePrefix("10.2.0.0/24"), true, func() { t.Error("ran") }); r == nil || r.retryAfter < time.Second {
		t.Fatalf("third suspect waiter: %+v, want a refusal with Retry-After ≥ 1s", r)
	}
	// One network holds at most 3 places.
	f := startCheck(ctx, g, "192.0.2.0/24", false)
	waitQueued(t, g, 4)
	if r := g.run(ctx, netip.MustParsePrefix("192.0.2.0/24"), false, func() { t.Error("ran") }); r == nil {
		t.Fatal("a fourth place for one network")
	}
	// The queue is full.
	if r := g.run(ctx, netip.MustParsePrefix("172.16.0.0/24"), false, func() { t.Error("ran") }); r == nil {
		t.Fatal("a fifth waiter")
	}
	// Clean waiters go first (d, f), then suspect ones in order (c, e).
	close(a.release)
	testkit.EventuallyTrue(t, 5*time.Second, "d started", d.isStarted)
	close(b.release)
	testkit.EventuallyTrue(t, 5*time.Second, "f started", f.isStarted)
	if c.isStarted() || e.isStarted() {
		t.Fatal("a suspect check ran before a clean one")
	}
	close(d.release)
	testkit.EventuallyTrue(t, 5*time.Second, "c started", c.isStarted)
	if e.isStarted() {
		t.Fatal("suspect checks out of order")
	}
	for _, h := range []*heldCheck{c, e, f} {
		close(h.release)
	}
	for _, h := range []*heldCheck{a, b, c, d, e, f} {
		if r := <-h.result; r != nil {
			t.Fatalf("refused: %+v", r)
		}
	}
	st := g.stats()
	if st.checks != 6 || st.running != 0 || st.waiting != 0 || st.networks != 0 || st.refused != 3 || st.maxQueue != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// A waiter whose request ends, or that waited gateMaxWait, leaves the
// queue and its place; Retry-After follows the measured check duration.
func TestPasswordGateWaitersLeave(t *testing.T) {
	g := newPasswordGate(1)
	g.maxWait = 200 * time.Millisecond
	a := startCheck(context.Background(), g, "192.0.2.0/24", false)
	<-a.started
	ctx, cancel := context.WithCancel(context.Background())
	b := startCheck(ctx, g, "198.51.100.0/24", false)
	waitQueued(t, g, 1)
	cancel()
	if r := <-b.result; r == nil || !r.cancelled {
		t.Fatalf("cancelled waiter: %+v", r)
	}
	c := startCheck(context.Background(), g, "203.0.113.0/24", false)
	if r := <-c.result; r == nil || r.cancelled || r.retryAfter < time.Second {
		t.Fatalf("waiter past maxWait: %+v", r)
	}
	if st := g.stats(); st.waiting != 0 || st.networks != 1 {
		t.Fatalf("after the waiters left: %+v", st)
	}
	close(a.release)
	if r := <-a.result; r != nil {
		t.Fatal(r)
	}

	// Retry-After: the checks ahead, per worker, times the average check.
	g = newPasswordGate(1)
	g.avg = 1500 * time.Millisecond
	g.running = 1
	g.clean = make([]chan struct{}, 2)
	if got := g.retryAfterLocked(2); got != 5*time.Second { // 3 × 1.5 s, rounded up
		t.Fatalf("Retry-After %v, want 5s", got)
	}
	g.avg = time.Hour
	if got := g.retryAfterLocked(2); got != gateMaxRetryAfter {
		t.Fatalf("Retry-After %v, want the cap", got)
	}
}

// Many concurrent checks never run more than the workers at once.
func TestPasswordGateConcurrency(t *testing.T) {
	g := newPasswordGate(3)
	var mu sync.Mutex
	running, peak, ran, refused := 0, 0, 0, 0
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			network := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24)
			r := g.run(context.Background(), network, i%2 == 0, func() {
				mu.Lock()
				running++
				peak = max(peak, running)
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				running--
				ran++
				mu.Unlock()
			})
			if r != nil {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if peak > 3 || ran+refused != 200 || ran < 3 {
		t.Fatalf("peak %d running, %d ran, %d refused", peak, ran, refused)
	}
	if st := g.stats(); st.running != 0 || st.waiting != 0 || st.networks != 0 {
		t.Fatalf("stats %+v", st)
	}
}
