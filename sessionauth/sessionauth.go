// Package sessionauth is bangui_exporter's small authenticated admin API
// under /api/: the admin password (set once, by a CLI command or by a setup
// request carrying a one-time token the exporter logs at startup), login and
// logout sessions, and the geo endpoints an operator needs (re-resolve,
// status, lookup).
//
// It owns two tables in the app database, settings and sessions. The common
// request costs no database query: the fact that setup is complete is cached
// for the life of the process (it can only become true), and a validated
// session is cached for a short window (Options.SessionCacheTTL) while its
// expiry is still checked exactly on every request. Logout deletes the
// session and evicts it from the cache at once.
//
// Only the SHA-256 of a session token is stored; the password is stored as a
// bcrypt hash (cost DefaultHashCost). At most GOMAXPROCS password checks run
// at once behind a short bounded queue; beyond it a login is refused at once
// with 503 and Retry-After, and a session never waits behind password checks.
// Failed logins back off exponentially per client address and per network
// (IPv4 /24, IPv6 /48, from a higher threshold), and are logged as one stable
// line (LogFailedAuth) that the fail2ban filter in deploy/fail2ban matches:
// one per failure, and one per wait for a client that retries before its
// Retry-After.
package sessionauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bangui/bangui_exporter/geo"
	"github.com/bangui/bangui_exporter/internal/appdb"
)

// Defaults of the options (and of the --admin.* flags).
const (
	DefaultSessionTTL      = 24 * time.Hour
	DefaultSessionCacheTTL = 10 * time.Second
	// CookieName is the session cookie.
	CookieName = "bangui_session"
	// MaxBodyBytes bounds every request body (413 beyond).
	MaxBodyBytes = 64 << 10
	// LogFailedAuth is the message of the one log line written for every
	// failed login or setup attempt; deploy/fail2ban matches it. It is a
	// contract: do not change it without changing the filter.
	LogFailedAuth = "admin API authentication failed"
)

// Geo is what the admin API needs from geo (geo.Resolver implements it).
type Geo interface {
	// ReResolve clears the negative cache and queues every IP without a
	// country; it returns how many were queued.
	ReResolve() int
	// Status is a snapshot of caches, providers and the last flush.
	Status() geo.Status
	// Lookup answers from memory and queues an unknown IP for background
	// resolution; it never writes to the database.
	Lookup(ip netip.Addr) (geo.Entry, bool)
}

// Options configure a Service.
type Options struct {
	// DB is the app database; the service owns its settings and sessions
	// tables.
	DB     *appdb.DB
	Logger *slog.Logger
	// SessionTTL is how long a session lives; 0 means DefaultSessionTTL.
	SessionTTL time.Duration
	// SessionCacheTTL is how long a validated session is trusted without a
	// database query (expiry is still checked exactly); 0 disables the
	// cache.
	SessionCacheTTL time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For (and
	// X-Forwarded-Proto, X-Forwarded-Host) headers are believed.
	TrustedProxies []netip.Prefix
	// Geo serves the geo endpoints; nil when geo is disabled (they answer
	// 503 then).
	Geo Geo
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// hashCost overrides DefaultHashCost; only tests set it (bcrypt at cost
	// 12 takes seconds under the race detector).
	hashCost int
}

// Service is the admin API. Its ServeHTTP serves everything under /api/.
type Service struct {
	db         *appdb.DB
	logger     *slog.Logger
	now        func() time.Time
	sessionTTL time.Duration
	cacheTTL   time.Duration
	proxies    []netip.Prefix
	geo        Geo
	hashCost   int
	// gate bounds concurrent bcrypt computations (CPU) and their queue.
	gate    *passwordGate
	limiter *limiter
	// saturatedLogged is when the gate's saturation was last logged (Unix
	// nanoseconds).
	saturatedLogged atomic.Int64

	// setupDone caches "the admin password exists"; it only ever goes from
	// false to true.
	setupDone atomic.Bool

	setupMu sync.Mutex
	// setupTokenHash is the SHA-256 of the one-time setup token; zero
	// once used or when the exporter started with a password.
	setupTokenHash [sha256.Size]byte
	setupTokenSet  bool

	cacheMu sync.Mutex
	cache   map[[sha256.Size]byte]session
	// cacheGen changes on every eviction, so a validation that read the
	// database before a logout does not put the session back afterwards.
	cacheGen uint64
}

// session is a validated session as cached.
type session struct {
	created time.Time
	expires time.Time
	// trustedUntil is when the cached validation must be repeated against
	// the database.
	trustedUntil time.Time
}

// New migrates the tables and returns the service. When no admin password
// exists it creates a one-time setup token and logs it.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.DB == nil {
		return nil, errors.New("sessionauth: no app database")
	}
	if opts.SessionTTL < 0 {
		return nil, fmt.Errorf("sessionauth: session TTL must not be negative, got %s", opts.SessionTTL)
	}
	if opts.SessionCacheTTL < 0 {
		return nil, fmt.Errorf("sessionauth: session cache TTL must not be negative, got %s", opts.SessionCacheTTL)
	}
	if opts.SessionTTL == 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.hashCost == 0 {
		opts.hashCost = DefaultHashCost
	}
	s := &Service{
		db:         opts.DB,
		logger:     opts.Logger,
		now:        opts.Now,
		sessionTTL: opts.SessionTTL,
		cacheTTL:   opts.SessionCacheTTL,
		proxies:    opts.TrustedProxies,
		geo:        opts.Geo,
		hashCost:   opts.hashCost,
		gate:       newPasswordGate(runtime.GOMAXPROCS(0)),
		limiter:    newLimiter(),
		cache:      make(map[[sha256.Size]byte]session),
	}
	if err := migrate(ctx, s.db); err != nil {
		return nil, err
	}
	done, err := hasPassword(ctx, s.db)
	if err != nil {
		return nil, err
	}
	if done {
		s.setupDone.Store(true)
		return s, nil
	}
	token, err := newToken()
	if err != nil {
		return nil, fmt.Errorf("sessionauth: setup token: %w", err)
	}
	s.setupTokenHash = sha256.Sum256([]byte(token))
	s.setupTokenSet = true
	s.logger.Warn("admin API is not set up: set the admin password with the command `bangui_exporter admin set-password`, or POST it to /api/setup with this one-time setup token",
		"setup_token", token)
	return s, nil
}

// ClearSessionCache forgets every cached session validation, so the next
// request of each session queries the database (for test isolation).
func (s *Service) ClearSessionCache() {
	s.cacheMu.Lock()
	clear(s.cache)
	s.cacheGen++
	s.cacheMu.Unlock()
}

// newToken returns 256 random bits, base64url-encoded without padding (43
// characters).
func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// parseToken checks a session token's form and returns the SHA-256 of its
// text, the only thing stored.
func parseToken(token string) ([sha256.Size]byte, bool) {
	if len(token) != 43 {
		return [sha256.Size]byte{}, false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) != 32 {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256([]byte(token)), true
}

// isSetUp reports whether the admin password exists, from memory once it
// was seen.
func (s *Service) isSetUp(ctx context.Context) (bool, error) {
	if s.setupDone.Load() {
		return true, nil
	}
	done, err := hasPassword(ctx, s.db)
	if err != nil {
		return false, err
	}
	if done {
		s.setupDone.Store(true)
	}
	return done, nil
}

// validate returns the session of token hash h: from the cache while the
// cached validation is fresh, else from the database. Expiry is checked
// exactly either way.
func (s *Service) validate(ctx context.Context, h [sha256.Size]byte) (session, bool, error) {
	now := s.now()
	s.cacheMu.Lock()
	if c, ok := s.cache[h]; ok {
		if !now.Before(c.expires) {
			delete(s.cache, h)
			s.cacheMu.Unlock()
			return session{}, false, nil
		}
		if now.Before(c.trustedUntil) {
			s.cacheMu.Unlock()
			return c, true, nil
		}
		delete(s.cache, h)
	}
	gen := s.cacheGen
	s.cacheMu.Unlock()

	created, expires, found, err := readSession(ctx, s.db, h)
	if err != nil || !found || !now.Before(expires) {
		return session{}, false, err
	}
	sess := session{created: created, expires: expires, trustedUntil: now.Add(s.cacheTTL)}
	if s.cacheTTL > 0 {
		s.cacheMu.Lock()
		if gen == s.cacheGen {
			s.cacheLocked(h, sess, now)
		}
		s.cacheMu.Unlock()
	}
	return sess, true, nil
}

// maxCachedSessions triggers a sweep of stale cache entries.
const maxCachedSessions = 1024

func (s *Service) cacheLocked(h [sha256.Size]byte, sess session, now time.Time) {
	if len(s.cache) >= maxCachedSessions {
		for k, c := range s.cache {
			if !now.Before(c.trustedUntil) || !now.Before(c.expires) {
				delete(s.cache, k)
			}
		}
	}
	s.cache[h] = sess
}

// evict removes a session from the cache and stops in-flight validations
// from caching it again.
func (s *Service) evict(h [sha256.Size]byte) {
	s.cacheMu.Lock()
	delete(s.cache, h)
	s.cacheGen++
	s.cacheMu.Unlock()
}

// clientAddr is the address of the client: the peer, or, when the peer is a
// trusted proxy, the rightmost address of X-Forwarded-For that is not a
// trusted proxy.
func (s *Service) clientAddr(r *http.Request) netip.Addr {
	peer := peerAddr(r)
	if !s.trusted(peer) {
		return peer
	}
	hops := forwardedFor(r.Header)
	current := peer
	for i := len(hops) - 1; i >= 0 && s.trusted(current); i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil || a.Zone() != "" {
			break
		}
		current = a.Unmap()
	}
	return current
}

// fromTrustedProxy reports whether the peer is a trusted proxy.
func (s *Service) fromTrustedProxy(r *http.Request) bool { return s.trusted(peerAddr(r)) }

func (s *Service) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range s.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientString is how a client address appears in logs and the sessions
// table.
func clientString(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.WithZone("").String()
}
