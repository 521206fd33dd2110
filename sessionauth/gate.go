package sessionauth

import (
	"context"
	"math"
	"net/netip"
	"sync"
	"time"
)

// Bounds of the password-check gate.
const (
	// gateQueuePerWorker is how many checks may wait per running one: a
	// waiting check starts within about two check durations (≈ 0.5 s at
	// cost 12 on a current CPU core).
	gateQueuePerWorker = 2
	// gateMaxRetryAfter caps the Retry-After of a refused check.
	gateMaxRetryAfter = time.Minute
	// gateMaxWait bounds a queued check's wait even when clean clients keep
	// jumping ahead of a suspect one; it then gets a 503 like a refusal.
	gateMaxWait = 5 * time.Second
	// gateEWMAWeight is the weight of the newest check in the average
	// duration that Retry-After is estimated from.
	gateEWMAWeight = 0.2
)

// passwordGate bounds the CPU that password checks (bcrypt) take: at most
// workers run at once, at most queueMax more wait, and any check beyond that
// is refused at once with an estimate of when a place frees up, never left
// waiting in an unbounded queue.
//
// One network (an IPv4 /24, an IPv6 /48) may hold at most half of the
// places (running and waiting), and clients whose address or network failed
// recently ("suspect") at most half of the queue, so a client from another
// network, or with a clean record, finds a place while a flood comes from a
// few networks; waiting clean clients are served before waiting suspect
// ones.
type passwordGate struct {
	workers  int
	queueMax int
	// suspectMax is how many suspect checks may wait.
	suspectMax int
	// networkMax is how many places (running and waiting) one network may
	// hold.
	networkMax int
	// maxWait is gateMaxWait (shorter in tests).
	maxWait time.Duration

	mu      sync.Mutex
	running int
	clean   []chan struct{} // waiting, first come first served
	suspect []chan struct{}
	// held counts the places each network holds.
	held map[netip.Prefix]int
	// avg is the moving average of a check's duration; 0 until the first.
	avg time.Duration

	// Totals, for tests and the saturation log.
	checks   int64
	busy     time.Duration
	refused  int64
	maxQueue int
}

func newPasswordGate(workers int) *passwordGate {
	workers = max(1, workers)
	q := gateQueuePerWorker * workers
	return &passwordGate{workers: workers, queueMax: q, suspectMax: max(1, q/2),
		networkMax: max(1, (workers+q)/2), maxWait: gateMaxWait, held: make(map[netip.Prefix]int)}
}

// gateRefusal is why acquire did not admit a check.
type gateRefusal struct {
	// retryAfter is when a place may be free, at least a second.
	retryAfter time.Duration
	// cancelled: the request ended while it waited.
	cancelled bool
}

// run runs check when a worker is free: at once, after waiting in the
// bounded queue, or never (refused, or ctx ended while waiting).
func (g *passwordGate) run(ctx context.Context, network netip.Prefix, suspect bool, check func()) (refused *gateRefusal) {
	ready, refusal := g.enter(network, suspect)
	if refusal != nil {
		return refusal
	}
	if ready != nil {
		timer := time.NewTimer(g.maxWait)
		defer timer.Stop()
		var gaveUp *gateRefusal
		select {
		case <-ready:
		case <-ctx.Done():
			gaveUp = &gateRefusal{cancelled: true}
		case <-timer.C:
			gaveUp = &gateRefusal{retryAfter: g.retryAfter()}
		}
		if gaveUp != nil {
			if !g.leaveQueue(ready, suspect) {
				// A worker was handed over just now: pass it on.
				g.done(network, 0)
			} else {
				g.release(network)
			}
			return gaveUp
		}
	}
	start := time.Now()
	defer func() { g.done(network, time.Since(start)) }()
	check()
	return nil
}

// enter takes a worker (ready nil) or a place in the queue (wait on ready),
// or refuses.
func (g *passwordGate) enter(network netip.Prefix, suspect bool) (ready chan struct{}, refused *gateRefusal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	waiting := len(g.clean) + len(g.suspect)
	if g.held[network] >= g.networkMax {
		g.refused++
		return nil, &gateRefusal{retryAfter: g.retryAfterLocked(waiting)}
	}
	if g.running < g.workers && waiting == 0 {
		g.running++
		g.held[network]++
		return nil, nil
	}
	if waiting >= g.queueMax || suspect && len(g.suspect) >= g.suspectMax {
		g.refused++
		return nil, &gateRefusal{retryAfter: g.retryAfterLocked(waiting)}
	}
	g.held[network]++
	ready = make(chan struct{})
	if suspect {
		g.suspect = append(g.suspect, ready)
	} else {
		g.clean = append(g.clean, ready)
	}
	g.maxQueue = max(g.maxQueue, waiting+1)
	return ready, nil
}

func (g *passwordGate) retryAfter() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refused++
	return g.retryAfterLocked(len(g.clean) + len(g.suspect))
}

// retryAfterLocked estimates when the checks running and waiting now are
// done, in whole seconds (Retry-After has no finer unit).
func (g *passwordGate) retryAfterLocked(waiting int) time.Duration {
	ahead := float64(g.running+waiting) / float64(g.workers)
	secs := math.Ceil(ahead * g.avg.Seconds())
	return min(gateMaxRetryAfter, time.Duration(max(1, secs))*time.Second)
}

// leaveQueue removes a waiter that gave up; false when it had already been
// handed a worker.
func (g *passwordGate) leaveQueue(ready chan struct{}, suspect bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := &g.clean
	if suspect {
		q = &g.suspect
	}
	for i, c := range *q {
		if c == ready {
			*q = append((*q)[:i], (*q)[i+1:]...)
			return true
		}
	}
	return false
}

// release gives back the place of a waiter that left the queue.
func (g *passwordGate) release(network netip.Prefix) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked(network)
}

func (g *passwordGate) releaseLocked(network netip.Prefix) {
	if g.held[network]--; g.held[network] <= 0 {
		delete(g.held, network)
	}
}

// done frees the worker and the place of network after a check that took
// took (0: no check ran) and hands the worker to the next waiter, clean ones
// first.
func (g *passwordGate) done(network netip.Prefix, took time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked(network)
	if took > 0 {
		g.checks++
		g.busy += took
		if g.avg == 0 {
			g.avg = took
		} else {
			g.avg = time.Duration(gateEWMAWeight*float64(took) + (1-gateEWMAWeight)*float64(g.avg))
		}
	}
	var next chan struct{}
	switch {
	case len(g.clean) > 0:
		next, g.clean = g.clean[0], g.clean[1:]
	case len(g.suspect) > 0:
		next, g.suspect = g.suspect[0], g.suspect[1:]
	default:
		g.running--
		return
	}
	close(next) // the worker passes on; running stays
}

// gateStats is a snapshot of the gate's totals.
type gateStats struct {
	checks   int64
	busy     time.Duration
	refused  int64
	maxQueue int
	running  int
	waiting  int
	// networks holding a place
	networks int
}

func (g *passwordGate) stats() gateStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return gateStats{checks: g.checks, busy: g.busy, refused: g.refused, maxQueue: g.maxQueue,
		running: g.running, waiting: len(g.clean) + len(g.suspect), networks: len(g.held)}
}
