package sessionauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/bangui/bangui_exporter/geo"
)

// geoEntry lets lookupResponse embed geo.Entry so its fields appear inline.
type geoEntry = geo.Entry

// Routes of the admin API.
const (
	PathSetup      = "/api/setup"
	PathLogin      = "/api/auth/login"
	PathLogout     = "/api/auth/logout"
	PathSession    = "/api/auth/session"
	PathReResolve  = "/api/geo/re-resolve"
	PathGeoStatus  = "/api/geo/status"
	PathLookupBase = "/api/geo/lookup/"
)

// Error messages a client sees. Every authentication failure gets the same
// one.
const (
	msgAuthFailed     = "authentication failed"
	msgSetupRequired  = "setup required"
	msgAlreadySetUp   = "setup already complete"
	msgGeoDisabled    = "geo resolution is disabled in this exporter"
	msgInternal       = "internal error"
	msgNotFound       = "not found"
	msgTooMany        = "too many attempts; retry later"
	msgBadContentType = "Content-Type must be application/json"
	msgBadOrigin      = "cross-origin request refused"
	msgBodyTooLarge   = "request body larger than 64 KiB"
)

// route is one endpoint.
type route struct {
	method string
	path   string // exact, or a prefix when prefix is set
	prefix bool
	handle func(*Service, http.ResponseWriter, *http.Request)
}

var routes = []route{
	{http.MethodPost, PathSetup, false, (*Service).handleSetup},
	{http.MethodPost, PathLogin, false, (*Service).handleLogin},
	{http.MethodPost, PathLogout, false, (*Service).handleLogout},
	{http.MethodGet, PathSession, false, (*Service).handleSession},
	{http.MethodPost, PathReResolve, false, (*Service).handleReResolve},
	{http.MethodGet, PathGeoStatus, false, (*Service).handleGeoStatus},
	{http.MethodGet, PathLookupBase, true, (*Service).handleLookup},
}

// ServeHTTP serves the admin API; mount it on "/api/".
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	var allowed []string
	for _, rt := range routes {
		if rt.path != r.URL.Path && (!rt.prefix || !strings.HasPrefix(r.URL.Path, rt.path)) {
			continue
		}
		if rt.method == r.Method {
			rt.handle(s, w, r)
			return
		}
		allowed = append(allowed, rt.method)
	}
	if len(allowed) == 0 {
		writeError(w, http.StatusNotFound, msgNotFound)
		return
	}
	h.Set("Allow", strings.Join(allowed, ", "))
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed", r.Method))
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func (s *Service) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.logger.Error("admin API request failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, msgInternal)
}

func writeTooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(wait.Seconds())), 10))
	writeError(w, http.StatusTooManyRequests, msgTooMany)
}

// requireSetUp answers 503 until the admin password exists.
func (s *Service) requireSetUp(w http.ResponseWriter, r *http.Request) bool {
	done, err := s.isSetUp(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return false
	}
	if !done {
		writeError(w, http.StatusServiceUnavailable, msgSetupRequired)
		return false
	}
	return true
}

// checkJSONPost enforces the CSRF rules of a state-changing request: a JSON
// content type (which a cross-site form cannot send) and, when the browser
// sends an Origin, the API's own origin.
func (s *Service) checkJSONPost(w http.ResponseWriter, r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, msgBadContentType)
		return false
	}
	if origin, ok := r.Header["Origin"]; ok && (len(origin) != 1 || !s.sameOrigin(r, origin[0])) {
		writeError(w, http.StatusForbidden, msgBadOrigin)
		return false
	}
	return true
}

// sameOrigin compares an Origin header with the origin the request was
// sent to (as the client saw it, through a trusted proxy's X-Forwarded-Proto
// and X-Forwarded-Host).
func (s *Service) sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || u.User != nil || u.RawQuery != "" {
		return false
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if s.fromTrustedProxy(r) {
		if p := firstHeaderValue(r.Header, "X-Forwarded-Proto"); p != "" {
			scheme = strings.ToLower(p)
		}
		if h := firstHeaderValue(r.Header, "X-Forwarded-Host"); h != "" {
			host = h
		}
	}
	return strings.EqualFold(u.Scheme, scheme) &&
		strings.EqualFold(withoutDefaultPort(u.Host, scheme), withoutDefaultPort(host, scheme))
}

func withoutDefaultPort(host, scheme string) string {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return host
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return host
}

func firstHeaderValue(h http.Header, name string) string {
	v := h.Get(name)
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// secure reports whether the client reached us over TLS.
func (s *Service) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return s.fromTrustedProxy(r) && strings.EqualFold(firstHeaderValue(r.Header, "X-Forwarded-Proto"), "https")
}

// decodeBody decodes a JSON request body into dst strictly: at most
// MaxBodyBytes, no unknown fields, nothing after the value.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) bool {
	if r.ContentLength > MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, msgBodyTooLarge)
		return false
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if err = dec.Decode(&struct{}{}); errors.Is(err, io.EOF) {
			return true
		} else if err == nil {
			err = errors.New("more than one JSON value")
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, msgBodyTooLarge)
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "empty request body")
	default:
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+strings.TrimPrefix(err.Error(), "json: "))
	}
	return false
}

// logFailure writes the one stable line per failed authentication that the
// fail2ban filter matches. It never contains the password or a token.
func (s *Service) logFailure(client netip.Addr, action, reason string) {
	s.logger.Warn(LogFailedAuth, "client", clientString(client), "action", action, "reason", reason)
}

// hashWithSlot runs fn (a bcrypt computation) when one of the CPU slots is
// free, or gives up when the request is cancelled.
func (s *Service) hashWithSlot(ctx context.Context, fn func()) error {
	select {
	case s.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.hashSlots }()
	fn()
	return nil
}

type setupRequest struct {
	SetupToken string `json:"setup_token"`
	Password   string `json:"password"`
}

// handleSetup sets the first admin password: only while none exists, and
// only with the one-time setup token logged at startup.
func (s *Service) handleSetup(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	done, err := s.isSetUp(ctx)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if done {
		writeError(w, http.StatusConflict, msgAlreadySetUp)
		return
	}
	if !s.checkJSONPost(w, r) {
		return
	}
	var req setupRequest
	if !decodeBody(w, r, &req) {
		return
	}
	client := s.clientAddr(r)
	if wait := s.limiter.begin(client, s.now()); wait > 0 {
		s.logFailure(client, "setup", "throttled")
		writeTooMany(w, wait)
		return
	}
	outcome := attemptAborted
	defer func() { s.limiter.end(client, s.now(), outcome) }()

	given := sha256.Sum256([]byte(req.SetupToken))
	s.setupMu.Lock()
	tokenOK := s.setupTokenSet && subtle.ConstantTimeCompare(given[:], s.setupTokenHash[:]) == 1
	s.setupMu.Unlock()
	if !tokenOK && s.setupDone.Load() {
		// A concurrent setup completed (and spent the token) meanwhile.
		writeError(w, http.StatusConflict, msgAlreadySetUp)
		return
	}
	if !tokenOK {
		outcome = attemptFailed
		s.logFailure(client, "setup", "invalid_setup_token")
		writeError(w, http.StatusUnauthorized, msgAuthFailed)
		return
	}
	outcome = attemptSucceeded // the token was right; a weak password is no attack
	if err := ValidatePassword(req.Password); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var hash []byte
	var hashErr error
	if err := s.hashWithSlot(ctx, func() {
		hash, hashErr = bcrypt.GenerateFromPassword([]byte(req.Password), s.hashCost)
	}); err != nil {
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
		return
	}
	if hashErr != nil {
		s.internalError(w, r, fmt.Errorf("hash password: %w", hashErr))
		return
	}
	stored, err := insertFirstPassword(ctx, s.db, hash, s.now())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if !stored {
		s.setupDone.Store(true)
		writeError(w, http.StatusConflict, msgAlreadySetUp)
		return
	}
	// setupDone first: an attempt that finds the token spent then sees 409.
	s.setupDone.Store(true)
	s.setupMu.Lock()
	s.setupTokenSet = false
	s.setupTokenHash = [sha256.Size]byte{}
	s.setupMu.Unlock()
	s.logger.Info("admin password set through the setup endpoint", "client", clientString(client))
	writeJSON(w, http.StatusCreated, map[string]string{"status": "setup complete"})
}

type loginRequest struct {
	Password string `json:"password"`
}

// sessionResponse describes a session.
type sessionResponse struct {
	Token     string    `json:"token,omitempty"`
	TokenType string    `json:"token_type,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// ExpiresIn is in whole seconds.
	ExpiresIn int64 `json:"expires_in"`
}

func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !s.requireSetUp(w, r) || !s.checkJSONPost(w, r) {
		return
	}
	var req loginRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Password == "" {
		writeError(w, http.StatusBadRequest, "password is required")
		return
	}
	ctx := r.Context()
	client := s.clientAddr(r)
	if wait := s.limiter.begin(client, s.now()); wait > 0 {
		s.logFailure(client, "login", "throttled")
		writeTooMany(w, wait)
		return
	}
	// Errors on our side leave the client's backoff as it was.
	outcome := attemptAborted
	defer func() { s.limiter.end(client, s.now(), outcome) }()

	hash, err := readPasswordHash(ctx, s.db)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	var cmpErr error
	if err := s.hashWithSlot(ctx, func() {
		cmpErr = bcrypt.CompareHashAndPassword(hash, []byte(req.Password))
	}); err != nil {
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
		return
	}
	if cmpErr != nil {
		if !errors.Is(cmpErr, bcrypt.ErrMismatchedHashAndPassword) {
			s.internalError(w, r, fmt.Errorf("compare password: %w", cmpErr))
			return
		}
		outcome = attemptFailed
		s.logFailure(client, "login", "wrong_password")
		writeError(w, http.StatusUnauthorized, msgAuthFailed)
		return
	}
	outcome = attemptSucceeded

	token, err := newToken()
	if err != nil {
		s.internalError(w, r, fmt.Errorf("session token: %w", err))
		return
	}
	h, _ := parseToken(token)
	now := s.now()
	created := time.UnixMilli(now.UnixMilli())
	expires := time.UnixMilli(now.Add(s.sessionTTL).UnixMilli())
	if err := createSession(ctx, s.db, h, created, expires, clientString(client)); err != nil {
		s.internalError(w, r, err)
		return
	}
	if s.cacheTTL > 0 {
		s.cacheMu.Lock()
		s.cacheLocked(h, session{created: created, expires: expires, trustedUntil: now.Add(s.cacheTTL)}, now)
		s.cacheMu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    token,
		Path:     "/api",
		Expires:  expires,
		MaxAge:   int(max(1, math.Round(expires.Sub(now).Seconds()))),
		HttpOnly: true,
		Secure:   s.secure(r),
		SameSite: http.SameSiteStrictMode,
	})
	s.logger.Info("admin API login", "client", clientString(client))
	writeJSON(w, http.StatusOK, sessionResponse{
		Token: token, TokenType: "Bearer",
		CreatedAt: created, ExpiresAt: expires,
		ExpiresIn: int64(math.Round(expires.Sub(now).Seconds())),
	})
}

// authenticate finds the request's session: from `Authorization: Bearer`,
// else from the cookie. A cookie-authenticated POST must also pass the CSRF
// rules. It answers the request itself when it returns false.
func (s *Service) authenticate(w http.ResponseWriter, r *http.Request) ([sha256.Size]byte, session, bool) {
	var none [sha256.Size]byte
	if !s.requireSetUp(w, r) {
		return none, session{}, false
	}
	token, viaCookie, present := sessionToken(r)
	h, ok := parseToken(token)
	if !present || !ok {
		unauthorized(w)
		return none, session{}, false
	}
	sess, ok, err := s.validate(r.Context(), h)
	if err != nil {
		s.internalError(w, r, err)
		return none, session{}, false
	}
	if !ok {
		unauthorized(w)
		return none, session{}, false
	}
	if viaCookie && r.Method == http.MethodPost && !s.checkJSONPost(w, r) {
		return none, session{}, false
	}
	return h, sess, true
}

// sessionToken returns the Bearer token or, without one, the session
// cookie. Another Authorization scheme (Basic, from the exporter-toolkit
// web config wrapping the listener) is left to that layer.
func sessionToken(r *http.Request) (token string, viaCookie, present bool) {
	for _, auth := range r.Header.Values("Authorization") {
		scheme, tok, _ := strings.Cut(auth, " ")
		if strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok), false, true
		}
	}
	c, err := r.Cookie(CookieName)
	if err != nil {
		return "", false, false
	}
	return c.Value, true, true
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="bangui_exporter admin API"`)
	writeError(w, http.StatusUnauthorized, msgAuthFailed)
}

func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) {
	h, _, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	err := deleteSession(r.Context(), s.db, h)
	s.evict(h)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/api", MaxAge: -1,
		HttpOnly: true, Secure: s.secure(r), SameSite: http.SameSiteStrictMode,
	})
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
}

func (s *Service) handleSession(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, sessionResponse{
		CreatedAt: sess.created, ExpiresAt: sess.expires,
		ExpiresIn: int64(sess.expires.Sub(s.now()) / time.Second),
	})
}

// requireGeo answers 503 when geo is disabled.
func (s *Service) requireGeo(w http.ResponseWriter) bool {
	if s.geo == nil {
		writeError(w, http.StatusServiceUnavailable, msgGeoDisabled)
		return false
	}
	return true
}

func (s *Service) handleReResolve(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authenticate(w, r); !ok || !s.requireGeo(w) {
		return
	}
	queued := s.geo.ReResolve()
	s.logger.Info("geo re-resolve requested through the admin API", "client", clientString(s.clientAddr(r)), "queued", queued)
	writeJSON(w, http.StatusAccepted, map[string]int{"queued": queued})
}

func (s *Service) handleGeoStatus(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authenticate(w, r); !ok || !s.requireGeo(w) {
		return
	}
	writeJSON(w, http.StatusOK, s.geo.Status())
}

// lookupResponse is geo's entry plus whether geo knew the IP before.
type lookupResponse struct {
	Known bool `json:"known"`
	geoEntry
}

func (s *Service) handleLookup(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authenticate(w, r); !ok || !s.requireGeo(w) {
		return
	}
	ip, err := parseLookupIP(strings.TrimPrefix(r.URL.Path, PathLookupBase))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	entry, known := s.geo.Lookup(ip)
	writeJSON(w, http.StatusOK, lookupResponse{Known: known, geoEntry: geoEntry(entry)})
}

// parseLookupIP accepts one IPv4 or IPv6 address without a zone.
func parseLookupIP(text string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(text)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("invalid IP address %q", text)
	}
	return ip.Unmap(), nil
}
