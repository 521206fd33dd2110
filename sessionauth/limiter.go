package sessionauth

import (
	"net/netip"
	"sync"
	"time"
)

// Backoff of failed logins, per client and per network.
const (
	// backoffBase is the wait after the first failure; it doubles with
	// each further failure.
	backoffBase = time.Second
	// backoffMax caps the wait.
	backoffMax = 15 * time.Minute
	// backoffForget is how long after its last failure a client (or a
	// network) starts afresh.
	backoffForget = time.Hour
	// maxTrackedClients bounds the memory of each layer (clients,
	// networks).
	maxTrackedClients = 10_000

	// networkThreshold is how many failures the addresses of one network
	// may collect together before the whole network backs off: the
	// network's wait starts at backoffBase with failure networkThreshold
	// and doubles from there. A single address reaches it only after
	// hours of backing off on its own.
	networkThreshold = 16
	// networkBitsV4 and networkBitsV6 are the networks' prefix lengths: an
	// IPv4 /24, an IPv6 /48 (a site's allocation, 65,536 /64s).
	networkBitsV4 = 24
	networkBitsV6 = 48
)

// limiter backs off failed authentication attempts in two layers.
//
// Per client: after n failures the client waits backoffBase·2^(n-1) (at
// most backoffMax) before its next attempt is even checked, and one client
// has at most one attempt in flight. IPv6 clients are keyed by their /64,
// which one host typically owns whole.
//
// Per network (IPv4 /24, IPv6 /48): the failures of all its clients count
// together, and from networkThreshold failures on every client of the
// network waits, so many addresses of one network (or the 65,536 /64s of a
// /48) cannot take turns.
//
// A client refused for a wait gets one log line per wait (see verdict.log),
// not one per refused retry.
type limiter struct {
	mu       sync.Mutex
	clients  map[netip.Addr]*attempts
	networks map[netip.Prefix]*netAttempts
}

type attempts struct {
	failures int
	last     time.Time // of the last failure
	inFlight bool
	// retryAt is when the client was told to come back after the password
	// check gate was full (503).
	retryAt time.Time
	// logged: a refusal during the current wait was logged.
	logged bool
}

type netAttempts struct {
	failures int
	last     time.Time
	logged   bool
}

func newLimiter() *limiter {
	return &limiter{clients: make(map[netip.Addr]*attempts), networks: make(map[netip.Prefix]*netAttempts)}
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

// networkKey is the client's IPv4 /24 or IPv6 /48; false for an invalid
// address.
func networkKey(a netip.Addr) (netip.Prefix, bool) {
	a = a.Unmap().WithZone("")
	bits := networkBitsV6
	if a.Is4() {
		bits = networkBitsV4
	}
	p, err := a.Prefix(bits)
	return p, err == nil
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

// networkDelay is a network's wait after its failures.
func networkDelay(failures int) time.Duration {
	return delay(failures - networkThreshold + 1)
}

// verdict is begin's answer.
type verdict struct {
	// wait > 0: the attempt is refused, the client must wait that long.
	wait time.Duration
	// log: this refusal is the first of its wait and is logged as a
	// failure; later refusals of the same wait are not.
	log bool
	// suspect: the client or its network failed recently (its password
	// check gets second rank in the gate).
	suspect bool
}

// begin starts an attempt of client at now. When the client must wait the
// verdict says how long (and no attempt starts); otherwise the caller must
// end it exactly once with end or refused.
func (l *limiter) begin(client netip.Addr, now time.Time) verdict {
	k := limiterKey(client)
	nk, hasNet := networkKey(client)
	l.mu.Lock()
	defer l.mu.Unlock()

	a := l.clients[k]
	if a != nil && a.failures > 0 && now.Sub(a.last) >= backoffForget && !a.inFlight {
		a.failures = 0
	}
	var n *netAttempts
	if hasNet {
		n = l.networks[nk]
		if n != nil && now.Sub(n.last) >= backoffForget {
			delete(l.networks, nk)
			n = nil
		}
	}

	var own, network time.Time // ends of the client's and the network's waits
	if a != nil {
		own = a.last.Add(delay(a.failures))
		if a.retryAt.After(own) {
			own = a.retryAt
		}
		if a.inFlight {
			own = now.Add(backoffBase)
		}
	}
	if n != nil && n.failures >= networkThreshold {
		network = n.last.Add(networkDelay(n.failures))
	}
	v := verdict{suspect: a != nil && a.failures > 0 || n != nil && n.failures > 0}
	switch {
	case now.Before(own) && !own.Before(network):
		v.wait, v.log = own.Sub(now), !a.logged
		a.logged = true
		return v
	case now.Before(network):
		v.wait, v.log = network.Sub(now), !n.logged
		n.logged = true
		return v
	}
	if a == nil {
		if len(l.clients) >= maxTrackedClients {
			l.sweepLocked(now)
		}
		a = &attempts{}
		l.clients[k] = a
	}
	a.inFlight, a.logged = true, false
	return v
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
// client's and its network's backoff and returns the client's new wait; a
// success forgets the client (not its network).
func (l *limiter) end(client netip.Addr, now time.Time, result attemptOutcome) (wait time.Duration) {
	k := limiterKey(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.clients[k]
	if !ok {
		return 0
	}
	a.inFlight, a.logged = false, false
	switch result {
	case attemptAborted:
		if a.failures == 0 && !now.Before(a.retryAt) {
			delete(l.clients, k)
		}
		return 0
	case attemptSucceeded:
		delete(l.clients, k)
		return 0
	}
	a.failures++
	a.last = now
	wait = delay(a.failures)
	if nk, ok := networkKey(client); ok {
		n := l.networks[nk]
		if n == nil || now.Sub(n.last) >= backoffForget {
			if n == nil && len(l.networks) >= maxTrackedClients {
				l.sweepNetworksLocked(now)
			}
			n = &netAttempts{}
			l.networks[nk] = n
		}
		n.failures++
		n.last = now
		n.logged = false
		if n.failures >= networkThreshold {
			wait = max(wait, networkDelay(n.failures))
		}
	}
	return wait
}

// refused finishes an attempt begun with begin that the password check gate
// refused: the credentials were not checked, and the client was told to
// retry after retryAfter. An earlier retry is refused by begin (and logged
// once, as a retry that ignored Retry-After).
func (l *limiter) refused(client netip.Addr, now time.Time, retryAfter time.Duration) {
	k := limiterKey(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	if a, ok := l.clients[k]; ok {
		a.inFlight, a.logged = false, false
		a.retryAt = now.Add(retryAfter)
	}
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
		if a.failures == 0 && !now.Before(a.retryAt) || a.failures > 0 && now.Sub(a.last) >= backoffForget {
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

// sweepNetworksLocked forgets networks quiet for backoffForget and, when
// still full, the one whose last failure is oldest.
func (l *limiter) sweepNetworksLocked(now time.Time) {
	var oldest netip.Prefix
	var oldestAt time.Time
	found := false
	for k, n := range l.networks {
		if now.Sub(n.last) >= backoffForget {
			delete(l.networks, k)
			continue
		}
		if !found || n.last.Before(oldestAt) {
			oldest, oldestAt, found = k, n.last, true
		}
	}
	if len(l.networks) >= maxTrackedClients && found {
		delete(l.networks, oldest)
	}
}
