package sessionauth

import (
	"net/netip"
	"sync"
	"time"
)

// Backoff of failed logins per client.
const (
	// backoffBase is the wait after the first failure; it doubles with
	// each further failure.
	backoffBase = time.Second
	// backoffMax caps the wait.
	backoffMax = 15 * time.Minute
	// backoffForget is how long after its last failure a client starts
	// afresh.
	backoffForget = time.Hour
	// maxTrackedClients bounds the limiter's memory.
	maxTrackedClients = 10_000
)

// limiter backs off failed authentication attempts per client: after n
// failures the client waits backoffBase·2^(n-1) (at most backoffMax) before
// its next attempt is even checked, and one client has at most one attempt
// in flight. Other clients are not affected, so an attacker cannot lock the
// admin out. IPv6 clients are keyed by their /64, which one host typically
// owns whole.
type limiter struct {
	mu      sync.Mutex
	clients map[netip.Addr]*attempts
}

type attempts struct {
	failures int
	last     time.Time // of the last failure
	inFlight bool
}

func newLimiter() *limiter {
	return &limiter{clients: make(map[netip.Addr]*attempts)}
}

// limiterKey is the client's address, or its /64 for IPv6; every invalid
// address (e.g. a Unix socket peer) shares one key.
func limiterKey(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		p, err := a.WithZone("").Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return a.Unmap()
}

func delay(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := backoffBase
	for i := 1; i < failures; i++ {
		d *= 2
		if d >= backoffMax {
			return backoffMax
		}
	}
	return d
}

// begin starts an attempt of client at now. When the client must wait it
// returns how long (and no attempt starts); otherwise the caller must call
// end exactly once.
func (l *limiter) begin(client netip.Addr, now time.Time) (wait time.Duration) {
	k := limiterKey(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.clients[k]
	if ok && a.failures > 0 && now.Sub(a.last) >= backoffForget && !a.inFlight {
		a.failures = 0
	}
	if ok {
		if a.inFlight {
			return backoffBase
		}
		if until := a.last.Add(delay(a.failures)); now.Before(until) {
			return until.Sub(now)
		}
		a.inFlight = true
		return 0
	}
	if len(l.clients) >= maxTrackedClients {
		l.sweepLocked(now)
	}
	l.clients[k] = &attempts{inFlight: true}
	return 0
}

// attemptOutcome is how an attempt ended.
type attemptOutcome uint8

const (
	// attemptAborted: the credentials were not checked (an error on our
	// side, a cancelled request); the backoff stays as it was.
	attemptAborted attemptOutcome = iota
	attemptFailed
	attemptSucceeded
)

// end finishes an attempt begun with begin. A failure lengthens the
// client's backoff and returns the new wait; a success forgets the client.
func (l *limiter) end(client netip.Addr, now time.Time, result attemptOutcome) (wait time.Duration) {
	k := limiterKey(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.clients[k]
	if !ok {
		return 0
	}
	a.inFlight = false
	switch result {
	case attemptAborted:
		if a.failures == 0 {
			delete(l.clients, k)
		}
		return 0
	case attemptSucceeded:
		delete(l.clients, k)
		return 0
	}
	a.failures++
	a.last = now
	return delay(a.failures)
}

// sweepLocked forgets clients with nothing to remember and, when still
// full, the one whose last failure is oldest.
func (l *limiter) sweepLocked(now time.Time) {
	var oldest netip.Addr
	var oldestAt time.Time
	found := false
	for k, a := range l.clients {
		if a.inFlight {
			continue
		}
		if a.failures == 0 || now.Sub(a.last) >= backoffForget {
			delete(l.clients, k)
			continue
		}
		if !found || a.last.Before(oldestAt) {
			oldest, oldestAt, found = k, a.last, true
		}
	}
	if len(l.clients) >= maxTrackedClients && found {
		delete(l.clients, oldest)
	}
}
